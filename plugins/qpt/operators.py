"""QPT's degradation operators, batched, on whatever device the batch lives (CPU or CUDA).

Why this module exists: QPT's cost is the degradation pipeline, not the network.  Applying one
recipe per image in a Python loop leaves a GPU idle and a CPU busy with call overhead; here each
step of the recipes is one batched call per operator kind, whatever the batch size.

**Variable sizes.** Real-ESRGAN's chain keeps an image at its resized size through the noise
and JPEG that follow, and restores the input size only at the end; so noise is added at low
resolution and JPEG blocks get enlarged.  A batch of such images is ragged.  It is held as a
*canvas*: one zero-initialised tensor as large as the largest image, image ``i`` in its top-left
``sizes[i]`` corner (what lies outside is never read).  Every operator reads only each image's
own pixels: blur pads at each image's own border (an index gather), resize multiplies by
per-image interpolation matrices padded with zeros, noise levels count only valid pixels, JPEG
encodes each image's own rectangle.  When a group's images share one size, the plain tensor
paths run (no gather).

**Operators.**

* blur: three exact routes, chosen per kernel.  *Separable* kernels (isotropic Gaussians,
  anisotropic Gaussians at 0 or 90 degrees, generalized Gaussians with beta = 1: exactly
  ``k = outer(u, v)``) run as two 1-D passes, 2k instead of k^2 products per pixel; a rotated
  anisotropic Gaussian is not separable (its kernel has full rank), nor are plateau,
  generalized (beta != 1) and sinc kernels.  Those run by FFT when large (>= :data:`FFT_FROM`
  taps), where the cost no longer depends on the kernel size, and as one grouped conv2d per
  kernel size otherwise.  All three equal the per-image ``F.conv2d`` up to float rounding.
* resize: ``A_h @ X @ A_w^T`` with per-image matrices read off ``F.interpolate`` of the identity
  (so it equals ``F.interpolate`` exactly, to float rounding): two batched matmuls.
* noise: Gaussian or Poisson, colour or grey, per-image levels, vectorised; the only randomness
  is the ``torch.Generator`` given (on the batch's device).
* JPEG: libjpeg on CPU; on CUDA, nvJPEG (TorchCodec, else torchvision.io), else a CPU round trip.

Device equality: blur, resize and JPEG on CPU give the pixels of the per-image reference
(:mod:`reference`) to within one 8-bit level (float rounding can flip a level, which a later
JPEG spreads a little: tests bound both).  On CUDA, float kernels differ in rounding only, and
nvJPEG's DCT differs from libjpeg's by a level or two; noise is the same distribution, not the
same draws (device generators differ).  ``tests/test_qpt_cuda.py`` measures those on a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from biqabench.plugin_api import BiqaError
from biqabench_plugins.qpt.recipes import Op, Recipe

Sizes = list[tuple[int, int]]

#: Non-separable kernels with at least this many taps per side are applied by FFT, smaller ones by
#: a grouped conv2d.  Measured here (1 thread, 32 images of 128 px, a loaded machine): the grouped
#: conv stayed 1.5-5x faster than the FFT up to 21 taps, Real-ESRGAN's largest, so in the default
#: space the FFT route serves only larger kernels a config may ask for.
FFT_FROM = 23


# ------------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def blur_kernel(kernel: str, size: int, sigma_x: float = 1.0, sigma_y: float = 1.0, theta: float = 0.0,
                beta: float = 1.0, cutoff: float = 1.0) -> torch.Tensor:
    """A normalised ``size x size`` float32 kernel (BasicSR's formulas; theta in degrees, cutoff in pi).

    Gaussian: exp(-q/2); generalized: exp(-q^beta / 2); plateau: 1 / (1 + q^beta), where
    q = [x y] Sigma^-1 [x y]^T and Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T.
    Sinc: the circular low-pass filter wc J1(wc r) / (2 pi r), wc^2 / (4 pi) at r = 0.
    """
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    if kernel == "sinc":
        wc = cutoff * math.pi
        r = torch.sqrt(xx ** 2 + yy ** 2)
        k = wc * torch.special.bessel_j1(wc * r) / (2 * math.pi * r.clamp_min(1e-12))
        k[r == 0] = wc ** 2 / (4 * math.pi)
    else:
        if not kernel.endswith("aniso"):
            sigma_y, theta = sigma_x, 0.0
        t = math.radians(theta)
        c, s = math.cos(t), math.sin(t)
        rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        cov = rot @ torch.diag(torch.tensor([sigma_x ** 2, sigma_y ** 2], dtype=torch.float64)) @ rot.T
        inv = torch.linalg.inv(cov)
        q = inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy
        if kernel.startswith("generalized"):
            k = torch.exp(-0.5 * q.pow(beta))
        elif kernel.startswith("plateau"):
            k = 1.0 / (q.pow(beta) + 1.0)
        else:
            k = torch.exp(-0.5 * q)
    return (k / k.sum()).to(torch.float32)


def is_separable(p: dict) -> bool:
    """Whether the kernel is exactly ``outer(u, v)``: a Gaussian (or generalized with beta = 1)
    whose axes are the image axes.  exp(-(x^2/sx^2 + y^2/sy^2)/2) = exp(-x^2/2sx^2) exp(-y^2/2sy^2);
    a rotation mixes x and y in q, and plateau / beta != 1 / sinc are not products at all."""
    kind = p["kernel"]
    if kind == "sinc" or kind.startswith("plateau"):
        return False
    if kind.startswith("generalized") and abs(float(p.get("beta", 1.0)) - 1.0) > 1e-12:
        return False
    return not kind.endswith("aniso") or float(p["theta"]) % 90.0 == 0.0


@functools.lru_cache(maxsize=4096)
def _kernel_cached(params: tuple) -> torch.Tensor:
    p = dict(params)
    if p["kernel"] == "sinc":
        return blur_kernel("sinc", p["size"], cutoff=p["cutoff"])
    return blur_kernel(p["kernel"], p["size"], p["sigma_x"], p["sigma_y"], p["theta"], p.get("beta", 1.0))


def _kernel_of(op: Op) -> torch.Tensor:
    return _kernel_cached(op.params)


@functools.lru_cache(maxsize=4096)
def kernel_factors(params: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v) with outer(u, v) = kernel, for a separable kernel: its row and column marginals
    (exact for a rank-one kernel that sums to one)."""
    k = _kernel_cached(params).double()
    return k.sum(1).float(), k.sum(0).float()


# ------------------------------------------------------------------------------------------------
# padding at each image's own border
# ------------------------------------------------------------------------------------------------
def _pad_index(length: int, size: int, pad: int, reflect: bool) -> torch.Tensor:
    """Source index of each of ``length + 2 pad`` padded positions of a ``size``-long image
    (reflect, or replicate where the image is not longer than the pad, as ``F.pad`` needs)."""
    i = torch.arange(length + 2 * pad) - pad
    if reflect and size > 1:
        i = torch.where(i < 0, -i, i)
        i = torch.where(i > size - 1, 2 * (size - 1) - i, i)
    return i.clamp_(0, size - 1)


def _reflects(h: int, w: int, pad: int) -> bool:
    return pad < min(h, w)


def pad_images(x: torch.Tensor, sizes: Sizes, pad: int, pads: Sequence[int] | None = None) -> torch.Tensor:
    """(B, C, H, W) canvas -> (B, C, H + 2 pad, W + 2 pad), each image padded at its own border.

    ``pads[i]`` is the pad image i's own kernel needs (its reflect/replicate choice follows it,
    as the per-image reference decides); beyond it, any pixel will do (zero kernel taps).
    """
    b, c, hc, wc = x.shape
    pads = pads or [pad] * b
    if all(s == (hc, wc) for s in sizes) and len(set(pads)) == 1 and pads[0] == pad:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect" if _reflects(hc, wc, pad) else "replicate")
    rows = torch.stack([_pad_index(hc, h, pad, _reflects(h, w, p)) for (h, w), p in zip(sizes, pads)])
    cols = torch.stack([_pad_index(wc, w, pad, _reflects(h, w, p)) for (h, w), p in zip(sizes, pads)])
    rows, cols = rows.to(x.device), cols.to(x.device)
    y = x.gather(2, rows[:, None, :, None].expand(b, c, hc + 2 * pad, wc))
    return y.gather(3, cols[:, None, None, :].expand(b, c, hc + 2 * pad, wc + 2 * pad))


# ------------------------------------------------------------------------------------------------
# blur
# ------------------------------------------------------------------------------------------------
def _centred(k: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad an odd kernel (1-D or 2-D) to ``size`` taps per side, centre kept."""
    e = (size - k.shape[-1]) // 2
    return F.pad(k, (e, e) * (k.dim())) if e else k


def _depthwise(xp: torch.Tensor, weight: torch.Tensor, c: int) -> torch.Tensor:
    """Image i's channels correlated with weight[i] (B, kh, kw): one grouped conv2d."""
    b, _, hp, wp = xp.shape
    w = weight.to(xp.device, xp.dtype).repeat_interleave(c, dim=0).unsqueeze(1)
    return F.conv2d(xp.reshape(1, b * c, hp, wp), w, groups=b * c).reshape(b, c, hp - w.shape[-2] + 1, -1)


def _blur_separable(x: torch.Tensor, sizes: Sizes, ops: Sequence[Op]) -> torch.Tensor:
    kmax = max(int(o.p["size"]) for o in ops)
    u = torch.stack([_centred(kernel_factors(o.params)[0], kmax) for o in ops])
    v = torch.stack([_centred(kernel_factors(o.params)[1], kmax) for o in ops])
    xp = pad_images(x, sizes, kmax // 2, [int(o.p["size"]) // 2 for o in ops])
    c = x.shape[1]
    y = _depthwise(xp, u.unsqueeze(-1), c)          # down the columns: (B, C, H, W + 2p)
    return _depthwise(y, v.unsqueeze(1), c)         # along the rows:   (B, C, H, W)


def _blur_fft(x: torch.Tensor, sizes: Sizes, ops: Sequence[Op]) -> torch.Tensor:
    """Correlation by FFT over the padded canvas: no wrap-around reaches the kept part."""
    kmax = max(int(o.p["size"]) for o in ops)
    pad = kmax // 2
    xp = pad_images(x, sizes, pad, [int(o.p["size"]) // 2 for o in ops])
    hp, wp = xp.shape[-2:]
    k = torch.stack([_centred(_kernel_of(o), kmax) for o in ops]).to(x.device, x.dtype)
    kf = torch.fft.rfft2(F.pad(k, (0, wp - kmax, 0, hp - kmax)))
    y = torch.fft.irfft2(torch.fft.rfft2(xp) * kf.conj().unsqueeze(1), s=(hp, wp))
    return y[..., :x.shape[-2], :x.shape[-1]]


def _blur_direct(x: torch.Tensor, sizes: Sizes, ops: Sequence[Op]) -> torch.Tensor:
    size = int(ops[0].p["size"])
    xp = pad_images(x, sizes, size // 2)
    return _depthwise(xp, torch.stack([_kernel_of(o) for o in ops]), x.shape[1])


def _route(p: dict) -> tuple:
    if is_separable(p):
        return ("separable", 0)
    return ("fft", 0) if int(p["size"]) >= FFT_FROM else ("direct", int(p["size"]))


_BLUR = {"separable": _blur_separable, "fft": _blur_fft, "direct": _blur_direct}


def blur_canvas(x: torch.Tensor, sizes: Sizes, ops: Sequence[Op]) -> torch.Tensor:
    """Each image correlated with its own kernel, by the fastest exact route for that kernel."""
    routes: dict[tuple, list[int]] = defaultdict(list)
    for i, o in enumerate(ops):
        routes[_route(o.p)].append(i)
    if len(routes) == 1:
        ((route, _),) = routes
        return _BLUR[route](x, sizes, ops).clamp_(0, 1)
    subs = {key: _subcanvas(x, sizes, idx) for key, idx in sorted(routes.items())}  # copies: x is free
    out = x if all(len(idx) < x.shape[0] for idx in routes.values()) else x.clone()
    for key, (sub, sub_sizes) in subs.items():
        idx = routes[key]
        _put(out, idx, _BLUR[key[0]](sub, sub_sizes, [ops[i] for i in idx]), sub_sizes)
    return out.clamp_(0, 1)


def _subcanvas(x: torch.Tensor, sizes: Sizes, idx: Sequence[int]) -> tuple[torch.Tensor, Sizes]:
    """Images ``idx`` on a canvas just large enough for them (a view when ``idx`` is everything).

    Copied image by image (plain strided copies): torch's advanced indexing ran ~2x slower here.
    """
    sub_sizes = [sizes[i] for i in idx]
    h, w = max(s[0] for s in sub_sizes), max(s[1] for s in sub_sizes)
    if len(idx) == x.shape[0]:
        return x[..., :h, :w], sub_sizes
    out = x.new_empty((len(idx), x.shape[1], h, w))
    for j, i in enumerate(idx):
        out[j].copy_(x[i, :, :h, :w])
    return out, sub_sizes


def _put(x: torch.Tensor, idx: Sequence[int], y: torch.Tensor, sizes: Sizes) -> None:
    """Write y[j]'s valid part into image idx[j] of ``x`` (in place)."""
    for j, i in enumerate(idx):
        h, w = sizes[j]
        x[i, :, :h, :w].copy_(y[j, :, :h, :w])


# ------------------------------------------------------------------------------------------------
# resize
# ------------------------------------------------------------------------------------------------
def _interp_kw(mode: str) -> dict:
    return {} if mode == "area" else {"align_corners": False}


@functools.lru_cache(maxsize=4096)
def interp_matrix(n: int, m: int, mode: str) -> torch.Tensor:
    """The (m x n) linear map 'resize an axis of length n to m with ``mode``' (float64)."""
    eye = torch.eye(n, dtype=torch.float64).view(1, 1, n, n)
    return F.interpolate(eye, size=(m, n), mode=mode, **_interp_kw(mode))[0, 0]


def resize_matrix(n: int, m: int, mode: str, back_mode: str) -> torch.Tensor:
    """The (n x n) map 'resize to m with ``mode``, then back to n with ``back_mode``' (float32)."""
    return (interp_matrix(m, n, back_mode) @ interp_matrix(n, m, mode)).to(torch.float32)


def resized_size(n: int, scale: float) -> int:
    return max(1, int(round(n * scale)))


def _axis_matrix(n: int, n0: int, p: dict) -> torch.Tensor:
    """Matrix of one axis: current length n, chain input length n0 (float64)."""
    if "back_mode" in p:
        m = resized_size(n, p["scale"])
        return interp_matrix(m, n, p["back_mode"]) @ interp_matrix(n, m, p["mode"])
    return interp_matrix(n, resized_size(n0, p["scale"]), p["mode"])


@functools.lru_cache(maxsize=8192)
def axis_map(n: int, n0: int, params: tuple) -> torch.Tensor:
    """The float32 (m x n) map of one axis for a resize op's ``params`` (cached)."""
    return _axis_matrix(n, n0, {k: v for k, v in params if k in ("scale", "mode", "back_mode")}).to(torch.float32)


def _stacked(maps: list[torch.Tensor], rows: int, cols: int, x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(maps), rows, cols)
    for i, a in enumerate(maps):
        out[i, :a.shape[0], :a.shape[1]] = a
    return out.to(x.device, x.dtype)


def resize_canvas(x: torch.Tensor, sizes: Sizes, ops: Sequence[Op], origin: tuple[int, int]) -> tuple[torch.Tensor, Sizes]:
    """Resize each image by its own op: ``A_h @ x @ A_w^T`` as two batched matmuls.

    Each map equals ``F.interpolate`` (read off it on the identity), so the result does too, to
    float rounding.  Per-image maps, zero-padded to the canvas, let images of any size and any
    target size share one call.  A banded version (gathering the 2-8 taps each output reads) did
    a tenth of the arithmetic but ran 3x slower here: torch's CPU gather is memory-bound and slow,
    while the matmul runs at the BLAS rate.  The channels are folded into the matmul's rows/columns
    (1.5x faster here than broadcasting the per-image matrices over channels).
    """
    b, c, hc, wc = x.shape
    ah = [axis_map(h, origin[0], o.params) for (h, _), o in zip(sizes, ops)]
    aw = [axis_map(w, origin[1], o.params) for (_, w), o in zip(sizes, ops)]
    new_sizes = [(a.shape[0], bw.shape[0]) for a, bw in zip(ah, aw)]
    mh, mw = max(s[0] for s in new_sizes), max(s[1] for s in new_sizes)
    a_h, a_w = _stacked(ah, mh, hc, x), _stacked(aw, mw, wc, x)
    y = torch.bmm(x.reshape(b, c * hc, wc), a_w.transpose(1, 2))  # width: rows of every channel
    y = y.view(b, c, hc, mw).transpose(1, 2).reshape(b, hc, c * mw)
    y = torch.bmm(a_h, y)  # height
    return y.view(b, mh, c, mw).transpose(1, 2).contiguous().clamp_(0, 1), new_sizes


# ------------------------------------------------------------------------------------------------
# noise
# ------------------------------------------------------------------------------------------------
def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as torchvision's rgb_to_grayscale."""
    if x.shape[1] != 3:
        return x[:, :1]
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _valid_mask(x: torch.Tensor, sizes: Sizes) -> torch.Tensor | None:
    b, _, hc, wc = x.shape
    if all(s == (hc, wc) for s in sizes):
        return None
    hs = torch.tensor([s[0] for s in sizes], device=x.device).view(b, 1, 1, 1)
    ws = torch.tensor([s[1] for s in sizes], device=x.device).view(b, 1, 1, 1)
    rows = torch.arange(hc, device=x.device).view(1, 1, hc, 1)
    cols = torch.arange(wc, device=x.device).view(1, 1, 1, wc)
    return (rows < hs) & (cols < ws)


def poisson_levels(x: torch.Tensor, sizes: Sizes | None = None) -> torch.Tensor:
    """Per image 2^ceil(log2(#distinct 8-bit values)), as BasicSR/skimage scale Poisson noise.

    One bincount over the whole batch (numpy's on CPU, ~10x faster than torch's here; torch's
    on other devices), counting only each image's own pixels.
    """
    b = x.shape[0]
    q = (x.detach().clamp(0, 1) * 255).round().to(torch.int64)
    mask = _valid_mask(x, sizes) if sizes is not None else None
    if mask is not None:
        q = torch.where(mask.expand_as(q), q, torch.full_like(q, 256))  # bin 256: outside the image
    offsets = 257 * torch.arange(b, device=x.device).view(b, 1)
    flat = q.reshape(b, -1) + offsets
    if x.device.type == "cpu":
        counts = torch.from_numpy(np.bincount(flat.reshape(-1).numpy(), minlength=257 * b))
    else:
        counts = torch.bincount(flat.reshape(-1), minlength=257 * b)
    distinct = (counts.view(b, 257)[:, :256] > 0).sum(1).clamp_min(1)
    return torch.pow(2.0, torch.ceil(torch.log2(distinct.double()))).to(x.device, x.dtype)


#: Poisson counts with a mean at least this large are drawn from the normal approximation
#: N(lam, lam), rounded; smaller means are drawn exactly.  At lam >= 30 the two differ only in
#: skewness (1/sqrt(lam) <= 0.18), invisible in the noise, and it made Poisson noise ~3x faster
#: here than exact draws for every pixel.  Set to ``math.inf`` for exact draws everywhere.
POISSON_NORMAL_FROM = 30.0


def _poisson(lam: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson counts with means ``lam`` (exact below :data:`POISSON_NORMAL_FROM`, normal above)."""
    z = torch.randn(lam.shape, generator=generator, dtype=lam.dtype, device=lam.device)
    out = (lam + lam.sqrt() * z).round_().clamp_min_(0)
    small = lam < POISSON_NORMAL_FROM
    if bool(small.any()):
        lam_small = lam[small]
        if lam.device.type == "cpu":  # numpy's sampler ran 2x faster than torch.poisson here
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator).item())
            draws = np.random.default_rng(seed).poisson(lam_small.numpy().astype(np.float64))
            out[small] = torch.from_numpy(draws).to(lam.dtype)
        else:
            out[small] = torch.poisson(lam_small, generator=generator)
    return out


def _noise_field(x: torch.Tensor, sizes: Sizes, ops: Sequence[Op], kind: str, gray: bool,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Noise to add to ``x`` (all images share ``kind`` and colour/grey; levels differ per image)."""
    n, c, h, w = x.shape
    if kind == "gaussian":
        sigma = torch.tensor([o.p["sigma"] for o in ops], dtype=x.dtype).view(-1, 1, 1, 1).to(x.device) / 255.0
        field = torch.randn((n, 1 if gray else c, h, w), generator=generator, dtype=x.dtype,
                            device=x.device).mul_(sigma)
    else:
        scale = torch.tensor([o.p["scale"] for o in ops], dtype=x.dtype).view(-1, 1, 1, 1).to(x.device)
        src = _gray(x) if gray else x
        src = (src.clamp(0, 1) * 255).round_().div_(255)
        vals = poisson_levels(src, sizes).view(-1, 1, 1, 1)
        field = (_poisson(src * vals, generator).div_(vals) - src).mul_(scale)
    return field.expand(n, c, h, w) if gray else field


def noise_canvas(x: torch.Tensor, sizes: Sizes, ops: Sequence[Op], generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian or Poisson noise, colour or grey, each image with its own level (vectorised).

    Grey noise is one field added to all channels (luminance noise); colour noise is drawn per
    channel.  Poisson noise follows BasicSR: the 8-bit image is scaled by the number of levels
    it uses (rounded up to a power of two), drawn, and scaled back; ``scale`` multiplies it.
    """
    groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for i, o in enumerate(ops):
        groups[(o.p["kind"], bool(o.p["gray"]))].append(i)
    if len(groups) == 1:
        ((kind, gray),) = groups
        return (x + _noise_field(x, sizes, ops, kind, gray, generator)).clamp_(0, 1)
    for (kind, gray) in sorted(groups):  # each group reads only its own images: in place is safe
        idx = groups[(kind, gray)]
        sub, sub_sizes = _subcanvas(x, sizes, idx)
        _put(x, idx, sub + _noise_field(sub, sub_sizes, [ops[i] for i in idx], kind, gray, generator), sub_sizes)
    return x.clamp_(0, 1)


# ------------------------------------------------------------------------------------------------
# JPEG
# ------------------------------------------------------------------------------------------------
def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


@functools.lru_cache(maxsize=1)
def _torchcodec():
    try:
        from torchcodec.decoders import decode_jpeg
        from torchcodec.encoders import JpegEncoder
    except Exception:  # noqa: BLE001 - missing, or built against another torch: not ours to fix
        return None
    return JpegEncoder, decode_jpeg


@functools.lru_cache(maxsize=1)
def _torchvision_codec():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError:
        return None
    return encode_jpeg, decode_jpeg


def jpeg_codec(device: torch.device | str = "cpu") -> str:
    """Which codec JPEG runs through on ``device``: ``torchcodec``, ``torchvision`` or ``pil``.

    ``BIQA_JPEG_CODEC`` forces one (tests compare them).  On CPU all three are libjpeg (same
    pixels); torchvision's batched call ran ~2.4x faster than PIL here, so it comes before PIL;
    TorchCodec (its successor: torchvision 0.29 deprecates its codecs) comes first where installed.
    """
    forced = os.environ.get("BIQA_JPEG_CODEC", "").strip().lower()
    if forced:
        if forced not in ("torchcodec", "torchvision", "pil"):
            raise BiqaError(f"BIQA_JPEG_CODEC={forced!r}: use torchcodec, torchvision or pil")
        return forced
    if _torchcodec() is not None:
        return "torchcodec"
    return "torchvision" if _torchvision_codec() is not None else "pil"


def _jpeg_pil(img: torch.Tensor, quality: int) -> torch.Tensor:
    import io as _io

    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).cpu().numpy()).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).to(img.device)


def jpeg_roundtrip(images: list[torch.Tensor], quality: int, codec: str | None = None) -> list[torch.Tensor]:
    """Encode and decode uint8 (3, h, w) images at one quality, on their device where the codec can."""
    if not images:
        return []
    dev = images[0].device
    codec = codec or jpeg_codec(dev)
    if codec == "torchcodec" and _torchcodec() is not None:
        enc, dec = _torchcodec()
        if dev.type == "cuda":
            return [dec(enc(im.contiguous()).to_tensor(quality=quality).cpu(), device=dev) for im in images]
        return [dec(enc(im.contiguous()).to_tensor(quality=quality)) for im in images]
    if codec == "torchvision" and _torchvision_codec() is not None:
        enc, dec = _torchvision_codec()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with contextlib.suppress(RuntimeError):  # a build without nvJPEG: go through the CPU
                if dev.type == "cuda":
                    data = enc([im.contiguous() for im in images], quality=quality)
                    return list(dec(data, device=dev))
            return [d.to(dev) for d in dec(enc([im.cpu().contiguous() for im in images], quality=quality))]
    return [_jpeg_pil(im, quality) for im in images]


def jpeg_canvas(x: torch.Tensor, sizes: Sizes, ops: Sequence[Op]) -> torch.Tensor:
    """JPEG round trip of each image's own rectangle, images grouped by quality (one call each)."""
    u8 = to_uint8(x)
    if x.shape[1] not in (1, 3):
        raise BiqaError(f"JPEG needs 1 or 3 channels, got {x.shape[1]}")
    by_q: dict[int, list[int]] = defaultdict(list)
    for i, o in enumerate(ops):
        by_q[int(o.p["quality"])].append(i)
    out = torch.zeros_like(u8)
    grey = x.shape[1] == 1  # as an RGB image without chroma; its luma comes back
    for q, idx in by_q.items():
        crops = [u8[i, :, :sizes[i][0], :sizes[i][1]].expand(3, -1, -1) if grey else u8[i, :, :sizes[i][0], :sizes[i][1]]
                 for i in idx]
        for i, d in zip(idx, jpeg_roundtrip(crops, q)):
            h, w = sizes[i]
            out[i, :, :h, :w] = d[:1] if grey else d
    return out.to(x.dtype).div_(255.0)


# ------------------------------------------------------------------------------------------------
# recipes on a batch
# ------------------------------------------------------------------------------------------------
def _apply_group(name: str, x: torch.Tensor, sizes: Sizes, ops: Sequence[Op], origin: tuple[int, int],
                 generator: torch.Generator | None) -> tuple[torch.Tensor, Sizes]:
    if name == "blur":
        return blur_canvas(x, sizes, ops), sizes
    if name == "resize":
        return resize_canvas(x, sizes, ops, origin)
    if name == "noise":
        return noise_canvas(x, sizes, ops, generator), sizes
    if name == "jpeg":
        return jpeg_canvas(x, sizes, ops), sizes
    raise BiqaError(f"unknown degradation op {name!r} in a recipe (known: blur, resize, noise, jpeg)")


def _place(x: torch.Tensor, sizes: Sizes, idx: list[int], y: torch.Tensor, new: Sizes) -> tuple[torch.Tensor, Sizes]:
    """Write group ``idx``'s results back into the canvas (allocated once, at the largest size)."""
    sizes = list(sizes)
    for i, s in zip(idx, new):
        sizes[i] = s
    if len(idx) == x.shape[0] and y.shape == x.shape:
        return y, sizes
    if len(idx) == x.shape[0]:
        x[..., :y.shape[-2], :y.shape[-1]].copy_(y)
    else:
        _put(x, idx, y, new)  # beyond an image's own size nothing is read (finite is enough)
    return x, sizes


def _largest(recipes: Sequence[Recipe], origin: tuple[int, int]) -> tuple[int, int]:
    """The largest size any image reaches along its recipe: the canvas is allocated once."""
    h, w = origin
    for r in recipes:
        for o in r.ops:
            p = o.p
            if o.name == "resize" and "back_mode" not in p:
                h, w = max(h, resized_size(origin[0], p["scale"])), max(w, resized_size(origin[1], p["scale"]))
    return h, w


#: Cost of one more batched call, in pixels of work (measured: a call's fixed overhead here is
#: about what processing a 64 x 64 image costs).
CALL_COST = 64 * 64


def size_buckets(sizes: Sizes, idx: Sequence[int]) -> list[list[int]]:
    """Split a group into runs of similar size, so that no small image pays for a large canvas.

    Images sorted by area; a dynamic programme picks the cut points minimising
    sum(bucket images x bucket canvas area) + CALL_COST per bucket.  A uniform group stays one.
    """
    order = sorted(idx, key=lambda i: -sizes[i][0] * sizes[i][1])
    if len({sizes[i] for i in order}) == 1:
        return [list(idx)]
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cost of the first j images
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        h = w = 0
        for i in range(j, 0, -1):  # bucket = order[i-1 : j]
            h, w = max(h, sizes[order[i - 1]][0]), max(w, sizes[order[i - 1]][1])
            cost = best[i - 1] + (j - i + 1) * h * w + CALL_COST
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    buckets, j = [], n
    while j > 0:
        buckets.append(sorted(order[cut[j]:j]))
        j = cut[j]
    return sorted(buckets)


def degrade_batch(images: torch.Tensor, recipes: Sequence[Recipe], generator: torch.Generator | None = None,
                  *, as_uint8: bool = False) -> torch.Tensor:
    """Apply ``recipes[i]`` to ``images[i]`` on the batch's device; (B, C, H, W) float in [0, 1]
    -> the same shape, on 8-bit levels (float, or uint8 with ``as_uint8``).

    Runs step by step: at step t every image whose recipe has a t-th op is grouped with the
    other images doing the same kind of op, and each group is one batched call.  With four op
    kinds that is at most 4 calls per step, whatever the batch size.  Images may change size in
    between (Real-ESRGAN's chain); each recipe must end at the input size.
    """
    if images.dim() != 4:
        raise BiqaError(f"degrade_batch expects a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    if len(recipes) != images.shape[0]:
        raise BiqaError(f"degrade_batch: {images.shape[0]} images but {len(recipes)} recipes")
    origin = (images.shape[-2], images.shape[-1])
    canvas = _largest(recipes, origin)
    if canvas == origin:
        x = images.to(torch.float32, copy=True)  # groups are written back in place: never into the caller's
    else:
        x = images.new_zeros((*images.shape[:2], *canvas), dtype=torch.float32)
        x[..., :origin[0], :origin[1]] = images
    sizes: Sizes = [origin] * images.shape[0]
    for t in range(max((len(r.ops) for r in recipes), default=0)):
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(recipes):
            if t < len(r.ops):
                groups[r.ops[t].name].append(i)
        for name in sorted(groups):  # fixed order: the noise generator is consumed reproducibly
            for idx in size_buckets(sizes, groups[name]):
                sub, sub_sizes = _subcanvas(x, sizes, idx)
                y, new = _apply_group(name, sub, sub_sizes, [recipes[i].ops[t] for i in idx], origin, generator)
                x, sizes = _place(x, sizes, idx, y, new)
    wrong = [i for i, s in enumerate(sizes) if s != origin]
    if wrong:
        raise BiqaError(f"degrade_batch: recipe {wrong[0]} ends at {sizes[wrong[0]]} instead of the input size "
                        f"{origin}; a variable-size chain needs a final 'resize' with scale 1 "
                        f"({recipes[wrong[0]].describe()})")
    x = x[..., :origin[0], :origin[1]]
    if as_uint8:
        return to_uint8(x)
    return (x.clamp(0, 1) * 255).round_().div_(255)


def apply_blur(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """Blur a (B, C, H, W) batch, ``ops[i]`` for image i."""
    return blur_canvas(x.to(torch.float32, copy=True), [tuple(x.shape[-2:])] * x.shape[0], ops)


def apply_resize(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """Size-preserving resize ops (with ``back_mode``) on a (B, C, H, W) batch."""
    return resize_canvas(x.float(), [tuple(x.shape[-2:])] * x.shape[0], ops, tuple(x.shape[-2:]))[0]


def apply_noise(x: torch.Tensor, ops: Sequence[Op], generator: torch.Generator | None = None) -> torch.Tensor:
    return noise_canvas(x.to(torch.float32, copy=True), [tuple(x.shape[-2:])] * x.shape[0], ops, generator)


def apply_jpeg(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    return jpeg_canvas(x.float(), [tuple(x.shape[-2:])] * x.shape[0], ops)


def apply_recipe(image: torch.Tensor, recipe: Recipe, generator: torch.Generator | None = None) -> torch.Tensor:
    """One image (C, H, W) or a batch sharing one recipe (B, C, H, W)."""
    if image.dim() == 3:
        return degrade_batch(image.unsqueeze(0), [recipe], generator)[0]
    return degrade_batch(image, [recipe] * image.shape[0], generator)
