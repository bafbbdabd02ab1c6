"""benchmarks/gpu_check.sh checks its own plumbing on CPU (--dry-run): it runs the CUDA tests
(skipped here), every measurement at toy sizes, and prints one table with every row."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_prints_one_table_with_every_row(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OUT=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    import sys

    env["PYTHON"] = sys.executable
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    assert "DRY RUN" in out and out.count("| check") == 1
    for row in ("cuda tests (pytest -m cuda)", "QPT pretraining", "QPT data wait", "QPT peak GPU memory",
                "HyperIQA fine-tuning", "scoring, hyperiqa r50", "achieved TFLOP/s"):
        assert row in out, row
    assert "error" not in [line.split("|")[4].strip() for line in out.splitlines() if line.count("|") >= 6]
    assert "skipped" in out  # the CUDA tests skip on CPU, and say so
    assert (tmp_path / "gpu_check.md").read_text() == out
