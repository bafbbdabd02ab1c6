"""Faults without loss, proven by injecting them (issue 16): SIGKILL anywhere (also inside a
checkpoint write), damaged checkpoints, a full disk, two jobs at once, a damaged decoded-image
cache, diverging losses and hostile files.

Each case has one test here (the full SIGKILL test is ``slow``; a one-kill variant runs by
default).  Faults are injected with ``BIQABENCH_FAULT`` (``biqabench.training.checkpoint``) where they must
happen inside another process, and with monkeypatch in-process.  Interruption by SIGINT/SIGTERM
is covered in ``system/test_reliability_runs.py`` / ``system/test_reliability_pretrain.py``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from biqabench.training import checkpoint as ckpt
from biqabench.base.errors import BiqaError
from conftest import invoke_cli
from test_reliability_pretrain import QPT_TINY, pretrain_args
from test_reliability_runs import EVAL, FAST, NUMERIC

TIMEOUT = 600


def cli(capsys, *args) -> tuple[int, str, str]:
    return invoke_cli(capsys, *args, one_line=False)  # a progress bar or a log line may precede the error


def spawn(args: list, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "biqabench", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc: subprocess.Popen, what: str) -> None:
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        assert time.time() - t0 < TIMEOUT, f"timed out waiting for {what}"
        time.sleep(0.02)


def in_write(folder: Path) -> bool:
    """A checkpoint write is under way: its temporary file exists."""
    return any(folder.rglob(".checkpoint.pt.*.tmp"))


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(TIMEOUT) == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()


def weights_of(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(json.loads((run_dir / "run.json").read_text())["weights"])


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
    la, lb = (json.loads((r / "losses.json").read_text())["losses"] for r in (a, b))
    np.testing.assert_allclose(la, lb, rtol=0, atol=1e-6)


@pytest.fixture
def qpt_cfg(tmp_path) -> Path:
    cfg = tmp_path / "qpt_tiny.yaml"
    cfg.write_text(yaml.safe_dump(QPT_TINY))
    return cfg


@pytest.fixture
def child_env(tmp_path) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


# -- 1. SIGKILL anywhere ----------------------------------------------------------------------------
def test_sigkill_inside_a_checkpoint_write_then_resume_gives_the_same_weights(tmp_path, capsys, qpt_cfg,
                                                                              child_env):
    """One kill (the default suite's variant): SIGKILL while step 2's checkpoint is half-written.
    The step-1 checkpoint stays whole and verified, and --resume ends with the uninterrupted
    run's weights and losses."""
    plain, run = tmp_path / "plain", tmp_path / "killed"
    assert cli(capsys, *pretrain_args(qpt_cfg, plain))[0] == 0
    proc = spawn(pretrain_args(qpt_cfg, run, "--no-progress"), {**child_env, "BIQABENCH_FAULT": "slow-checkpoint:5"})
    wait_for(lambda: (run / "checkpoint.pt").is_file() and in_write(run), proc, "the second checkpoint write")
    kill(proc)
    assert in_write(run)  # the kill landed inside the write: its temporary file is left behind
    assert ckpt.read_trailer(run / "checkpoint.pt") is not None  # the previous checkpoint is whole (verified)
    code, out, err = cli(capsys, *pretrain_args(qpt_cfg, run, "--resume"))
    assert code == 0, err
    assert not in_write(run)  # the interrupted write's leftover was removed
    assert_same_weights(run, plain)


def _kill_and_resume(args: list, resume_args: list, folder: Path, env: dict, ready, kills: list) -> None:
    """Start ``args``; for each planned kill (a delay in seconds, or "write": inside a checkpoint
    write) wait until ``ready()``, kill, and start ``resume_args``; finally let it finish."""
    proc = spawn(args, env)
    for when in kills:
        left = set(folder.rglob(".checkpoint.pt.*.tmp"))  # an earlier kill's leftovers do not count
        wait_for(ready, proc, "the run to have something to resume")
        if when == "write":
            wait_for(lambda: set(folder.rglob(".checkpoint.pt.*.tmp")) - left, proc, "a checkpoint write")
        else:
            t0 = time.time()
            while time.time() - t0 < when and proc.poll() is None:
                time.sleep(0.02)
        if proc.poll() is None:
            kill(proc)
        else:  # finished before the moment came: nothing left to interrupt
            assert proc.wait() == 0, proc.stderr.read()
            return
        proc = spawn(resume_args, env)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_to_the_uninterrupted_result(tmp_path, qpt_cfg, child_env):
    """The full case: `pretrain qpt` and `eval` are each SIGKILLed three times (two random moments
    and once inside a checkpoint write), resumed after each kill, and end exactly where an
    uninterrupted run ends (same weights for the same seed; same metrics and predictions)."""
    rng = random.Random(int(os.environ.get("BIQABENCH_KILL_SEED", "16")))
    slow_writes = {**child_env, "BIQABENCH_FAULT": "slow-checkpoint:1.5"}
    steps = ["--steps", "6"]
    # pretraining
    plain, run = tmp_path / "qpt-plain", tmp_path / "qpt-killed"
    ref = spawn(pretrain_args(qpt_cfg, plain, *steps, "--no-progress"), child_env)
    kills = [rng.uniform(0, 4), "write", rng.uniform(0, 4)]
    _kill_and_resume(pretrain_args(qpt_cfg, run, *steps, "--no-progress"),
                     pretrain_args(qpt_cfg, run, *steps, "--no-progress", "--resume"), run, slow_writes,
                     lambda: ckpt.exists(run / "checkpoint.pt"), kills)
    assert ref.wait(TIMEOUT) == 0
    assert_same_weights(run, plain)
    # evaluation (2 splits x 2 epochs: 4 checkpoint writes per run)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(EVAL))
    plain, run = tmp_path / "eval-plain", tmp_path / "eval-killed"
    ref = spawn(["eval", "--config", cfg, "--run-dir", plain, *FAST], child_env)
    kills = [rng.uniform(0, 10), "write", rng.uniform(0, 10)]
    _kill_and_resume(["eval", "--config", cfg, "--run-dir", run, *FAST], ["eval", "--resume", run, "--no-progress"],
                     run, slow_writes, lambda: (run / "config.yaml").is_file(), kills)
    assert ref.wait(TIMEOUT) == 0
    np.testing.assert_allclose(pd.read_csv(run / "metrics.csv")[NUMERIC], pd.read_csv(plain / "metrics.csv")[NUMERIC],
                               rtol=0, atol=1e-6)
    a, b = pd.read_csv(run / "predictions.csv"), pd.read_csv(plain / "predictions.csv")
    assert list(a.image) == list(b.image)
    np.testing.assert_allclose(a.pred, b.pred, rtol=0, atol=1e-6)


# -- 2. corrupt or truncated checkpoints ------------------------------------------------------------
def _two_checkpoints(folder: Path) -> Path:
    path = folder / "checkpoint.pt"
    for step in (1, 2):
        ckpt.save(path, {"step": step, "w": torch.full((64, 64), float(step))}, {"seed": 0})
    return path


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "append"])
def test_damaged_checkpoint_is_named_in_one_line_and_the_previous_one_used(tmp_path, caplog, damage):
    path = _two_checkpoints(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF  # inside the tensor bytes: torch.load alone would not notice
    elif damage == "empty":
        data = bytearray()
    else:
        data += b"junk"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="biqabench.training.checkpoint"):
        loaded = ckpt.load(path, expect={"seed": 0})
    assert loaded.state["step"] == 1 and loaded.fallback and loaded.path == ckpt.previous_path(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "damaged" in warnings[0], warnings
    assert f"continuing from the previous one, {ckpt.previous_path(path)}" in warnings[0]
    # both damaged: one line naming both, nothing loaded
    ckpt.previous_path(path).write_bytes(ckpt.previous_path(path).read_bytes()[:100])
    with pytest.raises(BiqaError) as err:
        ckpt.load(path)
    assert str(path) in str(err.value) and str(ckpt.previous_path(path)) in str(err.value)
    assert "\n" not in str(err.value) and "drop --resume to start over" in str(err.value)


def test_checkpoint_keeps_two_checks_settings_and_stays_a_plain_torch_file(tmp_path):
    path = _two_checkpoints(tmp_path)
    assert torch.load(path, weights_only=True)["step"] == 2  # the trailer does not disturb torch.load
    assert ckpt.load(ckpt.previous_path(path)).state["step"] == 1
    assert ckpt.read_trailer(path)["meta"] == {"seed": 0}
    with pytest.raises(BiqaError, match=r"was made with other settings \(seed: 0 vs 1\)"):
        ckpt.load(path, expect={"seed": 1})
    ckpt.save(path, {"step": 3}, {"recipe": {"lr": 0.001, "epochs": 2}, "seed": 0})
    with pytest.raises(BiqaError) as err:
        ckpt.load(path, expect={"recipe": {"lr": 0.01, "epochs": 2}, "seed": 0}, what="resuming split 1/2")
    assert str(err.value) == (f"resuming split 1/2: checkpoint {path} was made with other settings "
                              "(recipe.lr: 0.001 vs 0.01); rerun with the same options, or drop --resume to start over")
    ckpt.remove(path)
    assert not ckpt.exists(path)


def test_pretrain_resume_from_a_truncated_checkpoint_uses_the_previous_one(tmp_path, capsys, caplog, qpt_cfg):
    plain, run = tmp_path / "plain", tmp_path / "run"
    assert cli(capsys, *pretrain_args(qpt_cfg, plain, "--steps", "3"))[0] == 0
    assert cli(capsys, *pretrain_args(qpt_cfg, run, "--steps", "3"))[0] == 0
    latest = run / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:5000])  # e.g. a disk that lost the end of the file
    with caplog.at_level(logging.WARNING):
        code, out, err = cli(capsys, *pretrain_args(qpt_cfg, run, "--steps", "3", "--resume"))
    assert code == 0, err
    lines = [r.getMessage() for r in caplog.records if r.name == "biqabench.training.checkpoint"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"checkpoint {latest} is damaged (") and "truncated or not a torch file?" in lines[0]
    assert lines[0].endswith(f"; continuing from the previous one, {ckpt.previous_path(latest)}")
    assert_same_weights(run, plain)  # step 3 was trained again from the step-2 checkpoint


