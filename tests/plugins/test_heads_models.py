"""The bundled heads as the runner sees them: built by name around a given backbone, scores of
shape (B,), gradients everywhere, deterministic eval, recipes as overridable data."""

from __future__ import annotations

import pytest
import torch

from biqabench.components.backbones import TinyBackbone
from biqabench.base.config import override
from biqabench.base.errors import BiqaError
from biqabench.components.heads import create_head, head_spec
from biqabench_plugins.torchvision_backbones.resnet import ResNetBackbone

HEADS = ("hyperiqa", "tres", "linear")



def _batch(n: int = 2, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.rand(n, generator=g)


@pytest.mark.parametrize("name, arch", [
    ("hyperiqa", "resnet18"), ("hyperiqa", "resnet50"), ("linear", "resnet18"), ("linear", "resnet50"),
    ("tres", "resnet18"),
    pytest.param("tres", "resnet50", marks=pytest.mark.slow),  # a d=3840 transformer: ~10 s on 2 cores
])
def test_scores_and_gradients_reach_head_and_backbone(name, arch):
    torch.manual_seed(0)
    backbone = ResNetBackbone(arch)
    head = create_head(name, backbone)
    assert head.backbone is backbone  # built around the given backbone, not its own
    x, mos = _batch(3)
    scores = head(x)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    loss = head.loss(x, mos)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    head_params = head.head_parameters()
    assert head_params, "a head with no parameters of its own"
    for p in head.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert sum(p.grad.abs().sum() for p in head_params) > 0
    assert sum(p.grad.abs().sum() for p in backbone.parameters()) > 0


@pytest.mark.parametrize("name", HEADS)
def test_eval_scores_are_deterministic_and_batch_independent(name):
    torch.manual_seed(0)
    head = create_head(name, ResNetBackbone("resnet18")).eval()
    x, _ = _batch(3, 64)
    with torch.no_grad():
        first, second = head(x), head(x)
        alone = head(x[1:2])
    assert torch.equal(first, second)
    torch.testing.assert_close(alone, first[1:2], atol=1e-5, rtol=1e-5)  # no batch statistics in eval


@pytest.mark.parametrize("name", HEADS)
def test_channels_last_runtime_layout_gives_the_same_scores(name):
    """The runner moves models and batches to channels_last; reshapes must not scramble it."""
    torch.manual_seed(0)
    head = create_head(name, TinyBackbone()).eval()
    x, _ = _batch(2, 64)
    with torch.no_grad():
        plain = head(x)
        head.to(memory_format=torch.channels_last)
        cl = head(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, plain, atol=1e-5, rtol=1e-5)


def test_tres_training_mode_is_stochastic_so_the_eval_check_means_something():
    torch.manual_seed(0)
    head = create_head("tres", TinyBackbone()).train()
    x, _ = _batch(2)
    assert not torch.equal(head(x), head(x))  # dropout 0.5 in the transformer


@pytest.mark.parametrize("name", HEADS)
def test_head_sizes_itself_from_backbone_channels(name):
    """Any four-stage backbone works, including a toy one whose widths are not ResNet's."""
    head = create_head(name, TinyBackbone(width=6))
    x, mos = _batch(2, 64)
    assert head(x).shape == (2,)
    head.loss(x, mos).backward()


@pytest.mark.parametrize("name", ["hyperiqa", "tres"])
@pytest.mark.parametrize("size", [96, 128, 224])
def test_patch_sizes_other_than_224(name, size):
    head = create_head(name, TinyBackbone()).eval()
    with torch.no_grad():
        assert head(torch.randn(2, 3, size, size)).shape == (2,)


@pytest.mark.parametrize("name", HEADS)
def test_freeze_backbone_is_a_linear_probe(name):
    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet18")
    head = create_head(name, backbone, recipe={"freeze_backbone": True}).train()
    assert not backbone.training and head.training  # BN statistics of a frozen backbone stay put
    stats = {k: v.clone() for k, v in backbone.state_dict().items()}
    x, mos = _batch(4)
    head.loss(x, mos).backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in head.head_parameters())
    assert all(torch.equal(stats[k], v) for k, v in backbone.state_dict().items())
    groups = head.param_groups(override(head_spec(name).recipe, {"freeze_backbone": True}))
    assert [g["name"] for g in groups if g["name"] != "lda"] == ["head"]


