"""Launchers without a cluster: local GPU placement (fake GPU counts), SLURM options and dry runs,
the commands a SLURM job runs, and submitit's checkpoint protocol on a child process."""

from __future__ import annotations

import json
import pickle
import sys
import threading
import time

import pytest
import yaml

from biqabench.evaluation import benchmark as matrix_mod
from biqabench.base.errors import BiqaError
from biqabench.runtime import jobs, launch
from conftest import TINY_RECIPE, invoke_cli


def _matrix(tmp_path, **kw):
    m = dict(name="t", heads=["linear"], weights=["random"], train=["demo-a", "demo-b"], test=["demo-a", "demo-b"],
             backbone="tiny", splits=1, recipe="cpu", recipe_overrides=TINY_RECIPE, device="cpu", precision="fp32",
             workers=0)
    m.update(kw)
    path = tmp_path / f"{m['name']}.yaml"
    path.write_text(yaml.safe_dump(m))
    return path


# -- local GPU placement ------------------------------------------------------------------------------
def test_gpu_count_and_default_jobs_follow_the_visible_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv(launch.GPUS_ENV, "4")
    assert launch.visible_gpus() == ["0", "1", "2", "3"]
    assert launch.default_jobs("auto") == launch.default_jobs("cuda") == 4
    assert launch.default_jobs("cpu") == launch.default_jobs("cuda:1") == 1  # cuda:N names its own GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")  # a restricted machine: hand out its own ids
    monkeypatch.setenv(launch.GPUS_ENV, "2")
    assert launch.visible_gpus() == ["2", "5"]
    monkeypatch.setenv(launch.GPUS_ENV, "0")
    assert launch.default_jobs("auto") == 1
    monkeypatch.setenv(launch.GPUS_ENV, "two")
    with pytest.raises(BiqaError, match="not a number of GPUs"):
        launch.visible_gpus()


def test_each_running_cell_holds_its_own_gpu(tmp_path, monkeypatch):
    """Four fake cells on a fake 2-GPU machine: --jobs defaults to 2, and two cells never share a
    GPU while both run."""
    monkeypatch.setenv(launch.GPUS_ENV, "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    record = ("import json, os, sys, time; t0 = time.time(); time.sleep(0.6); "
              "json.dump({'gpu': os.environ.get('CUDA_VISIBLE_DEVICES'), 'launcher': os.environ.get('BIQABENCH_LAUNCHER'), "
              "'start': t0, 'end': time.time()}, open(sys.argv[1], 'w'))")
    monkeypatch.setattr(matrix_mod, "cell_command", lambda job: [sys.executable, "-c", record, str(job.folder / "seen.json")])
    m = matrix_mod.load_matrix(_matrix(tmp_path, heads=["linear", "hyperiqa"], device="auto"))
    matrix_mod.run_matrix(m, echo=lambda *_: None)
    seen = [json.loads((j.folder / "seen.json").read_text()) for j in matrix_mod.plan(m)]
    assert len(seen) == 4 and {s["gpu"] for s in seen} == {"0", "1"} and {s["launcher"] for s in seen} == {"local"}
    for a in seen:
        for b in seen:
            if a is not b and a["gpu"] == b["gpu"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], "two cells ran on one GPU at once"
    assert max(s["start"] for s in seen) - min(s["start"] for s in seen) > 0.3  # not all four at once


def test_cells_on_cpu_are_not_pinned(tmp_path, monkeypatch):
    monkeypatch.setenv(launch.GPUS_ENV, "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    record = "import os, sys; open(sys.argv[1], 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))"
    monkeypatch.setattr(matrix_mod, "cell_command", lambda job: [sys.executable, "-c", record, str(job.folder / "gpu")])
    m = matrix_mod.load_matrix(_matrix(tmp_path, device="cpu"))
    matrix_mod.run_matrix(m, jobs=2, echo=lambda *_: None)
    assert {(j.folder / "gpu").read_text() for j in matrix_mod.plan(m)} == {"unset"}


def test_a_run_records_where_it_ran_in_its_manifest(tmp_path, monkeypatch):
    from biqabench.evaluation.runner import EvalConfig, evaluate

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv(launch.LAUNCHER_ENV, "local")
    cfg = EvalConfig(head="linear", weights="random", backbone="tiny", splits=1, recipe="cpu", workers=0,
                     recipe_overrides=dict(TINY_RECIPE, lr=1e-3), device="cpu", precision="fp32")
    run = evaluate(cfg, run_dir=tmp_path / "run", progress=False)
    placed = json.loads((run / "manifest.json").read_text())["launcher"]
    assert placed["kind"] == "local" and placed["gpu"] == "1" and "slurm_job" not in placed


