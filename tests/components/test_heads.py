"""A few optimiser steps of each head on CPU, fp32 and bf16 autocast, the way the runner drives
them (Runtime.prepare / .to / .autocast, the head's own param_groups and loss), reduce the loss
on a fixed tiny batch.  The toy backbone keeps this fast; ResNet shapes and gradients are
covered by plugins/test_heads_models.py."""

from __future__ import annotations

import pytest
import torch

from biqabench.components.backbones import TinyBackbone
from biqabench.base.config import override
from biqabench.runtime.device import cpu_has_fast_bf16, get_runtime
from biqabench.components.heads import create_head, head_spec


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


def test_checkpoints_hold_nothing_twice_and_a_finished_fine_tune_is_not_rerun(tmp_path):
    """train_head's epoch checkpoints: mid-run the best weights are stored only when they differ
    from the current ones; after the last epoch only the best weights and history remain, and a
    call with that checkpoint returns them without touching the data."""
    from biqabench.base import io
    from biqabench.data import PatchDataset, load_dataset
    from biqabench.training.engine import train_head
    from biqabench.components.heads import TrainRecipe

    rt = get_runtime("cpu", "fp32")
    table = load_dataset("demo-a")
    recipe = TrainRecipe(patch_size=32, train_patches=1, test_patches=1, batch_size=16, epochs=2, lr=1e-3, lr_step=0,
                    head_lr_mult=1.0)
    data = PatchDataset(table, list(range(32)), 32, 1, train=True, seed=0)
    ckpt = tmp_path / "checkpoint.pt"
    seen = []

    def validate(model):
        seen.append(io.load_torch(ckpt) if ckpt.is_file() else None)
        return [0.5, 0.2][len(seen) - 1]  # epoch 1 is the best

    torch.manual_seed(0)
    head = create_head("linear", TinyBackbone(8), recipe=recipe)
    result = train_head(head, data, recipe, rt, validate=validate, checkpoint=ckpt, progress=False)
    assert result.best_epoch == 1
    after_epoch1 = seen[1]  # written after epoch 1, read during epoch 2's validation
    assert after_epoch1["best_is_model"] and after_epoch1["best_state"] is None and "optimizer" in after_epoch1
    final = io.load_torch(ckpt)
    assert final["finished"] and "model" not in final and "optimizer" not in final
    assert all(torch.equal(final["best_state"][k], v) for k, v in result.best_state.items())

    class Untouchable(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            raise AssertionError("a finished fine-tune must not read its data again")

    again = train_head(create_head("linear", TinyBackbone(8), recipe=recipe), Untouchable(), recipe, rt,
                       validate=validate, checkpoint=ckpt, progress=False)
    assert again.best_epoch == 1 and again.history == result.history
    assert all(torch.equal(again.best_state[k], v) for k, v in result.best_state.items())
