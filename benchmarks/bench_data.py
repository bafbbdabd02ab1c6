"""How much the decoded-image cache saves when training on patches.

IQA recipes crop many patches per image per epoch.  Decoding the file for every patch is the
classic bottleneck; biqabench decodes each image once (:class:`ImageCache`) and crops from the
decoded pixels.  This benchmark generates JPEGs, runs a patch DataLoader for two epochs with one
cache, and reports, all measured in this same run:

* epoch 2 time vs epoch 1 time (target: epoch 2 at least 3x faster);
* epoch 2 time vs an epoch that decodes the file for every patch ("decode every time");
* an epoch with a fresh cache object on a warm disk cache (a new worker, run or machine restart).

    python benchmarks/bench_data.py [--images 24] [--size 1024x768] [--patches 16] [--workers 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader


def make_jpegs(folder: Path, n: int, width: int, height: int, seed: int = 0) -> list[Path]:
    """Photo-like JPEGs (smooth shapes plus fine texture), so decoding costs what real photos cost."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        fx, fy = rng.uniform(0.002, 0.02, 2)
        base = 127 + 60 * np.sin(x * fx + i) * np.cos(y * fy)
        rgb = np.stack([base, np.roll(base, 17, axis=1), np.roll(base, 31, axis=0)], axis=-1)
        rgb += rng.normal(0, 12, rgb.shape)
        path = folder / f"img{i:03d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def run_epochs(dataset, epochs: list[int], batch: int, workers: int) -> list[float]:
    """Time each epoch; workers persist across epochs (as a training loop should run them), so
    their per-process memory caches survive and worker start-up is paid once."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers,
                        persistent_workers=workers > 0)
    times = []
    for epoch in epochs:
        dataset.set_epoch(epoch)
        start = time.perf_counter()
        for _ in loader:
            pass
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    from biqabench.data import ImageCache, IQATable, PatchDataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", default="1024x768", help="WxH of the generated JPEGs")
    ap.add_argument("--patches", type=int, default=16, help="patches per image per epoch")
    ap.add_argument("--patch-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: main process)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "img").mkdir()
        paths = make_jpegs(tmp / "img", args.images, width, height)
        table = IQATable("bench", tmp, paths, [p.name for p in paths], np.linspace(0, 100, len(paths)), (0, 100))
        idx = np.arange(len(paths))

        def dataset(cache):
            return PatchDataset(table, idx, args.patch_size, args.patches, train=True, seed=0, cache=cache)

        folder = tmp / "decoded"
        t1, t2 = run_epochs(dataset(ImageCache(folder=folder)), [0, 1], args.batch, args.workers)
        (t_disk,) = run_epochs(dataset(ImageCache(folder=folder, memory_bytes=0)), [2], args.batch, args.workers)
        (t_every,) = run_epochs(dataset(ImageCache(memory_bytes=0)), [3], args.batch, args.workers)

    n = args.images * args.patches
    print(f"{args.images} JPEGs {width}x{height}, {args.patches} patches of {args.patch_size}px each "
          f"({n} patches per epoch), batch {args.batch}, workers {args.workers}")
    print(f"epoch 1 (decode once, fill cache)     {t1:7.3f} s")
    print(f"epoch 2 (cached)                      {t2:7.3f} s")
    print(f"epoch, fresh process on disk cache    {t_disk:7.3f} s")
    print(f"epoch decoding every time             {t_every:7.3f} s")
    print(f"epoch-1 / epoch-2 time:               {t1 / t2:6.1f}x  (target >= 3x)")
    print(f"ratio vs decoding every time:         {t_every / t2:6.1f}x  (decode-every-time epoch / cached epoch)")


if __name__ == "__main__":
    main()
