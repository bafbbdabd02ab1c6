"""``--launcher slurm`` on a real (one-node) SLURM cluster: .ci/slurm_up.sh starts one; without
it these tests skip, saying why (tests/conftest.py: ``slurm_unavailable``).

One tiny matrix (two cells, four splits each) runs locally and through SLURM.  While the SLURM
jobs run, one is requeued with ``scontrol requeue`` (SIGTERM to every process, as a pre-emption)
and the other gets SIGUSR2 (what submitit's ``--signal=USR2@90`` sends before a time limit: the
task checkpoints and requeues itself), each once its first split is written and before its last
one is (four splits leave three splits' time to act in, also on a fast machine); a second call
gathers the jobs still in flight.  The tables must equal the local ones, number for number.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import types

import pandas as pd
import pytest
import yaml

from conftest import REPO, TINY_RECIPE, invoke_cli, run_cli

pytestmark = pytest.mark.slurm

TIMEOUT = 420
SPLITS = 4


def _matrix(folder, name, **kw):
    m = dict(name=name, heads=["linear"], weights=["random"], train=["demo-a", "demo-b"], test=["demo-a", "demo-b"],
             backbone="tiny", splits=SPLITS, recipe="cpu", recipe_overrides=dict(TINY_RECIPE, epochs=2, lr=1e-3),
             device="cpu", precision="fp32", workers=0, launcher={"cpus": 1, "mem": 1, "time": 20})
    m.update(kw)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(m))
    return path


def _cells(results, name):
    root = results / "benchmarks" / name
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.yaml").is_file()}


def _ledger(results, name) -> dict:
    return json.loads((results / "benchmarks" / name / "slurm" / "jobs.json").read_text())


def _state(jid: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-j", jid, "-o", "%T"], capture_output=True, text=True).stdout
    return out.strip()


def _release_after_requeue(jid: str, timeout: float = 180) -> None:
    """Wait until job ``jid`` has left RUNNING (its requeue began) and let it start again at once:
    SLURM holds a requeued job on a begin time (~2 min) otherwise."""
    until, left = time.time() + timeout, False
    while time.time() < until:
        state = _state(jid)
        if not state or (left and state == "RUNNING"):
            return
        left = left or state != "RUNNING"
        if state == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={jid}", "StartTime=now"], capture_output=True)
        time.sleep(0.3)


def _split_done(cell, k=0) -> bool:
    return (cell / "splits" / str(k) / "metrics.csv").is_file()


def _interrupt_after_first_split(results, name) -> dict:
    """Requeue cell 1's job (``scontrol requeue``) and signal cell 2's (SIGUSR2) once split 0 of
    each is written (and the last is not); make the requeued jobs eligible at once (SLURM holds
    them ~2 min otherwise)."""
    ledger = _ledger(results, name)
    actions = dict(zip(sorted(ledger), (["scontrol", "requeue"], ["scancel", "--signal=USR2"])))
    done, deadline = {}, time.time() + TIMEOUT
    while len(done) < len(actions) and time.time() < deadline:
        cells = _cells(results, name) if (results / "benchmarks" / name).is_dir() else {}
        for key, cmd in actions.items():
            if key not in done and key in cells and _split_done(cells[key]):
                assert not _split_done(cells[key], SPLITS - 1), f"{key} finished before it could be interrupted"
                subprocess.run([*cmd, ledger[key]], check=True, timeout=60)
                done[key] = time.time()
        time.sleep(0.1)
    assert len(done) == len(actions), f"cells never finished split 0: {sorted(set(actions) - set(done))}"
    for key in done:
        _release_after_requeue(ledger[key])
    return ledger


@pytest.fixture(scope="module")
def runs(tmp_path_factory, capsys_module):
    base = tmp_path_factory.mktemp("slurm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIQABENCH_RESULTS", str(base / "results"))
        mp.setenv("BIQABENCH_CACHE", os.environ.get("BIQABENCH_TEST_CACHE", str(REPO / ".cache" / "test")))
        mp.setenv("BIQABENCH_SLURM_POLL", "1")
        mp.delenv("BIQABENCH_WEIGHTS", raising=False)
        mp.chdir(base)
        cli = capsys_module
        t0 = time.time()
        local = cli("benchmark", _matrix(base, "local"), "--jobs", "2", "--no-progress")
        t_local = time.time() - t0
        path = _matrix(base, "onslurm")
        submitted = cli("benchmark", path, "--launcher", "slurm", "--no-wait")
        ledger = _interrupt_after_first_split(base / "results", "onslurm")
        gathered = cli("benchmark", path, "--launcher", "slurm", "--wait")
        t_slurm = time.time() - t0 - t_local
    return types.SimpleNamespace(results=base / "results", local=local, submitted=submitted, gathered=gathered,
                                 ledger=ledger, t_local=t_local, t_slurm=t_slurm)


@pytest.fixture(scope="module")
def capsys_module():
    """``biqabench ARGS`` in a subprocess-free way for a module fixture: (code, out, err)."""
    from biqabench.cli import main

    def cli(*args):
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return code, out.getvalue(), err.getvalue()

    return cli


def test_a_matrix_through_slurm_gives_the_local_tables(runs):
    assert runs.local[0] == 0, runs.local[2]
    assert runs.submitted[0] == 0 and "run the same command again to gather" in runs.submitted[1], runs.submitted
    code, out, err = runs.gathered
    assert code == 0, err
    assert "submitted" not in out  # the second call gathered the jobs in flight, it did not submit again
    ours = runs.results / "benchmarks"
    local, slurm = (pd.read_csv(ours / n / "metrics.csv").drop(columns=["train_set"], errors="ignore")
                    for n in ("local", "onslurm"))
    pd.testing.assert_frame_equal(local, slurm)
    assert (ours / "local" / "table.csv").read_text() == (ours / "onslurm" / "table.csv").read_text()
    print(f"\ntiny matrix (2 cells x {SPLITS} splits): local --jobs 2 {runs.t_local:.0f} s, "
          f"SLURM (with two interruptions) {runs.t_slurm:.0f} s")


def test_requeued_and_signalled_jobs_resumed_and_kept_their_finished_splits(runs):
    cells = _cells(runs.results, "onslurm")
    for key, cell in cells.items():
        manifest = json.loads((cell / "manifest.json").read_text())
        placed = manifest["launcher"]
        assert manifest["status"] == "finished" and placed["kind"] == "slurm", key
        assert placed["slurm_job"] == runs.ledger[key] and placed["slurm_restarts"] >= 1, (key, placed)
    logs = {key: "".join(p.read_text() for p in (runs.results / "benchmarks" / "onslurm" / "slurm" / jid).glob("*_log.*"))
            for key, jid in runs.ledger.items()}
    requeued, signalled = sorted(logs)
    assert "stopped by SLURM" in logs[requeued]                      # SIGTERM from scontrol requeue
    assert "time limit near" in logs[signalled] and "Requeued job" in logs[signalled]  # submitit's checkpoint()
    for text in logs.values():  # the resumed run went on from the first unfinished split
        assert text.count("--resume") >= 1


def test_a_failing_job_reports_its_logs_last_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIQABENCH_SLURM_POLL", "1")
    path = _matrix(tmp_path, "broken", train=["demo-a"], splits=1, data_root=str(tmp_path / "no-such-folder"),
                   test=["demo-a", "koniq10k"])
    code, out, err = invoke_cli(capsys, "benchmark", path, "--launcher", "slurm")
    assert code == 2
    assert "1 job(s) failed" in err and "SLURM job" in err
    reported = err.split("SLURM job", 1)[1]
    assert "koniq10k" in reported and "error:" in reported, err  # the child's own one-line error
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err


# -- pretraining: one task per process, torch.distributed from submitit's environment ----------------
def _pretrain(capsys, tmp_path, run_dir, *extra, wait=True):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    if not data.is_dir():
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(5):
            Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(data / f"{i}.png")
        (tmp_path / "tiny.yaml").write_text("crop_size: 32\nqueue_size: 64\nembed_dim: 8\nworkers: 0\n"
                                            "negative_degradations: 1\ncheckpoint_every: 2\n")
    args = ["pretrain", "qpt", "--backbone", "tiny", "--data", data, "--steps", "8", "--batch-size", "2",
            "--patch-size", "16", "--config", tmp_path / "tiny.yaml", "--device", "cpu", "--precision", "fp32",
            "--run-dir", run_dir, "--launcher", "slurm", "--tasks-per-node", "2", "--cpus", "1", "--mem", "1",
            "--time", "20", "--wait" if wait else "--no-wait", *extra]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    return out


@pytest.mark.slow  # two 2-process SLURM jobs, one interrupted: ~2 min on 2 cores
def test_pretraining_on_slurm_is_ddp_and_resumes_exactly_after_a_time_limit_signal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIQABENCH_SLURM_POLL", "1")
    monkeypatch.setenv("BIQABENCH_WEIGHTS", str(tmp_path / "store"))
    assert "saved qpt weights for tiny" in _pretrain(capsys, tmp_path, tmp_path / "straight")
    straight = json.loads((tmp_path / "straight" / "run.json").read_text())
    assert straight["world_size"] == 2 and straight["images_seen"] == 8 * 2 * 2  # one task per process

    _pretrain(capsys, tmp_path, tmp_path / "stopped", wait=False)
    jid = json.loads((tmp_path / "stopped" / "slurm" / "jobs.json").read_text())["qpt"]
    deadline = time.time() + TIMEOUT
    while not (tmp_path / "stopped" / "checkpoint.pt").is_file() and time.time() < deadline:
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", jid], check=True)  # submitit: checkpoint() in rank 0, requeue
    _release_after_requeue(jid)
    from biqabench.runtime.slurm import gather

    assert gather({"qpt": jid}, lambda _: (tmp_path / "stopped" / "slurm" / jid / f"{jid}_0_result.pkl").is_file(),
                  tmp_path / "stopped" / "slurm", echo=lambda *_: None, poll=1) == []
    logs = "".join(p.read_text() for p in (tmp_path / "stopped" / "slurm" / jid).glob("*_log.*"))
    assert "time limit near" in logs and "Requeued job" in logs and "--resume" in logs
    losses = [json.loads((tmp_path / n / "losses.json").read_text())["losses"] for n in ("straight", "stopped")]
    assert len(losses[1]) == 8 and losses[0] == losses[1]  # resumed exactly where it stopped
