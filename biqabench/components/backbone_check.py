"""The backbone protocol, checked once when a backbone is built.

Every head sizes itself from what a backbone *declares* (``channels``, ``strides``) and then
consumes what it *returns*.  When the two disagree the failure comes much later and far away
(a shape error deep inside a head's convolution, or worse a head that silently pools the wrong
map), so :func:`check_backbone` compares them up front, the way timm's ``FeatureInfo`` promises
``channels()`` / ``reduction()`` for its ``features_only`` models:

1. ``channels`` and ``strides`` each name four stages;
2. every channel count is a positive integer;
3. strides are positive and never decrease from stage 1 to stage 4;
4. ``forward`` on a probe batch returns a list of four NCHW tensors;
5. the returned channels equal the declared ones;
6. the returned spatial sizes equal probe size / declared stride (rounded either way).

A backbone that breaks a rule raises :class:`BackboneProtocolError`: one line naming the
backbone, the rule and what was found.  The probe is one zero image of ``probe_size`` pixels
(64 by default, at least twice the deepest stride) in eval mode without gradients, so it
neither touches BatchNorm statistics nor draws random numbers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from biqabench.base.errors import BiqaError

STAGES = 4
DEFAULT_PROBE = 64


class BackboneProtocolError(BiqaError):
    """A backbone whose declaration or output breaks the four-map protocol."""


def _fail(name: str, rule: str, detail: str) -> BackboneProtocolError:
    return BackboneProtocolError(f"backbone {name!r} breaks the backbone protocol: {rule} ({detail}); "
                                 "see docs/plugins.md, 'The backbone protocol'")


def check_declaration(backbone: Any, name: str = "") -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Rules 1-3 on ``backbone.channels`` / ``backbone.strides``; returns them as tuples."""
    name = name or getattr(backbone, "name", "") or type(backbone).__name__
    channels = tuple(getattr(backbone, "channels", ()) or ())
    strides = tuple(getattr(backbone, "strides", ()) or ())
    if len(channels) != STAGES or len(strides) != STAGES:
        raise _fail(name, f"it must declare {STAGES} stages in channels and strides",
                    f"channels {channels}, strides {strides}")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise _fail(name, "channels must be positive integers", f"channels {channels}")
    if not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in strides):
        raise _fail(name, "strides must be positive numbers", f"strides {strides}")
    if any(b < a for a, b in zip(strides, strides[1:])):
        raise _fail(name, "strides must not decrease from stage 1 to stage 4", f"strides {strides}")
    return channels, strides


def probe_size(backbone: Any, strides: tuple[float, ...]) -> int:
    """Side of the probe image: the backbone's ``probe_size`` if it sets one, else 64 px or
    twice the deepest stride, whichever is larger (every map is then at least 2x2)."""
    size = getattr(backbone, "probe_size", None)
    return int(size) if size else max(DEFAULT_PROBE, int(math.ceil(2 * strides[-1])))


def check_outputs(feats: Any, channels: tuple[int, ...], strides: tuple[float, ...], size: int,
                  name: str) -> None:
    """Rules 4-6 on the maps a ``size`` x ``size`` probe produced."""
    if not isinstance(feats, (list, tuple)) or len(feats) != STAGES:
        got = f"{len(feats)} items" if isinstance(feats, (list, tuple)) else type(feats).__name__
        raise _fail(name, f"forward must return a list of {STAGES} feature maps", f"got {got}")
    for i, (f, c, s) in enumerate(zip(feats, channels, strides), start=1):
        if not isinstance(f, torch.Tensor) or f.dim() != 4:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise _fail(name, "every feature map must be a (batch, channels, height, width) tensor",
                        f"stage {i} is {shape}")
        if f.shape[1] != c:
            hint = "; NHWC maps must be permuted to NCHW" if f.shape[-1] == c else ""
            raise _fail(name, "returned channels must equal the declared channels",
                        f"stage {i} returned {tuple(f.shape)} for declared {c} channels{hint}")
        for side in f.shape[2:]:
            if side not in (math.floor(size / s), math.ceil(size / s)):
                raise _fail(name, "returned map sizes must equal input size / declared stride",
                            f"stage {i}: a {size} px probe gave {tuple(f.shape[2:])}, stride {s:g} "
                            f"means {size / s:g}")


def check_backbone(backbone: nn.Module, name: str = "") -> None:
    """Check all six rules; raise :class:`BackboneProtocolError` (one line) on the first broken one."""
    name = name or getattr(backbone, "name", "") or type(backbone).__name__
    channels, strides = check_declaration(backbone, name)
    size = probe_size(backbone, strides)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            feats = backbone(torch.zeros(1, 3, size, size))
    except BiqaError:
        raise
    except Exception as exc:  # noqa: BLE001 - the backbone's own bug, reported as one line
        detail = " ".join(str(exc).split())[:160]
        raise _fail(name, f"forward must accept a (1, 3, {size}, {size}) image batch",
                    f"{type(exc).__name__}: {detail}") from exc
    finally:
        backbone.train(was_training)
    check_outputs(feats, channels, strides, size, name)
