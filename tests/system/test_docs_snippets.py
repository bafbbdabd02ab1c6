"""The code in the docs runs: a plugin author copies it first."""

from __future__ import annotations

import re
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / page).read_text(), flags=re.S)


def test_the_plugin_snippet_in_plugins_md_builds_a_working_head():
    from biqabench.components.backbones import TinyBackbone
    from biqabench.components.heads import HeadSpec

    block = next(b for b in _python_blocks("plugins.md") if "# myplugin.py" in b)
    namespace: dict = {}
    exec(compile(block, "docs/plugins.md", "exec"), namespace)  # noqa: S102 - our own docs
    registered: list[HeadSpec] = []
    namespace["register_heads"](registered.append)
    (spec,) = registered
    head = spec.build(TinyBackbone(), spec.recipe)
    x, mos = torch.randn(3, 3, 64, 64), torch.rand(3)
    assert head(x).shape == (3,)  # one score per patch
    loss = head.loss(x, mos)  # the base class's loss, from recipe.loss
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_base_loss_follows_the_recipe():
    from biqabench.components.backbones import TinyBackbone
    from biqabench.base.errors import BiqaError
    from biqabench.components.heads import IQAHead, TrainRecipe

    class Mean(IQAHead):
        def forward(self, x):
            return self.backbone(x)[-1].mean(dim=(1, 2, 3))

    x, mos = torch.randn(2, 3, 32, 32), torch.tensor([0.0, 1.0])
    head = Mean(TinyBackbone(), TrainRecipe(loss="mse"))
    pred = head(x).float()
    assert torch.allclose(head.loss(x, mos), torch.nn.functional.mse_loss(pred, mos))
    head.recipe = TrainRecipe(loss="l1")
    assert torch.allclose(head.loss(x, mos), torch.nn.functional.l1_loss(pred, mos))
    try:
        Mean(TinyBackbone(), TrainRecipe(loss="huber"))
    except BiqaError as exc:
        assert "huber" in str(exc) and "l1 or mse" in str(exc)
    else:
        raise AssertionError("an unsupported loss must be refused when the head is built")
