"""Parity with pyiqa's HyperNet and TReS: same weights, same input -> same scores (fp32, 1e-5).

pyiqa's constructors download ImageNet / timm / its own weights; every such path is stubbed
here to build random weights offline, and every download function is replaced by one that fails
the test (on top of conftest's network guard).  pyiqa's models are built with mean 0 / std 1 so
their internal ImageNet normalisation is the identity (our heads expect normalised input), and
its test-time cropping is bypassed: HyperNet through its ``forward_patch`` (the network on one
224 px patch), TReS by making ``uniform_crop`` the identity with ``test_sample=1``.  Weights go
from pyiqa's model to ours through ``load_pyiqa_checkpoint``, so the key mapping is what is
tested; BatchNorm statistics are randomised first so that they matter.

pyiqa's HyperNet hard-codes ResNet-50 channels, so there is no resnet18 HyperNet parity; TReS
supports resnet18 and is compared on it too.
"""

from __future__ import annotations

import functools

import pytest
import torch

from biqabench.base.errors import BiqaError
from biqabench_plugins.torchvision_backbones.resnet import ResNetBackbone

pytest.importorskip("pyiqa")


def _refuse_download(*args, **kwargs):
    raise AssertionError(f"a pyiqa/timm/torchvision download was attempted in a test: {args[:1]}")


@pytest.fixture
def offline_pyiqa(monkeypatch):
    """Make pyiqa's HyperNet/TReS constructible offline with random weights; downloads fail loudly."""
    import huggingface_hub
    import timm
    import timm.models._builder as timm_builder
    import torch.hub
    import torchvision.models
    import torchvision.models._api as tv_api
    from pyiqa.archs import arch_util, hypernet_arch, tres_arch

    for mod, name in [(torch.hub, "load_state_dict_from_url"), (torch.hub, "download_url_to_file"),
                      (tv_api, "load_state_dict_from_url"), (huggingface_hub, "hf_hub_download"),
                      (timm_builder, "load_pretrained"), (arch_util, "load_file_from_url"),
                      (arch_util, "load_pretrained_network"), (hypernet_arch, "load_pretrained_network"),
                      (tres_arch, "load_pretrained_network")]:
        monkeypatch.setattr(mod, name, _refuse_download)
    real_create = timm.create_model
    monkeypatch.setattr(timm, "create_model",
                        lambda name, pretrained=False, **kw: real_create(name, pretrained=False, **kw))
    for arch in ("resnet18", "resnet34", "resnet50"):
        ctor = getattr(torchvision.models, arch)
        monkeypatch.setattr(torchvision.models, arch, functools.partial(lambda c, weights=None, **kw: c(weights=None, **kw), ctor))
    # test-time crops are the data layer's job: compare the networks on the given patch
    monkeypatch.setattr(tres_arch, "uniform_crop", lambda x, size, num: x)
    monkeypatch.setattr(tres_arch, "random_crop", lambda x, size, num: x)
    return hypernet_arch, tres_arch


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.0, generator=g)
            m.bias.data.normal_(0.0, 0.1, generator=g)
            m.running_mean.normal_(0.0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)


def _images(n: int = 2, size: int = 224) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(n, 3, size, size, generator=g) * 0.5
    ramp = torch.linspace(-2, 2, size).expand(n, 3, size, size)
    return noise + ramp * torch.arange(n).view(n, 1, 1, 1)  # distinct content per image


