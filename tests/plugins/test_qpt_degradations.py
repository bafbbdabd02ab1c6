"""QPT's degradation space: each operator moves the image the right way, compositions behave as
configured, batched code equals the per-image reference, counts match what the sampler draws."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biqabench.base.errors import BiqaError
from biqabench_plugins.qpt.degradations import (
    STAGE_OPS, BlurConfig, DegradationConfig, FinalConfig, JpegConfig, NoiseConfig, Recipe, ResizeConfig,
    StageConfig, apply_blur, apply_jpeg, apply_noise, apply_recipe, apply_resize, blur_kernel, degrade_batch,
    load_degradation_config, op, realesrgan_config, sample_pair, sample_recipe, space_size,
)
from qpt_reference import degrade_loop


def textured(n: int = 1, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth random texture with edges: has both low and high frequencies, values inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = x + 0.15 * torch.rand(n, 3, size, size, generator=g)
    return x.clamp(0.05, 0.95)


def hf_energy(x: torch.Tensor) -> float:
    """Mean squared response to a Laplacian: high-frequency content."""
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3).repeat(x.shape[1], 1, 1, 1)
    return float(F.conv2d(x, lap, groups=x.shape[1]).pow(2).mean())


def blur(sigma: float, kind: str = "iso", size: int = 21, **kw):
    return op("blur", kernel=kind, size=size, sigma_x=sigma, sigma_y=kw.pop("sigma_y", sigma), theta=kw.pop("theta", 0.0), **kw)


# -- operators ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("o", [
    blur(1.5), blur(2.0, "aniso", sigma_y=0.5, theta=30.0), blur(1.0, "generalized_iso", beta=2.0),
    blur(1.0, "plateau_aniso", sigma_y=2.0, theta=45.0, beta=1.5), op("blur", kernel="sinc", size=13, cutoff=0.4),
    op("resize", scale=0.3, mode="bicubic", back_mode="bilinear"), op("resize", scale=1.4, mode="area", back_mode="area"),
    op("noise", kind="gaussian", sigma=20.0, gray=False), op("noise", kind="poisson", scale=2.0, gray=True),
    op("jpeg", quality=20),
])
def test_every_operator_keeps_shape_and_range(o):
    x = textured(3, 40)
    y = degrade_batch(x, [Recipe((o,))] * 3, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.equal(y, x)  # it did something
    assert torch.allclose(y * 255, (y * 255).round(), atol=1e-4)  # 8-bit levels


def test_kernels_are_normalised_and_point_symmetric():
    for args in [("iso", 21, 2.0), ("aniso", 15, 3.0, 0.5, 60.0), ("generalized_aniso", 11, 1.0, 2.0, 10.0, 0.7),
                 ("plateau_iso", 9, 1.5, 1.5, 0.0, 1.8)]:
        k = blur_kernel(*args)
        assert k.shape == (args[1], args[1])
        assert abs(float(k.sum()) - 1.0) < 1e-5
        assert torch.allclose(k, k.flip(0, 1), atol=1e-7)  # so conv2d's correlation is a convolution
    sinc = blur_kernel("sinc", 15, cutoff=0.5)
    assert abs(float(sinc.sum()) - 1) < 1e-5 and float(sinc.min()) < 0  # ringing lobes


def test_kernel_formulas():
    ax = torch.arange(7, dtype=torch.float64) - 3
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    g = torch.exp(-(xx ** 2 + yy ** 2) / (2 * 1.3 ** 2))
    assert torch.allclose(blur_kernel("iso", 7, 1.3), (g / g.sum()).float(), atol=1e-7)
    # generalized Gaussian with beta = 1 is the Gaussian
    assert torch.allclose(blur_kernel("generalized_iso", 7, 1.3, beta=1.0), blur_kernel("iso", 7, 1.3), atol=1e-7)
    # anisotropic, theta = 0: sigma_x acts along columns (x), sigma_y along rows (y)
    a = blur_kernel("aniso", 9, 3.0, 0.5, 0.0)
    assert float(a[4, :].std()) < float(a[:, 4].std()) or float(a[4, 0]) > float(a[0, 4])


def test_blur_sigma_removes_high_frequencies():
    x = textured(1, 64)
    energies = [hf_energy(apply_blur(x, [blur(s)])) for s in (0.3, 1.0, 2.0, 3.0)]
    assert energies == sorted(energies, reverse=True) and energies[-1] < 0.2 * energies[0]
    cut = [hf_energy(apply_blur(x, [op("blur", kernel="sinc", size=21, cutoff=c)])) for c in (0.9, 0.5, 0.25)]
    assert cut == sorted(cut, reverse=True)


def test_anisotropic_blur_follows_its_axis():
    x = textured(1, 64)
    y = apply_blur(x, [blur(3.0, "aniso", sigma_y=0.3, theta=0.0)])  # blur along x only
    dx = (y[..., :, 1:] - y[..., :, :-1]).pow(2).mean()
    dy = (y[..., 1:, :] - y[..., :-1, :]).pow(2).mean()
    assert dx < 0.5 * dy
    y90 = apply_blur(x, [blur(3.0, "aniso", sigma_y=0.3, theta=90.0)])  # rotated: along y
    assert (y90[..., 1:, :] - y90[..., :-1, :]).pow(2).mean() < 0.5 * (y90[..., :, 1:] - y90[..., :, :-1]).pow(2).mean()


def test_resize_scale_controls_detail_and_keeps_size():
    x = textured(1, 64)
    e = [hf_energy(apply_resize(x, [op("resize", scale=s, mode="bilinear", back_mode="bilinear")]))
         for s in (0.9, 0.5, 0.25)]
    assert e == sorted(e, reverse=True) and e[-1] < 0.5 * e[0]
    y = apply_resize(textured(2, 50), [op("resize", scale=0.33, mode="area", back_mode="bicubic")] * 2)
    assert y.shape == (2, 3, 50, 50)


def test_resize_matches_interpolate_down_and_back():
    x = textured(2, 37)
    ops = [op("resize", scale=0.45, mode="bicubic", back_mode="area"), op("resize", scale=1.3, mode="area", back_mode="bilinear")]
    got = apply_resize(x, ops)
    for i, o in enumerate(ops):
        p = o.p
        m = round(37 * p["scale"])
        small = F.interpolate(x[i:i + 1], size=(m, m), mode=p["mode"], **({} if p["mode"] == "area" else {"align_corners": False}))
        back = F.interpolate(small, size=(37, 37), mode=p["back_mode"], **({} if p["back_mode"] == "area" else {"align_corners": False}))
        assert torch.allclose(got[i], back[0].clamp(0, 1), atol=1e-5)


def test_gaussian_noise_sigma_sets_the_variance():
    flat = torch.full((2, 3, 64, 64), 0.5)
    g = torch.Generator().manual_seed(1)
    stds = []
    for sigma in (5.0, 15.0, 30.0):
        y = apply_noise(flat, [op("noise", kind="gaussian", sigma=sigma, gray=False)] * 2, g)
        stds.append(float((y - 0.5).std()) * 255)
    assert all(abs(s - t) / t < 0.1 for s, t in zip(stds, (5.0, 15.0, 30.0)))
    grey = apply_noise(flat, [op("noise", kind="gaussian", sigma=20.0, gray=True)] * 2, g)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    colour = apply_noise(flat, [op("noise", kind="gaussian", sigma=20.0, gray=False)] * 2, g)
    assert not torch.equal(colour[:, 0], colour[:, 1])


def test_poisson_noise_scale_and_signal_dependence():
    g = torch.Generator().manual_seed(2)
    x = textured(2, 64)
    v = [float((apply_noise(x, [op("noise", kind="poisson", scale=s, gray=False)] * 2, g) - x).var()) for s in (0.5, 1.5, 3.0)]
    assert v == sorted(v)
    # shot noise grows with brightness
    dark, bright = torch.full((1, 3, 64, 64), 0.1), torch.full((1, 3, 64, 64), 0.8)
    n = op("noise", kind="poisson", scale=1.0, gray=False)
    assert (apply_noise(bright, [n], g) - bright).var() > 2 * (apply_noise(dark, [n], g) - dark).var()


def test_jpeg_quality_sets_the_error():
    x = textured(1, 64)
    err = [float((apply_jpeg(x, [op("jpeg", quality=q)]) - x).abs().mean()) for q in (95, 60, 30, 10)]
    assert err == sorted(err)


def test_batched_ops_equal_the_per_image_reference():
    rng = np.random.default_rng(0)
    cfg = DegradationConfig()
    x = textured(12, 48, seed=3)
    recipes = []
    while len(recipes) < 12:
        r = sample_recipe(cfg, rng)
        recipes.append(Recipe(tuple(o for o in r.ops if o.name != "noise")))  # noise draws differ by design
    a, b = degrade_batch(x, recipes), degrade_loop(x, recipes)
    diff = (a - b).abs() * 255
    # float rounding can flip an 8-bit level before a JPEG step, which JPEG then spreads a little
    assert float(diff.mean()) < 0.05 and float((diff > 1.5).float().mean()) < 0.01
    # without JPEG, the two agree to the level
    no_jpeg = [Recipe(tuple(o for o in r.ops if o.name != "jpeg")) for r in recipes]
    assert float((degrade_batch(x, no_jpeg) - degrade_loop(x, no_jpeg)).abs().max()) * 255 <= 1.0 + 1e-4


def test_batching_does_not_change_deterministic_results():
    rng = np.random.default_rng(5)
    cfg = dataclasses.replace(DegradationConfig(), stage1=StageConfig(noise=NoiseConfig(prob=0.0)),
                              stage2=StageConfig(noise=NoiseConfig(prob=0.0), jpeg=JpegConfig(prob=0.0)))
    x = textured(6, 32)
    recipes = [sample_recipe(cfg, rng) for _ in range(6)]
    together = degrade_batch(x, recipes)
    alone = torch.stack([apply_recipe(x[i], recipes[i]) for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-6)


# -- compositions -----------------------------------------------------------------------------------
def _all_ops_cfg(**kw) -> DegradationConfig:
    stage = StageConfig(resize=ResizeConfig(probs=[0.5, 0.5, 0.0]))
    return DegradationConfig(stage1=stage, stage2=stage, **kw)


def test_shuffle_changes_the_order_and_no_shuffle_keeps_it():
    rng = np.random.default_rng(0)
    canonical = {n: i for i, n in enumerate(STAGE_OPS)}
    fixed = [sample_recipe(_all_ops_cfg(shuffle_prob=0.0, skip_prob=0.0, order_probs=[1.0]), rng) for _ in range(200)]
    for r in fixed:
        names = [o.name for o in r.ops if o.stage == 1]
        assert names == sorted(names, key=canonical.get) == list(STAGE_OPS)
    mixed = [sample_recipe(_all_ops_cfg(shuffle_prob=1.0, skip_prob=0.0, order_probs=[1.0]), rng) for _ in range(400)]
    orders = {tuple(o.name for o in r.ops if o.stage == 1) for r in mixed}
    assert len(orders) > 15  # of the 24 permutations of 4 ops
    assert all(sorted(o) == sorted(STAGE_OPS) for o in orders)  # shuffled, not dropped


@pytest.mark.parametrize("skip", [0.0, 0.3])
def test_skip_drops_each_op_at_the_set_rate(skip):
    rng = np.random.default_rng(1)
    cfg = _all_ops_cfg(shuffle_prob=0.0, skip_prob=skip, order_probs=[1.0])
    n = 3000
    counts = {name: 0 for name in STAGE_OPS}
    for _ in range(n):
        for o in sample_recipe(cfg, rng).ops:
            if o.stage == 1:
                counts[o.name] += 1
    for name, c in counts.items():
        assert abs(c / n - (1 - skip)) < 0.03, (name, c / n)


def test_high_order_applies_the_chain_again():
    rng = np.random.default_rng(2)
    for order in (1, 2, 3):
        probs = [0.0] * order
        probs[-1] = 1.0
        cfg = _all_ops_cfg(order_probs=probs, skip_prob=0.0, shuffle_prob=0.5)
        for _ in range(20):
            r = sample_recipe(cfg, rng)
            assert r.order == order and len(r.shuffled) == order
            assert sorted({o.stage for o in r.ops if o.stage}) == list(range(1, order + 1))
    # order 2 with one JPEG per pass is JPEG applied twice
    x = textured(1, 48)
    twice = Recipe((op("jpeg", 1, quality=30), op("jpeg", 2, quality=30)), order=2)
    once = apply_jpeg(x, [op("jpeg", quality=30)])
    assert torch.allclose(apply_recipe(x[0], twice), apply_jpeg(once, [op("jpeg", quality=30)])[0], atol=1e-6)
    assert not torch.allclose(apply_recipe(x[0], twice), once[0], atol=1e-3)


def test_realesrgan_preset_is_the_fixed_two_stage_chain():
    rng = np.random.default_rng(3)
    for _ in range(50):
        r = sample_recipe(realesrgan_config(), rng)
        assert r.order == 2
        stage1 = [o.name for o in r.ops if o.stage == 1]
        assert stage1 in (["blur", "resize", "noise", "jpeg"], ["blur", "noise", "jpeg"])  # resize may "keep"
        assert r.ops[-1].stage == 0  # the final sinc / JPEG step


# -- seeds, recipes -----------------------------------------------------------------------------------
def test_same_seed_same_recipes_and_pixels():
    cfg = DegradationConfig()
    x = textured(4, 32)

    def draw(seed):
        rng = np.random.default_rng(seed)
        recipes = [sample_recipe(cfg, rng) for _ in range(4)]
        return recipes, degrade_batch(x, recipes, torch.Generator().manual_seed(seed))

    r1, y1 = draw(7)
    r2, y2 = draw(7)
    r3, y3 = draw(8)
    assert [r.key() for r in r1] == [r.key() for r in r2] and torch.equal(y1, y2)
    assert [r.key() for r in r1] != [r.key() for r in r3] and not torch.equal(y1, y3)


def test_recipes_carry_their_ops_and_round_trip():
    r = sample_recipe(DegradationConfig(), np.random.default_rng(4))
    assert r.ops and r.describe() and all(o.name in STAGE_OPS for o in r.ops)
    d = r.to_dict()
    assert Recipe.from_dict(d).key() == r.key()
    assert {"op", "stage"} <= set(d["ops"][0])


def test_pairs_are_two_different_degradations():
    rng = np.random.default_rng(5)
    for _ in range(50):
        d1, d2 = sample_pair(DegradationConfig(), rng)
        assert d1.key() != d2.key()


# -- counting ---------------------------------------------------------------------------------------
def _small_cfg(shuffle: float, skip: float, orders=(1.0,)) -> DegradationConfig:
    stage = StageConfig(
        blur=BlurConfig(kernel_sizes=[7], kernel_types=["iso"], kernel_probs=[1.0], sinc_prob=0.0, sigma=[1.0, 2.0, 1.0]),
        resize=ResizeConfig(probs=[0.0, 1.0, 0.0], scale=[0.5], modes=["bilinear"]),
        noise=NoiseConfig(prob=0.0),
        jpeg=JpegConfig(quality=[50.0, 60.0, 10.0]),
    )
    return DegradationConfig(stage1=stage, stage2=stage, order_probs=list(orders), shuffle_prob=shuffle,
                             skip_prob=skip, final=FinalConfig(sinc_prob=0.0, jpeg_prob=0.0, resize_modes=["bilinear"]))


@pytest.mark.parametrize("shuffle, skip, orders, expected", [
    (0.0, 0.0, (1.0,), 2 * 1 * 2),                       # sigma x scale x quality
    (0.5, 0.0, (1.0,), 6 * 4),                           # 3! orders
    (0.5, 0.1, (1.0,), 1 + 2 + 1 + 2 + 4 + 8 + 4 + 24),  # every subset, each in every order
    (0.0, 0.0, (0.5, 0.5), 4 + 4 * 4),                   # order 1 or 2
])
def test_space_size_by_hand(shuffle, skip, orders, expected):
    assert space_size(_small_cfg(shuffle, skip, orders)) == expected


@pytest.mark.parametrize("shuffle, skip, orders, sinc, expected", [
    (0.5, 0.3, (1.0,), 0.5, 46 * 2),          # every subset in every order, final sinc or not
    (0.0, 0.0, (0.5, 0.5), 0.0, 4 + 4 * 4),   # one pass or two
])
def test_space_size_equals_what_the_sampler_draws(shuffle, skip, orders, sinc, expected):
    cfg = dataclasses.replace(_small_cfg(shuffle, skip, orders),
                              final=FinalConfig(sinc_prob=sinc, sinc_kernel_sizes=[7], sinc_cutoff=[0.5], jpeg_prob=0.0,
                                                                resize_modes=["bilinear"]))
    rng = np.random.default_rng(0)
    seen = {tuple((o.name, o.params, o.stage) for o in sample_recipe(cfg, rng).ops) for _ in range(4000)}
    assert space_size(cfg) == expected == len(seen)


def test_default_space_sizes():
    params, types = space_size(DegradationConfig()), space_size(DegradationConfig(), "types")
    assert params > space_size(realesrgan_config()) and types > space_size(realesrgan_config(), "types")
    assert types < params
    assert math.log10(space_size(realesrgan_config(), "types")) < 7  # the extensions add orders of magnitude


# -- configuration ----------------------------------------------------------------------------------
def test_yaml_overrides_and_validation(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("degradation:\n  skip_prob: 0.25\n  stage1:\n    jpeg:\n      quality: [40, 80, 5]\n")
    cfg = load_degradation_config(str(f))
    assert cfg.skip_prob == 0.25 and cfg.stage1.jpeg.quality == [40.0, 80.0, 5.0]
    assert cfg.stage1.blur == BlurConfig()  # untouched keys keep their defaults
    f.write_text("skip_prop: 0.2\n")
    with pytest.raises(BiqaError, match="skip_prop.*skip_prob"):
        load_degradation_config(str(f))
    f.write_text("stage1:\n  blur:\n    sigma: [3.0, 1.0, 0.1]\n")
    with pytest.raises(BiqaError, match="sigma"):
        load_degradation_config(str(f))
    f.write_text("shuffle_prob: 1.5\n")
    with pytest.raises(BiqaError, match="shuffle_prob"):
        load_degradation_config(str(f))
    f.write_text("stage2:\n  blur:\n    kernel_types: [iso, gaussian]\n    kernel_probs: [0.5, 0.5]\n")
    with pytest.raises(BiqaError, match="gaussian"):
        load_degradation_config(str(f))
