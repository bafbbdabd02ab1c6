"""What runs inside a SLURM job: a ``biqabench`` command in a child process, stopped, checkpointed
and requeued through submitit's protocol (the ``checkpoint`` method of the submitted callable).

submitit starts :class:`ChildTask` in every task of a job (``srun python -m submitit.core._submit``).
The task runs the command (``biqabench eval ...`` for a matrix cell, ``biqabench pretrain ...`` for a
pretraining) as a child process that writes straight into the job's log, so that the log's last
line is the command's own (``error: ...`` when it fails).  Stopping reuses the paths Ctrl-C and
``kill`` take today, which keep every finished step:

* **Time limit** (submitit's ``#SBATCH --signal=USR2@90``; ``SUBMITIT_PREEMPT_SIGNAL`` picks
  another signal): submitit calls :meth:`ChildTask.checkpoint` in rank 0, which sends SIGTERM to
  the child (eval: the last epoch checkpoint is kept and the run marked interrupted; pretraining:
  the current step finishes, a checkpoint is written, every rank stops at the same step), waits
  for it and returns a copy of the task, which submitit requeues (``scontrol requeue``).
* **Requeue or pre-emption** (``scontrol requeue``, ``PreemptMode=REQUEUE``) and ``scancel``:
  SLURM sends SIGTERM to every process of the job, the child included, which stops as above; the
  task then exits without a result and SLURM requeues the job (or, after ``scancel``, does not).
* **The requeued job** runs the same command, which resumes: a cell whose run folder is
  interrupted runs ``eval --resume``, a pretraining restarted by SLURM whose folder holds a
  checkpoint runs with ``--resume``; both continue exactly where they stopped.

The child ignores SIGUSR1/SIGUSR2 (SLURM may signal every process of a step; the default action
would kill it without a checkpoint).  In a job of several tasks (pretraining: one per GPU) each
task exports the torch.distributed environment submitit derives from SLURM's (``MASTER_ADDR``,
``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) for the existing DDP path.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from biqabench.runtime.launch import LAUNCHER_ENV

#: The file a pretrainer keeps its resumable state in (QPT's ``checkpoint.pt``).
PRETRAIN_CHECKPOINT = "checkpoint.pt"
#: Exit status of a command stopped by Ctrl-C/SIGTERM (the CLI's ``interrupted`` exit).
INTERRUPTED = 130
#: How long a stopped child may take to write its checkpoint before the task stops waiting.
STOP_TIMEOUT_S = 80.0
#: How long a non-zero rank whose child stopped waits for rank 0's requeue to end the job.
AWAIT_REQUEUE_S = 600


def _ignore_user_signals() -> None:  # runs in the child between fork and exec
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def _exit_now(code: int) -> None:
    """Leave at once, without a submitit result: SLURM decides what comes next (requeue or not)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class ChildTask:
    """A submitit callable running ``command()`` (evaluated in the job, so that a requeued job can
    choose ``--resume``) in a child process.  ``distributed``: export the torch.distributed
    environment of a multi-task job."""

    def __init__(self, name: str, command: Callable[[], list[str]], distributed: bool = False):
        self.name, self.command, self.distributed = name, command, distributed
        self._child: subprocess.Popen | None = None
        self._code: int | None = None  # the child's exit status, once reaped
        self._terminated = False

    def __getstate__(self) -> dict:  # what submitit pickles: never a live process
        return {"name": self.name, "command": self.command, "distributed": self.distributed}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __call__(self) -> str:
        env = self.environment()
        argv = self.command()
        print(f"[{self.name}] rank {env.get('RANK', '0')}: {shlex.join(argv)}", flush=True)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
        code = self._run_child(argv, env)
        if self._terminated:  # requeue, pre-emption or scancel: the child kept its checkpoint
            print(f"[{self.name}] stopped by SLURM (exit {code}); a requeued job resumes", flush=True)
            _exit_now(143)
        if code == 0:
            return f"{self.name}: finished"
        if code == INTERRUPTED and env.get("RANK", "0") != "0":
            self._await_requeue()  # rank 0 checkpointed and requeues the job
        raise SystemExit(code)  # the child's last line ("error: ...") stays the log's last line

    def checkpoint(self, *args, **kwargs):
        """submitit's hook before a time limit: stop the child (it writes its checkpoint) and hand
        back this task, which submitit requeues; the command then resumes."""
        from submitit.helpers import DelayedSubmission

        self._stop_child()
        return DelayedSubmission(ChildTask(self.name, self.command, self.distributed))

    def environment(self) -> dict[str, str]:
        """The child's environment: this one, plus the launcher's name, threads = the task's CPUs,
        and (``distributed``, more than one task) the torch.distributed variables."""
        env = dict(os.environ)
        env[LAUNCHER_ENV] = "slurm"
        if "OMP_NUM_THREADS" not in env and env.get("SLURM_CPUS_PER_TASK"):
            env["OMP_NUM_THREADS"] = env["SLURM_CPUS_PER_TASK"]
        if self.distributed:
            env.update(distributed_environment())
        return env

    def _run_child(self, argv: list[str], env: dict[str, str]) -> int:
        """Start the child and wait for its exit status.  A thread reaps it and the main thread
        only sleeps: submitit's signal handler (which calls :meth:`checkpoint`) runs in the main
        thread, and a ``Popen.wait`` it interrupted would hold the lock the handler's wait needs."""
        self._code = None
        self._child = subprocess.Popen(argv, env=env, preexec_fn=_ignore_user_signals)
        threading.Thread(target=self._reap, args=(self._child,), daemon=True).start()
        while self._code is None:
            time.sleep(0.2)
        return self._code

    def _reap(self, child: subprocess.Popen) -> None:
        self._code = child.wait()

    def _on_sigterm(self, signum, frame) -> None:
        self._terminated = True

    def _stop_child(self) -> None:
        child = self._child
        if child is None or self._code is not None:
            return
        print(f"[{self.name}] time limit near: stopping the run at its next checkpoint", flush=True)
        child.send_signal(signal.SIGTERM)
        deadline = time.time() + STOP_TIMEOUT_S
        while self._code is None and time.time() < deadline:
            time.sleep(0.2)
        if self._code is None:
            print(f"[{self.name}] the run did not stop within {STOP_TIMEOUT_S:.0f} s", flush=True)

    def _await_requeue(self) -> None:
        deadline = time.time() + AWAIT_REQUEUE_S
        while time.time() < deadline:
            if self._terminated:
                _exit_now(143)
            time.sleep(1)


