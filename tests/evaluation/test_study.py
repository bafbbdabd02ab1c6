"""``biqabench study``: a tiny study (tiny backbone, two strategies, two seeds, snapshots, the probe)
killed with SIGKILL twice, once while it pretrains and once while it evaluates, then re-run,
gives the same tables as an uninterrupted run with ``--jobs 2``; plus the checks of a study YAML."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from biqabench.base.errors import BiqaError
from conftest import invoke_cli, photo_folder

TINY = {
    "name": "tiny", "backbone": "tiny", "seeds": [0, 1], "steps": 10, "snapshots": [0, 4],
    "pretraining": {"batch_size": 4, "crop_size": 32, "patch_size": 16, "workers": 0, "checkpoint_every": 2},
    "pretrainers": {"qpt": {"options": {"queue_size": 16, "embed_dim": 8, "negative_degradations": 1}},
                    "random": {}},
    "baseline": "random", "protocols": {"probe": {"size": 64, "folds": 3}}, "splits": 3,
    "device": "cpu", "precision": "fp32",
}


def _write(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({**TINY, "photos": str(photo_folder(folder / "photos", n=8)), **changes}))
    return path


def _study(path: Path, results: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "biqabench", "study", str(path), "--results", str(results),
                             "--no-progress", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the study ended before {what}: {proc.communicate()[1][-400:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_killed_study_resumes_to_the_tables_of_an_uninterrupted_one(tmp_path):
    path = _write(tmp_path)
    whole = _study(path, tmp_path / "whole", "--jobs", "2")
    out, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err[-800:]

    killed = tmp_path / "killed" / "tiny"
    proc = _study(path, tmp_path / "killed")
    _kill_when(proc, lambda: (killed / "pretrain" / "qpt-seed0" / "checkpoint.pt").is_file(), "its first checkpoint")
    assert not (killed / "pretrain" / "qpt-seed0" / "run.json").is_file()
    proc = _study(path, tmp_path / "killed")
    _kill_when(proc, lambda: any((killed / "probe").glob("*/manifest.json")) if (killed / "probe").is_dir() else False,
               "its first evaluation")
    proc = _study(path, tmp_path / "killed")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-800:]
    assert "of 4 cells finished" in out and "to run" in out  # it skipped what was done

    for name in ("long.csv", "table.csv", "steps.csv"):
        a, b = (pd.read_csv(root / "tiny" / name) for root in (tmp_path / "whole", tmp_path / "killed"))
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-9, obj=name)
    long = pd.read_csv(tmp_path / "whole" / "tiny" / "long.csv")
    assert set(long["strategy"]) == {"qpt", "random"} and set(long["seed"]) == {0, 1}
    assert sorted(set(long["step"])) == [0, 4, 10] and set(long["split"]) == {0, 1, 2}
    table = pd.read_csv(tmp_path / "whole" / "tiny" / "table.csv")
    qpt = table[(table.strategy == "qpt") & (table.test_set == "demo-a")].iloc[0]
    assert qpt["step"] == 10 and qpt["seeds"] == 2 and qpt["pairs"] == 6 and qpt["seeds_up"] in ("0/2", "1/2", "2/2")
    assert (tmp_path / "whole" / "tiny" / "study.png").stat().st_size > 10_000
    cells = json.loads((tmp_path / "whole" / "tiny" / "study.json").read_text())["cells"]
    assert len(cells) == 4 + 2 * 3 + 2 and all(c["status"] == "finished" for c in cells)


def test_snapshots_of_a_study_are_the_runs_own_and_cells_compare(tmp_path, capsys):
    path = _write(tmp_path, seeds=[3], steps=4, snapshots=[0, 2],
                  pretrainers={**TINY["pretrainers"], "moco": {"options": {"queue_size": 16, "embed_dim": 8}}})
    code, out, err = invoke_cli(capsys, "study", path, "--results", tmp_path / "res", "--no-progress")
    assert code == 0, err
    root = tmp_path / "res" / "tiny"
    run = json.loads((root / "pretrain" / "qpt-seed3" / "run.json").read_text())
    assert run["seed"] == 3 and run["steps"] == 4 and sorted(run["snapshots"]) == ["0", "2", "4"]
    probe = yaml.safe_load((root / "probe" / "qpt-seed3-step2" / "config.yaml").read_text())
    assert probe["weights"].endswith("qpt-seed3/snapshots/step000002.safetensors") and probe["seed"] == 0
    # `random` with a seed is the backbone every strategy starts from with that seed: exact pairs
    start = load_file(str(root / "pretrain" / "random-seed3" / "snapshots" / "step000000.safetensors"))
    for name in ("qpt", "moco"):
        other = load_file(str(root / "pretrain" / f"{name}-seed3" / "snapshots" / "step000000.safetensors"))
        assert other.keys() == start.keys() and all(torch.equal(other[k], start[k]) for k in start), name
    code, out, err = invoke_cli(capsys, "results", "compare", root / "probe" / "random-seed3-step0",
                                root / "probe" / "qpt-seed3-step4")
    assert code == 0 and "demo-a" in out, err
    code, out, err = invoke_cli(capsys, "study", path, "--results", tmp_path / "res", "--dry-run")
    assert code == 0 and "10 cells (3 pretraining, 7 evaluation), 0 to run" in out
    # another baseline re-tables the finished study: nothing runs again, every diff is against moco
    before = {p: p.stat().st_mtime_ns for p in (root / "probe").glob("*/metrics.csv")}
    code, out, err = invoke_cli(capsys, "study", path, "--results", tmp_path / "res", "--no-progress",
                                "--baseline", "moco")
    assert code == 0 and "diff vs moco" in out, err
    table = pd.read_csv(root / "table.csv")
    assert set(table["baseline"]) == {"moco"} and table.loc[table.strategy == "moco", "diff"].isna().all()
    assert table.loc[table.strategy != "moco", "diff"].notna().all()
    assert {p: p.stat().st_mtime_ns for p in (root / "probe").glob("*/metrics.csv")} == before
    code, out, err = invoke_cli(capsys, "study", path, "--baseline", "bnstats", "--dry-run")
    assert code == 2 and "--baseline 'bnstats': not among the strategies" in err and "(moco, qpt, random)" in err, err


@pytest.mark.parametrize("change, message", [
    ({"baselin": "random"}, "unknown key 'baselin'; did you mean 'baseline'"),
    ({"baseline": "moco"}, "baseline 'moco' is not among the pretrainers (qpt, random)"),
    ({"protocols": {"probe": {"splits": 5}}}, "protocols.probe: 'splits' is the study's to set"),
    ({"protocols": {"probe": {"sise": 64}}}, "sise"),
    ({"pretrainers": {"qpt": {"options": {"queue_sise": 8}}, "random": {}}}, "queue_sise"),
    ({"pretrainers": {"qpd": {}, "random": {}}}, "qpd"),
    ({"seeds": [1, 1]}, "'seeds' must list distinct pretraining seeds"),
])
def test_a_bad_study_stops_in_one_line_naming_the_file(tmp_path, capsys, change, message):
    path = _write(tmp_path, **change)
    code, out, err = invoke_cli(capsys, "study", path, "--dry-run")
    assert code == 2 and message in err and str(path) in err, err


def test_the_bundled_study_configs_load():
    from biqabench.evaluation.study_config import load_study

    repo = Path(__file__).resolve().parents[2]
    for name in ("study_cpu.yaml", "study_paper.yaml"):
        study = load_study(repo / "configs" / name)
        assert {s.name for s in study.pretrainers} >= {"qpt", "moco", "arniqa", "bnstats", "random"}
        assert len(study.seeds) >= 3 and study.protocols
