import pytest
import torch

from biqabench.components.backbones import create_backbone


@pytest.mark.parametrize("name,channels", [("resnet18", (64, 128, 256, 512)), ("resnet50", (256, 512, 1024, 2048)),
                                           ("tiny", (8, 16, 32, 64))])
def test_four_stages_with_declared_channels_and_strides(name, channels):
    bb = create_backbone(name).eval()
    assert bb.channels == channels and bb.out_channels == channels[-1]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = bb(x)
    assert len(feats) == 4
    for f, c, s in zip(feats, bb.channels, bb.strides):
        assert f.shape == (2, c, 64 // s, 96 // s)


def test_channels_last_gives_the_same_features():
    bb = create_backbone("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = bb(x)[-1]
        bb_cl = bb.to(memory_format=torch.channels_last)
        out = bb_cl(x.contiguous(memory_format=torch.channels_last))[-1]
    assert torch.allclose(ref, out, atol=1e-5)


def test_resnet_keys_match_torchvision():
    import torchvision

    tv = set(torchvision.models.resnet50(weights=None).state_dict()) - {"fc.weight", "fc.bias"}
    assert set(create_backbone("resnet50").state_dict()) == tv
