"""`biqabench pretrain qpt` under interruption and failure: a stopped run resumes to exactly the
uninterrupted losses and weights, and nothing trained is lost when a write fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from biqabench.base import io as bio
from conftest import invoke_cli

#: a QPT run small enough for a test: 4 images a step, 32 px crops, 16 px patches, a checkpoint every step
QPT_TINY = {"batch_size": 4, "crop_size": 32, "patch_size": 16, "embed_dim": 16, "queue_size": 16, "workers": 0,
            "checkpoint_every": 1, "optim": {"warmup_steps": 1}}
STEPS = 4
TIMEOUT = 600


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pretrain_args(cfg: Path, run_dir: Path, *extra) -> list[str]:
    return ["pretrain", "qpt", "--backbone", "tiny", "--steps", str(STEPS), "--config", str(cfg), "--device", "cpu",
            "--precision", "fp32", "--run-dir", str(run_dir), *map(str, extra)]


def spawn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "biqabench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def last_line(text: str) -> str:
    lines = [ln for ln in (x.split("\r")[-1] for x in text.split("\n")) if ln.strip()]
    return lines[-1] if lines else ""


def weights_of(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(json.loads((run_dir / "run.json").read_text())["weights"])


def losses_of(run_dir: Path) -> np.ndarray:
    return np.asarray(json.loads((run_dir / "losses.json").read_text())["losses"])


@pytest.fixture(scope="module")
def interrupted_pretraining(tmp_path_factory):
    base = tmp_path_factory.mktemp("qpt")
    cfg = base / "qpt_tiny.yaml"
    cfg.write_text(yaml.safe_dump(QPT_TINY))
    env = dict(os.environ, BIQABENCH_RESULTS=str(base / "results"), OMP_NUM_THREADS="1")
    runs = {k: base / k for k in ("plain", "sigint", "sigterm")}
    procs = {k: spawn(pretrain_args(cfg, d), env) for k, d in runs.items()}
    due = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}
    t0 = time.time()
    while due:  # signal each run as soon as its first step's checkpoint exists
        for kind, sig in list(due.items()):
            if (runs[kind] / "checkpoint.pt").is_file():
                procs[kind].send_signal(sig)
                del due[kind]
            else:
                assert procs[kind].poll() is None, procs[kind].stderr.read()
        assert time.time() - t0 < TIMEOUT
        time.sleep(0.05)
    outcome = {k: (p.wait(TIMEOUT), p.stdout.read(), p.stderr.read()) for k, p in procs.items()}
    steps_done = {k: int(bio.load_torch(runs[k] / "checkpoint.pt")["step"]) for k in runs}
    resumed = {k: spawn(pretrain_args(cfg, runs[k], "--resume"), env) for k in ("sigint", "sigterm")}
    resumed = {k: (p.wait(TIMEOUT), p.stdout.read(), p.stderr.read()) for k, p in resumed.items()}
    return types.SimpleNamespace(runs=runs, outcome=outcome, steps_done=steps_done, resumed=resumed)


@pytest.mark.parametrize("kind", ["sigint", "sigterm"])
def test_signal_stops_pretraining_after_the_step_with_a_checkpoint(interrupted_pretraining, kind):
    rc, out, err = interrupted_pretraining.outcome[kind]
    run = interrupted_pretraining.runs[kind]
    step = interrupted_pretraining.steps_done[kind]
    assert rc == 130, err
    assert "Traceback" not in err
    assert 1 <= step < STEPS
    assert (f"interrupted at step {step}/{STEPS}; checkpoint saved to {run / 'checkpoint.pt'}. "
            "Continue with the same command plus --resume") in out
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["sigint", "sigterm"])
def test_resumed_pretraining_equals_the_uninterrupted_run(interrupted_pretraining, kind):
    rc, out, err = interrupted_pretraining.resumed[kind]
    assert rc == 0, err
    plain, run = interrupted_pretraining.runs["plain"], interrupted_pretraining.runs[kind]
    assert interrupted_pretraining.outcome["plain"][0] == 0
    np.testing.assert_allclose(losses_of(run), losses_of(plain), rtol=0, atol=1e-6)
    assert len(losses_of(run)) == STEPS
    a, b = weights_of(run), weights_of(plain)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


# -- failures in-process (fast) ---------------------------------------------------------------------
def cli(capsys, *args) -> tuple[int, str, str]:
    return invoke_cli(capsys, *args, one_line=False)  # a progress bar may precede the error


@pytest.fixture
def qpt_cfg(tmp_path) -> Path:
    cfg = tmp_path / "qpt_tiny.yaml"
    cfg.write_text(yaml.safe_dump(QPT_TINY))
    return cfg


def test_unwritable_weights_store_loses_nothing(tmp_path, capsys, monkeypatch, qpt_cfg):
    """Training finishes, saving the weights fails in one line; the final checkpoint is kept and
    --resume (with a writable store) publishes the weights without training again."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BIQABENCH_WEIGHTS", str(blocker / "weights"))
    run = tmp_path / "run"
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, run, "--steps", "2"))
    assert code == 2
    assert line.startswith(f"error: cannot write {blocker / 'weights/qpt/tiny'}/")
    assert line.endswith(".safetensors: Not a directory; choose a writable folder")
    assert int(bio.load_torch(run / "checkpoint.pt")["step"]) == 2
    monkeypatch.setenv("BIQABENCH_WEIGHTS", str(tmp_path / "weights"))
    code, out, _ = cli(capsys, *pretrain_args(qpt_cfg, run, "--steps", "2", "--resume"))
    assert code == 0 and "saved qpt weights for tiny" in out
    assert len(json.loads((run / "losses.json").read_text())["losses"]) == 2  # no step was run again


