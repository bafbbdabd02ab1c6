"""The backbone protocol check: every rule rejects a backbone that breaks it, with one line naming
the backbone and the rule, at construction (create_backbone), before any head is built."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from biqabench.components.backbone_check import BackboneProtocolError, check_backbone
from biqabench.components.backbones import Backbone, TinyBackbone, create_backbone
from biqabench.components.hookspecs import hookimpl
from biqabench.components.plugins import get_harness


class Configurable(Backbone):
    """A tiny four-stage net whose declaration and output can each be broken."""

    def __init__(self, channels=(4, 8, 16, 32), strides=(4, 8, 16, 32), *, nhwc=False, drop_last=False,
                 wrong_out=None, wrong_stride=False):
        super().__init__()
        self.name = "configurable"
        self.channels, self.strides = channels, strides
        self.inner = TinyBackbone(4)
        self.nhwc, self.drop_last, self.wrong_out, self.wrong_stride = nhwc, drop_last, wrong_out, wrong_stride

    def forward(self, x):
        feats = self.inner(x)
        if self.wrong_stride:
            feats[2] = nn.functional.interpolate(feats[2], scale_factor=2.0)
        if self.wrong_out is not None:
            feats[1] = feats[1][:, : self.wrong_out]
        if self.nhwc:
            feats = [f.permute(0, 2, 3, 1) for f in feats]
        return feats[:3] if self.drop_last else feats


def test_a_well_formed_backbone_passes_and_keeps_its_mode_and_statistics():
    b = TinyBackbone(8).train()
    before = {k: v.clone() for k, v in b.state_dict().items()}
    check_backbone(b)
    assert b.training
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())  # BN stats untouched


@pytest.mark.parametrize("kwargs, rule", [
    (dict(channels=(4, 8, 16)), "must declare 4 stages"),
    (dict(channels=(4, 0, 16, 32)), "channels must be positive integers"),
    (dict(strides=(4, 8, 32, 16)), "strides must not decrease"),
    (dict(strides=(4, 8, -16, 32)), "strides must be positive"),
    (dict(drop_last=True), "forward must return a list of 4 feature maps"),
    (dict(nhwc=True), "NHWC maps must be permuted to NCHW"),
    (dict(wrong_out=3), "returned channels must equal the declared channels"),
    (dict(wrong_stride=True), "returned map sizes must equal input size / declared stride"),
])
def test_each_rule_rejects_a_backbone_that_breaks_it(kwargs, rule):
    with pytest.raises(BackboneProtocolError) as err:
        check_backbone(Configurable(**kwargs))
    msg = str(err.value)
    assert rule in msg and "'configurable'" in msg and "\n" not in msg


class _BrokenPlugin:
    @staticmethod
    @hookimpl
    def register_backbones(register):
        register("nhwc-net", lambda: Configurable(nhwc=True))
        register("crashing-net", lambda: Configurable(channels=(4, 8, 16, 64)))


@pytest.fixture
def broken_plugin():
    h = get_harness()
    h.register(_BrokenPlugin, name="broken-backbones")
    yield
    h.unregister("broken-backbones")


def test_a_plugin_backbone_breaking_the_protocol_fails_at_construction(broken_plugin):
    with pytest.raises(BackboneProtocolError, match="'nhwc-net' breaks the backbone protocol"):
        create_backbone("nhwc-net")
    with pytest.raises(BackboneProtocolError, match="'crashing-net'.*stage 4 returned"):
        create_backbone("crashing-net")


def test_the_cli_names_the_backbone_and_rule_in_one_line(broken_plugin, capsys):
    from conftest import invoke_cli

    code, _, err = invoke_cli(capsys, "eval", "--head", "linear", "--backbone", "nhwc-net", "--weights", "random",
                              "--splits", "1")
    assert code == 2 and "'nhwc-net' breaks the backbone protocol" in err and "NCHW" in err


class OddChannels(Backbone):
    """Four stages of odd, prime channel counts (3, 5, 7, 11): nothing a head could hard-code."""

    channels, strides = (3, 5, 7, 11), (4, 8, 16, 32)

    def __init__(self):
        super().__init__()
        c_in, layers = 3, []
        for i, c in enumerate(self.channels):
            layers.append(nn.Conv2d(c_in, c, 3, stride=4 if i == 0 else 2, padding=1))
            c_in = c
        self.stages = nn.ModuleList(layers)

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = torch.relu(stage(x))
            feats.append(x)
        return feats


@pytest.mark.parametrize("head", ["hyperiqa", "tres", "linear"])
def test_every_head_adapts_to_odd_channel_counts(head):
    from biqabench.components.heads import create_head

    backbone = OddChannels()
    check_backbone(backbone)
    model = create_head(head, backbone)
    loss = model.train().loss(torch.randn(3, 3, 64, 64), torch.tensor([0.1, 0.5, 0.9]))
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 96, 96)).shape == (2,)