@pytest.mark.slow  # two fresh processes importing torch: ~35 s on 2 busy cores
def test_a_real_matrix_records_each_cells_gpu_in_its_manifest(tmp_path, monkeypatch, capsys):
    """Two tiny cells on a fake 2-GPU machine (no CUDA here: they train on the CPU): each ran
    pinned to its own GPU, and its manifest says which."""
    monkeypatch.setenv(launch.GPUS_ENV, "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    path = _matrix(tmp_path, device="auto")
    code, out, err = invoke_cli(capsys, "benchmark", path, "--dry-run")
    assert code == 0 and "local: 2 process(es), each on its own GPU of 0,1" in out
    code, out, err = invoke_cli(capsys, "benchmark", path, "--no-progress")
    assert code == 0, err
    m = matrix_mod.load_matrix(path)
    placed = [json.loads((j.folder / "manifest.json").read_text())["launcher"] for j in matrix_mod.plan(m)]
    assert sorted(p["gpu"] for p in placed) == ["0", "1"] and {p["kind"] for p in placed} == {"local"}


# -- SLURM options, dry runs ------------------------------------------------------------------------
def test_time_limits_read_as_sbatch_reads_them():
    assert [launch.minutes(t) for t in (240, "240", "30:00", "4:00:00", "1-12", "1-12:00:00")] == \
        [240, 240, 30, 240, 2160, 2160]
    for bad in ("4h", "", "0"):
        with pytest.raises(BiqaError, match="time limit"):
            launch.minutes(bad)


def test_slurm_dry_run_prints_what_would_be_submitted(tmp_path, capsys):
    path = _matrix(tmp_path, heads=["linear", "hyperiqa"], device="auto",
                   launcher={"partition": "gpu", "account": "lab", "cpus": 6, "mem": 48, "options": {"constraint": "a100"}})
    code, out, err = invoke_cli(capsys, "benchmark", path, "--launcher", "slurm", "--dry-run", "--time", "2:00:00",
                                "--slurm-option", "exclude=node7")
    assert code == 0, err
    assert "4 jobs, 4 to run" in out and "one job array of 4 tasks" in out
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=48GB",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --time=120", "#SBATCH --constraint=a100",
                 "#SBATCH --exclude=node7", "#SBATCH --array=0-3%"):
        assert line in out, line
    assert "slurm/%A_%a/" in out  # job logs in the matrix's folder


def test_a_typo_in_the_launcher_block_is_caught(tmp_path, capsys):
    code, out, err = invoke_cli(capsys, "benchmark", _matrix(tmp_path, launcher={"partiton": "gpu"}), "--dry-run")
    assert code == 2 and "did you mean 'partition'" in err
    code, out, err = invoke_cli(capsys, "benchmark", _matrix(tmp_path), "--launcher", "slurm", "--dry-run",
                                "--time", "4h")
    assert code == 2 and "time limit '4h'" in err


def test_pretrain_dry_run_asks_for_one_task_per_gpu(tmp_path, capsys):
    code, out, err = invoke_cli(capsys, "pretrain", "qpt", "--backbone", "tiny", "--launcher", "slurm", "--nodes", "2",
                                "--gpus-per-node", "8", "--partition", "gpu", "--time", "3-00:00:00", "--dry-run",
                                "--run-dir", tmp_path / "run")
    assert code == 0, err
    assert "2 node(s) x 8 task(s)" in out and "16 process(es) in one torch.distributed group" in out
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --time=4320", f"{tmp_path / 'run' / 'slurm'}/%j/"):
        assert line in out, line


# -- what a SLURM job runs ----------------------------------------------------------------------------
def test_a_cell_resumes_when_its_run_was_interrupted(tmp_path):
    run, cfg = tmp_path / "cell", tmp_path / "cell.yaml"
    assert jobs.eval_argv(run, cfg)[-5:] == ["--config", str(cfg), "--run-dir", str(run), "--no-progress"]
    run.mkdir()
    for status, resumes in (("interrupted", True), ("running", True), ("failed", False), ("finished", False)):
        (run / "manifest.json").write_text(json.dumps({"status": status}))
        assert ("--resume" in jobs.eval_argv(run, cfg)) is resumes, status


def test_a_restarted_pretraining_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    options = dict(backbone="tiny", steps=5, data=None, compile=True, resume=False)
    argv = jobs.pretrain_argv("qpt", options, tmp_path)
    assert argv[3:] == ["pretrain", "qpt", "--run-dir", str(tmp_path), "--no-progress", "--backbone", "tiny",
                        "--steps", "5", "--compile"]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert "--resume" not in jobs.pretrain_argv("qpt", options, tmp_path)  # nothing to resume yet: start
    (tmp_path / jobs.PRETRAIN_CHECKPOINT).write_bytes(b"x")
    assert jobs.pretrain_argv("qpt", options, tmp_path)[-1] == "--resume"
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    assert jobs.pretrain_argv("qpt", options, tmp_path, resume=True)[-1] == "--resume"


STOPPABLE = """
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1], "w").write("checkpoint written")
    sys.exit(130)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[2], "w").write("started")
time.sleep(60)
"""


