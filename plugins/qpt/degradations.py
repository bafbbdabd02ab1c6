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

Differences from Real-ESRGAN, on purpose:

* sizes never change: a resize op scales down (or up) and straight back to the input size, so
  a batch stays one tensor and patches keep their position.  (Real-ESRGAN carries the reduced
  size through noise and JPEG and resizes back once at the end.)
* every operator clamps its output to [0, 1]; the result is rounded to 8-bit levels at the end.
* a resize "keep" draw emits no operator at all.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from biqabench.config import load_yaml, override
from biqabench.errors import BiqaError

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
    """Scale down/up then back to the input size; ``probs`` = P(up), P(down), P(keep)."""

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
    """Real-ESRGAN's last step: a sinc filter (p=0.8) and JPEG, in random order."""

    sinc_prob: float = 0.8
    sinc_kernel_sizes: list[int] = _r(7, 9, 11, 13, 15, 17, 19, 21)
    sinc_cutoff: list[float] = _r(0.35, 1.0, 0.05)  # units of pi
    jpeg_prob: float = 1.0
    jpeg_quality: list[float] = _r(30.0, 95.0, 1.0)
    sinc_first_prob: float = 0.5


@dataclass
class DegradationConfig:
    """The whole space. ``stage1`` is the first pass, ``stage2`` every later pass (orders 2, 3...)."""

    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2)
    final: FinalConfig = field(default_factory=FinalConfig)
    order_probs: list[float] = _r(0.25, 0.5, 0.25)  # P(order = 1), P(order = 2), ...
    shuffle_prob: float = 0.5  # chance that a stage's operators run in a random order
    skip_prob: float = 0.1     # chance that any one operator (final ones too) is dropped

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
    if not cfg.order_probs or any(p < 0 for p in cfg.order_probs) or sum(cfg.order_probs) <= 0:
        raise BiqaError(f"{where}: order_probs: expected non-negative weights for orders 1..N, got {cfg.order_probs}")


# ------------------------------------------------------------------------------------------------
# recipes
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    """One operator with its parameters; ``stage`` is the pass it belongs to (0: the final step)."""

    name: str  # blur | resize | noise | jpeg
    params: tuple[tuple[str, Any], ...]
    stage: int

    @property
    def p(self) -> dict[str, Any]:
        return dict(self.params)

    def describe(self) -> str:
        p = self.p
        if self.name == "blur":
            k = p["kernel"]
            if k == "sinc":
                return f"sinc k{p['size']} wc={p['cutoff']:g}pi"
            s = f"{k} k{p['size']} s={p['sigma_x']:g}"
            if "aniso" in k:
                s += f"/{p['sigma_y']:g} th={p['theta']:g}"
            if "beta" in p:
                s += f" b={p['beta']:g}"
            return s
        if self.name == "resize":
            return f"resize x{p['scale']:g} {p['mode']}/{p['back_mode']}"
        if self.name == "noise":
            grey = " grey" if p["gray"] else ""
            if p["kind"] == "gaussian":
                return f"gauss s={p['sigma']:g}{grey}"
            return f"poisson x{p['scale']:g}{grey}"
        if self.name == "jpeg":
            return f"jpeg q={p['quality']}"
        return f"{self.name} {p}"


@dataclass(frozen=True)
class Recipe:
    """A sampled degradation: its operators in the order they run, plus how it was drawn."""

    ops: tuple[Op, ...]
    order: int = 1
    shuffled: tuple[bool, ...] = ()

    def key(self) -> tuple:
        """What makes two recipes the same degradation (used to insist on d1 != d2)."""
        return tuple((o.name, o.params) for o in self.ops)

    def describe(self, sep: str = " > ") -> str:
        return sep.join(o.describe() for o in self.ops) if self.ops else "(identity)"

    def to_dict(self) -> dict:
        return {"order": self.order, "shuffled": list(self.shuffled),
                "ops": [{"op": o.name, "stage": o.stage, **o.p} for o in self.ops]}

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        ops = []
        for item in d["ops"]:
            item = dict(item)
            name, stage = item.pop("op"), int(item.pop("stage", 1))
            ops.append(Op(name, tuple(sorted(item.items())), stage))
        return cls(tuple(ops), int(d.get("order", 1)), tuple(d.get("shuffled", ())))


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