def distributed_environment() -> dict[str, str]:
    """``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from submitit's
    :class:`~submitit.JobEnvironment` (empty for a one-task job).  ``CUDA_VISIBLE_DEVICES`` is
    left alone: :func:`biqabench.runtime.distributed.process_group` picks GPU ``LOCAL_RANK``."""
    from submitit.helpers import TorchDistributedEnvironment

    dist = TorchDistributedEnvironment()
    if dist.world_size <= 1:
        return {}
    return {"MASTER_ADDR": dist.master_addr, "MASTER_PORT": str(dist.master_port), "RANK": str(dist.rank),
            "WORLD_SIZE": str(dist.world_size), "LOCAL_RANK": str(dist.local_rank),
            "LOCAL_WORLD_SIZE": str(dist.local_world_size)}


def pretrain_argv(name: str, options: dict, run_dir: str | Path, resume: bool = False) -> list[str]:
    """``biqabench pretrain NAME`` with ``options`` as flags (None/False left out, True a bare
    flag) into ``run_dir``; ``--resume`` when asked, or when SLURM restarted the job and the
    folder holds a checkpoint (a requeue after pre-emption, a time limit, ``scontrol requeue``)."""
    argv = [sys.executable, "-m", "biqabench", "pretrain", name, "--run-dir", str(run_dir), "--no-progress"]
    for key, value in options.items():
        if value is None or value is False or key == "resume":
            continue
        flag = "--" + key.replace("_", "-")
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)  # --snapshots 0,250
        argv += [flag] if value is True else [flag, text]
    restarted = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    if resume or (restarted and (Path(run_dir) / PRETRAIN_CHECKPOINT).is_file()):
        argv.append("--resume")
    return argv


def eval_argv(run_dir: str | Path, config: str | Path) -> list[str]:
    """``biqabench eval`` for one matrix cell: ``--resume`` when its run folder holds an
    interrupted (or killed: still "running") run, else a fresh run of ``config`` into ``run_dir``."""
    status = recorded_status(run_dir)
    argv = [sys.executable, "-m", "biqabench", "eval"]
    argv += ["--resume", str(run_dir)] if status in ("running", "interrupted") else \
        ["--config", str(config), "--run-dir", str(run_dir)]
    return argv + ["--no-progress"]


def recorded_status(run_dir: str | Path) -> str | None:
    """A run folder's manifest status as written, None without a readable manifest: what
    :meth:`biqabench.results.folder.RunFolder.recorded_status` says, read here without importing
    torch and pandas (this runs in every SLURM job before the child starts)."""
    import json

    path = Path(run_dir) / "manifest.json"
    try:
        return json.loads(path.read_text()).get("status", "running") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
