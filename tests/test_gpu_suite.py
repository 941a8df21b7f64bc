"""``benchmarks/gpu_suite.sh --quick`` runs every step of the GPU suite at toy sizes on the
CPU, so the one command a lent GPU machine runs cannot rot between GPU sessions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.long
def test_gpu_suite_quick_runs_every_step_and_writes_json_and_markdown(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--quick", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (report_path,) = tmp_path.glob("gpu_suite_*.json")
    report = json.loads(report_path.read_text())
    assert set(report["steps"]) == {"augmentation", "train_step", "time_to_dice", "inference"}
    assert all(step["rc"] == 0 for step in report["steps"].values())
    rates = report["steps"]["augmentation"]["figures"]["samples_per_s"]
    assert rates["batched-aug cpu"] > 0
    assert any(k.startswith("resident sampling+aug") for k in rates)
    ratios = report["steps"]["train_step"]["figures"]["pipeline_ratio"]
    assert {r["pipeline"].split()[0] for r in ratios} == {"workers", "resident"}
    assert all(r["ratio"] > 0 for r in ratios)
    ttd = report["steps"]["time_to_dice"]
    if report["shared_data"]:
        assert ttd["figures"]["medseg"]["curve"]
        assert ttd["figures"]["peer"]["curve"]
        assert (tmp_path / report_path.stem / "time_to_dice" / "time_to_dice.png").is_file()
    else:
        assert "skipped" in ttd["output_tail"]
    markdown = report_path.with_suffix(".md").read_text()
    assert "| train_step | 0 |" in markdown
    assert "research use only" in markdown.lower()
