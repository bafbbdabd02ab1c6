"""TReS's objective term by term on hand-made predictions, against explicit arithmetic."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from biqabench.components.backbones import TinyBackbone
from biqabench.base.errors import BiqaError
from biqabench.components.heads import create_head
from biqabench_plugins.tres.loss import flip_consistency, parse_loss_terms, ranking_loss, tres_loss
from biqabench_plugins.tres.model import TReSOptions, TReSOutputs

MOS = torch.tensor([0.2, 0.4, 0.6, 0.8])
# sorted by MOS: lo=0, lo2=1, hi2=2, hi=3
#   t1 = relu(|p0-p1| - |p0-p3| + (y3-y1)) = relu(|.5-.1| - |.5-.6| + .4) = 0.7
#   t2 = relu(|p3-p2| - |p3-p0| + (y2-y0)) = relu(|.6-.3| - |.6-.5| + .4) = 0.6
PRED_A = torch.tensor([0.5, 0.1, 0.3, 0.6])
RANK_A = 1.3
PRED_B = torch.tensor([2.0, 4.0, 6.0, 8.0])  # ordered and spread: both triplets satisfied
RANK_B = 0.0


def test_ranking_loss_on_hand_made_predictions():
    assert ranking_loss(PRED_A, MOS).item() == pytest.approx(RANK_A, abs=1e-6)
    assert ranking_loss(PRED_B, MOS).item() == pytest.approx(RANK_B, abs=1e-6)
    perm = torch.tensor([2, 0, 3, 1])  # batch order does not matter, only MOS order
    assert ranking_loss(PRED_A[perm], MOS[perm]).item() == pytest.approx(RANK_A, abs=1e-6)
    assert ranking_loss(PRED_A[:1], MOS[:1]).item() == 0.0
    assert ranking_loss(PRED_A[:2], MOS[:2]).item() == 0.0  # both triplets degenerate


def test_ranking_loss_matches_the_reference_triplet_formulation():
    """The reference builds two nn.TripletMarginLoss(p=1) on 1-element 'embeddings'."""
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        pred, mos = torch.rand(6, generator=g), torch.rand(6, generator=g)
        order = torch.argsort(mos)
        p = pred.unsqueeze(1)
        t1 = torch.nn.TripletMarginLoss(margin=float(mos[order[-1]] - mos[order[1]]), p=1)
        t2 = torch.nn.TripletMarginLoss(margin=float(mos[order[-2]] - mos[order[0]]), p=1)
        ref = t1(p[order[0]][None], p[order[1]][None], p[order[-1]][None]) + \
            t2(p[order[-1]][None], p[order[-2]][None], p[order[0]][None])
        assert ranking_loss(pred, mos).item() == pytest.approx(ref.item(), abs=1e-5)


def _fake_head(terms: str, **options):
    """A stand-in whose two views return hand-made outputs (view B when the input is flipped)."""
    enc_a = torch.zeros(4, 2, 1, 2, requires_grad=True)
    enc_b = torch.full((4, 2, 1, 2), 0.25, requires_grad=True)
    last_a = torch.ones(4, 3, 1, 2, requires_grad=True)
    last_b = torch.full((4, 3, 1, 2), 0.5, requires_grad=True)

    def view(x):
        flipped = bool(x[0, 0, 0, 0] == 0)
        return (TReSOutputs(PRED_B, enc_b, last_b) if flipped else TReSOutputs(PRED_A, enc_a, last_a))

    head = SimpleNamespace(loss_terms=parse_loss_terms(terms), options=TReSOptions(**options), view=view)
    return head, (enc_a, enc_b, last_a, last_b)


def _marked_batch() -> torch.Tensor:
    x = torch.zeros(4, 3, 8, 8)
    x[..., 0] = 1.0  # left column lit: a flip moves it right
    return x


def test_full_loss_is_the_sum_of_its_terms():
    head, (enc_a, enc_b, last_a, _) = _fake_head("l1+rank+consistency")
    loss = tres_loss(head, _marked_batch(), MOS)
    l1 = (PRED_A - MOS).abs().mean() + (PRED_B - MOS).abs().mean()  # 0.275 + 4.5
    consistency = 2 * (0.25 + 0.5)                                   # both directions
    rank_agree = 0.5 * (abs(RANK_A - RANK_B) + abs(RANK_B - RANK_A))
    rank = 0.05 * (RANK_A + RANK_B)
    assert loss.item() == pytest.approx(l1.item() + consistency + rank_agree + rank, abs=1e-6)
    assert loss.item() == pytest.approx(7.64, abs=1e-6)
    # stop-gradients: each map is pulled toward the other view's, once, not pushed by its own target role
    loss.backward()
    assert torch.allclose(enc_a.grad, torch.full_like(enc_a, -1.0 / enc_a.numel()))
    assert torch.allclose(enc_b.grad, torch.full_like(enc_b, 1.0 / enc_b.numel()))
    assert torch.allclose(last_a.grad, torch.full_like(last_a, 1.0 / last_a.numel()))


def test_weights_and_term_selection():
    head, _ = _fake_head("l1+rank+consistency", consistency_weight=0.0, rank_weight=1.0,
                         rank_consistency_weight=0.0)
    l1 = 0.275 + 4.5
    assert tres_loss(head, _marked_batch(), MOS).item() == pytest.approx(l1 + RANK_A, abs=1e-6)
    head, _ = _fake_head("l1")  # one view only: no flipped pass
    assert tres_loss(head, _marked_batch(), MOS).item() == pytest.approx(0.275, abs=1e-6)
    head, _ = _fake_head("mse+rank")
    mse = ((PRED_A - MOS) ** 2).mean().item()
    assert tres_loss(head, _marked_batch(), MOS).item() == pytest.approx(mse + 0.05 * RANK_A, abs=1e-6)


def test_flip_back_compares_aligned_maps():
    a = torch.tensor([[[[1.0, 2.0]]]])
    b = torch.tensor([[[[2.0, 1.0]]]])  # what a flipped image's map looks like
    zero = torch.zeros(1, 1, 1, 1)
    assert flip_consistency(a, zero, b, zero).item() == pytest.approx(1.0)
    assert flip_consistency(a, zero, torch.flip(b, dims=[3]), zero).item() == 0.0


@pytest.mark.parametrize("spec", ["rank", "l1+mse", "l1+ranking", ""])
def test_loss_spec_errors(spec):
    with pytest.raises(BiqaError, match="exactly one of l1/mse"):
        parse_loss_terms(spec)


def test_real_head_loss_is_the_same_composition():
    """On the real head (eval: no dropout), the loss equals the terms built from its two views."""
    torch.manual_seed(0)
    head = create_head("tres", TinyBackbone()).eval()
    x, mos = torch.randn(4, 3, 64, 64), MOS
    with torch.no_grad():
        loss = tres_loss(head, x, mos)
        a, b = head.view(x), head.view(torch.flip(x, dims=[3]))
        ra, rb = ranking_loss(a.score, mos), ranking_loss(b.score, mos)
        expected = ((a.score - mos).abs().mean() + (b.score - mos).abs().mean()
                    + flip_consistency(a.encoded, a.last, b.encoded, b.last)
                    + flip_consistency(b.encoded, b.last, a.encoded, a.last)
                    + 0.5 * 2 * (ra - rb).abs() + 0.05 * (ra + rb))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
