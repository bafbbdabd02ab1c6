"""TReS's training objective, as in the reference code's training loop (isalirezag/TReS).

For a batch ``x`` with MOS ``y`` (native scale: ``target: native``), two views are scored: ``x`` and its horizontal flip
``x'`` (each view is one backbone pass with its own batch statistics, as in the reference)::

    loss = L1(p, y) + L1(p', y)                                    regression, both views
         + w_c  * [C(x -> x') + C(x' -> x)]                        self-consistency
         + w_rc * (|R(p) - sg R(p')| + |R(p') - sg R(p)|)          ranking terms agree
         + w_r  * (R(p) + R(p'))                                   relative ranking

with ``sg`` = stop-gradient, ``C(a -> b) = L1(enc_a, sg enc_b) + L1(last_a, sg last_b)`` over the
transformer output maps and the last backbone stage, and ``R`` the two-triplet ranking loss
(:func:`ranking_loss`).  Weights: w_c = 1, w_r = 0.05, w_rc = 0.5 (recipe options).

One deliberate economy: the reference scores each view with a separate "flipped branch" pass
(4 backbone + 4 transformer passes per step) whose outputs only serve as detached consistency
targets; here each view's own pass is the other's target (2 + 2 passes).  The targets then carry
the 0.1 feature dropout of a training pass, which the reference's targets do not; the values
compared and the gradients are otherwise the same.

The recipe's ``loss`` names the terms: ``l1+rank+consistency`` (the paper's), any subset that
keeps one regression term (``l1`` or ``mse``); without ``consistency`` only one view is scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biqabench.plugin_api import BiqaError

REGRESSION = ("l1", "mse")
TERMS = (*REGRESSION, "rank", "consistency")
PAPER_LOSS = "l1+rank+consistency"


def parse_loss_terms(spec: str) -> frozenset[str]:
    terms = [t.strip().lower() for t in str(spec).split("+") if t.strip()]
    unknown = [t for t in terms if t not in TERMS]
    if unknown or sum(t in REGRESSION for t in terms) != 1:
        raise BiqaError(f"tres recipe: loss {spec!r} is not understood; name terms joined by '+' from "
                        f"{', '.join(TERMS)} with exactly one of l1/mse, e.g. {PAPER_LOSS!r} (the paper's)")
    return frozenset(terms)


def ranking_loss(pred: torch.Tensor, mos: torch.Tensor) -> torch.Tensor:
    """Two triplets anchored at the batch's extremes, margins from MOS gaps (TReS relative ranking).

    With the batch sorted by MOS (lowest ``lo``, next ``lo2``; highest ``hi``, next ``hi2``)::

        R = relu(|p_lo - p_lo2| - |p_lo - p_hi| + (y_hi - y_lo2))
          + relu(|p_hi - p_hi2| - |p_hi - p_lo| + (y_hi2 - y_lo))

    i.e. the closest-quality neighbour must be predicted closer than the opposite extreme, by at
    least their MOS gap.  Zero for fewer than two images.  Ties in MOS keep batch order.
    """
    pred = pred.reshape(-1).float()
    mos = mos.reshape(-1).float()
    if pred.numel() < 2:
        return pred.sum() * 0.0
    order = torch.argsort(mos, stable=True)
    lo, lo2, hi2, hi = order[0], order[1], order[-2], order[-1]
    t1 = F.relu((pred[lo] - pred[lo2]).abs() - (pred[lo] - pred[hi]).abs() + (mos[hi] - mos[lo2]))
    t2 = F.relu((pred[hi] - pred[hi2]).abs() - (pred[hi] - pred[lo]).abs() + (mos[hi2] - mos[lo]))
    return t1 + t2


def flip_consistency(encoded: torch.Tensor, last: torch.Tensor,
                     encoded_target: torch.Tensor, last_target: torch.Tensor) -> torch.Tensor:
    """``C(a -> b)``: L1 of a view's encoder map and last stage to the other view's (detached)."""
    return (F.l1_loss(encoded.float(), encoded_target.detach().float())
            + F.l1_loss(last.float(), last_target.detach().float()))


def tres_terms(head, x: torch.Tensor, mos: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weighted terms of the objective (``regression``, ``consistency``, ``rank_consistency``,
    ``rank``; those the recipe's ``loss`` names).  ``mos`` is on the scale the head trains on:
    TReS trains on native MOS (``target: native``), as the reference, so the weights keep the
    balance the reference has on every dataset."""
    terms, o = head.loss_terms, head.options
    regress = F.l1_loss if "l1" in terms else F.mse_loss
    y = mos.reshape(-1).float()
    a = head.view(x)
    if "consistency" not in terms:
        out = {"regression": regress(a.score.float(), y)}
        if "rank" in terms:
            out["rank"] = o.rank_weight * ranking_loss(a.score, y)
        return out
    b = head.view(torch.flip(x, dims=[3]))
    b_enc, b_last = b.encoded, b.last
    if o.flip_back:  # compare spatially aligned maps instead of the reference's raw ones
        b_enc, b_last = torch.flip(b_enc, dims=[3]), torch.flip(b_last, dims=[3])
    out = {"regression": regress(a.score.float(), y) + regress(b.score.float(), y),
           "consistency": o.consistency_weight * (flip_consistency(a.encoded, a.last, b_enc, b_last)
                                                  + flip_consistency(b_enc, b_last, a.encoded, a.last))}
    if "rank" in terms:
        ra, rb = ranking_loss(a.score, y), ranking_loss(b.score, y)
        out["rank_consistency"] = o.rank_consistency_weight * ((ra - rb.detach()).abs() + (rb - ra.detach()).abs())
        out["rank"] = o.rank_weight * (ra + rb)
    return out


def tres_loss(head, x: torch.Tensor, mos: torch.Tensor) -> torch.Tensor:
    """The full objective of :class:`~biqabench_plugins.tres.model.TReSHead` on one batch."""
    terms = tres_terms(head, x, mos)
    loss = terms["regression"]
    for name in ("consistency", "rank_consistency", "rank"):
        if name in terms:
            loss = loss + terms[name]
    return loss


def tres_loss_features(head, feats: list[torch.Tensor], mos: torch.Tensor) -> torch.Tensor:
    """The objective from a frozen backbone's cached features (recipe ``cache_features``): the
    regression term and, if named, the relative ranking on one view.  The flip self-consistency
    term needs a crop's and its flip's passes side by side, which a cache of independent crops does
    not pair (the head refuses that recipe when it is built)."""
    terms, o = head.loss_terms, head.options
    if "consistency" in terms:
        raise BiqaError("tres: the flip self-consistency term cannot be trained from cached features; "
                        "use loss: l1+rank")
    y = mos.reshape(-1).float()
    score = head.score_features(feats)
    loss = (F.l1_loss if "l1" in terms else F.mse_loss)(score.float(), y)
    if "rank" in terms:
        loss = loss + o.rank_weight * ranking_loss(score, y)
    return loss
