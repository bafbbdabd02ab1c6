"""QPT's degradation space: Real-ESRGAN's operators, extended with shuffle, high-order and skip.

Why this module exists: QPT (Zhao et al., CVPR 2023) learns quality from *which degradation*
an image went through.  The richer the space of degradations, the less the encoder can get
away with recognising a handful of distortion types instead of learning quality itself.  The
paper starts from Real-ESRGAN's two-stage chain (blur -> resize -> noise -> JPEG, twice) and
adds three ways of recombining it:

* **shuffle**: the operators of a stage run in a random order;
* **high-order**: the chain is applied again (order 1, 2, 3 ... ``len(order_probs)``);
* **skip**: each operator is dropped with probability ``skip_prob``.

Sampling and applying are split.  :func:`sample_recipe` draws a :class:`Recipe` (the ordered
list of operators with their parameters) from a numpy ``Generator``; :func:`degrade_batch`
applies one recipe per image to a batch of tensors, batched per operator; the only randomness
it needs (noise) comes from the ``torch.Generator`` passed in.  Nothing touches global RNGs, so
a seed fixes everything, and a recipe printed in a log can be replayed.

Every continuous parameter is sampled on a grid ``[low, high, step]``: that keeps the space
*discrete* and countable (:func:`space_size`), the way the paper counts its ~2x10^7
degradations, and makes recipes short to print.

Sizes follow Real-ESRGAN by default: a resize takes the image to ``scale`` x the input size and
it *stays* there through the noise, JPEG (and, shuffled, blur) that follow, so noise is added at
low resolution and JPEG blocks get enlarged; the final step resizes back to the input size
("resize back", with a random mode) grouped with the final sinc filter, before or after the
final JPEG, as Real-ESRGAN does.  Patches are cut after that final resize.  Later passes resize
relative to the input size too (Real-ESRGAN's second resize does).  ``preserve_size: true`` is
the other variant: each resize goes there and straight back (the batch never changes size).

Differences from Real-ESRGAN, on purpose:

* every operator clamps its output to [0, 1]; the result is rounded to 8-bit levels at the end;
* a resize "keep" draw emits no operator at all (Real-ESRGAN's second pass, on "keep", resizes
  to the input size with a random mode);
* sizes are rounded (Real-ESRGAN truncates).

The operators themselves live in :mod:`operators` (batched, on the batch's device) and the
recipe types in :mod:`recipes`; both are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Sequence

import numpy as np

from biqabench.plugin_api import BiqaError, load_yaml, override
from biqabench_plugins.qpt.operators import (  # noqa: F401 - the operators, re-exported
    FFT_FROM, POISSON_NORMAL_FROM, _kernel_of, apply_blur, apply_jpeg, apply_noise, apply_recipe, apply_resize,
    blur_kernel, degrade_batch, is_separable, jpeg_codec, kernel_factors, poisson_levels, resize_matrix,
    resized_size, to_uint8,
)
from biqabench_plugins.qpt.recipes import Op, Recipe, op, recipe_of  # noqa: F401

#: The operators of one stage, in Real-ESRGAN's order (the order used when a stage is not shuffled).
STAGE_OPS = ("blur", "resize", "noise", "jpeg")
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
def _r(*v: float) -> Any:
    return field(default_factory=lambda: list(v))


@dataclass
class BlurConfig:
    """Blur kernels (Real-ESRGAN: 7..21 px; six Gaussian-like families, or a sinc with ``sinc_prob``)."""

    prob: float = 1.0
    kernel_sizes: list[int] = _r(7, 9, 11, 13, 15, 17, 19, 21)
    kernel_types: list[str] = _r(*KERNEL_TYPES)
    kernel_probs: list[float] = _r(0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sigma: list[float] = _r(0.2, 3.0, 0.1)               # [low, high, step] in pixels
    theta_deg: list[float] = _r(0.0, 165.0, 15.0)        # rotation of anisotropic kernels; 180 deg = 0 deg
    beta_generalized: list[float] = _r(0.5, 4.0, 0.1)    # shape of exp(-0.5 q^beta)
    beta_plateau: list[float] = _r(1.0, 2.0, 0.1)        # shape of 1 / (1 + q^beta)
    sinc_prob: float = 0.1
    sinc_cutoff_small: list[float] = _r(0.35, 1.0, 0.05)  # cutoff in units of pi, kernels < sinc_small_below
    sinc_cutoff_large: list[float] = _r(0.2, 1.0, 0.05)   # cutoff in units of pi, larger kernels
    sinc_small_below: int = 13


@dataclass
class ResizeConfig:
    """Scale up/down to ``scale`` x the input size; ``probs`` = P(up), P(down), P(keep).

    ``modes`` interpolate to the new size (and, with ``preserve_size``, back again).
    """

    probs: list[float] = _r(0.2, 0.7, 0.1)
    scale: list[float] = _r(0.15, 1.5, 0.05)  # grid; values < 1 are "down", > 1 are "up"
    modes: list[str] = _r(*RESIZE_MODES)


@dataclass
class NoiseConfig:
    """Additive Gaussian noise (sigma on the 0..255 scale) or Poisson (shot) noise; colour or grey."""

    prob: float = 1.0
    gaussian_prob: float = 0.5
    gaussian_sigma: list[float] = _r(1.0, 30.0, 1.0)
    poisson_scale: list[float] = _r(0.05, 3.0, 0.05)
    gray_prob: float = 0.4


@dataclass
class JpegConfig:
    prob: float = 1.0
    quality: list[float] = _r(30.0, 95.0, 1.0)


@dataclass
class StageConfig:
    """One pass of the chain: blur, resize, noise, JPEG (each with its own probability)."""

    blur: BlurConfig = field(default_factory=BlurConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg: JpegConfig = field(default_factory=JpegConfig)


def _stage2() -> StageConfig:
    """Real-ESRGAN's second degradation: milder blur (p=0.8), resize, noise; its JPEG is the final one."""
    return StageConfig(
        blur=BlurConfig(prob=0.8, sigma=[0.2, 1.5, 0.1]),
        resize=ResizeConfig(probs=[0.3, 0.4, 0.3], scale=[0.3, 1.2, 0.05]),
        noise=NoiseConfig(gaussian_sigma=[1.0, 25.0, 1.0], poisson_scale=[0.05, 2.5, 0.05]),
        jpeg=JpegConfig(prob=0.0),
    )