def test_param_groups_follow_the_recipe():
    head = create_head("hyperiqa", TinyBackbone())
    groups = {g["name"]: g for g in head.param_groups(head_spec("hyperiqa").recipe)}
    assert groups["backbone"]["lr"] == pytest.approx(2e-5) and groups["head"]["lr"] == pytest.approx(2e-4)
    assert groups["lda"]["lr"] == pytest.approx(2e-5)  # the reference's LDA modules sit in its backbone module
    n_all = sum(p.numel() for p in head.parameters())
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == n_all
    tres = create_head("tres", TinyBackbone())
    assert all(g["lr"] == pytest.approx(2e-5) for g in tres.param_groups(head_spec("tres").recipe))


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("scale", ["paper", "cpu"])
def test_yaml_recipes_map_onto_the_head_recipe(name, scale):
    recipe = head_spec(name).preset(scale)  # shipped inside the head's plugin package
    head = head_spec(name).build(TinyBackbone(), recipe)  # options validated by the head
    if scale == "paper":
        assert recipe == override(head_spec(name).recipe, {"options": recipe.options})  # = built-in
        if hasattr(head, "options"):
            assert head.options == type(head.options)()  # the options listed are the defaults
    else:
        assert 64 <= recipe.patch_size <= 128 and recipe.patch_size % 32 == 0  # smoke-sized, stride-32 grids
        # smoke-sized: few epochs, unless the backbone is frozen and its features cached (cheap epochs)
        assert recipe.epochs <= (20 if recipe.cache_features else 3) and 16 <= recipe.batch_size <= 32
    assert head(torch.randn(2, 3, recipe.patch_size, recipe.patch_size)).shape == (2,)


def test_paper_recipes_hold_the_reference_settings():
    h, t = head_spec("hyperiqa").recipe, head_spec("tres").recipe
    assert (h.patch_size, h.train_patches, h.test_patches, h.batch_size, h.epochs, h.lr, h.head_lr_mult,
            h.weight_decay, h.lr_step, h.loss) == (224, 25, 25, 96, 16, 2e-5, 10.0, 5e-4, 6, "l1")
    assert (t.patch_size, t.train_patches, t.test_patches, t.lr, t.weight_decay, t.lr_step) == (
        224, 50, 50, 2e-5, 5e-4, 1)
    assert t.loss == "l1+rank+consistency" and t.vflip


@pytest.mark.parametrize("name, options, match", [
    ("hyperiqa", {"target_fc": [112, 56, 28]}, "4 widths"),
    ("hyperiqa", {"feature_size": 5}, "not a multiple"),
    ("hyperiqa", {"hyper_channels": 3}, "did you mean 'hyper_in_channels'"),
    ("tres", {"dropout": 1.5}, "dropout must be in"),
    ("tres", {"nheads": 8}, "did you mean 'nhead'"),
    ("linear", {"anything": 1}, "takes no options"),
])
def test_bad_options_name_the_key(name, options, match):
    with pytest.raises(BiqaError, match=match):
        create_head(name, TinyBackbone(), recipe={"options": options})


@pytest.mark.parametrize("name, loss", [("hyperiqa", "ranking"), ("tres", "rank+consistency"), ("linear", "huber")])
def test_unknown_loss_is_refused(name, loss):
    with pytest.raises(BiqaError, match="loss"):
        create_head(name, TinyBackbone(), recipe={"loss": loss})


def test_tres_on_resnet50_has_the_reference_widths():
    head = create_head("tres", ResNetBackbone("resnet50"))
    assert head.d_model == 3840 and tuple(head.fc2.weight.shape) == (2048, 3840)
    assert tuple(head.fc.weight.shape) == (1, 4096) and head.transformer.encoder.layers[0].self_attn.num_heads == 16


def test_tres_head_count_falls_back_to_a_divisor_of_the_width():
    head = create_head("tres", TinyBackbone(width=6))  # d = 6+12+24+48 = 90, not divisible by 16
    assert head.d_model == 90 and head.transformer.encoder.layers[0].self_attn.num_heads == 15


def test_heads_list_shows_the_three_with_recipes():
    from typer.testing import CliRunner

    from biqabench.cli import app

    result = CliRunner().invoke(app, ["heads", "list", "--format", "plain"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert {"hyperiqa", "tres", "linear"} <= set(rows)
    assert "patch 224, 25/25 patches" in rows["hyperiqa"] and "batch 96, 16 ep (lr x0.1 every 6), loss l1" in rows["hyperiqa"]
    assert "patch 224, 50/50 patches" in rows["tres"] and "l1+rank+consistency" in rows["tres"]
    assert "(x10 head)" in rows["linear"]
