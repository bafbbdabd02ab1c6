"""Where the work runs: local processes, one GPU each, or SLURM jobs (:mod:`biqabench.runtime.slurm`).

* **Local GPU placement.**  On a machine with G GPUs, ``benchmark --jobs N`` (default N = G when
  cells run on CUDA) gives each running cell its own GPU through ``CUDA_VISIBLE_DEVICES``
  (:class:`GpuSlots`); with more jobs than GPUs they take the GPUs in turn.  ``BIQABENCH_GPUS=N``
  overrides the count torch reports (to use only the first N GPUs; tests fake GPUs with it).
* **SLURM resources** of each job (:class:`SlurmOptions`): from the command line's flags or a
  matrix's ``launcher:`` block; :meth:`SlurmOptions.parameters` turns them into submitit's.
* **What a run records** (:func:`placement`): launcher, host, GPU, SLURM job id and how many times
  SLURM restarted it, written into each eval run's manifest as ``launcher``.
* **Cells end with their parent** (:func:`run_cell`, :func:`stop_with_parent`): a study or matrix
  killed with SIGKILL cannot stop its ``--jobs`` processes itself, so each asks Linux for SIGTERM
  when its parent dies; SIGTERM stops a run as Ctrl-C does (checkpoint kept), and the re-run resumes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Iterator

from biqabench.base.errors import BiqaError

#: Overrides the number of GPUs torch reports (``BIQABENCH_GPUS=2``): use fewer, or fake some in tests.
GPUS_ENV = "BIQABENCH_GPUS"
#: Set by a launcher in the processes it starts (``local``, ``slurm``); read by :func:`placement`.
LAUNCHER_ENV = "BIQABENCH_LAUNCHER"
LAUNCHERS = ("local", "slurm")
#: Set in a cell started by :func:`run_cell`: the pid of the study or matrix that started it.
PARENT_ENV = "BIQABENCH_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def run_cell(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run one cell's command (``biqabench eval|probe|pretrain ...``) in a child process that stops
    when this process dies (the child calls :func:`stop_with_parent`); returns its exit status and
    the last line of its stderr (the command's one-line error when it fails)."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={**env, PARENT_ENV: str(os.getpid())})
    return proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]


def stop_with_parent() -> None:
    """In a cell started by :func:`run_cell`: SIGTERM this process when its parent dies (Linux's
    ``PR_SET_PDEATHSIG``; elsewhere nothing).  The variable is removed first, so that the cell's
    own children (DataLoader workers) are not concerned."""
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def visible_gpus() -> list[str]:
    """The GPU ids this process may hand out: ``CUDA_VISIBLE_DEVICES``'s entries when it is set
    (a cell pinned to "3" must get "3", not "0"), else ``0 .. G-1``."""
    override = os.environ.get(GPUS_ENV, "").strip()
    if override:
        try:
            count = int(override)
        except ValueError:
            raise BiqaError(f"${GPUS_ENV}={override!r} is not a number of GPUs") from None
    else:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (listed or [str(i) for i in range(count)])[:max(0, count)]


def cells_on_cuda(device: str) -> bool:
    """Whether runs with this ``--device`` land on this machine's GPUs (``cuda:N`` names its own)."""
    return str(device).strip().lower() in ("auto", "cuda") and bool(visible_gpus())


def default_jobs(device: str) -> int:
    """``--jobs`` when not given: one process per GPU when the cells run on CUDA, else 1."""
    return max(1, len(visible_gpus())) if cells_on_cuda(device) else 1


def uses_gpu(device: str) -> bool:
    """Whether a job running with ``--device`` wants a GPU on a cluster node (auto and cuda do)."""
    return str(device).strip().lower() not in ("cpu", "mps")


class GpuSlots:
    """``jobs`` places for running processes, each holding one GPU (GPUs shared in turn when
    ``jobs`` exceeds them; none when ``gpus`` is empty).

    >>> slots = GpuSlots(["0", "1"], jobs=2)
    >>> with slots.take() as env:
    ...     env["CUDA_VISIBLE_DEVICES"]
    '0'
    """

    def __init__(self, gpus: list[str], jobs: int):
        self._free: queue.Queue = queue.Queue()
        for i in range(max(1, jobs)):
            self._free.put(gpus[i % len(gpus)] if gpus else None)

    @contextlib.contextmanager
    def take(self) -> Iterator[dict[str, str]]:
        """The environment of a process started now (blocks until a place is free)."""
        gpu = self._free.get()
        try:
            yield {LAUNCHER_ENV: "local", **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})}
        finally:
            self._free.put(gpu)