@dataclass
class FinalConfig:
    """Real-ESRGAN's last step: [resize back + sinc filter (p=0.8)] and JPEG, in random order.

    ``sinc_first_prob``: P(the resize back and sinc come before the JPEG).  ``resize_modes``:
    modes of the resize back to the input size (variable-size chain only).
    """

    sinc_prob: float = 0.8
    sinc_kernel_sizes: list[int] = _r(7, 9, 11, 13, 15, 17, 19, 21)
    sinc_cutoff: list[float] = _r(0.35, 1.0, 0.05)  # units of pi
    jpeg_prob: float = 1.0
    jpeg_quality: list[float] = _r(30.0, 95.0, 1.0)
    sinc_first_prob: float = 0.5
    resize_modes: list[str] = _r(*RESIZE_MODES)


@dataclass
class DegradationConfig:
    """The whole space. ``stage1`` is the first pass, ``stage2`` every later pass (orders 2, 3...).

    Default: orders 1-2 with shuffle and skip (3.6 x 10^7 recipes at the kinds level, the paper's
    order of magnitude); ``order_probs: [p1, p2, p3]`` adds a third pass.
    """

    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2)
    final: FinalConfig = field(default_factory=FinalConfig)
    order_probs: list[float] = _r(0.5, 0.5)  # P(order = 1), P(order = 2), ...
    shuffle_prob: float = 0.5  # chance that a stage's operators run in a random order
    skip_prob: float = 0.1     # chance that any one operator (final ones too) is dropped
    preserve_size: bool = False  # True: each resize goes straight back (no Real-ESRGAN size chain)

    def stage(self, index: int) -> StageConfig:
        """Config of pass ``index`` (1-based)."""
        return self.stage1 if index == 1 else self.stage2


def realesrgan_config() -> DegradationConfig:
    """Real-ESRGAN's fixed two-stage chain (no shuffle, no skip, always order 2): the baseline space."""
    return DegradationConfig(order_probs=[0.0, 1.0], shuffle_prob=0.0, skip_prob=0.0)


def load_degradation_config(path: str | None = None, values: dict | None = None) -> DegradationConfig:
    """Defaults, overridden by a YAML file (its ``degradation:`` section if it has one) and ``values``."""
    cfg = DegradationConfig()
    where = "degradation config"
    if path is not None:
        data = load_yaml(path)
        data = data.get("degradation", data) if isinstance(data, dict) else data
        where = f"{path}"
        cfg = override(cfg, data, where=where)
    cfg = override(cfg, values, where=where)
    validate(cfg, where)
    return cfg


