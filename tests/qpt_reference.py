"""A straightforward per-image implementation of the same recipes, for checks and benchmarks.

It is what one would write first: loop over images, and for each op call the obvious library
function on that one image (``F.conv2d`` with the image's own kernel, ``F.interpolate`` to the
new size (and back, for size-preserving ops), numpy noise with ``np.unique``, PIL's JPEG).  Deterministic ops (blur, resize, JPEG) must
agree with :func:`degradations.degrade_batch`; the tests hold the batched code to that, and
``benchmarks/bench_degradations.py`` measures how much faster the batched code is.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from biqabench_plugins.qpt.degradations import Op, Recipe, _kernel_of, resized_size


def _blur(img: torch.Tensor, o: Op) -> torch.Tensor:
    k = _kernel_of(o)
    pad = k.shape[-1] // 2
    c = img.shape[0]
    mode = "reflect" if pad < min(img.shape[-2:]) else "replicate"
    xp = F.pad(img.unsqueeze(0), (pad, pad, pad, pad), mode=mode)
    w = k.view(1, 1, *k.shape).repeat(c, 1, 1, 1)
    return F.conv2d(xp, w, groups=c)[0].clamp(0, 1)


def _resize(img: torch.Tensor, o: Op, origin: tuple[int, int]) -> torch.Tensor:
    """With ``back_mode``: there and back.  Without: to ``scale`` x the chain's input size."""
    p = o.p
    h, w = img.shape[-2:] if "back_mode" in p else origin
    size = (resized_size(h, p["scale"]), resized_size(w, p["scale"]))
    kw = {} if p["mode"] == "area" else {"align_corners": False}
    small = F.interpolate(img.unsqueeze(0), size=size, mode=p["mode"], **kw)
    if "back_mode" not in p:
        return small[0].clamp(0, 1)
    kwb = {} if p["back_mode"] == "area" else {"align_corners": False}
    return F.interpolate(small, size=(h, w), mode=p["back_mode"], **kwb)[0].clamp(0, 1)


def _noise(img: torch.Tensor, o: Op, rng: np.random.Generator) -> torch.Tensor:
    p = o.p
    x = img.permute(1, 2, 0).numpy().astype(np.float32)
    if p["kind"] == "gaussian":
        shape = x.shape[:2] + (1,) if p["gray"] else x.shape
        noise = rng.standard_normal(shape).astype(np.float32) * p["sigma"] / 255.0
    else:
        src = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if p["gray"] else x
        src = np.clip((src * 255).round(), 0, 255) / 255
        vals = 2 ** np.ceil(np.log2(len(np.unique(src))))
        noise = (rng.poisson(src * vals) / vals - src).astype(np.float32) * p["scale"]
        if p["gray"]:
            noise = noise[..., None]
    out = np.clip(x + noise, 0, 1)
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


def _jpeg(img: torch.Tensor, o: Op) -> torch.Tensor:
    arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(o.p["quality"]))
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.array(im.convert("RGB"))
    return torch.from_numpy(out).permute(2, 0, 1).float() / 255.0


def apply_recipe_reference(img: torch.Tensor, recipe: Recipe, rng: np.random.Generator | None = None) -> torch.Tensor:
    """One (C, H, W) image, op by op."""
    rng = rng or np.random.default_rng(0)
    x = img.float()
    origin = tuple(x.shape[-2:])
    for o in recipe.ops:
        if o.name == "blur":
            x = _blur(x, o)
        elif o.name == "resize":
            x = _resize(x, o, origin)
        elif o.name == "noise":
            x = _noise(x, o, rng)
        elif o.name == "jpeg":
            x = _jpeg(x, o)
    return (x.clamp(0, 1) * 255).round() / 255


def degrade_loop(images: torch.Tensor, recipes: Sequence[Recipe], rng: np.random.Generator | None = None) -> torch.Tensor:
    """The per-image loop over a batch."""
    rng = rng or np.random.default_rng(0)
    return torch.stack([apply_recipe_reference(img, r, rng) for img, r in zip(images, recipes)])
