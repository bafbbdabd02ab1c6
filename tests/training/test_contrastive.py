"""The contrastive losses the pretrainers share (issue 23), against their formulas written as loops."""

from __future__ import annotations

import math

import pytest
import torch

from biqabench.training.contrastive import info_nce, nt_xent


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def test_nt_xent_is_the_simclr_formula():
    g = torch.Generator().manual_seed(0)
    a, b, tau = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g), 0.3
    z = [_unit(v) for v in torch.cat([a, b])]
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        pos = i + n if i < n else i - n
        den = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(2 * n) if j != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / tau) / den)
    assert float(nt_xent(a, b, tau)) == pytest.approx(total / (2 * n), rel=1e-5)


def test_info_nce_with_a_queue_is_the_moco_formula():
    g = torch.Generator().manual_seed(1)
    q, k, queue, tau = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(9, 6, generator=g), 0.2
    total = 0.0
    for i in range(4):
        qi, ki = _unit(q[i]), _unit(k[i])
        pos = math.exp(float(qi @ ki) / tau)
        neg = sum(math.exp(float(qi @ _unit(u)) / tau) for u in queue)
        total += -math.log(pos / (pos + neg))
    assert float(info_nce(q, k, queue, tau)) == pytest.approx(total / 4, rel=1e-5)
    assert float(info_nce(q, k, None, tau)) == pytest.approx(0.0, abs=1e-6)  # no negatives: nothing to contrast
