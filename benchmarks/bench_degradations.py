"""Throughput of QPT's batched degradations against a per-image loop over the SAME recipes.

The reference (``tests/qpt_reference.py``, the test oracle) is the straightforward version: per
image, per op, ``F.conv2d`` with its own kernel, ``F.interpolate`` down and back, numpy noise
with ``np.unique``, PIL's JPEG.  The batched version (:func:`degrade_batch`) groups images by op
kind at each step and runs one call per group: a grouped conv for all kernels, one batched
matmul for all resize factors, vectorised noise, torchvision's libjpeg per quality.

Both run in the same process, on the same images and recipes, with the same thread count,
timed alternately (``common.paired_best``) so both see the same load; the best of each is kept.

Run:  python benchmarks/bench_degradations.py [--batch 64] [--size 128] [--repeats 3] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import common
from common import Result, ratio_result


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Photo-like test content: the embedded sample photos, cropped and tiled to ``n`` images."""
    import torch.nn.functional as F

    from biqabench.data.images import decode_array

    try:
        from biqabench.data.embedded import pristine_dir

        paths = sorted(pristine_dir().glob("*.png"))
    except Exception:  # noqa: BLE001 - fall back to synthetic texture
        paths = []
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if paths:
            img = torch.from_numpy(decode_array(paths[i % len(paths)])).float() / 255
            _, h, w = img.shape
            t, l = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            out.append(img[:, t:t + size, l:l + size])
        else:
            base = torch.rand(1, 3, size // 8, size // 8)
            out.append(F.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1))
    return torch.stack(out)


def measure(batch: int = 64, size: int = 128, repeats: int = 3, threads: int = 1, seed: int = 0) -> Result:
    """Images/s of ``degrade_batch`` and of the per-image loop on the same images and recipes."""
    from biqabench.runtime import device
    from biqabench_plugins.qpt.degradations import DegradationConfig, degrade_batch, sample_recipe
    if str(common.REPO / "tests") not in sys.path:  # the oracle lives with the tests, not in the plugin
        sys.path.insert(0, str(common.REPO / "tests"))
    from qpt_reference import degrade_loop

    cfg = DegradationConfig()
    rng = np.random.default_rng(seed)
    recipes = [sample_recipe(cfg, rng) for _ in range(batch)]
    x = images(batch, size, seed)
    n_ops = sum(len(r.ops) for r in recipes)
    with device.threads(threads):
        best = common.paired_best({
            "batched": lambda: degrade_batch(x, recipes, torch.Generator().manual_seed(seed)),
            "loop": lambda: degrade_loop(x, recipes, np.random.default_rng(seed)),
        }, rounds=repeats)
    return ratio_result(
        f"QPT degradations, {threads} thread(s)", batch / best["batched"], batch / best["loop"], "img/s", 2.0,
        ours_label="degrade_batch: ops grouped per step, grouped conv / batched matmul / vectorised noise / "
                   "libjpeg per quality",
        reference_label="per-image loop: conv2d, interpolate, numpy noise, PIL JPEG",
        notes=f"{batch} images of {size}x{size}, {n_ops} ops ({n_ops / batch:.1f} per image), default space",
        extra={"seconds_batched": best["batched"], "seconds_loop": best["loop"], "ops": n_ops, "threads": threads},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=128, help="image side (QPT's CPU config degrades 128 px crops)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of each side (best is kept)")
    ap.add_argument("--threads", default="1,2",
                    help="torch intra-op thread counts to measure, comma-separated (both sides get the same)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    for threads in [int(t) for t in str(a.threads).split(",") if t.strip()]:
        r = measure(a.batch, a.size, a.repeats, threads, a.seed)
        print(f"{r.name}: batched {common.fmt(r.ours)} {r.unit}, per-image loop {common.fmt(r.reference)} {r.unit}, "
              f"speed-up {r.ratio:.2f}x (target {r.target_text}) -> {'pass' if r.passed else 'FAIL'}\n  {r.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
