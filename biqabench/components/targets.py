"""What a head trains on: the dataset's native MOS, or MOS normalised to 0..1 (higher is better).

Why it matters.  A loss with more than one term weighs its terms on the scale of the targets.
TReS's reference trains on raw MOS: its L1 and ranking margins are in MOS units while its
self-consistency term compares feature maps, so on CLIVE (0..100) the consistency term is ~100x
lighter than it would be on MOS normalised to 0..1, and on BID (0..5) ~5x.  A head therefore
declares its target in its recipe (``target: native | normalised``), with loss weights meant for
that scale, and the runner feeds it that: TReS trains on native MOS as its reference, so its
published weights (consistency 1, ranking 0.05, 0.5) keep their meaning on every dataset.

Everything after training (model selection, metrics, ``predict``) works on normalised scores:
:func:`to_normalised` maps a native-target head's outputs back with the *training* set's scale
(a cross-dataset test set is then scored on its own scale by ``to_native``, as before).
"""

from __future__ import annotations

import numpy as np

from biqabench.base.errors import BiqaError

NORMALISED, NATIVE = "normalised", "native"
TARGETS = (NORMALISED, NATIVE)


def check_target(target: str, where: str = "recipe") -> str:
    if target not in TARGETS:
        raise BiqaError(f"{where}: target {target!r} is not one of {', '.join(TARGETS)} (native: the dataset's "
                        "own MOS scale, as TReS's reference trains; normalised: 0..1, higher is better)")
    return target


def training_targets(table, target: str) -> np.ndarray:
    """Per-row training targets of ``table`` for a head that trains on ``target``."""
    check_target(target)
    return np.asarray(table.mos if target == NATIVE else table.mos_norm, dtype=np.float64)


def to_normalised(scale: tuple[float, float], higher_better: bool, pred, target: str) -> np.ndarray:
    """A head's outputs on ``target`` as normalised scores (0..1, higher is better)."""
    pred = np.asarray(pred, dtype=np.float64)
    if check_target(target) == NORMALISED:
        return pred
    lo, hi = scale
    norm = (pred - lo) / (hi - lo)
    return norm if higher_better else 1.0 - norm


def describe(table, target: str) -> str:
    """E.g. ``native MOS (0..100, higher is better)`` for manifests and summaries."""
    if check_target(target) == NORMALISED:
        return "MOS normalised to 0..1 (higher is better)"
    lo, hi = table.scale
    return f"native MOS ({lo:g}..{hi:g}, {'higher' if table.higher_better else 'lower'} is better)"


__all__ = ["NATIVE", "NORMALISED", "TARGETS", "check_target", "describe", "to_normalised", "training_targets"]
