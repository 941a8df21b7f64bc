"""The one CSV table writer: every CSV medseg hands out (``summary.csv``, ``lesions.csv``,
``medseg evaluate``'s tables, the viewer's report download) starts with the line
``# <research-use notice>`` and is read back with ``pandas.read_csv(path, comment="#")``.

Two kinds of cell are made safe on the way out (the values are user-controlled: case ids
come from file names, class names from configs):

* **CSV injection** (OWASP): a text cell starting with ``=``, ``+``, ``-``, ``@``, tab or
  carriage return gets a leading ``'``, so a spreadsheet shows it as text instead of
  running it as a formula. Numbers are untouched (``-1.5`` stays a number, whether a float
  or the text ``"-1.5"``).
* **The comment character**: a text cell containing ``#`` is quoted. ``read_csv``'s default
  (C) parser never looks for comments inside quotes, so ``#case_7`` reads back as
  ``#case_7``; unquoted, the whole row would vanish (a ``#`` at the start of a line) or be
  cut short (a ``#`` inside it). Prefixing alone does not help: pandas cuts at a ``#``
  anywhere outside quotes. (pandas' ``engine="python"`` ignores quotes when looking for
  comments: read medseg tables with the default engine.)

Every other cell follows the ordinary CSV rules (quoted only when it holds ``,``, ``"`` or a
line break).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medseg import RESEARCH_USE_NOTICE
from medseg.io.atomic import atomic_path

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)
_QUOTE_IF = (",", '"', "\n", "\r", "#")


def defuse(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula (OWASP
    CSV injection); numbers written as text (``-1.5``) are left alone."""
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text.strip()):
        return "'" + text
    return text


def _field(value: Any) -> str:
    """One CSV field: empty for None/NaN, text defused and quoted when needed."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = defuse(value)
    else:  # numbers, bools, lists (a lesion's centroid): their own text, never defused
        text = str(value)
        if text in ("nan", "<NA>", "NaT", "None"):
            return ""
    if any(c in text for c in _QUOTE_IF) or text != text.strip(" "):
        return '"' + text.replace('"', '""') + '"'
    return text


def _rows_of(rows: Any, columns: Sequence[str] | None) -> tuple[list[str], list[list[Any]]]:
    if hasattr(rows, "to_dict"):  # a DataFrame; numpy scalars print as pandas does (0.1f)
        names = [str(c) for c in rows.columns]
        data = [rows.iloc[:, i].to_numpy() for i in range(len(names))]
        return names, [list(r) for r in zip(*data, strict=True)]
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    names = list(columns)
    return names, [[row.get(c) for c in names] for row in rows]


def csv_text(
    rows: Any, columns: Sequence[str] | None = None, *, note: str = "", notice: bool = True
) -> str:
    """``rows`` (a pandas DataFrame, or dicts: missing keys left empty) as CSV text with the
    notice line on top (``note`` appended to it; ``notice=False`` for plain logs such as a
    run's ``metrics.csv``). ``columns``: the column order (default: first-seen key order)."""
    names, values = _rows_of(rows, columns)
    out = io.StringIO()
    if notice:
        out.write(f"# {RESEARCH_USE_NOTICE}{' ' + note if note else ''}\n")
    out.write(",".join(_field(n) for n in names) + "\n")
    for row in values:
        out.write(",".join(_field(v) for v in row) + "\n")
    return out.getvalue()


def write_csv(
    rows: Any,
    path: str | Path,
    columns: Iterable[str] | None = None,
    *,
    note: str = "",
    notice: bool = True,
) -> Path:
    """:func:`csv_text` written to ``path`` atomically (the caller runs the output guard)."""
    path = Path(path)
    text = csv_text(rows, list(columns) if columns is not None else None, note=note, notice=notice)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return path


def is_medseg_table(path: str | Path) -> bool:
    """Whether ``path`` starts with medseg's notice line (a table medseg wrote)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readline().startswith(f"# {RESEARCH_USE_NOTICE}")
    except OSError:
        return False
