"""Submitting work to SLURM through submitit, and gathering what comes back.

A matrix's pending cells go out as one job array (``executor.batch()``: one array task per cell,
at most ``max_parallel`` at once), a pretraining as one job of ``nodes x tasks_per_node`` tasks.
Every job's pickles and logs sit in ``<folder>/<job id>/`` (``<matrix>/slurm/`` for a matrix), and
``<folder>/jobs.json`` remembers which job runs which cell, so that a later call (``--no-wait``,
or after the command itself was stopped) gathers the jobs still in flight instead of submitting
them twice, and resubmits a cell whose job ended without finishing it (the cell resumes).

Job states come from ``squeue`` (``sacct`` needs SLURM's accounting database, which small
clusters lack); a job that has left the queue, or sits in a final state, and whose work is not
finished has failed: the command's error names it with the last line of its log.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

from biqabench.base import io
from biqabench.base.errors import BiqaError
from biqabench.runtime.jobs import ChildTask
from biqabench.runtime.launch import SlurmOptions

JOBS_FILE = "jobs.json"
#: How often the jobs are polled while waiting (seconds); ``BIQABENCH_SLURM_POLL`` overrides.
POLL_ENV = "BIQABENCH_SLURM_POLL"
#: States after which a job runs no more (``squeue`` keeps listing it for a while, then forgets it).
FINAL_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "TIMEOUT", "SPECIAL_EXIT", "REVOKED"}
#: A requeue passes through a final state for an instant; a job must look ended twice in a row.
MAX_TIMEOUTS = 10  # submitit: how many time-limit requeues one job may take


def require_slurm() -> None:
    missing = [c for c in ("sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    if missing:
        raise BiqaError(f"--launcher slurm needs SLURM's {', '.join(missing)} on PATH: run on a login node of "
                        "the cluster (docs/cluster.md)")


def executor(folder: Path, options: SlurmOptions, name: str, on_gpu: bool, tasks: int = 1):
    """A submitit ``SlurmExecutor`` writing into ``folder/<job id>/`` with ``options``' resources."""
    import submitit

    require_slurm()
    ex = submitit.SlurmExecutor(folder=Path(folder) / "%j", max_num_timeout=MAX_TIMEOUTS)
    params = options.parameters(name, on_gpu, tasks=tasks)
    if tasks > 1 or options.nodes > 1:
        params["srun_args"] = ["--kill-on-bad-exit=1"]  # one rank failing ends its job, not a hang
    try:
        ex.update_parameters(**params)
    except ValueError as exc:
        raise BiqaError(f"SLURM options: {str(exc).splitlines()[0]}") from None
    return ex


def submit(commands: dict[str, Callable[[], list[str]]], folder: Path, options: SlurmOptions, name: str,
           on_gpu: bool, *, tasks: int = 1, distributed: bool = False) -> dict[str, str]:
    """Submit one job per command (an array when there are several); returns {key: job id}."""
    if not commands:
        return {}
    ex = executor(folder, options, name, on_gpu, tasks)
    try:
        with ex.batch():
            jobs = {key: ex.submit(ChildTask(key, cmd, distributed=distributed)) for key, cmd in commands.items()}
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        detail = getattr(exc, "output", b"") or getattr(exc, "stderr", b"") or b""
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        raise BiqaError(f"sbatch refused the jobs: {_last_line(detail) or exc}") from None
    ids = {key: str(job.job_id) for key, job in jobs.items()}
    write_ledger(folder, {**read_ledger(folder), **ids})
    return ids


def read_ledger(folder: Path) -> dict[str, str]:
    path = Path(folder) / JOBS_FILE
    return {str(k): str(v) for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}


def write_ledger(folder: Path, ledger: dict[str, str]) -> None:
    io.write_json(Path(folder) / JOBS_FILE, ledger)


def queue_states() -> dict[str, str]:
    """{job id: state} of this user's jobs that SLURM still lists (array tasks as ``<array>_<task>``)."""
    require_slurm()
    proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise BiqaError(f"squeue failed: {_last_line(proc.stderr) or proc.returncode}")
    states = {}
    for line in proc.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid:
            states[jid] = state.split()[0] if state else ""
    return states


def alive(job_id: str, states: dict[str, str]) -> bool:
    return job_id in states and states[job_id] not in FINAL_STATES


def log_tail(folder: Path, job_id: str, streams: tuple[str, ...] = ("err", "out")) -> str:
    """The last line of job ``job_id``'s log (task 0's stderr, else its stdout), without srun's
    own ``task N: Exited with exit code`` report and submitit's bookkeeping.

    In a multi-task job one failing rank makes SLURM cancel the others (``--kill-on-bad-exit``),
    so task 0's log may end with slurmstepd's ``CANCELLED`` line while the cause is in another
    task's log: the first task whose log ends otherwise is named instead."""
    job_dir = Path(folder) / job_id
    tails = []
    for stream in streams:
        for task, path in sorted((_task_index(p, job_id), p) for p in job_dir.glob(f"{job_id}_*_log.{stream}")):
            line = _last_line(path.read_text(errors="replace"), skip=("srun: ", "submitit INFO"))
            if line:
                tails.append((task, line))
        if tails:
            break
    if not tails:
        return f"(no log in {job_dir})"
    for task, line in tails:
        if not _cancelled(line):
            return line if task == tails[0][0] else f"task {task}: {line}"
    return tails[0][1]


