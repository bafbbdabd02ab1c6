"""A few optimiser steps of each head on CPU, fp32 and bf16 autocast, the way the runner drives
them (Runtime.prepare / .to / .autocast, the head's own param_groups and loss), reduce the loss
on a fixed tiny batch."""

from __future__ import annotations

import pytest
import torch

from biqabench.backbones import ResNetBackbone
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
    recipe = override(head_spec(name).recipe, {"lr": 1e-3, "head_lr_mult": 1.0})
    head = rt.prepare(create_head(name, ResNetBackbone("resnet18"), recipe=recipe)).train()
    opt = torch.optim.Adam(head.param_groups(recipe), weight_decay=recipe.weight_decay)
    g = torch.Generator().manual_seed(1)
    x = rt.to(torch.randn(6, 3, 64, 64, generator=g))
    mos = torch.linspace(0.1, 0.9, 6)

    def loss_with_fixed_dropout() -> torch.Tensor:
        torch.manual_seed(123)  # the same dropout masks before and after, so losses compare
        with rt.autocast():
            return head.loss(x, mos)

    with torch.no_grad():
        before = loss_with_fixed_dropout().item()
    for step in range(6):
        torch.manual_seed(step)
        with rt.autocast():
            loss = head.loss(x, mos)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_with_fixed_dropout().item()
    assert after < 0.8 * before, (before, after)
    head.eval()
    with torch.no_grad(), rt.autocast():
        scores = head(x)
    assert scores.shape == (6,) and torch.isfinite(scores.float()).all()
