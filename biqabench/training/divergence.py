"""What a training loop does when its loss stops being a number: one place for both loops.

A NaN or Inf loss means the weights are about to be destroyed (one optimiser step on a NaN
gradient makes every parameter NaN), so the default policy (``stop``) ends the run with one line
naming where it happened and the last good checkpoint, which is left untouched.  ``skip`` drops
that batch (no backward, no optimiser step) and counts it; the count goes into the run's manifest,
so a table built from a run that skipped batches says so.  Too many skips in a row still stop.

With fp16 on CUDA, ``torch.amp.GradScaler`` skips steps on its own whenever the scaled gradients
overflow (and lowers its scale).  Those are normal in small numbers, but a run that skipped half
its steps did not train what its recipe says; :class:`NanGuard` counts them too
(``scaler_skipped``), by watching the scale drop after ``scaler.update()``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from biqabench.runtime import distributed
from biqabench.base.errors import BiqaError

log = logging.getLogger(__name__)

POLICIES = ("stop", "skip")
MAX_SKIPS_IN_A_ROW = 10


def check_policy(policy: str, where: str = "--nan-policy") -> str:
    if policy not in POLICIES:
        raise BiqaError(f"{where} {policy!r} is not one of {', '.join(POLICIES)}")
    return policy


@dataclass
class NanGuard:
    """Decides, per batch, whether a loss may be stepped on; counts what it skipped.

    ``where``: names the loop in messages (``split 2/10``, ``QPT``); ``hint``: what to change.
    """

    policy: str = "stop"
    where: str = "training"
    hint: str = "lower the learning rate or use --precision fp32"
    skipped: int = 0
    scaler_skipped: int = 0
    _in_a_row: int = 0

    def __post_init__(self) -> None:
        check_policy(self.policy)

    def skip(self, loss: torch.Tensor, position: str, kept: str | None) -> bool:
        """True: do not step on this batch (``skip`` policy).  Raises under ``stop``.

        ``position``: e.g. ``"epoch 2, step 14"``; ``kept``: the clause naming the last good
        checkpoint (``"the last good checkpoint (epoch 1) is kept at ..."``), None if there is none.
        Under torchrun every process takes the same decision (a lone skip would hang DDP).
        """
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not distributed.any_rank(bad, loss.device):
            self._in_a_row = 0
            return False
        value = loss.detach().float().reshape(-1)[0].item()
        kept = f"; {kept}" if kept else ""
        if self.policy == "skip" and self._in_a_row + 1 < MAX_SKIPS_IN_A_ROW:
            self.skipped += 1
            self._in_a_row += 1
            log.warning("%s: loss became %s at %s; batch skipped (--nan-policy skip, %d so far)",
                        self.where, value, position, self.skipped)
            return True
        again = (f" ({MAX_SKIPS_IN_A_ROW} batches in a row, with --nan-policy skip)"
                 if self.policy == "skip" else "")
        raise BiqaError(f"{self.where}: loss became {value} at {position}{again}; {self.hint}{kept}")

    def step(self, scaler, optimizer) -> None:
        """``scaler.step`` + ``scaler.update``, counting the steps the grad scaler skipped."""
        before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        if before is not None and scaler.get_scale() < before:  # inf/NaN gradients: the step was skipped
            self.scaler_skipped += 1

    def counts(self) -> dict[str, int]:
        """For the manifest: batches skipped by the policy and steps skipped by the grad scaler."""
        return {"nan_skipped": self.skipped, "scaler_skipped": self.scaler_skipped}