def test_eval_resume_from_a_damaged_epoch_checkpoint_uses_the_previous_epoch(tmp_path, monkeypatch):
    """The fine-tuning loop: stop in epoch 3 of 3, damage epoch 2's checkpoint; --resume continues
    from epoch 1's and reproduces the uninterrupted run."""
    from biqabench.evaluation import runner as runner_mod
    from biqabench.evaluation.runner import evaluate, load_eval_config

    cfg = load_eval_config(None, **{**EVAL, "splits": 1, "recipe_overrides": {**EVAL["recipe_overrides"],
                                                                              "epochs": 3}},
                           device="cpu", precision="fp32", workers=0)
    reference = evaluate(cfg, run_dir=tmp_path / "plain", progress=False)
    real, calls = runner_mod.train_head, {"n": 0}

    def stop_in_epoch_3(*args, **kw):
        def stop() -> bool:
            calls["n"] += 1
            return ckpt.exists(tmp_path / "run/splits/0/checkpoint.pt") and \
                ckpt.load(tmp_path / "run/splits/0/checkpoint.pt").state["epoch"] == 1
        return real(*args, **{**kw, "stop_flag": stop})

    monkeypatch.setattr(runner_mod, "train_head", stop_in_epoch_3)
    with pytest.raises(BiqaError, match="--resume"):
        evaluate(cfg, run_dir=tmp_path / "run", progress=False)
    monkeypatch.setattr(runner_mod, "train_head", real)
    latest = tmp_path / "run/splits/0/checkpoint.pt"
    assert ckpt.load(latest).state["epoch"] == 1 and ckpt.load(ckpt.previous_path(latest)).state["epoch"] == 0
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    latest.write_bytes(bytes(data))
    evaluate(resume=tmp_path / "run", progress=False)
    a, b = (pd.read_csv(r / "metrics.csv")[NUMERIC].to_numpy() for r in (tmp_path / "run", reference))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert not ckpt.exists(latest)  # a finished split keeps neither checkpoint