def test_hyperiqa_matches_pyiqa_hypernet_resnet50(offline_pyiqa):
    from biqabench_plugins.hyperiqa import RECIPE, HyperIQAHead, load_pyiqa_checkpoint

    hypernet_arch, _ = offline_pyiqa
    torch.manual_seed(0)
    ref = hypernet_arch.HyperNet(pretrained=False, default_mean=[0, 0, 0], default_std=[1, 1, 1]).eval()
    _randomise_batchnorm(ref)
    ours = HyperIQAHead(ResNetBackbone("resnet50"), RECIPE).eval()
    report = load_pyiqa_checkpoint(ours, ref.state_dict())
    assert report.loaded == len(ref.state_dict()) and not report.dropped

    x = _images()
    seen: dict[str, list[torch.Tensor]] = {"lda": [], "w": []}  # pyiqa's intermediate outputs
    for m in ref.lda_modules:
        m.register_forward_hook(lambda mod, inp, out: seen["lda"].append(out))
    for m in ref.fc_w_modules:
        m.register_forward_hook(lambda mod, inp, out: seen["w"].append(out))
    with torch.no_grad():
        expected = ref.forward_patch(x).reshape(-1)
        feats = ours.backbone(x)
        got = ours.score(feats)
        vec = ours.target_input(feats)
        weights = [w for w, _ in ours.target_params(feats[-1])]
    assert got.shape == (2,)
    # the pieces too, so a mapping slip cannot hide behind a near-constant random-weight score
    torch.testing.assert_close(vec, torch.cat(seen["lda"], dim=1), atol=1e-5, rtol=0)
    for w, ref_w in zip(weights, seen["w"]):
        torch.testing.assert_close(w, ref_w.reshape(w.shape), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_tres_matches_pyiqa_tres(offline_pyiqa, arch):
    from biqabench_plugins.tres import RECIPE, TReSHead, load_pyiqa_checkpoint
    from biqabench_plugins.tres.loss import flip_consistency

    _, tres_arch = offline_pyiqa
    torch.manual_seed(0)
    ref = tres_arch.TReS(network=arch, pretrained=False, test_sample=1,
                         default_mean=[0, 0, 0], default_std=[1, 1, 1]).eval()
    _randomise_batchnorm(ref)
    ours = TReSHead(ResNetBackbone(arch), RECIPE).eval()
    report = load_pyiqa_checkpoint(ours, ref.state_dict())
    assert sorted(report.dropped) == sorted([f"L2pooling_l{i}.filter" for i in range(1, 5)]
                                            + ["model.fc.weight", "model.fc.bias"])

    x = _images(2)
    with torch.no_grad():
        expected = ref(x).reshape(-1)
        got = ours(x)
        # training-mode output of pyiqa (dropout kept off): its flip self-consistency term
        ref.training = True
        _, ref_consistency = ref(x)
        a, b = ours.view(x), ours.view(torch.flip(x, dims=[3]))
    assert got.shape == (2,) and (got[0] - got[1]).abs() > 1e-3  # not a constant
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(flip_consistency(a.encoded, a.last, b.encoded, b.last), ref_consistency,
                               atol=1e-5, rtol=1e-5)


def test_pyiqa_checkpoint_files_load_through_the_safe_reader(offline_pyiqa, tmp_path):
    """pyiqa's files: HyperNet wraps in {"params": ...}; DataParallel's module. prefix is stripped."""
    from biqabench_plugins.hyperiqa import RECIPE, HyperIQAHead, load_pyiqa_checkpoint

    hypernet_arch, _ = offline_pyiqa
    torch.manual_seed(0)
    ref = hypernet_arch.HyperNet(pretrained=False)
    path = tmp_path / "h.pth"
    torch.save({"params": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    ours = HyperIQAHead(ResNetBackbone("resnet50"), RECIPE)
    load_pyiqa_checkpoint(ours, path)
    torch.testing.assert_close(ours.conv1[0].weight, ref.conv1[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.backbone.layer4[2].bn3.running_var, ref.base_model.layer4[2].bn3.running_var)


def test_pyiqa_checkpoint_for_another_backbone_is_refused(offline_pyiqa):
    from biqabench_plugins.tres import RECIPE, TReSHead, load_pyiqa_checkpoint

    _, tres_arch = offline_pyiqa
    ref = tres_arch.TReS(network="resnet18", pretrained=False)
    head = TReSHead(ResNetBackbone("resnet34"), RECIPE)  # same widths, deeper: keys differ
    before = {k: v.clone() for k, v in head.state_dict().items()}
    with pytest.raises(BiqaError, match="does not fit head TReSHead on backbone 'resnet34'.*missing"):
        load_pyiqa_checkpoint(head, ref.state_dict())
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())  # nothing half-loaded
    bad = dict(ref.state_dict())
    bad["L2pooling_l1.filter"] = torch.ones_like(bad["L2pooling_l1.filter"])
    with pytest.raises(BiqaError, match="Hann"):
        load_pyiqa_checkpoint(TReSHead(ResNetBackbone("resnet18"), RECIPE), bad)
