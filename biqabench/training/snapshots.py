"""Backbone snapshots of a pretraining run at chosen steps (``pretrain --snapshots 0,250,500``).

A study asks how evaluation scores move while a strategy trains (SRCC against pretraining step),
which needs the backbone *at* those steps of one run, not separate shorter runs (a 250-step run
decays its learning rate differently from step 250 of a 500-step one).  The loop writes
``<run_dir>/snapshots/step<NNNNNN>.safetensors`` (the weights the store would get at that step:
the strategy's :meth:`~biqabench.training.pretrain_method.Pretrainer.backbone`) right after the
step and before its checkpoint, so a run killed at any point and resumed writes every snapshot,
with the same numbers an uninterrupted run writes (resume is exact).  Step 0 is the
initialisation.  Each file is a plain backbone state dict: ``--weights <file>`` reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from biqabench.base import io
from biqabench.base.errors import BiqaError

FOLDER = "snapshots"


def parse_steps(text: str | Iterable[int] | None, option: str = "--snapshots") -> tuple[int, ...]:
    """``"0,250,500"`` (or a list) -> ``(0, 250, 500)``: sorted, distinct, each >= 0."""
    if text is None or text == "":
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        steps = sorted({int(str(s).strip()) for s in items if str(s).strip() != ""})
    except ValueError:
        raise BiqaError(f"{option} {text!r}: give pretraining steps as a comma list of whole numbers, "
                        "e.g. 0,250,500") from None
    if steps and steps[0] < 0:
        raise BiqaError(f"{option}: step {steps[0]} is negative; steps count from 0 (the initialisation)")
    return tuple(steps)


def check_steps(steps: tuple[int, ...], total: int) -> None:
    """Every snapshot step must be one the run reaches."""
    late = [s for s in steps if s > total]
    if late:
        raise BiqaError(f"--snapshots: step {late[0]} is past the run's last step ({total}); "
                        f"ask for steps up to {total} or raise --steps")


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step{int(step):06d}.safetensors"


def save_snapshot(run_dir: str | Path, step: int, backbone: torch.nn.Module) -> Path:
    """Write the backbone's weights at ``step`` (atomically: a kill leaves the old file or none)."""
    state = {k: v for k, v in backbone.state_dict().items()}
    return io.save_safetensors(state, snapshot_path(run_dir, step), metadata={"step": str(int(step))})


def snapshot_files(run_dir: str | Path) -> dict[int, Path]:
    """The snapshots a run folder holds: ``{step: file}``."""
    folder = Path(run_dir) / FOLDER
    found = {}
    for f in sorted(folder.glob("step*.safetensors")) if folder.is_dir() else []:
        try:
            found[int(f.stem[4:])] = f
        except ValueError:
            continue
    return found
