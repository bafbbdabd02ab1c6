"""Runs under ``torchrun``: the process group, who writes, and sharing small decisions.

One place for it, so that pretraining and fine-tuning behave alike: gloo on CPU, NCCL on CUDA,
one GPU per process (``LOCAL_RANK``), every process computes, **rank 0 alone writes files** (run
folders, checkpoints, the weights store) and the others receive what they must agree on (a run
folder's name, a record) by broadcast.  Outside ``torchrun`` every function here is a cheap
no-op, so single-process code calls them unconditionally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist

from biqabench.runtime.device import Runtime

#: How long a process waits for the others at a collective.  Rank 0 alone scores test sets while
#: the others wait, which on a large set can take a while: generous by default.
TIMEOUT_ENV = "BIQABENCH_DIST_TIMEOUT_MIN"


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True in the process that writes files (rank 0, or the only process)."""
    return rank() == 0


@contextlib.contextmanager
def process_group(runtime: Runtime) -> Iterator[Runtime]:
    """Join the ``torchrun`` process group (if launched by it) for the duration of a run.

    Yields the runtime to use: under CUDA each process gets its own GPU.  A group that already
    exists (a caller set it up) is used as it is and left open.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield runtime
        return
    created = False
    if not dist.is_initialized():
        backend = "nccl" if runtime.device.type == "cuda" else "gloo"
        minutes = float(os.environ.get(TIMEOUT_ENV, "120"))
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=minutes))
        created = True
    if runtime.device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        runtime = dataclasses.replace(runtime, device=torch.device("cuda", local))
    finished = False
    try:
        yield runtime
        finished = True
    finally:
        if created and dist.is_initialized():
            if finished:
                _quiesce()
            dist.destroy_process_group()


def _quiesce() -> None:
    """Before a finished run leaves its group: free what still holds it, then wait for every rank.

    Rank 0 writes the weights while the others are done; a rank that tore its group down early, or
    DDP reducers and gloo work objects freed only at interpreter exit, made a finished 2-process
    run abort at exit ("terminate called without an active exception", once on CI)."""
    gc.collect()
    dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` in every process (picklable objects)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True in every process when ``flag`` is true in any (e.g. one of them was interrupted)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def wrap_ddp(module: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """``module`` in DistributedDataParallel under torchrun (gradients all-reduced), else as is."""
    if not active():
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)


def rank_zero_only(fn):
    """Decorate a function that writes (files, logs): it runs in rank 0 only and returns None in
    the other processes (lightning's ``rank_zero_only``)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) if is_main() else None

    return wrapper