def state_step(run: Path) -> int:
    return int(bio.load_torch(run / "checkpoint.pt")["step"])


def test_diverging_loss_stops_and_keeps_the_last_checkpoint(tmp_path, capsys, qpt_cfg):
    qpt_cfg.write_text(yaml.safe_dump({**QPT_TINY, "optim": {"lr": 1e30, "warmup_steps": 0}}))
    run = tmp_path / "run"
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, run))
    assert code == 2
    assert "QPT: loss became nan at step" in line and "lower optim.lr or use --precision fp32" in line
    assert f"the last good checkpoint (step {state_step(run)}) is kept at {run / 'checkpoint.pt'}" in line
    state = bio.load_torch(run / "checkpoint.pt")  # the last finished step's state is on disk
    assert state["step"] >= 1 and all(np.isfinite(state["losses"]))


def test_resume_mistakes(tmp_path, capsys, qpt_cfg):
    run = tmp_path / "run"
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, run, "--resume"))
    assert code == 2 and f"--resume: no checkpoint at {run / 'checkpoint.pt'}" in line
    code, _, _ = cli(capsys, *pretrain_args(qpt_cfg, run, "--steps", "1"))
    assert code == 0
    qpt_cfg.write_text(yaml.safe_dump({**QPT_TINY, "patch_size": 8}))
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, run, "--resume"))
    assert code == 2 and "was made with other settings (patch_size: 16 vs 8)" in line
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:1000])
    qpt_cfg.write_text(yaml.safe_dump(QPT_TINY))
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, run, "--resume"))
    assert code == 2 and line.startswith(f"error: --resume: no usable checkpoint: {run / 'checkpoint.pt'} is damaged (")
    assert line.endswith("; drop --resume to start over")


def test_unusable_data_folders(tmp_path, capsys, qpt_cfg):
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, tmp_path / "r1", "--data", tmp_path / "absent"))
    assert code == 2 and "not a folder; give a folder of images" in line
    (tmp_path / "empty").mkdir()
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, tmp_path / "r2", "--data", tmp_path / "empty"))
    assert code == 2 and "no images found" in line
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.png").write_text("not an image")
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, tmp_path / "r3", "--data", bad))
    assert code == 2 and "10 unreadable images in a row" in line and "check the --data folder" in line
