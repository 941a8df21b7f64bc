"""The one CSV table writer: every CSV medseg hands out (``summary.csv``, ``lesions.csv``,
``medseg evaluate``'s tables, the viewer's report download) starts with the line
``# <research-use notice>`` and is read back with ``pandas.read_csv(path, comment="#")``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medseg import RESEARCH_USE_NOTICE
from medseg.io.atomic import atomic_path


def csv_text(rows: Any, columns: Sequence[str] | None = None) -> str:
    """``rows`` (a pandas DataFrame, or dicts: missing keys left empty) as CSV text with the
    notice line on top. ``columns``: the column order (default: first-seen key order)."""
    out = io.StringIO()
    out.write(f"# {RESEARCH_USE_NOTICE}\n")
    if hasattr(rows, "to_csv"):  # a DataFrame
        rows.to_csv(out, index=False, lineterminator="\n")
        return out.getvalue()
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(out, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(rows: Any, path: str | Path, columns: Iterable[str] | None = None) -> Path:
    """:func:`csv_text` written to ``path`` atomically."""
    path = Path(path)
    text = csv_text(rows, list(columns) if columns is not None else None)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return path
