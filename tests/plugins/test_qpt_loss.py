"""QC-Loss against an explicit computation, and the role of each kind of negative."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from biqabench_plugins.qpt.loss import qc_logits, qc_loss


def embeddings(b=4, m=2, k=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, kp = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    kd, queue = torch.randn(b, m, d, generator=g), torch.randn(k, d, generator=g)
    return q, kp, kd, queue


def loop_loss(q, kp, kd, queue, tau, in_batch=True, use_deg=True, use_queue=True) -> float:
    """The formula, one image and one negative at a time."""
    unit = lambda v: (v / v.norm()).tolist()  # noqa: E731
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    b, m = kd.shape[0], kd.shape[1]
    total = 0.0
    for i in range(b):
        qi = unit(q[i])
        pos = math.exp(dot(qi, unit(kp[i])) / tau)
        neg = 0.0
        if use_deg:
            for j in range(m):
                neg += math.exp(dot(qi, unit(kd[i, j])) / tau)  # same content, other degradation
        if in_batch:
            for other in range(b):
                if other == i:
                    continue
                neg += math.exp(dot(qi, unit(kp[other])) / tau)  # other images' patches
                if use_deg:
                    for j in range(m):
                        neg += math.exp(dot(qi, unit(kd[other, j])) / tau)
        if use_queue:
            for n in range(queue.shape[0]):
                neg += math.exp(dot(qi, unit(queue[n])) / tau)
        total += -math.log(pos / (pos + neg))
    return total / b


@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
def test_formula_matches_explicit_loops(tau):
    q, kp, kd, queue = embeddings()
    got = float(qc_loss(q, kp, kd, queue, temperature=tau))
    assert got == pytest.approx(loop_loss(q, kp, kd, queue, tau), rel=1e-5)


@pytest.mark.parametrize("in_batch, use_deg, use_queue", [
    (False, True, True), (True, False, True), (True, True, False), (False, False, True), (False, True, False),
])
def test_each_negative_kind_can_be_left_out(in_batch, use_deg, use_queue):
    q, kp, kd, queue = embeddings(seed=1)
    got = float(qc_loss(q, kp, kd if use_deg else None, queue if use_queue else None, temperature=0.2, in_batch=in_batch))
    assert got == pytest.approx(loop_loss(q, kp, kd, queue, 0.2, in_batch, use_deg, use_queue), rel=1e-5)


def test_each_negative_kind_changes_the_loss():
    q, kp, kd, queue = embeddings(seed=2)
    full = float(qc_loss(q, kp, kd, queue))
    # every kind adds terms to the denominator, so removing any one lowers the loss
    assert float(qc_loss(q, kp, None, queue)) < full           # degradation-based negatives
    assert float(qc_loss(q, kp, kd, queue, in_batch=False)) < full  # content negatives from the batch
    assert float(qc_loss(q, kp, kd, None)) < full              # content negatives from the queue


def test_degradation_negatives_punish_a_quality_blind_encoder():
    """An encoder that sees only content gives d2(x) the same embedding as d1(x): the loss can
    then not fall below log(1 + M), however far other contents are."""
    b, m, d = 3, 2, 6
    content = F.normalize(torch.eye(d)[:b], dim=1)
    q = kp = content
    kd = content.unsqueeze(1).expand(b, m, d)  # blind to the degradation
    loss = float(qc_loss(q, kp, kd, None, temperature=0.05))
    assert loss >= math.log(1 + m) - 1e-6
    # an encoder that separates the degradation drives it towards zero
    kd_aware = -content.unsqueeze(1).expand(b, m, d)
    assert float(qc_loss(q, kp, kd_aware, None, temperature=0.05)) < 0.01


def test_logits_layout_and_masking():
    q, kp, kd, queue = embeddings(b=3, m=2, k=4)
    logits = qc_logits(q, kp, kd, queue, temperature=0.5)
    assert logits.shape == (3, 1 + 2 + 3 * 3 + 4)
    # each image's own keys are masked out of the in-batch block
    block = logits[:, 3:12].view(3, 3, 3)
    for i in range(3):
        assert torch.isinf(block[i, i]).all() and torch.isfinite(block[i, [j for j in range(3) if j != i]]).all()


def test_gradient_reaches_the_query_only_through_the_formula():
    q, kp, kd, queue = embeddings()
    q.requires_grad_(True)
    qc_loss(q, kp, kd, queue).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
