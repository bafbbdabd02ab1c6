"""A timm model as a biqabench backbone: four NCHW feature maps with declared channels/strides.

Why ``forward_intermediates`` on the plain timm model rather than ``features_only=True``: the
plain model keeps timm's own parameter names (``stages.0.blocks.0...``), so a timm or Hugging
Face checkpoint loads as it is (see :meth:`TimmBackbone.adapt_state_dict`), while
``features_only`` wrappers rename modules (``stages_0``) and would need a key map per family.
The classifier (and, where the last map is taken before it, the final norm or conv) is pruned
with timm's ``prune_intermediate_layers``, so no parameter goes unused in training.

Which four maps (from timm's ``feature_info``, its declared channels and reductions):

* hierarchical models (ResNets, ConvNeXt, EfficientNet, MobileViT, Swin...): the deepest map
  of each distinct stride, the last four of them, e.g. strides 4/8/16/32.  Swin's NHWC stages
  come back from timm as NCHW; any NHWC map left is permuted here.
* plain ViTs (one stride, e.g. 16): four blocks evenly spaced through the depth (blocks 3, 6,
  9 and 12 of 12), prefix tokens dropped and tokens reshaped to a grid by timm, then a
  parameter-free simple feature pyramid after ViTDet (Li et al., ECCV 2022): bilinear x4 and x2
  upsampling, identity, 2x2 max pooling, giving strides 4/8/16/32 for patch 16.  ViTDet learns
  deconvolutions for the upsampling; we do not, so that every parameter of the backbone is the
  timm model's and any timm checkpoint fits it (the heads' own layers do the learning).

Models are always created with ``pretrained=False``: weights come through ``--weights``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from biqabench.plugin_api import Backbone, BiqaError

PYRAMID_SCALES = (4.0, 2.0, 1.0, 0.5)  # plain ViT: resampling of the four block outputs
DYNAMIC = ("dynamic_img_size", "dynamic_img_pad")  # timm options for any input size, where a model has them


def import_timm():
    """timm imports its whole model zoo (seconds); only a built or searched backbone pays that."""
    try:
        import timm
    except ImportError:  # pragma: no cover - timm comes with pyiqa
        raise BiqaError("timm backbones need the timm package: pip install timm") from None
    return timm


@dataclass(frozen=True)
class Plan:
    """Which of timm's intermediates to take, and what they are."""

    indices: tuple[int, ...]
    channels: tuple[int, ...]
    strides: tuple[float, ...]
    pyramid: bool  # plain ViT: resample one-stride maps to four strides