def _grid(r: Sequence[float], key: str = "range") -> np.ndarray:
    """The values of a ``[low, high, step]`` range (``[value]`` is a single value)."""
    if len(r) == 1:
        return np.array([float(r[0])])
    if len(r) != 3:
        raise BiqaError(f"{key}: expected [low, high, step] (or [value]), got {list(r)}")
    lo, hi, step = (float(v) for v in r)
    if step <= 0 or hi < lo:
        raise BiqaError(f"{key}: need low <= high and step > 0, got {list(r)}")
    n = int(math.floor((hi - lo) / step + 1e-6)) + 1
    return np.round(lo + step * np.arange(n), 6)


def _check_prob(p: float, key: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise BiqaError(f"{key}: a probability must be within [0, 1], got {p}")


def _check_dist(ps: Sequence[float], n: int, key: str) -> None:
    if len(ps) != n or any(p < 0 for p in ps) or sum(ps) <= 0:
        raise BiqaError(f"{key}: expected {n} non-negative weights with a positive sum, got {list(ps)}")


def validate(cfg: DegradationConfig, where: str = "degradation config") -> None:
    """Check ranges, probabilities and names; the error names the key and the value at fault."""

    def walk(obj: Any, prefix: str) -> None:
        for f in fields(obj):
            value = getattr(obj, f.name)
            key = f"{where}: {prefix}{f.name}"
            if is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif f.name.endswith("prob"):
                _check_prob(value, key)
            elif f.name in ("sigma", "theta_deg", "beta_generalized", "beta_plateau", "sinc_cutoff_small",
                            "sinc_cutoff_large", "scale", "gaussian_sigma", "poisson_scale", "quality",
                            "sinc_cutoff", "jpeg_quality"):
                g = _grid(value, key)
                if f.name in ("quality", "jpeg_quality") and (g.min() < 1 or g.max() > 100):
                    raise BiqaError(f"{key}: JPEG quality must lie in 1..100, got {value}")
                if f.name != "theta_deg" and g.min() <= 0:
                    raise BiqaError(f"{key}: values must be positive, got {value}")
            elif f.name in ("kernel_sizes", "sinc_kernel_sizes"):
                if not value or any(k < 1 or k % 2 == 0 for k in value):
                    raise BiqaError(f"{key}: kernel sizes must be odd positive integers, got {value}")

    walk(cfg, "")
    for name in ("stage1", "stage2"):
        st: StageConfig = getattr(cfg, name)
        unknown = [t for t in st.blur.kernel_types if t not in KERNEL_TYPES]
        if unknown:
            raise BiqaError(f"{where}: {name}.blur.kernel_types: unknown {unknown} (known: {', '.join(KERNEL_TYPES)})")
        _check_dist(st.blur.kernel_probs, len(st.blur.kernel_types), f"{where}: {name}.blur.kernel_probs")
        _check_dist(st.resize.probs, 3, f"{where}: {name}.resize.probs (up, down, keep)")
        bad = [m for m in st.resize.modes if m not in RESIZE_MODES]
        if bad or not st.resize.modes:
            raise BiqaError(f"{where}: {name}.resize.modes: unknown {bad} (known: {', '.join(RESIZE_MODES)})")
    bad = [m for m in cfg.final.resize_modes if m not in RESIZE_MODES]
    if bad or not cfg.final.resize_modes:
        raise BiqaError(f"{where}: final.resize_modes: unknown {bad} (known: {', '.join(RESIZE_MODES)})")
    if not cfg.order_probs or any(p < 0 for p in cfg.order_probs) or sum(cfg.order_probs) <= 0:
        raise BiqaError(f"{where}: order_probs: expected non-negative weights for orders 1..N, got {cfg.order_probs}")


# ------------------------------------------------------------------------------------------------
# recipes
# ------------------------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, values: np.ndarray) -> float:
    return float(values[rng.integers(len(values))])


def _pick_beta(rng: np.random.Generator, values: np.ndarray) -> float:
    """Half the draws below 1 and half above, as BasicSR does (beta < 1: heavier tails)."""
    lo, hi = values[values < 1], values[values >= 1]
    if len(lo) and len(hi):
        return _pick(rng, lo if rng.random() < 0.5 else hi)
    return _pick(rng, values)


def _sample_sinc(rng: np.random.Generator, size: int, cutoff: Sequence[float], stage: int) -> Op:
    return Op("blur", (("cutoff", _pick(rng, _grid(cutoff))), ("kernel", "sinc"), ("size", size)), stage)


def _sample_blur(rng: np.random.Generator, c: BlurConfig, stage: int) -> Op:
    size = int(c.kernel_sizes[rng.integers(len(c.kernel_sizes))])
    if rng.random() < c.sinc_prob:
        cutoff = c.sinc_cutoff_small if size < c.sinc_small_below else c.sinc_cutoff_large
        return _sample_sinc(rng, size, cutoff, stage)
    probs = np.asarray(c.kernel_probs, dtype=float)
    kind = c.kernel_types[rng.choice(len(probs), p=probs / probs.sum())]
    sig = _grid(c.sigma)
    sx = _pick(rng, sig)
    sy, theta = sx, 0.0
    if kind.endswith("aniso"):
        sy = _pick(rng, sig)
        theta = _pick(rng, _grid(c.theta_deg))
    params = {"kernel": kind, "size": size, "sigma_x": sx, "sigma_y": sy, "theta": theta}
    if kind.startswith("generalized"):
        params["beta"] = _pick_beta(rng, _grid(c.beta_generalized))
    elif kind.startswith("plateau"):
        params["beta"] = _pick_beta(rng, _grid(c.beta_plateau))
    return Op("blur", tuple(sorted(params.items())), stage)


def _sample_resize(rng: np.random.Generator, c: ResizeConfig, stage: int, preserve: bool) -> Op | None:
    probs = np.asarray(c.probs, dtype=float)
    direction = rng.choice(3, p=probs / probs.sum())  # 0 up, 1 down, 2 keep
    if direction == 2:
        return None
    g = _grid(c.scale)
    g = g[g > 1] if direction == 0 else g[g < 1]
    if len(g) == 0:
        return None
    scale = _pick(rng, g)
    mode = c.modes[rng.integers(len(c.modes))]
    if not preserve:  # Real-ESRGAN: the image keeps this size until the final resize back
        return Op("resize", (("mode", mode), ("scale", scale)), stage)
    back = c.modes[rng.integers(len(c.modes))]
    return Op("resize", (("back_mode", back), ("mode", mode), ("scale", scale)), stage)


def _sample_noise(rng: np.random.Generator, c: NoiseConfig, stage: int) -> Op:
    gaussian = rng.random() < c.gaussian_prob
    gray = bool(rng.random() < c.gray_prob)
    if gaussian:
        return Op("noise", (("gray", gray), ("kind", "gaussian"), ("sigma", _pick(rng, _grid(c.gaussian_sigma)))), stage)
    return Op("noise", (("gray", gray), ("kind", "poisson"), ("scale", _pick(rng, _grid(c.poisson_scale)))), stage)


def _sample_jpeg(rng: np.random.Generator, quality: Sequence[float], stage: int) -> Op:
    return Op("jpeg", (("quality", int(round(_pick(rng, _grid(quality))))),), stage)


def sample_recipe(cfg: DegradationConfig, rng: np.random.Generator) -> Recipe:
    """Draw one degradation. Every draw comes from ``rng`` in a fixed sequence (reproducible)."""
    probs = np.asarray(cfg.order_probs, dtype=float)
    order = int(rng.choice(len(probs), p=probs / probs.sum())) + 1
    ops: list[Op] = []
    shuffled: list[bool] = []
    for i in range(1, order + 1):
        st = cfg.stage(i)
        stage_ops: list[Op] = []
        for name in STAGE_OPS:
            op: Op | None = None
            if name == "blur" and rng.random() < st.blur.prob:
                op = _sample_blur(rng, st.blur, i)
            elif name == "resize":
                op = _sample_resize(rng, st.resize, i, cfg.preserve_size)
            elif name == "noise" and rng.random() < st.noise.prob:
                op = _sample_noise(rng, st.noise, i)
            elif name == "jpeg" and rng.random() < st.jpeg.prob:
                op = _sample_jpeg(rng, st.jpeg.quality, i)
            if op is not None and not rng.random() < cfg.skip_prob:
                stage_ops.append(op)
        do_shuffle = bool(rng.random() < cfg.shuffle_prob)
        if do_shuffle and len(stage_ops) > 1:
            stage_ops = [stage_ops[j] for j in rng.permutation(len(stage_ops))]
        shuffled.append(do_shuffle)
        ops.extend(stage_ops)
    ops.extend(_sample_final(cfg, rng))
    return Recipe(tuple(ops), order, tuple(shuffled))


def _sample_final(cfg: DegradationConfig, rng: np.random.Generator) -> list[Op]:
    """Real-ESRGAN's last step: [resize back + sinc] then JPEG, or JPEG then [resize back + sinc].

    The resize back is never skipped (it is the chain's return to the input size, not a
    distortion of its own); the sinc and the JPEG each may be.
    """
    fin = cfg.final
    sinc: Op | None = None
    jpeg: Op | None = None
    if rng.random() < fin.sinc_prob:
        size = int(fin.sinc_kernel_sizes[rng.integers(len(fin.sinc_kernel_sizes))])
        sinc = _sample_sinc(rng, size, fin.sinc_cutoff, 0)
        if rng.random() < cfg.skip_prob:
            sinc = None
    if rng.random() < fin.jpeg_prob:
        jpeg = _sample_jpeg(rng, fin.jpeg_quality, 0)
        if rng.random() < cfg.skip_prob:
            jpeg = None
    sinc_first = rng.random() < fin.sinc_first_prob
    group = [] if sinc is None else [sinc]
    if not cfg.preserve_size:
        mode = fin.resize_modes[rng.integers(len(fin.resize_modes))]
        group = [Op("resize", (("mode", mode), ("scale", 1.0)), 0), *group]
    tail = [] if jpeg is None else [jpeg]
    return group + tail if sinc_first else tail + group


def sample_distinct(cfg: DegradationConfig, rng: np.random.Generator, n: int, tries: int = 100) -> list[Recipe]:
    """``n`` pairwise different degradations for one image (QC-Loss needs d1 != d2 != ...)."""
    out: list[Recipe] = []
    keys: set = set()
    for _ in range(n * tries):
        r = sample_recipe(cfg, rng)
        if r.key() not in keys:
            out.append(r)
            keys.add(r.key())
            if len(out) == n:
                return out
    raise BiqaError(f"the degradation space is too small to draw {n} different degradations; "
                    "widen its ranges or probabilities")


def sample_pair(cfg: DegradationConfig, rng: np.random.Generator) -> tuple[Recipe, Recipe]:
    """Two *different* degradations d1 != d2 for one image."""
    d1, d2 = sample_distinct(cfg, rng, 2)
    return d1, d2


# ------------------------------------------------------------------------------------------------
# counting
# ------------------------------------------------------------------------------------------------
def _blur_variants(c: BlurConfig, level: str) -> int:
    if level == "types":
        fam = sum(1 for t, p in zip(c.kernel_types, c.kernel_probs) if p > 0) if c.sinc_prob < 1 else 0
        return fam + (1 if c.sinc_prob > 0 else 0)
    ns, nt = len(_grid(c.sigma)), len(_grid(c.theta_deg))
    nbg, nbp = len(_grid(c.beta_generalized)), len(_grid(c.beta_plateau))
    per_type = {"iso": ns, "aniso": ns * ns * nt, "generalized_iso": ns * nbg,
                "generalized_aniso": ns * ns * nt * nbg, "plateau_iso": ns * nbp, "plateau_aniso": ns * ns * nt * nbp}
    total = 0
    for k in c.kernel_sizes:
        if c.sinc_prob < 1:
            total += sum(per_type[t] for t, p in zip(c.kernel_types, c.kernel_probs) if p > 0)
        if c.sinc_prob > 0:
            total += len(_grid(c.sinc_cutoff_small if k < c.sinc_small_below else c.sinc_cutoff_large))
    return total


def _resize_variants(c: ResizeConfig, level: str, preserve: bool) -> int:
    g = _grid(c.scale)
    dirs = [(c.probs[0], g[g > 1]), (c.probs[1], g[g < 1])]
    nm = len(c.modes)
    if level == "types":
        return sum(nm for p, v in dirs if p > 0 and len(v))
    return sum(len(v) * nm * (nm if preserve else 1) for p, v in dirs if p > 0)


def _noise_variants(c: NoiseConfig, level: str) -> int:
    colours = (c.gray_prob > 0) + (c.gray_prob < 1)
    kinds = []
    if c.gaussian_prob > 0:
        kinds.append(1 if level == "types" else len(_grid(c.gaussian_sigma)))
    if c.gaussian_prob < 1:
        kinds.append(1 if level == "types" else len(_grid(c.poisson_scale)))
    return colours * sum(kinds)


def _jpeg_variants(quality: Sequence[float], level: str) -> int:
    return 1 if level == "types" else len({int(round(q)) for q in _grid(quality)})


def _subset_count(items: list[tuple[int, bool]], shuffle: bool) -> int:
    """Sum over which optional ops are present of (orderings) x (product of their variants).

    ``items``: (variants, optional) per op that can occur at all.
    """
    total = 0
    n = len(items)
    for mask in range(1 << n):
        chosen = [items[j] for j in range(n) if mask >> j & 1]
        if any(not opt for j, (_, opt) in enumerate(items) if not mask >> j & 1):
            continue  # a mandatory op left out
        prod = math.prod(v for v, _ in chosen)
        total += prod * (math.factorial(len(chosen)) if shuffle else 1)
    return total


def _stage_count(cfg: DegradationConfig, st: StageConfig, level: str) -> int:
    skip = cfg.skip_prob > 0
    items: list[tuple[int, bool]] = []
    if st.blur.prob > 0:
        items.append((_blur_variants(st.blur, level), st.blur.prob < 1 or skip))
    if st.resize.probs[0] > 0 or st.resize.probs[1] > 0:
        items.append((_resize_variants(st.resize, level, cfg.preserve_size), st.resize.probs[2] > 0 or skip))
    if st.noise.prob > 0:
        items.append((_noise_variants(st.noise, level), st.noise.prob < 1 or skip))
    if st.jpeg.prob > 0:
        items.append((_jpeg_variants(st.jpeg.quality, level), st.jpeg.prob < 1 or skip))
    return _subset_count(items, cfg.shuffle_prob > 0)


def _final_count(cfg: DegradationConfig, level: str) -> int:
    """[resize back + sinc] and JPEG, each present or not, the group before or after the JPEG.

    The resize back (variable-size chain only) is always there: with the JPEG, its place
    relative to it is a real difference (JPEG blocks enlarged or not), so it orders like an op;
    its interpolation modes count as parameters, not as a distortion kind.
    """
    f = cfg.final
    skip = cfg.skip_prob > 0
    sinc_opts = [0]
    if f.sinc_prob > 0:
        sinc_opts = ([0] if f.sinc_prob < 1 or skip else []) + [
            1 if level == "types" else sum(len(_grid(f.sinc_cutoff)) for _ in f.sinc_kernel_sizes)]
    jpeg_opts = [0]
    if f.jpeg_prob > 0:
        jpeg_opts = ([0] if f.jpeg_prob < 1 or skip else []) + [_jpeg_variants(f.jpeg_quality, level)]
    back = 0 if cfg.preserve_size else (1 if level == "types" else len(f.resize_modes))
    both_orders = 0 < f.sinc_first_prob < 1
    total = 0
    for n_sinc in sinc_opts:
        for n_jpeg in jpeg_opts:
            group = [n for n in (back, n_sinc) if n]
            variants = math.prod(group) * (n_jpeg or 1)
            total += variants * (2 if both_orders and group and n_jpeg else 1)
    return total


def space_size(cfg: DegradationConfig | None = None, level: str = "params") -> int:
    """How many distinct recipes :func:`sample_recipe` can produce under ``cfg``.

    ``level="params"`` counts every grid value of every parameter (kernel size and shape, sigma,
    angle, scale, interpolation modes, noise level, JPEG quality); ``level="types"`` counts only
    operator *kinds* (kernel family, resize direction x mode, Gaussian/Poisson x colour/grey,
    JPEG), i.e. which distortions are chained in which order, not how strong each is.

    A recipe is the ordered list of ops together with the pass each op belongs to; two recipes
    can occasionally compute the same function (e.g. an anisotropic kernel with equal sigmas),
    so this is an upper bound on distinct degradation *functions*.
    """
    cfg = cfg or DegradationConfig()
    if level not in ("params", "types"):
        raise BiqaError(f"space_size: level must be 'params' or 'types', got {level!r}")
    s1 = _stage_count(cfg, cfg.stage1, level)
    s2 = _stage_count(cfg, cfg.stage2, level)
    chains = sum(s1 * s2 ** (n - 1) for n, p in enumerate(cfg.order_probs, start=1) if p > 0)
    return chains * _final_count(cfg, level)