def test_checkpoint_stops_the_child_and_hands_back_a_fresh_task(tmp_path):
    """submitit's protocol without SLURM: on SIGUSR2 submitit's handler (in the main thread, while
    the task waits for its child) calls ``checkpoint()``, which stops the child through its SIGTERM
    path, at once, and returns the task to requeue."""
    import os
    import signal

    from submitit.helpers import DelayedSubmission

    marker, started = tmp_path / "ckpt", tmp_path / "started"
    task = jobs.ChildTask("cell", lambda: [sys.executable, "-c", STOPPABLE, str(marker), str(started)])
    out = {}

    def signal_when_started():
        deadline = time.time() + 60
        while not started.exists() and time.time() < deadline:
            time.sleep(0.05)
        out["sent"] = time.time()
        os.kill(os.getpid(), signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, lambda *_: out.update(delayed=task.checkpoint(), back=time.time()))
    helper = threading.Thread(target=signal_when_started)
    try:
        helper.start()
        with pytest.raises(SystemExit) as stopped:
            task()
        helper.join()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stopped.value.code == 130 and marker.read_text() == "checkpoint written"
    assert out["back"] - out["sent"] < 10  # not the 80 s give-up: the handler saw the child exit
    delayed = out["delayed"]
    assert isinstance(delayed, DelayedSubmission) and isinstance(delayed.function, jobs.ChildTask)
    assert delayed.function is not task and delayed.function._child is None
    assert pickle.loads(pickle.dumps(jobs.ChildTask("x", print)))._child is None


def test_a_multi_task_job_exports_the_torch_distributed_environment(monkeypatch):
    for key, value in {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2",
                       "SLURM_NODEID": "1", "SLURM_PROCID": "11", "SLURM_LOCALID": "3", "SLURM_NTASKS": "16",
                       "SUBMITIT_EXECUTOR": "slurm"}.items():
        monkeypatch.setenv(key, value)
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    env = jobs.ChildTask("pretrain", list, distributed=True).environment()
    assert (env["MASTER_ADDR"], env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("gpu01", "11", "16", "3")
    assert 20000 <= int(env["MASTER_PORT"]) <= 60000 and env["BIQABENCH_LAUNCHER"] == "slurm"


def test_a_failed_multi_task_jobs_log_tail_names_the_rank_that_failed_not_the_one_slurm_cancelled(tmp_path):
    """With --kill-on-bad-exit, task 0 may end with slurmstepd's CANCELLED line while the cause
    is in another task's log."""
    from biqabench.runtime.slurm import log_tail

    job = tmp_path / "69"
    job.mkdir()
    cancelled = "slurmstepd-vm: error: *** STEP 69.0 ON vm CANCELLED AT 2026-12-07T09:29:52 ***\n"
    (job / "69_0_log.err").write_text("loading\n" + cancelled)
    (job / "69_1_log.err").write_text("Traceback (most recent call last):\nRuntimeError: gloo connect timed out\n"
                                      "srun: error: vm: task 1: Exited with exit code 1\n")
    (job / "69_0_log.out").write_text("step 1\n")
    assert log_tail(tmp_path, "69") == "task 1: RuntimeError: gloo connect timed out"
    (job / "69_0_log.err").write_text("error: no photos in /data\n")
    assert log_tail(tmp_path, "69") == "error: no photos in /data"       # task 0's own error comes first
    (job / "69_1_log.err").write_text(cancelled.replace("69.0", "69.1"))
    (job / "69_0_log.err").write_text(cancelled)
    assert log_tail(tmp_path, "69") == cancelled.strip()                  # every task cancelled: say so
    assert log_tail(tmp_path, "69", streams=("out",)) == "step 1"
    assert log_tail(tmp_path, "70").startswith("(no log in ")


def test_a_cell_gets_sigterm_when_the_study_that_started_it_is_killed(tmp_path):
    """run_cell + stop_with_parent: SIGKILL the parent (a study or matrix with --jobs) and its
    running cell is sent SIGTERM, the signal on which a run checkpoints and stops."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cell = ("import os, signal, sys, time\n"
            "from biqabench.runtime.launch import PARENT_ENV, stop_with_parent\n"
            f"out = {str(tmp_path)!r}\n"
            "inherited = PARENT_ENV in os.environ\n"
            "stop_with_parent()\n"
            "def stop(*_):\n"
            "    open(os.path.join(out, 'stopped'), 'w').write('SIGTERM')\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, stop)\n"
            "open(os.path.join(out, 'cell.pid'), 'w').write(f'{os.getpid()} {inherited} {PARENT_ENV in os.environ}')\n"
            "time.sleep(60)\n")
    study = ("import os, sys\n"
             "from biqabench.runtime.launch import run_cell\n"
             f"run_cell([sys.executable, '-c', {cell!r}], dict(os.environ))\n")
    parent = subprocess.Popen([sys.executable, "-c", study])
    deadline = time.time() + 60
    while not (tmp_path / "cell.pid").is_file() and time.time() < deadline:
        time.sleep(0.05)
    pid, inherited, still_set = (tmp_path / "cell.pid").read_text().split()
    assert inherited == "True" and still_set == "False"  # its own children do not inherit the request
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    while not (tmp_path / "stopped").is_file() and time.time() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "stopped").read_text() == "SIGTERM"
    for _ in range(100):  # and it has ended
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"cell {pid} still runs after its parent was killed")