def plan_levels(model_name: str, feature_info: list[dict]) -> Plan:
    """Four maps from timm's ``feature_info`` (rules in the module docstring)."""
    reductions = [_number(f["reduction"]) for f in feature_info]
    chans = [int(f["num_chs"]) for f in feature_info]
    if not reductions:
        raise BiqaError(f"timm model {model_name!r} declares no feature maps; it cannot serve as a backbone")
    if len(set(reductions)) == 1:  # plain ViT: every block at the patch stride
        depth = len(reductions)
        if depth < 4:
            raise BiqaError(f"timm model {model_name!r} has {depth} blocks; a four-map backbone needs at least 4")
        idx = tuple(sorted({max(0, depth * k // 4 - 1) for k in (1, 2, 3, 4)}))
        r = reductions[0]
        return Plan(idx, tuple(chans[i] for i in idx), tuple(_number(r / s) for s in PYRAMID_SCALES), True)
    deepest: dict[float, int] = {}
    for i, r in enumerate(reductions):
        deepest[r] = i  # the last map at each stride
    ordered = [deepest[r] for r in sorted(deepest)]
    if len(ordered) < 4 or ordered != sorted(ordered):
        raise BiqaError(f"timm model {model_name!r} gives maps at strides {sorted(deepest)}: fewer than four "
                        "increasing scales, so it cannot serve a four-map head")
    idx = tuple(ordered[-4:])
    return Plan(idx, tuple(chans[i] for i in idx), tuple(reductions[i] for i in idx), False)


def _number(x: float) -> int | float:
    """4.0 -> 4 (strides print and compare as integers where they are), 3.5 stays."""
    return int(x) if float(x).is_integer() else float(x)


def create_timm_model(model_name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=False)``, accepting any input size where it can."""
    timm = import_timm()
    for key in ("pretrained", "checkpoint_path", "pretrained_cfg_overlay"):
        if kwargs.pop(key, None):
            raise BiqaError(f"timm backbone {model_name!r}: {key} is not an option here; weights come "
                            "through --weights (imagenet, a pretrainer name, or a file)")
    # ViTs: interpolate position embeddings and pad to whole patches (patch 14 at 96 px); Swin:
    # build attention masks per input size.  Models without these options take them as errors.
    for extra in (DYNAMIC, DYNAMIC[:1], ()):
        try:
            return timm.create_model(model_name, pretrained=False, **dict.fromkeys(extra, True), **kwargs)
        except TypeError as exc:
            if not any(k in str(exc) for k in extra):
                raise BiqaError(f"timm model {model_name!r} does not take these options {sorted(kwargs)}: "
                                f"{exc}") from None
    raise AssertionError("unreachable")  # pragma: no cover


class TimmBackbone(Backbone):
    """Any timm model with ``forward_intermediates`` as a four-map backbone (see module docs)."""

    def __init__(self, model_name: str, **kwargs):
        super().__init__()
        net = create_timm_model(model_name, **kwargs)
        if not hasattr(net, "forward_intermediates"):
            raise BiqaError(f"timm model {model_name!r} ({type(net).__name__}) has no forward_intermediates; "
                            "it cannot serve as a four-map backbone")
        plan = plan_levels(model_name, list(net.feature_info))
        net.prune_intermediate_layers(list(plan.indices), prune_norm=True, prune_head=True)
        self.model = net
        self.model_name = model_name
        self.plan = plan
        self.channels, self.strides = plan.channels, plan.strides
        self.input_size = tuple(net.pretrained_cfg.get("input_size", (3, 224, 224)))
        self.fixed_size = getattr(net, "dynamic_img_size", None) is False or any(
            getattr(m, "strict_img_size", False) for m in net.modules())
        if self.fixed_size:  # e.g. MLP-Mixer, CoaT: only their own input size; probe at it
            self.probe_size = int(self.input_size[-1])
        elif plan.pyramid:  # 4x4 tokens: whole patches (patch 14 -> 56 px), a 2x2 last map
            self.probe_size = int(round(4 * plan.strides[2]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.fixed_size and tuple(x.shape[-2:]) != tuple(self.input_size[-2:]):
            raise BiqaError(f"timm model {self.model_name!r} takes only {self.input_size[-1]} px inputs, got "
                            f"{tuple(x.shape[-2:])}; use a recipe with patch_size {self.input_size[-1]}")
        feats = self.model.forward_intermediates(x, indices=list(self.plan.indices), intermediates_only=True)
        feats = [f.permute(0, 3, 1, 2) if f.shape[1] != c and f.shape[-1] == c else f  # NHWC -> NCHW
                 for f, c in zip(feats, self.channels)]
        if self.plan.pyramid:
            feats = [simple_pyramid_level(f, s) for f, s in zip(feats, PYRAMID_SCALES)]
        return list(feats)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm / Hugging Face / our own checkpoints -> this module's keys (``model.`` + timm's).

        Wrapper prefixes (``module.``, ``model.``, ``encoder_q.``...) are stripped until a key is
        timm's; when the result still does not fit (an original-repository checkpoint, a ViT
        trained at another size), the model family's own ``checkpoint_filter_fn`` converts it, as
        timm's pretrained loader does.  Classifier keys stay unmatched and are dropped later.
        """
        from biqabench.plugin_api import WEIGHTS_PREFIXES as PREFIXES

        own = self.model.state_dict()
        plain: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            k = key
            while k not in own:
                prefix = next((p for p in PREFIXES if k.startswith(p)), None)
                if prefix is None:
                    break
                k = k[len(prefix):]
            plain.setdefault(k, value)
        if not _fits(plain, own):
            plain = self._family_filter(plain)
        return {f"model.{k}": v for k, v in plain.items()}

    def _family_filter(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fn = getattr(sys.modules.get(type(self.model).__module__), "checkpoint_filter_fn", None)
        if fn is None:
            return state
        try:
            return dict(fn(state, self.model))
        except Exception:  # noqa: BLE001 - not this family's format: the fit report will say why
            return state


def _fits(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> bool:
    return all(k in state and state[k].shape == v.shape for k, v in own.items()
               if not k.endswith("num_batches_tracked"))


def simple_pyramid_level(x: torch.Tensor, scale: float) -> torch.Tensor:
    """One level of the parameter-free simple pyramid: resample a (B, C, h, w) map by ``scale``."""
    if scale > 1:
        return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    if scale < 1:
        k = int(round(1 / scale))
        return F.max_pool2d(x, kernel_size=k, stride=k, ceil_mode=True)
    return x