def placement() -> dict:
    """Where this process runs, for a run's manifest: launcher (local, slurm, torchrun or direct),
    host, GPU(s) (``CUDA_VISIBLE_DEVICES``) and, under SLURM, the job id and its restart count."""
    env = os.environ
    kind = env.get(LAUNCHER_ENV) or ("torchrun" if "TORCHELASTIC_RUN_ID" in env else "direct")
    record: dict = {"kind": kind, "host": socket.gethostname(), "gpu": env.get("CUDA_VISIBLE_DEVICES")}
    if "SLURM_JOB_ID" in env:
        array = env.get("SLURM_ARRAY_JOB_ID")
        record["slurm_job"] = f"{array}_{env.get('SLURM_ARRAY_TASK_ID')}" if array else env["SLURM_JOB_ID"]
        record["slurm_restarts"] = int(env.get("SLURM_RESTART_COUNT") or 0)
    return record


# ------------------------------------------------------------------------------------------------
# SLURM resources
# ------------------------------------------------------------------------------------------------
@dataclass
class SlurmOptions:
    """Resources of each SLURM job: one per matrix cell, or one per pretraining (``nodes`` x
    ``tasks_per_node`` processes).  In a matrix YAML: a ``launcher:`` block with these keys."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    time: str | int = "4:00:00"        # the job's time limit: minutes, or sbatch's [D-]HH:MM:SS
    gpus: int | None = None             # per node (a cell: per job); None: 1 when the runs use CUDA, else 0
    cpus: int | None = None             # per task; None: 8 with a GPU, else 2
    mem: float | None = None            # GB per node; None: the partition's default
    nodes: int = 1                      # pretraining across nodes
    tasks_per_node: int | None = None   # pretraining: None = one per GPU (at least 1)
    max_parallel: int = 256             # array tasks running at once
    options: dict = field(default_factory=dict)      # any other sbatch option: {constraint: a100, exclude: ...}
    setup: list[str] = field(default_factory=list)   # shell lines run first (module load ..., source venv)

    def gpus_per_node(self, on_gpu: bool) -> int:
        return self.gpus if self.gpus is not None else (1 if on_gpu else 0)

    def tasks(self, on_gpu: bool) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node(on_gpu))

    def parameters(self, name: str, on_gpu: bool, *, tasks: int = 1) -> dict:
        """submitit's ``SlurmExecutor.update_parameters`` keywords."""
        gpus = self.gpus_per_node(on_gpu)
        params = {"job_name": name, "time": minutes(self.time), "nodes": self.nodes, "ntasks_per_node": tasks,
                  "cpus_per_task": self.cpus or (8 if gpus else 2), "array_parallelism": self.max_parallel}
        if gpus:
            params["gpus_per_node"] = gpus
        for key in ("partition", "account", "qos"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        if self.mem:
            params["mem"] = f"{self.mem:g}GB"
        if self.options:
            params["additional_parameters"] = {str(k): v for k, v in self.options.items()}
        if self.setup:
            params["setup"] = list(self.setup)
        return params

    def describe(self, on_gpu: bool, *, tasks: int = 1) -> str:
        """One line: what each job asks for."""
        p = self.parameters("x", on_gpu, tasks=tasks)
        where = ", ".join(f"{k} {p[k]}" for k in ("partition", "account", "qos") if k in p) or "default partition"
        per = f"{p['nodes']} node(s) x {tasks} task(s), " if self.nodes > 1 or tasks > 1 else ""
        return (f"{where}; per job: {per}{p.get('gpus_per_node', 0)} GPU(s) per node, {p['cpus_per_task']} CPU(s) "
                f"per task, memory {p.get('mem', 'default')}, time limit {p['time']} min")


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def minutes(limit: str | int) -> int:
    """A SLURM time limit in whole minutes, read as sbatch reads it: ``240`` (minutes),
    ``"30:00"`` (minutes:seconds), ``"4:00:00"`` (hours:minutes:seconds), ``"1-12"``,
    ``"1-12:00"``, ``"1-12:00:00"`` (days-hours[:minutes[:seconds]])."""
    if isinstance(limit, int):
        value = limit
    else:
        m = _TIME.match(str(limit).strip())
        if not m:
            raise BiqaError(f"time limit {limit!r}: use minutes (240) or sbatch's forms (4:00:00, 1-12:00:00)")
        days, a, b, c = (int(x) if x else 0 for x in m.groups())
        if m.group(1) is not None:  # days-hours[:minutes[:seconds]]
            secs = days * 86400 + a * 3600 + b * 60 + c
        elif m.group(4) is not None:  # hours:minutes:seconds
            secs = a * 3600 + b * 60 + c
        else:  # minutes[:seconds]
            secs = a * 60 + b
        value = -(-secs // 60)
    if value <= 0:
        raise BiqaError(f"time limit {limit!r} must be positive")
    return value


def parse_slurm_options(pairs: list[str]) -> dict:
    """``--slurm-option KEY=VALUE`` (repeatable) as a dict of extra sbatch options."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BiqaError(f"--slurm-option {pair!r}: expected KEY=VALUE, e.g. constraint=a100")
        out[key.strip().lstrip("-")] = value.strip()
    return out
