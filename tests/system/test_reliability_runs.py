"""Interrupted, failing and concurrent evaluation runs: nothing computed is lost.

Real subprocesses (``python -m biqabench eval``) are stopped with SIGINT / SIGTERM and continued
with ``--resume``; the resumed result must equal an uninterrupted run's numerically.  Disk
failures are real OS errors where a test can cause them (a file-size limit, a file where a folder
should be) and injected ENOSPC / EROFS elsewhere; writes must be atomic (no ``*.tmp`` left) and the
error one line.  QPT pretraining has its own file: tests/system/test_reliability_pretrain.py.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from biqabench.base import io as bio
from conftest import invoke_cli
from biqabench.components.plugins import get_harness

TINY_RECIPE = {"patch_size": 32, "train_patches": 2, "test_patches": 2, "batch_size": 32, "epochs": 2,
               "lr_step": 0, "lr": 1e-3}
EVAL = {"head": "linear", "weights": "random", "backbone": "tiny", "splits": 2, "train": "demo-a", "test": [],
        "recipe_overrides": TINY_RECIPE}  # no cross-dataset test: half the scoring time
FAST = ["--device", "cpu", "--precision", "fp32", "--workers", "0", "--no-progress"]
NUMERIC = ["srcc", "krcc", "plcc", "plcc_logistic", "rmse_logistic"]
TIMEOUT = 600


def _default_sigint() -> None:
    """Children of a background shell job start with SIGINT ignored; a user's Ctrl-C is what we test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(args: list[str], env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "biqabench", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=kw.pop("preexec_fn", _default_sigint), **kw)


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = TIMEOUT, what: str = "") -> None:
    t0 = time.time()
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def last_line(text: str) -> str:
    lines = [ln for ln in (x.split("\r")[-1] for x in text.split("\n")) if ln.strip()]
    return lines[-1] if lines else ""


def numeric(run: Path, name: str = "metrics.csv") -> np.ndarray:
    return pd.read_csv(run / name)[NUMERIC].to_numpy(dtype=float)


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic writes: there must never be any after a run stops."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# -- three runs at once: one interrupted by SIGINT, one by SIGTERM, one left alone --------------------
@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("concurrent")
    results = base / "results"
    cfg = base / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(EVAL))
    env = dict(os.environ, BIQABENCH_RESULTS=str(results), OMP_NUM_THREADS="1")
    # argv differs (same values), so each run folder can be told apart by its manifest
    extra = {"sigint": ["--seed", "0"], "sigterm": ["--splits", "2"], "plain": []}
    procs = {k: spawn(["eval", "--config", cfg, *FAST, *x], env) for k, x in extra.items()}
    folders: dict[str, Path] = {}

    def find_folders() -> bool:
        for run in (results / "runs").glob("*") if (results / "runs").is_dir() else []:
            try:
                argv = json.loads((run / "manifest.json").read_text()).get("argv")
            except (OSError, ValueError):
                continue
            for k, x in extra.items():
                if argv and (argv[-len(x):] == x if x else argv[-1] == "--no-progress"):
                    folders[k] = run
        return len(folders) == 3

    wait_for(find_folders, what="three run folders")
    # SIGINT once A finished split 1; SIGTERM once B finished an epoch of split 2; one loop, so
    # neither waits for the other
    due = {"sigint": ("splits/0/metrics.csv", signal.SIGINT), "sigterm": ("splits/1/checkpoint.pt", signal.SIGTERM)}

    def signal_when_due() -> bool:
        for k, (marker, sig) in list(due.items()):
            if (folders[k] / marker).is_file():
                procs[k].send_signal(sig)
                del due[k]
            elif procs[k].poll() is not None:
                raise AssertionError(f"run {k} ended (rc {procs[k].returncode}) before {marker}: "
                                     f"{procs[k].stderr.read()}")
        return not due

    wait_for(signal_when_due, what="the moments to interrupt")
    outcome = {k: (p.wait(TIMEOUT), p.stdout.read(), p.stderr.read()) for k, p in procs.items()}
    state = {k: {"metrics0": (folders[k] / "splits/0/metrics.csv").is_file(),
                 "metrics1": (folders[k] / "splits/1/metrics.csv").is_file(),
                 "checkpoint1": (folders[k] / "splits/1/checkpoint.pt").is_file(),
                 "status": json.loads((folders[k] / "manifest.json").read_text())["status"],
                 "leftovers": leftovers(folders[k])} for k in procs}
    resumed = {k: spawn(["eval", "--resume", folders[k], "--no-progress"], env) for k in ("sigint", "sigterm")}
    resumed = {k: (p.wait(TIMEOUT), p.stdout.read(), p.stderr.read()) for k, p in resumed.items()}
    return types.SimpleNamespace(folders=folders, outcome=outcome, state=state, resumed=resumed, results=results,
                                 env=env)


