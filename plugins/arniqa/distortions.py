"""ARNIQA's degradation space, in our own code: 24 distortion types x 5 levels in 7 groups, 1-4 composed.

Facts taken from the paper (Agnolucci et al., WACV 2024) and its public code (miccunifi/ARNIQA,
``utils/utils_data.py``; CC BY-NC, read for facts only, nothing copied): the 24 types are
KADID-10k's, grouped into 7 groups (blur; colour; compression; noise; brightness; spatial;
sharpness and contrast); a composition draws 1..``max_distortions`` groups without replacement
(in a random order), one type from each group, and one of ``num_levels`` levels for each type with
probabilities from a half-Gaussian (mean 0, std 2.5) over the level index, so milder levels are
drawn more often; with probability ``pristine_prob`` (0.05) no distortion is applied.

Where ours differs (the operators are written from the type names and the KADID-10k description,
not from the reference's implementations, and QPT's operators are not shared: a plugin does not
import another plugin, and only blur and JPEG would match):

* **level values are ours** for most types (each type's 5 levels rise in severity and cover a
  visible range at the patch sizes we train on); those of gaublur, jpeg, jpeg2000, whitenoise,
  impulsenoise, multnoise, meanshift, quantization and lincontrchange follow the reference's;
* colour shift translates the green channel (the reference weights the shift by the gradient);
  colour diffusion blurs the chroma of YCbCr (the reference works in Lab); the saturation types
  scale the distance to the grey value in RGB (the reference works in HSV and Lab);
* non-eccentricity patches, colour blocks and jitter scale their counts and sizes with the image
  (we train on 32 px views on CPU, the reference on 224 px);
* blur kernels are cut at 3 sigma and convolved with replicated borders.

Deterministic operators are the same function for both views of a pair; random ones (noise,
jitter, block positions) draw independently for each image, as in the reference.
"""

from __future__ import annotations

import io as _io
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("gaublur", "lensblur", "motionblur"),
    "color_distortion": ("colordiff", "colorshift", "colorsat1", "colorsat2"),
    "jpeg": ("jpeg2000", "jpeg"),
    "noise": ("whitenoise", "whitenoiseCC", "impulsenoise", "multnoise"),
    "brightness_change": ("brighten", "darken", "meanshift"),
    "spatial_distortion": ("jitter", "noneccpatch", "pixelate", "quantization", "colorblock"),
    "sharpness_contrast": ("highsharpen", "lincontrchange", "nonlincontrchange"),
}

#: The 5 levels of each type, mildest first.
LEVELS: dict[str, tuple[float, ...]] = {
    "gaublur": (0.1, 0.5, 1, 2, 5),             # sigma (px)
    "lensblur": (1, 2, 3, 4, 6),                # disk radius (px)
    "motionblur": (1, 2, 3, 5, 7),              # half length (px)
    "colordiff": (1, 2, 4, 6, 8),               # chroma blur sigma (px)
    "colorshift": (1, 2, 3, 4, 6),              # green channel shift (px)
    "colorsat1": (0.6, 0.4, 0.2, 0.0, -0.4),    # saturation factor (desaturation)
    "colorsat2": (1.5, 2.0, 2.5, 3.5, 5.0),     # saturation factor (oversaturation)
    "jpeg2000": (16, 32, 45, 120, 170),         # compression ratio
    "jpeg": (43, 36, 24, 7, 4),                 # quality
    "whitenoise": (0.001, 0.002, 0.003, 0.005, 0.01),   # variance
    "whitenoiseCC": (0.0005, 0.001, 0.002, 0.004, 0.008),  # variance, in YCbCr
    "impulsenoise": (0.001, 0.005, 0.01, 0.02, 0.03),   # fraction of pixels
    "multnoise": (0.001, 0.005, 0.01, 0.02, 0.05),      # variance
    "brighten": (0.1, 0.2, 0.4, 0.7, 1.1),      # gamma 1 / (1 + v) on the inverted image
    "darken": (0.05, 0.1, 0.2, 0.4, 0.8),       # gamma 1 + v
    "meanshift": (0.0, 0.08, -0.08, 0.15, -0.15),  # added to every value
    "jitter": (0.05, 0.1, 0.2, 0.5, 1.0),       # displacement std (px)
    "noneccpatch": (0.02, 0.04, 0.06, 0.08, 0.1),  # fraction of the area moved in small patches
    "pixelate": (0.01, 0.05, 0.1, 0.2, 0.5),    # v: downscale to 1 / (1 + 10 v), nearest back
    "quantization": (20, 16, 13, 10, 7),        # levels per channel
    "colorblock": (0.01, 0.02, 0.04, 0.06, 0.08),  # fraction of the area covered by coloured blocks
    "highsharpen": (1, 2, 3, 6, 12),            # v / 2: unsharp-mask amount
    "lincontrchange": (0.0, 0.15, -0.4, 0.3, -0.6),  # contrast factor 1 + v
    "nonlincontrchange": (0.4, 0.3, 0.2, 0.1, 0.05),  # S-curve width (smaller: stronger)
}
TYPES = tuple(t for ts in GROUPS.values() for t in ts)

