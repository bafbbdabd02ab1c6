"""Paired comparison of runs (biqabench.evaluation.compare): pairing by split, `results compare`, the
benchmark's gain table, and `make demo`'s last step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from biqabench import results as R
from biqabench.cli import app
from biqabench.evaluation.compare import compare_paired, paired_gain, splits_difference
from biqabench.data import IQATable, make_splits
from biqabench.data.splitfiles import write_split_files
from biqabench.base.errors import BiqaError


# -- results compare on generated run folders ---------------------------------------------------
def _table(n=60) -> IQATable:
    names = [f"img{i:03d}.jpg" for i in range(n)]
    return IQATable("clive", None, [Path("/x") / s for s in names], names, np.linspace(0, 100, n), (0, 100))


def _fake_run(root: Path, name: str, srcc: list[float], weights="random", seed0=0, backbone="resnet18") -> Path:
    table = _table()
    run = root / name
    run.mkdir(parents=True)
    splits = make_splits(table, n=len(srcc), seed=seed0, val_frac=0.1)
    R.RunFolder(run).write_manifest(kind="eval", head="linear", weights=weights, backbone=backbone, train="clive",
                     seeds=[s.seed for s in splits], status="finished",
                     split_files=write_split_files(run, table, splits))
    for k, v in enumerate(srcc):
        R.RunFolder(run).write_metrics(pd.DataFrame([{"split": k, "train_set": "clive", "test_set": "clive", "srcc": v,
                                            "krcc": v, "plcc": v, "plcc_logistic": v, "rmse_logistic": 1.0,
                                            "mapping": "logistic", "n": 12}]), split=k)
    return run


def test_compare_pairs_by_seed_and_reports_delta_ci_p(tmp_path):
    a = _fake_run(tmp_path, "a", [0.60, 0.62, 0.58, 0.65, 0.61])
    b = _fake_run(tmp_path, "b", [0.63, 0.66, 0.60, 0.69, 0.64], weights="imagenet")
    summary, per_split = compare_paired([a, b])
    row = summary[summary.metric == "srcc"].iloc[0]
    assert row["delta (median)"] == pytest.approx(0.03)
    assert row["Wilcoxon p"] == pytest.approx(0.0625)  # 5 positive deltas: the smallest p five splits allow
    assert "linear/random/resnet18" in summary.columns and "linear/imagenet/resnet18" in summary.columns
    deltas = per_split[per_split.metric == "srcc"].iloc[0]
    assert [deltas[f"seed {s}"] for s in range(5)] == pytest.approx([0.03, 0.04, 0.02, 0.04, 0.03])


def test_compare_refuses_runs_on_other_splits_in_one_line(tmp_path):
    a = _fake_run(tmp_path, "a", [0.6, 0.62, 0.58])
    c = _fake_run(tmp_path, "c", [0.6, 0.62, 0.58], seed0=10)
    with pytest.raises(BiqaError, match="split seeds differ") as err:
        compare_paired([a, c])
    assert "\n" not in str(err.value) and "--splits-from" in str(err.value)
    d = _fake_run(tmp_path, "d", [0.6, 0.62, 0.58])
    (d / "splits" / "split_1.csv").write_text((a / "splits" / "split_2.csv").read_text())  # same seeds, other split
    assert splits_difference(R.load_run(a), R.load_run(d)).startswith("split 1 (seed 1) differs")
    import shutil

    shutil.rmtree(d / "splits")  # a run from before split files: its splits cannot be checked
    assert "recorded no split files" in splits_difference(R.load_run(a), R.load_run(d))


def test_results_compare_cli_prints_the_paired_table(tmp_path, capsys):
    from conftest import invoke_cli

    a = _fake_run(tmp_path, "a", [0.60, 0.62, 0.58, 0.65, 0.61])
    b = _fake_run(tmp_path, "b", [0.63, 0.66, 0.60, 0.69, 0.64], weights="imagenet")
    out = CliRunner().invoke(app, ["results", "compare", str(a), str(b)])
    assert out.exit_code == 0, out.output
    for text in ("Wilcoxon p", "95% CI", "seed 4", "linear/imagenet/resnet18"):
        assert text in out.output
    c = _fake_run(tmp_path, "c", [0.6, 0.62, 0.58, 0.6, 0.6], seed0=3)
    code, _, line = invoke_cli(capsys, "results", "compare", a, c)
    assert code != 0 and "cannot pair" in line and "seeds differ" in line


def test_benchmark_gain_carries_the_paired_test():
    rows = []
    for w, shift in (("random", 0.0), ("qpt", 0.05)):
        for k in range(6):
            rows.append({"head": "linear", "weights": w, "train_set": "clive", "test_set": "clive", "split": k,
                         "srcc": 0.5 + 0.01 * k + shift + (0.01 if k % 2 and w == "qpt" else 0.0)})
    table = paired_gain(pd.DataFrame(rows), baseline="random")
    row = table.iloc[0]
    assert row["weights"] == "qpt vs random" and row["median delta SRCC"] == pytest.approx(0.055)
    assert row["Wilcoxon p"] == pytest.approx(sps.wilcoxon([0.05, 0.06] * 3).pvalue) and row["splits"] == 6


def test_make_demo_compares_the_newest_runs_and_ends_with_their_report(tmp_path, monkeypatch):
    """``make demo``'s last step, as make expands it, on real eval runs (the tiny linear head for
    speed): it pairs the newest run of each weights and prints the paired table, then writes the two
    runs' HTML report and prints its path."""
    import os
    import shutil
    import subprocess
    import sys
    import time

    from conftest import REPO, TINY_RECIPE
    from biqabench.base import io
    from biqabench.components.backbones import create_backbone
    from biqabench.evaluation.runner import evaluate

    if shutil.which("make") is None:
        pytest.skip("no make")
    results = tmp_path / "results"
    monkeypatch.setenv("BIQABENCH_RESULTS", str(results))
    other, null = tmp_path / "other.safetensors", tmp_path / "bnstats.safetensors"  # stand-ins for qpt, bnstats
    io.save_safetensors(create_backbone("tiny").state_dict(), other)
    io.save_safetensors(create_backbone("tiny").state_dict(), null)
    for weights in ("random", "random", str(other), str(null)):  # random twice: the newer one is compared
        evaluate(head="linear", weights=weights, backbone="tiny", splits=2, recipe="cpu", device="cpu",
                 precision="fp32", workers=0, recipe_overrides={**TINY_RECIPE, "lr": 1e-3}, progress=False)
        time.sleep(1.1)  # run ids start with their second
    older = sorted(p.name for p in (results / "runs").iterdir())[0]
    plan = subprocess.run(["make", "-n", "-s", "demo", "-C", str(REPO)], capture_output=True, text=True,
                          env={**os.environ, "BIQABENCH_RESULTS": str(results)}).stdout.strip().splitlines()
    compare, report = (step.replace(".venv/bin/biqabench", f"{sys.executable} -m biqabench")
                       .replace("hyperiqa-random-resnet50", "linear-random-tiny")
                       .replace("hyperiqa-qpt-resnet50", "linear-other-tiny")
                       .replace("hyperiqa-bnstats-resnet50", "linear-bnstats-tiny") for step in plan[-2:])
    assert " results compare " in compare and " report " in report, plan
    out = subprocess.run(["bash", "-c", compare], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Wilcoxon p" in out.stdout and "seed 1" in out.stdout and "linear/other/tiny" in out.stdout
    assert "bnstats" in out.stdout  # the baseline: the first run named
    assert older not in out.stdout
    out = subprocess.run(["bash", "-c", report], capture_output=True, text=True, cwd=tmp_path)  # the last word:
    path = Path(out.stdout.strip().splitlines()[-1])  # the comparison report's path
    assert out.returncode == 0 and path.is_file() and path.parent == results / "reports", out.stderr
