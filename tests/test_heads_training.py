"""A few optimiser steps of each head on CPU, fp32 and bf16 autocast, the way the runner drives
them (Runtime.prepare / .to / .autocast, the head's own param_groups and loss), reduce the loss
on a fixed tiny batch.  The toy backbone keeps this fast; ResNet shapes and gradients are
covered by test_heads_models.py."""

from __future__ import annotations

import pytest
import torch

from biqabench.backbones import TinyBackbone
from biqabench.config import override
from biqabench.device import cpu_has_fast_bf16, get_runtime
from biqabench.heads import create_head, head_spec


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["hyperiqa", "tres", "linear"])
def test_training_steps_reduce_the_loss(name, precision):
    if precision == "bf16" and not cpu_has_fast_bf16():
        pytest.skip("this CPU has no native bf16 (bf16 autocast would still run, slowly)")
    rt = get_runtime("cpu", precision)
    torch.manual_seed(0)
    recipe = head_spec(name).recipe  # the paper's learning rates
    if name == "tres":  # with dropout 0.5 a 6-step loss change drowns in mask noise (tested elsewhere)
        recipe = override(recipe, {"options": {"dropout": 0.0, "feature_dropout": 0.0}})
    head = rt.prepare(create_head(name, TinyBackbone(16), recipe=recipe)).train()
    opt = torch.optim.Adam(head.param_groups(recipe), weight_decay=recipe.weight_decay)
    g = torch.Generator().manual_seed(1)
    x = rt.to(torch.randn(6, 3, 64, 64, generator=g))
    mos = torch.linspace(0.1, 0.9, 6)

    def loss_now() -> torch.Tensor:
        with rt.autocast():
            return head.loss(x, mos)

    with torch.no_grad():
        before = loss_now().item()
    for _ in range(6):
        with rt.autocast():
            loss = head.loss(x, mos)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_now().item()
    assert after < 0.9 * before, (before, after)
    head.eval()
    with torch.no_grad(), rt.autocast():
        scores = head(x)
    assert scores.shape == (6,) and torch.isfinite(scores.float()).all()