# -- 3. disk full -----------------------------------------------------------------------------------
def test_disk_full_during_a_checkpoint_stops_in_one_line_and_resume_works(tmp_path, capsys, monkeypatch, qpt_cfg):
    """ENOSPC on the second checkpoint write (injected inside torch.save's stream): one line, no
    temporary file, the first checkpoint and the run folder still readable; with space again
    --resume ends with the uninterrupted run's weights."""
    plain, run = tmp_path / "plain", tmp_path / "run"
    assert cli(capsys, *pretrain_args(qpt_cfg, plain))[0] == 0
    monkeypatch.setattr(ckpt, "_writes", 0)
    monkeypatch.setenv("BIQABENCH_FAULT", "enospc-checkpoint:2")
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, run))
    assert code == 2
    assert line == f"error: cannot write {run / 'checkpoint.pt'}: No space left on device (nothing was half-written)"
    assert not in_write(run) and not {p.name for p in run.iterdir()} - {".lock", "checkpoint.pt", "recipes.jsonl"}
    assert ckpt.load(run / "checkpoint.pt").state["step"] == 1
    monkeypatch.delenv("BIQABENCH_FAULT")
    code, _, err = cli(capsys, *pretrain_args(qpt_cfg, run, "--resume"))
    assert code == 0, err
    assert_same_weights(run, plain)