def test_two_runs_started_at_once_never_share_a_folder(three_runs):
    folders = three_runs.folders
    assert len(set(folders.values())) == 3
    assert three_runs.outcome["plain"][0] == 0, three_runs.outcome["plain"][2]
    listing = subprocess.run([sys.executable, "-m", "biqabench", "results", "list", "--format", "csv"],
                             env=three_runs.env, capture_output=True, text=True, timeout=120)
    runs = pd.read_csv(pd.io.common.StringIO(listing.stdout))
    assert set(runs.id) == {f.name for f in folders.values()}
    assert (runs.status == "finished").all()  # the interrupted two were resumed


@pytest.mark.parametrize("kind", ["sigint", "sigterm"])
def test_signal_stops_eval_with_one_line_and_keeps_finished_work(three_runs, kind):
    rc, out, err = three_runs.outcome[kind]
    folder = three_runs.folders[kind]
    assert rc == 2, err
    assert "Traceback" not in err
    assert last_line(err) == (f"error: interrupted; finished splits are kept. Continue with: biqabench eval "
                              f"--resume {folder}")
    state = three_runs.state[kind]
    assert state["status"] == "interrupted" and state["metrics0"] and not state["metrics1"]
    assert state["leftovers"] == []
    if kind == "sigterm":  # stopped inside split 2: its last finished epoch is kept for --resume
        assert state["checkpoint1"]


@pytest.mark.parametrize("kind", ["sigint", "sigterm"])
def test_resume_reproduces_the_uninterrupted_result(three_runs, kind):
    rc, out, err = three_runs.resumed[kind]
    assert rc == 0, err
    run, reference = three_runs.folders[kind], three_runs.folders["plain"]
    np.testing.assert_allclose(numeric(run), numeric(reference), rtol=0, atol=1e-6)
    a, b = pd.read_csv(run / "predictions.csv"), pd.read_csv(reference / "predictions.csv")
    assert list(a.image) == list(b.image)
    np.testing.assert_allclose(a.pred, b.pred, rtol=0, atol=1e-6)
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
    assert not (run / "splits/1/checkpoint.pt").exists()


# -- disk full ------------------------------------------------------------------------------------
def cli(capsys, *args) -> tuple[int, str]:
    code, out, err = invoke_cli(capsys, *args)
    return code, err or out


