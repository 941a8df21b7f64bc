"""Job-array parts of ``medseg predict`` (``--num-parts N --part-id K``, nnU-Net's names).

Part ``K`` of ``N`` predicts cases ``sorted_ids[K::N]``: round-robin over the sorted case
ids, so every part gets the same share to within one case, and cases whose ids sort
together (one site, one scanner, similar sizes) spread over all parts instead of making
one part slow. Each part writes into the shared output folder, then records what it did in
``OUT/parts/part_K_of_N.json``::

    {"format": "medseg-predict-part", "part_id": K, "num_parts": N, "status": "finished",
     "medseg_version": "...", "model_sha256": "...", "case_list_sha256": "...",
     "total_cases": 120, "cases": [...], "done": [...],
     "failed": [{"case": ..., "error": ...}]}

``summary.csv`` comes from :func:`medseg.inference.batch.merge_summary` (the same writer as
local predict), written by the part that finds every record present when it finishes its
own, or by ``medseg predict --merge-parts OUT``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg import RESEARCH_USE_NOTICE, __version__
from medseg.errors import ConfigError, InputNotFoundError
from medseg.io.atomic import write_json

logger = logging.getLogger(__name__)

PARTS_DIR = "parts"
FORMAT = "medseg-predict-part"
_RECORD = re.compile(r"^part_(\d+)_of_(\d+)\.json$")


def record_path(output: str | Path, part_id: int, num_parts: int) -> Path:
    return Path(output) / PARTS_DIR / f"part_{part_id}_of_{num_parts}.json"


def part_share(case_ids: Sequence[str], part_id: int, num_parts: int) -> list[str]:
    """The case ids of part ``part_id``: every ``num_parts``-th of the sorted ids."""
    return sorted(case_ids)[part_id::num_parts]


def case_list_sha256(case_ids: Sequence[str]) -> str:
    """Identifies the whole case list: parts that saw different lists would overlap or miss
    cases, since the split depends on it."""
    return hashlib.sha256("\n".join(sorted(case_ids)).encode()).hexdigest()


def read_records(output: str | Path) -> dict[tuple[int, int], dict[str, Any]]:
    """``{(part_id, num_parts): record}`` of every part record in ``OUT/parts``."""
    folder = Path(output) / PARTS_DIR
    records = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            match = _RECORD.match(path.name)
            if match:
                records[(int(match[1]), int(match[2]))] = json.loads(path.read_text())
    return records


def check_part(output: str | Path, part_id: int, num_parts: int) -> None:
    """Refuse a part number out of range, or an ``N`` other than the one of the parts
    already recorded in ``output`` (before any model is loaded)."""
    if num_parts < 1:
        raise ConfigError(
            f"num_parts {num_parts}: expected 1 or more (the number of jobs in the array)",
            param="num_parts",
        )
    if not 0 <= part_id < num_parts:
        raise ConfigError(
            f"part_id {part_id}: out of range for {num_parts} part(s); expected 0 to "
            f"{num_parts - 1} (Slurm: --part-id $SLURM_ARRAY_TASK_ID with --array=0-"
            f"{num_parts - 1})",
            param="part_id",
        )
    other = sorted({n for _, n in read_records(output)} - {num_parts})
    if other:
        raise ConfigError(
            f"num_parts {num_parts}: {Path(output) / PARTS_DIR} already holds records of a "
            f"run split into {other[0]} parts; run every part with --num-parts {other[0]}, "
            "or predict into another output folder",
            param="num_parts",
        )


def check_same_run(output: str | Path, model_sha256: str | None, cases_sha256: str) -> None:
    """Refuse a part whose model or case list differs from the parts already recorded: their
    masks would mix two models, or the split would overlap or miss cases."""
    for (k, n), record in read_records(output).items():
        where = record_path(output, k, n)
        if record.get("model_sha256") != model_sha256:
            raise ConfigError(
                f"model: its SHA-256 {str(model_sha256)[:16]}... differs from "
                f"{str(record.get('model_sha256'))[:16]}... recorded by {where}; every part "
                "must use the same model file (or predict into another output folder)",
                param="model",
            )
        if record.get("case_list_sha256") != cases_sha256:
            raise ConfigError(
                f"INPUTS: the case list differs from the one {where} was split from "
                f"({record.get('total_cases')} cases); every part must see the same inputs, "
                "otherwise parts overlap or miss cases"
            )


def write_record(
    output: str | Path,
    part_id: int,
    num_parts: int,
    *,
    model_sha256: str | None,
    all_ids: Sequence[str],
    cases: Sequence[str],
    done: Sequence[str],
    failed: Sequence[tuple[str, str]],
) -> Path:
    """Record a finished part (``done``: cases with a report, from this run or an earlier
    one; ``failed``: ``(case, error)`` of cases with a failure record)."""
    return write_json(
        record_path(output, part_id, num_parts),
        {
            "format": FORMAT,
            "part_id": part_id,
            "num_parts": num_parts,
            "status": "finished",
            "medseg_version": __version__,
            "model_sha256": model_sha256,
            "case_list_sha256": case_list_sha256(all_ids),
            "total_cases": len(all_ids),
            "cases": list(cases),
            "done": list(done),
            "failed": [{"case": c, "error": e} for c, e in failed],
            "notice": RESEARCH_USE_NOTICE,
        },
    )


def missing_parts(output: str | Path) -> tuple[int, list[int]]:
    """``(N, part ids without a finished record)`` of the run recorded in ``output``."""
    records = read_records(output)
    if not records:
        raise InputNotFoundError(
            f"{Path(output) / PARTS_DIR}: no part records (part_K_of_N.json); expected the "
            "output folder of `medseg predict --num-parts N --part-id K` jobs"
        )
    counts = sorted({n for _, n in records})
    if len(counts) > 1:
        raise ConfigError(
            f"{Path(output) / PARTS_DIR}: holds records of runs split into {counts} parts; "
            "keep only the records of one run (delete the others) and merge again"
        )
    n = counts[0]
    finished = {k for (k, _), r in records.items() if r.get("status") == "finished"}
    return n, [k for k in range(n) if k not in finished]


def merged_case_ids(output: str | Path) -> list[str]:
    """Every case of a finished parts run (the union of the parts' shares), after the same
    agreement checks as a starting part (one N, one model, one case list, all parts done)."""
    n, missing = missing_parts(output)
    if missing:
        raise InputNotFoundError(
            f"{Path(output) / PARTS_DIR}: part(s) {', '.join(map(str, missing))} of {n} have "
            "not finished (no record); run them (a rerun skips finished cases), then merge"
        )
    records = list(read_records(output).values())
    first = records[0]
    check_same_run(output, first.get("model_sha256"), first.get("case_list_sha256", ""))
    return sorted({c for r in records for c in r["cases"]})