def _task_index(path: Path, job_id: str) -> int:
    middle = path.name[len(job_id) + 1:].split("_", 1)[0]
    return int(middle) if middle.isdigit() else 1 << 30


def _cancelled(line: str) -> bool:
    """slurmstepd's ``*** STEP 12.0 ON node CANCELLED AT ... ***`` (or JOB ... CANCELLED)."""
    return line.startswith("slurmstepd") and "CANCELLED" in line


def _last_line(text: str, skip: tuple[str, ...] = ()) -> str:
    lines = [ln.strip() for ln in str(text).replace("\r", "\n").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(skip)] if skip else lines
    return lines[-1] if lines else ""


def gather(jobs: dict[str, str], finished: Callable[[str], bool], folder: Path, echo=print,
           poll: float | None = None) -> list[str]:
    """Wait until every job in ``jobs`` ({key: job id}) has ended; returns one line per failure
    (a job that ended while ``finished(key)`` is still false), with its log's last line."""
    poll = float(os.environ.get(POLL_ENV, "10")) if poll is None else poll
    pending, failures, ended_once = dict(jobs), [], set()
    while pending:
        states = queue_states()
        for key, jid in list(pending.items()):
            if finished(key):
                echo(f"[{key}] done (SLURM job {jid})")
            elif alive(jid, states):
                ended_once.discard(key)
                continue
            elif key not in ended_once:  # look again: a requeue passes through a final state
                ended_once.add(key)
                continue
            else:
                why = f"SLURM job {jid} {states.get(jid, 'ended').lower()}: {log_tail(folder, jid)}"
                failures.append(f"{key}: {why}")
                echo(f"[{key}] FAILED: {why}")
            del pending[key]
        if pending:
            time.sleep(poll)
    return failures


def in_flight(keys: list[str], folder: Path, states: dict[str, str]) -> dict[str, str]:
    """{key: job id} of the keys whose recorded job SLURM still runs or holds."""
    ledger = read_ledger(folder)
    return {k: ledger[k] for k in keys if k in ledger and alive(ledger[k], states)}


def sbatch_preview(options: SlurmOptions, name: str, on_gpu: bool, folder: Path, count: int, tasks: int = 1) -> str:
    """The ``#SBATCH`` lines submitit would write for ``count`` jobs (an array when several)."""
    try:
        from submitit.slurm.slurm import _make_sbatch_string
    except ImportError:  # submitit moved its private helper: the summary line says enough
        return ""
    params = options.parameters(name, on_gpu, tasks=tasks)
    text = _make_sbatch_string(command="python -u -m submitit.core._submit ...", folder=str(Path(folder) / "%j"),
                               map_count=count if count > 1 else None, **params)
    return "\n".join(ln for ln in text.splitlines() if ln.startswith("#SBATCH"))


def dry_run_text(options: SlurmOptions, name: str, on_gpu: bool, folder: Path, count: int, tasks: int = 1) -> str:
    if count == 0:
        return "nothing to submit"
    kind = f"one job array of {count} tasks (at most {options.max_parallel} at once)" if count > 1 else "one job"
    lines = [f"would submit {kind} through submitit, job name {name}",
             f"  {options.describe(on_gpu, tasks=tasks)}", f"  logs: {Path(folder)}/<job id>/",
             sbatch_preview(options, name, on_gpu, folder, count, tasks)]
    return "\n".join(ln for ln in lines if ln)


def submit_pretraining(name: str, options: dict, run_dir: Path, slurm: SlurmOptions, *, wait: bool = True,
                       dry_run: bool = False, echo=print) -> str | None:
    """``biqabench pretrain NAME`` as one SLURM job of ``nodes x tasks_per_node`` tasks (one per
    GPU): each task joins the torch.distributed group submitit's environment describes, rank 0
    writes; near the time limit it checkpoints and requeues, and the requeued job resumes.
    Returns the job id (None for a dry run)."""
    import functools

    from biqabench.runtime.jobs import pretrain_argv
    from biqabench.runtime.launch import uses_gpu

    on_gpu = uses_gpu(options.get("device") or "auto")
    tasks, folder, job_name = slurm.tasks(on_gpu), Path(run_dir) / "slurm", f"biqabench-pretrain-{name}"
    if dry_run:
        echo(dry_run_text(slurm, job_name, on_gpu, folder, 1, tasks))
        echo(f"  {slurm.nodes * tasks} process(es) in one torch.distributed group; run folder {run_dir}")
        return None
    running = in_flight([name], folder, queue_states())
    if running:
        raise BiqaError(f"SLURM job {running[name]} is already pretraining into {run_dir}; wait for it (squeue -j "
                        f"{running[name]}) or cancel it (scancel {running[name]}) first")
    command = functools.partial(pretrain_argv, name, options, str(run_dir), bool(options.get("resume")))
    jid = submit({name: command}, folder, slurm, job_name, on_gpu, tasks=tasks, distributed=True)[name]
    echo(f"submitted SLURM job {jid}: {slurm.nodes} node(s) x {tasks} task(s); run folder {run_dir}; "
         f"logs in {folder / jid}/")
    if wait:
        failures = gather({name: jid}, lambda _: (folder / jid / f"{jid}_0_result.pkl").is_file(), folder, echo)
        if failures:
            raise BiqaError(f"pretraining failed: {failures[0]}")
        echo(log_tail(folder, jid, streams=("out",)))  # "saved qpt weights for ...: <file>"
    return jid