def _sample_resize(rng: np.random.Generator, c: ResizeConfig, stage: int) -> Op | None:
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
                op = _sample_resize(rng, st.resize, i)
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
    fin = cfg.final
    final_ops: list[Op] = []
    if rng.random() < fin.sinc_prob:
        size = int(fin.sinc_kernel_sizes[rng.integers(len(fin.sinc_kernel_sizes))])
        sinc = _sample_sinc(rng, size, fin.sinc_cutoff, 0)
        if not rng.random() < cfg.skip_prob:
            final_ops.append(sinc)
    if rng.random() < fin.jpeg_prob:
        jpeg = _sample_jpeg(rng, fin.jpeg_quality, 0)
        if not rng.random() < cfg.skip_prob:
            final_ops.append(jpeg)
    if len(final_ops) == 2 and not rng.random() < fin.sinc_first_prob:
        final_ops.reverse()
    ops.extend(final_ops)
    return Recipe(tuple(ops), order, tuple(shuffled))


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


def _resize_variants(c: ResizeConfig, level: str) -> int:
    g = _grid(c.scale)
    dirs = [(c.probs[0], g[g > 1]), (c.probs[1], g[g < 1])]
    nm = len(c.modes)
    if level == "types":
        return sum(nm for p, v in dirs if p > 0 and len(v))
    return sum(len(v) * nm * nm for p, v in dirs if p > 0)


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
        items.append((_resize_variants(st.resize, level), st.resize.probs[2] > 0 or skip))
    if st.noise.prob > 0:
        items.append((_noise_variants(st.noise, level), st.noise.prob < 1 or skip))
    if st.jpeg.prob > 0:
        items.append((_jpeg_variants(st.jpeg.quality, level), st.jpeg.prob < 1 or skip))
    return _subset_count(items, cfg.shuffle_prob > 0)


def _final_count(cfg: DegradationConfig, level: str) -> int:
    f = cfg.final
    skip = cfg.skip_prob > 0
    items: list[tuple[int, bool]] = []
    if f.sinc_prob > 0:
        n = 1 if level == "types" else sum(len(_grid(f.sinc_cutoff)) for _ in f.sinc_kernel_sizes)
        items.append((n, f.sinc_prob < 1 or skip))
    if f.jpeg_prob > 0:
        items.append((_jpeg_variants(f.jpeg_quality, level), f.jpeg_prob < 1 or skip))
    both_orders = 0 < f.sinc_first_prob < 1
    return _subset_count(items, both_orders)


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


# ------------------------------------------------------------------------------------------------
# operators (batched)
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


def _kernel_of(op: Op) -> torch.Tensor:
    p = op.p
    if p["kernel"] == "sinc":
        return blur_kernel("sinc", p["size"], cutoff=p["cutoff"])
    return blur_kernel(p["kernel"], p["size"], p["sigma_x"], p["sigma_y"], p["theta"], p.get("beta", 1.0))


def _pad_mode(x: torch.Tensor, pad: int) -> str:
    return "reflect" if pad < min(x.shape[-2:]) else "replicate"