# -- 4. two jobs at once ----------------------------------------------------------------------------
def test_two_pretrain_runs_saving_into_one_store_never_clobber(tmp_path, monkeypatch):
    """Two runs saving in the same microsecond (frozen clock) get two files and two manifests; a
    reader listing the store meanwhile never sees a record whose file is incomplete."""
    import datetime as dt

    from biqabench.components import weights as weights_mod
    from biqabench.components.weights import WeightsStore

    frozen = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return frozen

    monkeypatch.setattr(weights_mod._dt, "datetime", Clock)
    store = WeightsStore(tmp_path / "weights")
    states = [{"w": torch.full((256, 256), float(k))} for k in range(2)]
    seen_bad: list[str] = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            for rec in store.records("qpt", "tiny"):
                from biqabench.base.io import sha256_file
                if sha256_file(rec.file) != rec.sha256:
                    seen_bad.append(str(rec.file))

    watcher = threading.Thread(target=reader)
    watcher.start()
    barrier = threading.Barrier(2)
    records = []

    def writer(k):
        barrier.wait()
        for _ in range(5):
            records.append(store.save(states[k], producer="qpt", backbone="tiny", extra={"writer": k}))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not seen_bad
    listed = store.records("qpt", "tiny")
    assert len(listed) == 10 and len({r.file for r in listed}) == 10
    for rec in listed:  # every manifest describes its own file, not the other writer's
        assert float(load_file(str(rec.file))["w"][0, 0]) == rec.extra["writer"]


def test_a_second_pretraining_in_the_same_run_folder_stops_in_one_line(tmp_path, capsys, qpt_cfg):
    """Two `pretrain qpt --backbone tiny` without --run-dir share the default folder; the second
    must not interleave its checkpoints with the first's."""
    run = tmp_path / "run"
    with ckpt.exclusive(run, "pretraining run folder"):  # the first run, still training
        code, _, line = cli(capsys, *pretrain_args(qpt_cfg, run))
    assert code == 2
    assert line == (f"error: pretraining run folder {run} is in use by another run (pid {os.getpid()}); wait for it "
                    "to finish, or give this run its own --run-dir")
    assert not (run / "checkpoint.pt").exists()
    assert cli(capsys, *pretrain_args(qpt_cfg, run, "--steps", "1"))[0] == 0  # free again once the first ends


