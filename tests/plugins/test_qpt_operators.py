"""QPT's batched operators: Real-ESRGAN's variable-size chain, the exact fast blur routes, ragged
batches, JPEG codecs, and equality with the per-image reference on every route."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biqabench.base.errors import BiqaError
from biqabench_plugins.qpt import operators
from biqabench_plugins.qpt.degradations import (
    DegradationConfig, Recipe, degrade_batch, op, realesrgan_config, sample_recipe, space_size,
)
from qpt_reference import apply_recipe_reference, degrade_loop


def textured(n: int = 1, size: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return (x + 0.15 * torch.rand(n, 3, size, size, generator=g)).clamp(0.05, 0.95)


def blur(kind: str, size: int = 15, sx: float = 2.0, sy: float = 1.0, theta: float = 0.0, **kw):
    return op("blur", kernel=kind, size=size, sigma_x=sx, sigma_y=sy, theta=theta, **kw)


def levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs() * 255


# -- Real-ESRGAN's variable-size chain -----------------------------------------------------------------
def test_default_chain_keeps_the_reduced_size_until_the_final_resize_back():
    rng = np.random.default_rng(0)
    recipes = [sample_recipe(DegradationConfig(), rng) for _ in range(300)]
    for r in recipes:
        resizes = [o for o in r.ops if o.name == "resize"]
        assert resizes and all("back_mode" not in o.p for o in resizes)
        back = [o for o in resizes if o.stage == 0]
        assert len(back) == 1 and back[0].p["scale"] == 1.0  # exactly one resize back, in the final step
        i = r.ops.index(back[0])
        assert all(o.stage == 0 for o in r.ops[i:])  # nothing but the final sinc / JPEG around it
    assert {r.order for r in recipes} == {1, 2}  # default: orders 1-2
    preserve = dataclasses.replace(DegradationConfig(), preserve_size=True)
    for r in (sample_recipe(preserve, rng) for _ in range(100)):
        assert all("back_mode" in o.p for o in r.ops if o.name == "resize")


def test_noise_after_a_downscale_is_low_resolution_noise():
    flat = torch.full((1, 3, 64, 64), 0.5)
    noise = op("noise", kind="gaussian", sigma=25.0, gray=False)
    full = degrade_batch(flat, [Recipe((noise,))], torch.Generator().manual_seed(0))
    low = degrade_batch(flat, [Recipe((op("resize", scale=0.25, mode="area"), noise,
                                       op("resize", 0, scale=1.0, mode="bilinear")))], torch.Generator().manual_seed(0))

    def neighbour_corr(y):
        d = (y - 0.5)[0, 0]
        return float(torch.corrcoef(torch.stack([d[:, :-1].flatten(), d[:, 1:].flatten()]))[0, 1])

    assert abs(neighbour_corr(full)) < 0.1 and neighbour_corr(low) > 0.6  # grains 4 px wide


def test_jpeg_at_reduced_size_gives_enlarged_blocks():
    x = textured(1, 64)[:, :1].expand(1, 3, 64, 64)  # grey: only 8 px luma blocks (chroma ones are 16)
    at_size = degrade_batch(x, [Recipe((op("resize", scale=0.5, mode="area"), op("jpeg", quality=10),
                                        op("resize", 0, scale=1.0, mode="bilinear")))])
    preserved = degrade_batch(x, [Recipe((op("resize", scale=0.5, mode="area", back_mode="bilinear"),
                                          op("jpeg", quality=10)))])

    def border_ratio(y):  # column steps on 16-px block borders / on 8-px borders between them
        d = (y[..., 1:] - y[..., :-1]).abs().mean(dim=(0, 1, 2))
        return float(d[15::16].mean() / d[7::16].mean())

    assert border_ratio(at_size) > 1.3  # 8 px blocks of the half-size image, enlarged to 16 px
    assert border_ratio(preserved) < 1.15 < border_ratio(at_size)  # 8 px blocks everywhere


def test_a_recipe_must_end_at_the_input_size():
    with pytest.raises(BiqaError, match="resize.*scale 1"):
        degrade_batch(textured(1, 32), [Recipe((op("resize", scale=0.5, mode="area"),))])


def test_kinds_level_count_is_the_papers_order_of_magnitude():
    default = space_size(DegradationConfig(), "types")
    assert 10 ** 7 <= default < 10 ** 8  # orders 1-2 + shuffle + skip: the paper's ~2 x 10^7 order
    order3 = space_size(dataclasses.replace(DegradationConfig(), order_probs=[0.25, 0.5, 0.25]), "types")
    assert order3 > 100 * default
    assert space_size(realesrgan_config(), "types") < default / 100


# -- ragged batches equal the per-image reference -----------------------------------------------------
@pytest.mark.parametrize("preserve", [False, True])
def test_sampled_recipes_equal_the_reference(preserve):
    cfg = dataclasses.replace(DegradationConfig(), preserve_size=preserve)
    rng = np.random.default_rng(11)
    x = textured(16, 40, seed=4)
    recipes = [Recipe(tuple(o for o in sample_recipe(cfg, rng).ops if o.name not in ("noise", "jpeg")))
               for _ in range(16)]
    assert len({tuple(o.p.get("scale", 1) for o in r.ops if o.name == "resize") for r in recipes}) > 4
    assert float(levels(degrade_batch(x, recipes), degrade_loop(x, recipes)).max()) <= 1.0 + 1e-4
    with_jpeg = [Recipe(tuple(o for o in sample_recipe(cfg, rng).ops if o.name != "noise")) for _ in range(16)]
    diff = levels(degrade_batch(x, with_jpeg), degrade_loop(x, with_jpeg))
    # a level flipped by float rounding before a JPEG is spread a little by it
    assert float(diff.mean()) < 0.05 and float((diff > 1.5).float().mean()) < 0.01


def test_ragged_blur_pads_at_each_images_own_border():
    x = textured(3, 36, seed=2)
    ops = [[op("resize", scale=s, mode="bicubic"), blur(k, 21, 2.5, 0.7, 30.0, beta=1.5),
            op("resize", 0, scale=1.0, mode="area")]
           for s, k in ((0.25, "plateau_aniso"), (0.6, "iso"), (1.3, "aniso"))]  # 9 px: replicate pad
    recipes = [Recipe(tuple(o)) for o in ops]
    assert float(levels(degrade_batch(x, recipes), degrade_loop(x, recipes)).max()) <= 1.0 + 1e-4


# -- blur routes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("o, separable", [
    (blur("iso", sx=1.7), True), (blur("aniso", theta=0.0), True), (blur("aniso", theta=90.0), True),
    (blur("generalized_iso", beta=1.0), True), (blur("aniso", theta=30.0), False),
    (blur("generalized_iso", beta=2.0), False), (blur("plateau_iso", beta=1.5), False),
    (op("blur", kernel="sinc", size=15, cutoff=0.5), False),
])
def test_separable_exactly_where_the_kernel_is_a_product(o, separable):
    k = operators._kernel_of(o).double()
    assert operators.is_separable(o.p) == separable
    u, v = k.sum(1), k.sum(0)
    residual = float((torch.outer(u, v) - k).abs().max() / k.abs().max())
    if separable:
        assert residual < 1e-6
        fu, fv = operators.kernel_factors(o.params)
        assert torch.allclose(torch.outer(fu, fv), k.float(), atol=1e-7)
    else:
        assert residual > 1e-3  # not a product: it must not take the separable route


@pytest.mark.parametrize("size, fft_from", [(7, 23), (13, 23), (21, 23), (13, 7), (21, 7)])
def test_every_blur_route_equals_a_plain_conv(size, fft_from, monkeypatch):
    monkeypatch.setattr(operators, "FFT_FROM", fft_from)  # 7: every non-separable kernel by FFT
    x = textured(4, 30, seed=size)
    ops = [blur("iso", size, 1.5), blur("aniso", size, 2.0, 0.5, 45.0), blur("plateau_aniso", size, 1.0, 2.0, 60.0, beta=1.3),
           op("blur", kernel="sinc", size=size, cutoff=0.4)]
    got = operators.apply_blur(x, ops)
    for i, o in enumerate(ops):
        k = operators._kernel_of(o)
        xp = F.pad(x[i:i + 1], (size // 2,) * 4, mode="reflect")
        want = F.conv2d(xp, k.view(1, 1, size, size).repeat(3, 1, 1, 1), groups=3).clamp(0, 1)
        assert torch.allclose(got[i:i + 1], want, atol=2e-6), (o.describe(), float((got[i] - want[0]).abs().max()))


def test_banded_resize_equals_interpolate_on_a_ragged_batch():
    x = torch.zeros(3, 3, 50, 50)
    sizes = [(50, 50), (21, 33), (9, 40)]
    for i, (h, w) in enumerate(sizes):
        x[i, :, :h, :w] = textured(1, 50, seed=i)[0, :, :h, :w]
    ops = [op("resize", scale=0.3, mode="area"), op("resize", scale=1.2, mode="bicubic"),
           op("resize", 0, scale=1.0, mode="bilinear")]
    y, new = operators.resize_canvas(x, sizes, ops, (50, 50))
    assert new == [(15, 15), (60, 60), (50, 50)]
    for i, ((h, w), (m, n), o) in enumerate(zip(sizes, new, ops)):
        mode = o.p["mode"]
        want = F.interpolate(x[i:i + 1, :, :h, :w], size=(m, n), mode=mode,
                             **({} if mode == "area" else {"align_corners": False})).clamp(0, 1)
        assert torch.allclose(y[i:i + 1, :, :m, :n], want, atol=1e-5)


def test_poisson_levels_count_only_each_images_pixels():
    x = torch.zeros(2, 1, 8, 8)
    x[0, :, :4, :4] = torch.arange(16.0).view(4, 4) / 255  # 16 values inside its 4x4 corner
    x[0, :, 4:, :] = 200 / 255  # outside image 0: must not count
    x[1] = torch.arange(64.0).view(8, 8) / 255
    assert operators.poisson_levels(x, [(4, 4), (8, 8)]).tolist() == [16.0, 64.0]
    assert operators.poisson_levels(x).tolist() == [32.0, 64.0]  # whole canvas: 17 values -> 32


# -- JPEG codecs and devices ----------------------------------------------------------------------------
def _codecs() -> list[str]:
    names = ["pil"]
    if operators._torchvision_codec() is not None:
        names.append("torchvision")
    if operators._torchcodec() is not None:
        names.append("torchcodec")
    return names


@pytest.mark.parametrize("codec", _codecs())
def test_every_cpu_jpeg_codec_gives_libjpegs_pixels(codec):
    imgs = [(textured(1, s, seed=s)[0] * 255).round().to(torch.uint8) for s in (24, 37)]  # odd sizes too
    want = operators.jpeg_roundtrip(imgs, 35, codec="pil")
    got = operators.jpeg_roundtrip(imgs, 35, codec=codec)
    assert all(g.shape == w.shape and int((g.int() - w.int()).abs().max()) <= 1 for g, w in zip(got, want))


def test_uint8_output_equals_the_float_levels():
    rng = np.random.default_rng(3)
    x = textured(6, 32)
    recipes = [sample_recipe(DegradationConfig(), rng) for _ in range(6)]
    a = degrade_batch(x, recipes, torch.Generator().manual_seed(1))
    b = degrade_batch(x, recipes, torch.Generator().manual_seed(1), as_uint8=True)
    assert b.dtype == torch.uint8 and torch.equal((a * 255).round().to(torch.uint8), b)


def test_one_image_alone_or_in_a_ragged_batch_gets_the_same_pixels():
    rng = np.random.default_rng(9)
    cfg = DegradationConfig()
    x = textured(5, 32, seed=1)
    recipes = [Recipe(tuple(o for o in sample_recipe(cfg, rng).ops if o.name != "noise")) for _ in range(5)]
    together = degrade_batch(x, recipes)
    for i in range(5):
        alone = apply_recipe_reference(x[i], recipes[i])
        assert float(levels(together[i], alone).max()) <= 2.0 + 1e-4
    assert math.isfinite(float(together.sum()))