def test_disk_full_mid_run_keeps_finished_splits_and_resumes(tmp_path, capsys, monkeypatch, request, three_runs):
    """ENOSPC when the merged metrics.csv is rewritten after split 2 -- the moment between a split's
    own file and the run's table.  The run stops in one line, nothing is half-written, both splits
    are kept, and --resume (with space again) rebuilds the tables without training: the
    uninterrupted result."""
    real_replace = os.replace
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(EVAL))
    run = tmp_path / "run"

    def full_disk(src, dst, *a, **kw):
        if Path(dst) == run / "metrics.csv" and (run / "splits/1/metrics.csv").is_file():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", full_disk)
    # the reference ran with one thread: the same here, so float sums are added in the same order
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    code, line = cli(capsys, "eval", "--config", cfg, "--run-dir", run, *FAST)
    assert code == 2
    assert line == f"error: cannot write {run / 'metrics.csv'}: No space left on device (nothing was half-written)"
    assert leftovers(run) == []
    assert (run / "splits/0/metrics.csv").is_file() and (run / "splits/1/metrics.csv").is_file()
    assert len(pd.read_csv(run / "metrics.csv")) == 1  # the merged table still holds split 1 only
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "No space left on device" in manifest["error"]
    splits = {k: (run / f"splits/{k}/metrics.csv").read_bytes() for k in (0, 1)}
    monkeypatch.setattr(os, "replace", real_replace)
    code, _ = cli(capsys, "eval", "--resume", run, "--no-progress")
    assert code == 0
    assert {k: (run / f"splits/{k}/metrics.csv").read_bytes() for k in (0, 1)} == splits  # kept, not redone
    assert not (run / "splits/1/checkpoint.pt").exists()
    assert json.loads((run / "manifest.json").read_text())["error"] is None
    # the reference ran in another process: float sums may differ in the last bits, so compare the
    # predictions and the rank/linear metrics (the logistic fit on near-random scores amplifies them)
    reference = three_runs.folders["plain"]
    a, b = pd.read_csv(run / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    assert len(a) == len(b) == 2
    np.testing.assert_allclose(a[["srcc", "krcc"]], b[["srcc", "krcc"]], rtol=0, atol=1e-5)
    # PLCC follows a 4-parameter logistic fit to scores that barely vary: 1e-5 apart in the
    # predictions moved it by 5e-5 on CI's machine, so it is held to the fit's own precision
    np.testing.assert_allclose(a.plcc, b.plcc, rtol=0, atol=1e-3)
    np.testing.assert_allclose(pd.read_csv(run / "predictions.csv").pred,
                               pd.read_csv(reference / "predictions.csv").pred, rtol=0, atol=1e-5)


def test_real_write_failure_from_the_os_is_one_line(tmp_path):
    """A file-size limit makes the kernel refuse the first big write (the epoch checkpoint) with
    EFBIG, exactly like a full disk refuses it with ENOSPC: torch.save's own error is not shown."""
    from biqabench_plugins.datasets.demo import build_demo

    build_demo("demo-a"), build_demo("demo-b")  # the cached demo sets are written outside the limit
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(EVAL))
    run = tmp_path / "run"
    limit = 64 * 1024

    def small_files() -> None:
        _default_sigint()
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = spawn(["eval", "--config", cfg, "--run-dir", run, *FAST], dict(os.environ), preexec_fn=small_files)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert last_line(err) == (f"error: cannot write {run / 'splits/0/checkpoint.pt'}: File too large "
                              "(nothing was half-written)")
    assert leftovers(run) == [] and not (run / "splits/0/checkpoint.pt").exists()
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"