def _warm(folder: str, paths: list[str], out) -> None:
    from biqabench.data import ImageCache

    cache = ImageCache(folder=folder, memory_bytes=0)
    for _ in range(3):
        for p in paths:
            cache.get_array(p)
    out.put(cache.decodes)


def test_two_processes_share_one_decoded_image_cache(tmp_path):
    """What `benchmark --jobs 2` does with a disk cache: two processes fill and read one folder at
    the same time; every entry is whole and a third reader decodes nothing."""
    from biqabench.data import ImageCache

    paths = []
    for k in range(40):
        arr = np.random.default_rng(k).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"{k}.png")
        paths.append(str(tmp_path / f"{k}.png"))
    folder = str(tmp_path / "decoded")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_warm, args=(folder, paths, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT)
        assert p.exitcode == 0
    decodes = [out.get(timeout=10) for _ in procs]
    assert 40 <= sum(decodes) <= 80  # each image decoded once per process at most
    assert not list(Path(folder).rglob("*.tmp"))
    third = ImageCache(folder=folder, memory_bytes=0)
    for p in paths:
        assert third.get_array(p).shape == (3, 48, 64)
    assert third.decodes == 0


# -- 5. the decoded-image cache ---------------------------------------------------------------------
def test_edited_image_is_never_served_stale_and_a_damaged_entry_is_rebuilt_and_logged_once(tmp_path, caplog):
    from biqabench.data import ImageCache

    path = tmp_path / "a.bmp"  # BMP: an edit keeps the file size, so only the mtime tells
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(path)
    folder = tmp_path / "decoded"
    assert ImageCache(folder=folder).get_array(path).max() == 0
    size = path.stat().st_size
    Image.fromarray(np.full((24, 32, 3), 200, np.uint8)).save(path)
    assert path.stat().st_size == size
    assert ImageCache(folder=folder).get_array(path).min() == 200  # the edit is seen, not the old pixels
    entries = [p for p in folder.rglob("*.npy")]
    newest = max(entries, key=lambda p: p.stat().st_mtime_ns)
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated entry
    with caplog.at_level(logging.WARNING, logger="biqabench.data.cache"):
        cache = ImageCache(folder=folder, memory_bytes=0)
        for _ in range(3):
            assert cache.get_array(path).min() == 200
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(newest) in lines[0] and "rebuilt" in lines[0], lines
    assert cache.decodes == 1  # rebuilt once, then read from the repaired entry


# -- 6. divergence ----------------------------------------------------------------------------------
def _nan_on_call(monkeypatch, target, name: str, calls: set[int]) -> None:
    real = getattr(target, name)
    count = {"n": 0}

    def patched(self, *args, **kw):
        count["n"] += 1
        out = real(self, *args, **kw)
        if count["n"] in calls:
            if isinstance(out, tuple):
                return (out[0] * float("nan"), *out[1:])
            return out * float("inf")
        return out

    monkeypatch.setattr(target, name, patched)


