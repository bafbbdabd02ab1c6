"""Throughput of QPT's batched degradations against a per-image loop over the SAME recipes.

The reference (:mod:`biqabench_plugins.qpt.reference`) is the straightforward version: per
image, per op, ``F.conv2d`` with its own kernel, ``F.interpolate`` down and back, numpy noise
with ``np.unique``, PIL's JPEG.  The batched version (:func:`degrade_batch`) groups images by op
kind at each step and runs one call per group: a grouped conv for all kernels, one batched
matmul for all resize factors, vectorised noise, torchvision's libjpeg per quality.

Both run in the same process, on the same images and recipes, with the same thread count.

Run:  python benchmarks/bench_degradations.py [--batch 64] [--size 128] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch


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


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: kernel caches, lazy imports
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    from biqabench_plugins.qpt.degradations import DegradationConfig, degrade_batch, sample_recipe, torch_threads
    from biqabench_plugins.qpt.reference import degrade_loop

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=128, help="image side (QPT's CPU config degrades 128 px crops)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions (best is reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both implementations")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    cfg = DegradationConfig()
    rng = np.random.default_rng(a.seed)
    recipes = [sample_recipe(cfg, rng) for _ in range(a.batch)]
    x = images(a.batch, a.size, a.seed)
    n_ops = sum(len(r.ops) for r in recipes)
    with torch_threads(a.threads):
        t_batched = timed(lambda: degrade_batch(x, recipes, torch.Generator().manual_seed(a.seed)), a.repeats)
        t_loop = timed(lambda: degrade_loop(x, recipes, np.random.default_rng(a.seed)), a.repeats)
    print(f"QPT degradations: {a.batch} images of {a.size}x{a.size}, {n_ops} ops "
          f"({n_ops / a.batch:.1f} per image), default space, {a.threads} thread(s), best of {a.repeats}")
    print(f"  batched (degrade_batch)        {a.batch / t_batched:8.1f} images/s   ({t_batched * 1e3:7.1f} ms)")
    print(f"  per-image loop (reference)     {a.batch / t_loop:8.1f} images/s   ({t_loop * 1e3:7.1f} ms)")
    print(f"  speed-up                       {t_loop / t_batched:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