def _grouped_conv(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Image i correlated with kernels[i] (all k x k), reflect-padded: one conv2d with groups = B * C."""
    b, c, h, w = x.shape
    size = kernels.shape[-1]
    weight = kernels.to(x.device, x.dtype).repeat_interleave(c, dim=0).unsqueeze(1)  # (b*c, 1, k, k)
    pad = size // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode=_pad_mode(x, pad))
    return F.conv2d(xp.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c).reshape(b, c, h, w)


def apply_blur(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """Each image convolved with its own kernel: one grouped conv2d per kernel size in the batch.

    Grouping by size (rather than zero-padding every kernel to the largest) halves the work
    for Real-ESRGAN's 7..21 px kernels.
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, o in enumerate(ops):
        by_size[int(o.p["size"])].append(i)
    if len(by_size) == 1:
        return _grouped_conv(x, torch.stack([_kernel_of(o) for o in ops])).clamp_(0, 1)
    out = torch.empty_like(x)
    for size, idx in sorted(by_size.items()):
        it = torch.tensor(idx, device=x.device)
        out[it] = _grouped_conv(x[it], torch.stack([_kernel_of(ops[i]) for i in idx]))
    return out.clamp_(0, 1)


@functools.lru_cache(maxsize=2048)
def resize_matrix(n: int, m: int, mode: str, back_mode: str) -> torch.Tensor:
    """The (n x n) linear map 'resize an axis of length n to m with ``mode``, then back with ``back_mode``'.

    torch's area/bilinear/bicubic interpolation is separable, so resizing a whole image is
    ``A_h @ X @ A_w^T``: this turns per-image scale factors into one batched matmul.  The matrix
    is read off by interpolating the identity, so it equals ``F.interpolate`` exactly.
    """
    eye = torch.eye(n, dtype=torch.float64).view(1, 1, n, n)
    kw = {} if mode == "area" else {"align_corners": False}
    down = F.interpolate(eye, size=(m, n), mode=mode, **kw)[0, 0]  # (m, n)
    eye_m = torch.eye(m, dtype=torch.float64).view(1, 1, m, m)
    kwb = {} if back_mode == "area" else {"align_corners": False}
    up = F.interpolate(eye_m, size=(n, m), mode=back_mode, **kwb)[0, 0]  # (n, m)
    return (up @ down).to(torch.float32)


def resized_size(n: int, scale: float) -> int:
    return max(1, int(round(n * scale)))


def apply_resize(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """Scale each image by its own factor and back: ``A_h @ x @ A_w^T`` as two batched matmuls.

    The channels are folded into the matmul's columns/rows, which ran 1.5x faster here than
    broadcasting the per-image matrices over channels.
    """
    b, c, h, w = x.shape
    ah, aw = [], []
    for o in ops:
        p = o.p
        ah.append(resize_matrix(h, resized_size(h, p["scale"]), p["mode"], p["back_mode"]))
        aw.append(resize_matrix(w, resized_size(w, p["scale"]), p["mode"], p["back_mode"]))
    a_h = torch.stack(ah).to(x.device, x.dtype)  # (b, h, h)
    a_w = torch.stack(aw).to(x.device, x.dtype)  # (b, w, w)
    y = torch.bmm(x.reshape(b, c * h, w), a_w.transpose(1, 2))  # width: rows of every channel
    y = y.view(b, c, h, w).transpose(1, 2).reshape(b, h, c * w)
    y = torch.bmm(a_h, y)  # height
    return y.view(b, h, c, w).transpose(1, 2).contiguous().clamp_(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as torchvision's rgb_to_grayscale."""
    if x.shape[1] != 3:
        return x[:, :1]
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def poisson_levels(x: torch.Tensor) -> torch.Tensor:
    """Per image 2^ceil(log2(#distinct 8-bit values)), as BasicSR/skimage scale Poisson noise.

    One bincount over the whole batch (numpy's, ~10x faster than torch's here) instead of a
    ``torch.unique`` per image.
    """
    b = x.shape[0]
    q = (x.detach().clamp(0, 1) * 255).round().to(torch.int64).reshape(b, -1).cpu().numpy()
    q = q + 256 * np.arange(b, dtype=np.int64)[:, None]
    counts = np.bincount(q.reshape(-1), minlength=256 * b).reshape(b, 256)
    distinct = np.maximum((counts > 0).sum(1), 1)
    levels = np.power(2.0, np.ceil(np.log2(distinct)))
    return torch.as_tensor(levels, dtype=x.dtype, device=x.device)


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


def _noise_field(x: torch.Tensor, ops: Sequence[Op], kind: str, gray: bool,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Noise to add to ``x`` (all images share ``kind`` and colour/grey; levels differ per image)."""
    n, c, h, w = x.shape
    if kind == "gaussian":
        sigma = torch.tensor([o.p["sigma"] for o in ops], dtype=x.dtype).view(-1, 1, 1, 1).to(x.device) / 255.0
        field = torch.randn((n, 1 if gray else c, h, w), generator=generator, dtype=x.dtype,
                            device=x.device) * sigma
    else:
        scale = torch.tensor([o.p["scale"] for o in ops], dtype=x.dtype).view(-1, 1, 1, 1).to(x.device)
        src = _gray(x) if gray else x
        src = (src.clamp(0, 1) * 255).round() / 255
        vals = poisson_levels(src).view(-1, 1, 1, 1)
        field = (_poisson(src * vals, generator) / vals - src) * scale
    return field.expand(n, c, h, w) if gray else field


def apply_noise(x: torch.Tensor, ops: Sequence[Op], generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian or Poisson noise, colour or grey, each image with its own level (vectorised).

    Grey noise is one field added to all channels (luminance noise); colour noise is drawn per
    channel.  Poisson noise follows BasicSR: the 8-bit image is scaled by the number of levels
    it uses (rounded up to a power of two), drawn, and scaled back; ``scale`` multiplies it.
    """
    out = x.clone()
    groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for i, o in enumerate(ops):
        groups[(o.p["kind"], bool(o.p["gray"]))].append(i)
    for (kind, gray) in sorted(groups):
        idx = groups[(kind, gray)]
        it = torch.tensor(idx, device=x.device)
        sub = x[it]
        out[it] = sub + _noise_field(sub, [ops[i] for i in idx], kind, gray, generator)
    return out.clamp_(0, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _jpeg_codec():
    """torchvision's libjpeg bindings, or None where this torchvision no longer has them."""
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError:
        return None
    return encode_jpeg, decode_jpeg


def _jpeg_pil(img: torch.Tensor, quality: int) -> torch.Tensor:
    import io as _io

    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)


def apply_jpeg(x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
    """JPEG round trip through libjpeg, images grouped by quality (one batched call per quality).

    Measured here (128 px, 64 images): torchvision's ``encode_jpeg``/``decode_jpeg`` on lists of
    uint8 tensors ran ~2.4x faster than PIL, with identical pixels (both are libjpeg), so
    torchvision it is; PIL is the fallback (torchvision 0.29 deprecates its image codecs).
    Runs on CPU; CUDA tensors are moved over and back.
    """
    dev, dtype = x.device, x.dtype
    u8 = to_uint8(x).cpu()
    out = torch.empty_like(u8)
    by_q: dict[int, list[int]] = defaultdict(list)
    for i, o in enumerate(ops):
        by_q[int(o.p["quality"])].append(i)
    codec = _jpeg_codec() if u8.shape[1] in (1, 3) else None
    for q, idx in by_q.items():
        if codec is None:
            for i in idx:
                out[i] = _jpeg_pil(u8[i], q)
            continue
        encode, decode = codec
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = decode(encode([u8[i] for i in idx], quality=q))
        for i, d in zip(idx, decoded):
            out[i] = d
    return out.to(dev).to(dtype) / 255.0


def _apply_group(name: str, x: torch.Tensor, ops: Sequence[Op], generator: torch.Generator | None) -> torch.Tensor:
    if name == "blur":
        return apply_blur(x, ops)
    if name == "resize":
        return apply_resize(x, ops)
    if name == "noise":
        return apply_noise(x, ops, generator)
    if name == "jpeg":
        return apply_jpeg(x, ops)
    raise BiqaError(f"unknown degradation op {name!r} in a recipe (known: {', '.join(STAGE_OPS)})")


def degrade_batch(images: torch.Tensor, recipes: Sequence[Recipe],
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply ``recipes[i]`` to ``images[i]``; (B, C, H, W) float in [0, 1] -> same shape, 8-bit levels.

    Runs step by step: at step t every image whose recipe has a t-th op is grouped with the
    other images doing the same kind of op, and each group is one batched call.  With four op
    kinds that is at most 4 calls per step, whatever the batch size.
    """
    if images.dim() != 4:
        raise BiqaError(f"degrade_batch expects a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    if len(recipes) != images.shape[0]:
        raise BiqaError(f"degrade_batch: {images.shape[0]} images but {len(recipes)} recipes")
    x = images.to(torch.float32).clone()
    steps = max((len(r.ops) for r in recipes), default=0)
    for t in range(steps):
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(recipes):
            if t < len(r.ops):
                groups[r.ops[t].name].append(i)
        for name in sorted(groups):  # fixed order: the noise generator is consumed reproducibly
            idx = groups[name]
            ops = [recipes[i].ops[t] for i in idx]
            if len(idx) == x.shape[0]:
                x = _apply_group(name, x, ops, generator)
            else:
                it = torch.tensor(idx, device=x.device)
                x[it] = _apply_group(name, x[it], ops, generator)
    return (x.clamp(0, 1) * 255).round() / 255


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None: unchanged).

    Degradation kernels are small; on a busy or oversubscribed CPU, OpenMP threads that spin
    waiting for each other made them 20x slower (measured here: 0.6 s vs 12.6 s for the same
    ten batches).  The training loop runs them single-threaded on CPU.
    """
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def apply_recipe(image: torch.Tensor, recipe: Recipe, generator: torch.Generator | None = None) -> torch.Tensor:
    """One image (C, H, W) or a batch sharing one recipe (B, C, H, W)."""
    if image.dim() == 3:
        return degrade_batch(image.unsqueeze(0), [recipe], generator)[0]
    return degrade_batch(image, [recipe] * image.shape[0], generator)


def sample_recipes(cfg: DegradationConfig, rng: np.random.Generator, n: int) -> list[Recipe]:
    return [sample_recipe(cfg, rng) for _ in range(n)]


def op(name: str, stage: int = 1, **params: Any) -> Op:
    """Build an op by hand, e.g. ``op("jpeg", quality=30)`` (tests, previews, replaying a log)."""
    return Op(name, tuple(sorted(params.items())), stage)


def recipe_of(ops: Iterable[Op]) -> Recipe:
    return Recipe(tuple(ops))