def test_read_only_or_impossible_results_folder(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**EVAL, "splits": 1}))
    # results root below a regular file: mkdir fails even for root, where chmod would not stop writes
    monkeypatch.setenv("BIQABENCH_RESULTS", str(blocker / "results"))
    code, line = cli(capsys, "eval", "--config", cfg, *FAST)
    assert code == 2
    assert line == (f"error: cannot create the runs folder {blocker / 'results/runs'}: Not a directory; "
                    "choose a writable --root or set BIQABENCH_RESULTS")
    code, line = cli(capsys, "eval", "--config", cfg, "--run-dir", blocker / "run", *FAST)
    assert code == 2
    assert line == (f"error: cannot create run folder {blocker / 'run'}: Not a directory; "
                    "choose a writable location")
    # a read-only file system refuses the temporary file of every atomic write
    monkeypatch.setenv("BIQABENCH_RESULTS", str(tmp_path / "results"))

    def read_only(*a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code, line = cli(capsys, "eval", "--config", cfg, "--run-dir", tmp_path / "run", *FAST)
    assert code == 2
    assert line == (f"error: cannot write {tmp_path / 'run/config.yaml'}: Read-only file system; "
                    "choose a writable folder")
    assert leftovers(tmp_path) == []


def test_atomic_writes_leave_the_old_file_on_failure(tmp_path, monkeypatch):
    """The mechanism under every write: a failed write keeps the previous version intact."""
    target = tmp_path / "metrics.csv"
    bio.write_text(target, "old\n")
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(Exception, match="nothing was half-written"):
        bio.write_text(target, "new\n")
    with pytest.raises(Exception, match="nothing was half-written"):
        bio.save_safetensors({"w": torch.zeros(3)}, tmp_path / "w.safetensors")
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


# -- a diverging loss -----------------------------------------------------------------------------
class _NanAfterFirstEpoch:
    """A head plugin whose loss turns NaN once the model has been validated (end of epoch 1)."""

    @staticmethod
    def module() -> types.ModuleType:
        from biqabench.components.heads import HeadSpec, IQAHead, TrainRecipe
        from biqabench.components.hookspecs import hookimpl

        class Head(IQAHead):
            def __init__(self, backbone, recipe):
                super().__init__(backbone)
                self.fc = torch.nn.Linear(backbone.out_channels, 1)
                self.validated = False

            def forward(self, x):
                if not self.training:
                    self.validated = True
                return self.fc(self.backbone.pooled(x)).squeeze(1)

            def loss(self, x, mos):
                loss = super().loss(x, mos)
                return loss * float("nan") if self.validated else loss

        mod = types.ModuleType("nan_head_plugin")

        @hookimpl
        def register_heads(register):
            register(HeadSpec("nan-after-epoch-1", Head, TrainRecipe(patch_size=32)))

        mod.register_heads = register_heads
        return mod


@pytest.fixture
def nan_head():
    harness = get_harness()
    harness.register(_NanAfterFirstEpoch.module(), name="nan_head_plugin")
    yield "nan-after-epoch-1"
    harness.unregister("nan_head_plugin")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, nan_head):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**EVAL, "head": nan_head, "splits": 1}))
    run = tmp_path / "run"
    code, line = cli(capsys, "eval", "--config", cfg, "--run-dir", run, *FAST)
    ckpt = run / "splits/0/checkpoint.pt"
    assert code == 2
    assert line == (f"error: split 1/1: loss became nan at epoch 2, step 1; lower the learning rate (recipe lr=0.001) "
                    f"or use --precision fp32; the last good checkpoint (epoch 1) is kept at {ckpt}")
    state = bio.load_torch(ckpt)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["model"].values())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "loss became nan" in manifest["error"]
    assert leftovers(run) == []


def test_huge_learning_rate_diverges_with_a_message(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**EVAL, "splits": 1, "recipe_overrides": {**TINY_RECIPE, "lr": 1e30}}))
    code, line = cli(capsys, "eval", "--config", cfg, "--run-dir", tmp_path / "run", *FAST)
    assert code == 2
    assert line.startswith("error: split 1/1: loss became ") and "at epoch 1" in line
    assert line.endswith("lower the learning rate (recipe lr=1e+30) or use --precision fp32")  # no checkpoint yet
    # beyond float32 the optimiser could not apply it at all: refused before training
    cfg.write_text(yaml.safe_dump({**EVAL, "splits": 1, "recipe_overrides": {**TINY_RECIPE, "lr": 1e38}}))
    code, line = cli(capsys, "eval", "--config", cfg, "--run-dir", tmp_path / "run2", *FAST)
    assert code == 2 and "lr 1e+38 (x10 for the head) is beyond float32 range" in line
    assert not (tmp_path / "run2").exists()