#: A composition: ((type, level index, extra), ...) in the order applied; () is pristine.
Composition = tuple


def level_probabilities(num_levels: int, std: float = 2.5) -> np.ndarray:
    """P(level index) ~ a half-Gaussian over 0..num_levels-1 (mild levels more often)."""
    p = np.exp(-np.arange(num_levels) ** 2 / (2 * std ** 2))
    return p / p.sum()


def sample_composition(rng: np.random.Generator, max_distortions: int = 4, num_levels: int = 5,
                       pristine_prob: float = 0.05) -> Composition:
    """1..max_distortions groups (no repeat, random order), one type each, a level each."""
    if rng.random() < pristine_prob or max_distortions == 0:
        return ()
    names = list(GROUPS)
    n = int(rng.integers(1, max_distortions + 1))
    probs = level_probabilities(num_levels)
    out = []
    for g in rng.choice(len(names), n, replace=False):
        kinds = GROUPS[names[g]]
        kind = kinds[int(rng.integers(len(kinds)))]
        extra = float(rng.uniform(0, 180)) if kind == "motionblur" else 0.0  # the blur's angle, shared by the pair
        out.append((kind, int(rng.choice(num_levels, p=probs)), extra))
    return tuple(out)


# -- helpers -------------------------------------------------------------------------------------
def _conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(C, H, W) convolved per channel with the 2-D kernel ``k``, replicated borders."""
    kh, kw = k.shape
    c = x.shape[0]
    xp = F.pad(x[None], (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    return F.conv2d(xp, k.expand(c, 1, kh, kw).to(x), groups=c)[0]


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return _conv(_conv(x, g[None]), g[:, None])


_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _to_ycc(x):
    return torch.einsum("ij,jhw->ihw", _YCC, x)


def _from_ycc(y):
    return torch.einsum("ij,jhw->ihw", torch.linalg.inv(_YCC), y)


def _gray(x):
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def _codec(x: torch.Tensor, fmt: str, **options) -> torch.Tensor:
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **options)
    buf.seek(0)
    with Image.open(buf) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255


def _torch_gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2 ** 62)))


# -- the 24 operators: (image (3, H, W) in [0, 1], level value, extra, rng) -> image --------------
def _lensblur(x, v, e, rng):
    r = int(v)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    disk = ((t[None] ** 2 + t[:, None] ** 2) <= r * r + 0.5).float()
    return _conv(x, disk / disk.sum())


def _motionblur(x, v, angle, rng):
    r = int(v)
    k = torch.zeros(2 * r + 1, 2 * r + 1)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    for t in np.linspace(-r, r, 4 * r + 1):
        k[int(round(r + t * s)), int(round(r + t * c))] = 1.0
    return _conv(x, k / k.sum())


def _colordiff(x, v, e, rng):
    y = _to_ycc(x)
    return _from_ycc(torch.cat([y[:1], _gauss(y[1:], v)]))


def _colorshift(x, v, e, rng):
    v = int(v)
    g = F.pad(x[1:2, :, :][None], (v, 0, v, 0), mode="replicate")[0, :, :x.shape[1], :x.shape[2]]
    return torch.cat([x[:1], g, x[2:]])


def _saturation(x, v, e, rng):
    g = _gray(x)
    return g + v * (x - g)


def _whitenoise(x, v, e, rng):
    return x + torch.randn(x.shape, generator=_torch_gen(rng)) * math.sqrt(v)


def _whitenoise_cc(x, v, e, rng):
    return _from_ycc(_to_ycc(x) + torch.randn(x.shape, generator=_torch_gen(rng)) * math.sqrt(v))


def _impulse(x, v, e, rng):
    u = torch.rand(x.shape[1:], generator=_torch_gen(rng))
    x = x.clone()
    x[:, u < v / 2] = 0.0
    x[:, (u >= v / 2) & (u < v)] = 1.0
    return x


def _multnoise(x, v, e, rng):
    return x + x * torch.randn(x.shape, generator=_torch_gen(rng)) * math.sqrt(v)


def _jitter(x, v, e, rng):
    _, h, w = x.shape
    g = _torch_gen(rng)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    xs = xs + torch.randn(h, w, generator=g) * v
    ys = ys + torch.randn(h, w, generator=g) * v
    grid = torch.stack([2 * xs / max(w - 1, 1) - 1, 2 * ys / max(h - 1, 1) - 1], dim=-1)[None]
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def _patches_moved(x, v, e, rng):
    _, h, w = x.shape
    size = max(2, min(h, w) // 14)
    n = max(1, round(v * h * w / size ** 2))
    out = x.clone()
    for _ in range(n):
        t, l = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        dt, dl = (int(d) for d in rng.integers(-size, size + 1, 2))
        st, sl = min(max(t + dt, 0), h - size), min(max(l + dl, 0), w - size)
        out[:, t:t + size, l:l + size] = x[:, st:st + size, sl:sl + size]
    return out


def _pixelate(x, v, e, rng):
    _, h, w = x.shape
    f = 1 / (1 + 10 * v)
    small = F.interpolate(x[None], size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")[0]


def _colorblock(x, v, e, rng):
    _, h, w = x.shape
    size = max(2, min(h, w) // 10)
    out = x.clone()
    for _ in range(max(1, round(v * h * w / size ** 2))):
        t, l = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        out[:, t:t + size, l:l + size] = torch.from_numpy(rng.random(3).astype(np.float32))[:, None, None]
    return out


def _nonlin_contrast(x, v, e, rng):
    return 0.5 + 0.5 * torch.tanh((x - 0.5) / v) / math.tanh(0.5 / v)


OPERATORS: dict[str, Callable] = {
    "gaublur": lambda x, v, e, rng: _gauss(x, v),
    "lensblur": _lensblur,
    "motionblur": _motionblur,
    "colordiff": _colordiff,
    "colorshift": _colorshift,
    "colorsat1": _saturation,
    "colorsat2": _saturation,
    "jpeg2000": lambda x, v, e, rng: _codec(x, "JPEG2000", quality_mode="rates", quality_layers=[float(v)]),
    "jpeg": lambda x, v, e, rng: _codec(x, "JPEG", quality=int(v)),
    "whitenoise": _whitenoise,
    "whitenoiseCC": _whitenoise_cc,
    "impulsenoise": _impulse,
    "multnoise": _multnoise,
    "brighten": lambda x, v, e, rng: 1 - (1 - x).clamp(0, 1) ** (1 + v),
    "darken": lambda x, v, e, rng: x.clamp(0, 1) ** (1 + v),
    "meanshift": lambda x, v, e, rng: x + v,
    "jitter": _jitter,
    "noneccpatch": _patches_moved,
    "pixelate": _pixelate,
    "quantization": lambda x, v, e, rng: (x.clamp(0, 1) * (v - 1)).round() / (v - 1),
    "colorblock": _colorblock,
    "highsharpen": lambda x, v, e, rng: x + (v / 2) * (x - _gauss(x, 1.0)),
    "lincontrchange": lambda x, v, e, rng: x.mean() + (1 + v) * (x - x.mean()),
    "nonlincontrchange": _nonlin_contrast,
}


def distort(x: torch.Tensor, composition: Composition, rng: np.random.Generator) -> torch.Tensor:
    """Apply ``composition`` to one image (3, H, W) float in [0, 1], clamping after each operator."""
    for kind, level, extra in composition:
        x = OPERATORS[kind](x, LEVELS[kind][level], extra, rng).clamp(0, 1)
    return x
