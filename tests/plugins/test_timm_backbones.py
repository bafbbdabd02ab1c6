"""The timm_backbones plugin on small timm models at 64-96 px: one convolutional (ConvNeXt-atto,
ResNet-10t), a mobile hybrid (MobileViT-XXS), a hierarchical transformer (a 4-block Swin) and a
plain ViT (a 4-block ViT-tiny).  Each gives four NCHW maps at strides 4-32, every head trains a
step and predicts on it, QPT pretrains it, and weights files from timm, Hugging Face wrappers
and torchvision load into it.  Nothing downloads (the conftest network guard)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from biqabench.components.backbones import create_backbone
from biqabench.components.heads import create_head, head_spec
from biqabench.base.io import save_safetensors

SMALL_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
FAMILIES = {  # name -> (backbone, timm kwargs): small enough for a CPU test
    "conv": ("convnext_atto", {}),
    "resnet": ("resnet10t", {}),
    "mobilevit": ("mobilevit_xxs", {}),
    "swin": ("swin_tiny_patch4_window7_224", SMALL_SWIN),
    "vit": ("vit_tiny_patch16_224", dict(depth=4)),
}


@pytest.fixture(scope="module")
def backbones():
    """One build per family (each build runs the protocol check); tests work on deep copies."""
    torch.manual_seed(0)
    return {k: create_backbone(name, **kw) for k, (name, kw) in FAMILIES.items()}


def test_loading_the_plugin_does_not_import_timm():
    code = ("import sys; from biqabench.components.plugins import registry; r = registry('backbones'); "
            "assert 'mobilevit_xs' in r and 'timm/resnet50' in r; print('timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_list_shows_the_curated_set_and_filter_searches_all_of_timm(capsys):
    from conftest import invoke_cli

    code, out, _ = invoke_cli(capsys, "backbones", "list")
    assert code == 0
    for name in ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "timm/resnet50", "convnext_tiny",
                 "swin_tiny_patch4_window7_224", "vit_small_patch16_224", "efficientnet_b0"):
        assert f" {name} " in out
    assert "mobilevitv2_050" not in out  # the whole zoo only on request
    code, out, _ = invoke_cli(capsys, "backbones", "list", "--filter", "mobilevit*")
    assert code == 0 and " mobilevit_xxs " in out and " mobilevitv2_050 " in out and "resnet" not in out
    code, out, _ = invoke_cli(capsys, "backbones", "list", "--filter", "resnet1*")
    # torchvision's resnet18 keeps its name; timm's is offered as timm/resnet18
    assert " resnet18 " in out and " timm/resnet18 " in out and " resnet10t " in out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_four_nchw_maps_at_the_declared_channels_and_strides(backbones, family):
    b = backbones[family].eval()
    assert tuple(b.strides) == (4, 8, 16, 32)
    with torch.no_grad():
        feats = b(torch.randn(2, 3, 96, 96))
    assert [tuple(f.shape) for f in feats] == [(2, c, 96 // s, 96 // s) for c, s in zip(b.channels, b.strides)]
    assert all(f.is_floating_point() and torch.isfinite(f).all() for f in feats)
    trained = copy.deepcopy(b).train()  # the classifier is pruned: DDP finds no unused parameter
    sum(f.mean() for f in trained(torch.randn(2, 3, 64, 64))).backward()
    assert [k for k, p in trained.named_parameters() if p.grad is None] == []


def test_any_timm_name_resolves_on_demand_and_typos_still_suggest():
    from biqabench.components.plugins import registry
    from biqabench.components.registry import UnknownComponentError

    assert registry("backbones").entry("timm/resnet10t").plugin == "timm_backbones"
    with pytest.raises(UnknownComponentError, match="did you mean 'convnext_tiny'"):
        registry("backbones").get("convnext_tinyy")


@pytest.mark.parametrize("head", ["hyperiqa", "tres", "linear"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_head_trains_a_step_and_predicts(backbones, family, head):
    torch.manual_seed(1)
    recipe = head_spec(head).recipe
    model = create_head(head, copy.deepcopy(backbones[family]), recipe=recipe).train()
    opt = torch.optim.Adam(model.param_groups(recipe))
    x, mos = torch.randn(3, 3, 64, 64), torch.tensor([0.2, 0.5, 0.8])
    loss = model.loss(x, mos)
    assert torch.isfinite(loss)
    loss.backward()
    trained = {id(p) for g in opt.param_groups for p in g["params"] if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(id(p) in trained for p in model.backbone.parameters())  # gradients reach the timm model
    before = [p.detach().clone() for p in model.head_parameters()]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.head_parameters()))
    model.eval()
    with torch.no_grad():
        scores = model(torch.randn(2, 3, 96, 96))
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def _timm_state(name: str, **kwargs) -> tuple[torch.nn.Module, dict]:
    """A timm classifier (as timm or the Hugging Face hub would save it) and its state dict."""
    import timm

    torch.manual_seed(3)
    net = timm.create_model(name, pretrained=False, **kwargs).eval()
    for m in net.modules():  # non-trivial BatchNorm statistics, so a mis-load would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net, net.state_dict()


@pytest.mark.parametrize("family", ["conv", "vit"])
def test_timm_and_hugging_face_checkpoints_load_with_prefixes_and_classifier_dropped(tmp_path, family):
    from biqabench.components.weights import load_weights

    name, kw = FAMILIES[family]
    net, state = _timm_state(name, **({"dynamic_img_size": True} if family == "vit" else {}), **kw)
    files = {"safetensors": tmp_path / "model.safetensors", "torch": tmp_path / "pytorch_model.bin"}
    save_safetensors({f"model.{k}": v.contiguous() for k, v in state.items()}, files["safetensors"])
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, files["torch"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = net.forward_intermediates(x, indices=list(create_backbone(name, **kw).plan.indices),
                                             intermediates_only=True)
    for path in files.values():
        b = create_backbone(name, **kw)
        report = load_weights(b, str(path))
        assert any(k.split(".", 1)[1].startswith(("head", "fc")) for k in report.dropped)  # classifier dropped
        with torch.no_grad():
            got = b.eval()(x)
        if family == "vit":  # compare the stride-16 map, before the parameter-free pyramid
            got, expected_cmp = [got[2]], [expected[2]]
        else:
            expected_cmp = expected
        for g, e in zip(got, expected_cmp):
            torch.testing.assert_close(g, e)


def test_one_weights_file_gives_equal_features_in_torchvision_and_timm_resnets(tmp_path):
    import torchvision

    torch.manual_seed(4)
    tv = torchvision.models.resnet18()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    ours_tv = create_backbone("resnet18", weights=str(path)).eval()
    ours_timm = create_backbone("timm/resnet18", weights=str(path)).eval()
    assert type(ours_tv) is not type(ours_timm)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours_tv(x), ours_timm(x)):
            torch.testing.assert_close(a, b)
    # and back: weights saved from the timm backbone (keys model.*) load into torchvision's
    again = tmp_path / "from_timm.safetensors"
    save_safetensors(ours_timm.state_dict(), again)
    with torch.no_grad():
        torch.testing.assert_close(create_backbone("resnet18", weights=str(again)).eval()(x)[-1], ours_tv(x)[-1])


def test_imagenet_offline_names_the_file_to_place_and_then_uses_it(tmp_path, monkeypatch):
    from biqabench.base.errors import BiqaError
    from biqabench_plugins.timm_backbones.pretrained import plain_location

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    target = plain_location("timm/convnext_atto.d2_in1k")
    with pytest.raises(BiqaError) as err:
        create_backbone("convnext_atto", weights="imagenet")
    msg = str(err.value)
    assert "\n" not in msg and str(target) in msg and "huggingface.co/timm/convnext_atto" in msg
    _, state = _timm_state("convnext_atto")
    target.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors({k: v.contiguous() for k, v in state.items()}, target)
    b = create_backbone("convnext_atto", weights="imagenet")
    torch.testing.assert_close(b.model.stem[0].weight, state["stem.0.weight"])


@pytest.mark.parametrize("family", ["conv", "vit"])
def test_channels_last_and_bf16_autocast_run_on_timm_models(backbones, family):
    from biqabench.runtime.device import get_runtime

    b = copy.deepcopy(backbones[family]).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = b(x)
        rt = get_runtime("cpu", "bf16")
        fast = rt.prepare(b)
        with rt.autocast():
            out = fast(rt.to(x))
    for r, o in zip(ref, out):
        assert o.shape == r.shape
        assert (o.float() - r).norm() / r.norm() < 0.05


@pytest.mark.parametrize("backbone", ["mobilevit_xxs", "timm/resnet10t"])
def test_pretrain_qpt_two_steps_then_the_weights_load_by_name(tmp_path, backbone, capsys):
    from conftest import invoke_cli

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("crop_size: 64\nqueue_size: 16\nembed_dim: 8\n")
    code, out, _ = invoke_cli(capsys, "pretrain", "qpt", "--backbone", backbone, "--steps", "2", "--batch-size", "2",
                              "--patch-size", "64", "--config", cfg, "--device", "cpu", "--precision", "fp32",
                              "--workers", "0", "--no-progress")
    assert code == 0 and f"saved qpt weights for {backbone}" in out
    b = create_backbone(backbone, weights="qpt")
    assert b.name == backbone
    from biqabench.base.paths import results_root

    assert (results_root() / "pretrain" / f"qpt-{backbone.replace('/', '--')}").is_dir()  # one folder per backbone


def test_patch14_vits_pad_to_whole_patches_and_keep_four_strides():
    b = create_backbone("vit_small_patch14_dinov2", depth=4, embed_dim=48, num_heads=2).eval()
    assert tuple(b.strides) == (3.5, 7, 14, 28)
    with torch.no_grad():  # 96 px is padded to 98 = 7 patches of 14
        assert [tuple(f.shape[-2:]) for f in b(torch.randn(1, 3, 96, 96))] == [(28, 28), (14, 14), (7, 7), (4, 4)]


def test_models_that_cannot_serve_a_head_fail_in_one_line():
    from biqabench.base.errors import BiqaError

    with pytest.raises(BiqaError, match=r"'levit_128s' gives maps at strides \[16, 32, 64\]: fewer than four"):
        create_backbone("levit_128s")
    fixed = create_backbone("coat_lite_tiny")  # fixed-size: checked at its own 224 px
    with pytest.raises(BiqaError, match="takes only 224 px inputs.*use a recipe with patch_size 224"):
        fixed(torch.randn(1, 3, 96, 96))
    with pytest.raises(BiqaError, match="'mixer_s16_224' does not take these options.*num_blocks"):
        create_backbone("mixer_s16_224", num_blocks=4)  # the entry point fixes it


@pytest.mark.slow
@pytest.mark.parametrize("head, backbone", [("hyperiqa", "mobilevit_xs"), ("tres", "convnext_atto")])
def test_eval_on_the_embedded_default_with_a_timm_backbone(tmp_path, capsys, head, backbone):
    from conftest import invoke_cli

    code, out, err = invoke_cli(capsys, "eval", "--head", head, "--backbone", backbone, "--weights", "random",
                                "--splits", "1", "--workers", "0", "--no-progress", "--run-dir", tmp_path / "run")
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.csv").is_file() and backbone in (tmp_path / "run" / "config.yaml").read_text()