def test_nan_loss_stops_or_is_skipped_and_counted_in_both_loops(tmp_path, capsys, monkeypatch, qpt_cfg):
    from biqabench.training.engine import _Objective
    from biqabench_plugins.qpt.moco import QPTModel

    # QPT: stop names the step and the last good checkpoint
    _nan_on_call(monkeypatch, QPTModel, "forward", {3})
    run = tmp_path / "qpt"
    code, _, line = cli(capsys, *pretrain_args(qpt_cfg, run))
    assert code == 2
    assert line == (f"error: QPT: loss became nan at step 3; lower optim.lr or use --precision fp32; "
                    f"the last good checkpoint (step 2) is kept at {run / 'checkpoint.pt'}")
    # QPT: skip finishes, counts the step in the weights manifest, and plots only real losses
    monkeypatch.undo()
    _nan_on_call(monkeypatch, QPTModel, "forward", {2})
    code, out, err = cli(capsys, *pretrain_args(qpt_cfg, tmp_path / "qpt-skip", "--nan-policy", "skip"))
    assert code == 0, err
    manifest = json.loads(Path(out.split(": ", 1)[1].strip()).with_suffix(".json").read_text())
    assert manifest["extra"]["nan_skipped"] == 1 and manifest["extra"]["steps"] == 4
    assert len(json.loads((tmp_path / "qpt-skip/losses.json").read_text())["losses"]) == 3
    # fine-tuning: stop names split, epoch and step; skip is counted in the run's manifest
    monkeypatch.undo()
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({**EVAL, "splits": 1}))
    _nan_on_call(monkeypatch, _Objective, "forward", {2})
    code, _, line = cli(capsys, "eval", "--config", cfg, "--run-dir", tmp_path / "e1", *FAST)
    assert code == 2
    assert line == ("error: split 1/1: loss became inf at epoch 1, step 2; lower the learning rate (recipe lr=0.001) "
                    "or use --precision fp32")
    monkeypatch.undo()
    _nan_on_call(monkeypatch, _Objective, "forward", {2})
    code, _, err = cli(capsys, "eval", "--config", cfg, "--run-dir", tmp_path / "e2", "--nan-policy", "skip", *FAST)
    assert code == 0, err
    manifest = json.loads((tmp_path / "e2/manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["nan_skipped"] == 1 and manifest["scaler_skipped"] == 0
    code, _, line = cli(capsys, "eval", "--config", cfg, "--nan-policy", "maybe", *FAST)
    assert code == 2 and line == "error: --nan-policy 'maybe' is not one of stop, skip"


def test_grad_scaler_skipped_steps_are_counted():
    """The fp16 path: a GradScaler that finds inf gradients skips the step and lowers its scale;
    NanGuard.step counts it.  (CPU GradScaler here; on CUDA the same code runs.)"""
    from biqabench.training.divergence import NanGuard

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    guard = NanGuard()
    for value in (1.0, float("inf"), 1.0):
        opt.zero_grad()
        scaler.scale((w * value).sum()).backward()
        guard.step(scaler, opt)
    assert guard.counts() == {"nan_skipped": 0, "scaler_skipped": 1}
    assert torch.isfinite(w).all()


# -- 7. hostile files -------------------------------------------------------------------------------
def test_hostile_yaml_and_plugins_in_the_working_directory_are_never_run(tmp_path, capsys, child_env):
    """A ``!!python/object`` tag is refused in one line; a plugin-looking package and a fake
    distribution in the current folder are not imported by `python -m biqabench` nor by the
    installed `biqabench` script (plugins come from installed entry points only)."""
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"head: !!python/object/apply:os.system ['touch {marker}']\n")
    code, _, line = cli(capsys, "eval", "--config", cfg, *FAST)
    assert code == 2
    assert line == (f"error: config {cfg}: refused the YAML tag '!!python/object/apply:os.system' "
                    "(configs hold plain values only; nothing was run)")
    hostile = tmp_path / "cwd"
    pkg = hostile / "biqabench_plugins"
    pkg.mkdir(parents=True)
    payload = f"open({str(marker)!r}, 'w').write('imported')\n"
    (pkg / "__init__.py").write_text(payload)
    (hostile / "evilplug.py").write_text(payload)
    info = hostile / "evilplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evilplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[biqabench]\nevil = evilplug\n")
    script = Path(sys.executable).with_name("biqabench")
    for argv in ([sys.executable, "-m", "biqabench"], [str(script)] if script.is_file() else None):
        if argv is None:
            continue
        proc = subprocess.run([*argv, "plugins", "list"], cwd=hostile, env=child_env, capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr
        assert "evil" not in proc.stdout and "hyperiqa" in proc.stdout
        assert not marker.exists(), argv
