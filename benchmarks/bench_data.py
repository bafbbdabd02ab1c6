"""How much the decoded-image cache saves when training on patches.

IQA recipes crop many patches per image per epoch.  Decoding the file for every patch is the
classic bottleneck; biqabench decodes each image once (:class:`ImageCache`) and crops from the
decoded pixels.  This benchmark generates JPEGs, runs a patch DataLoader for two epochs with one
cache, and reports, all measured in this same run:

* epoch 2 time vs epoch 1 time (target: epoch 2 at least 3x faster);
* epoch 2 time vs an epoch that decodes the file for every patch ("decode every time");
* an epoch with a fresh cache object on a warm disk cache (a new worker, run or machine restart).

Patches are uint8, as the runner's training set hands them to ``train_head`` (which normalises
them on the device): a cached epoch is bound by cropping and collating, 4x less data than float32.

    python benchmarks/bench_data.py [--images 24] [--size 1024x768] [--recipe cpu|paper|both] [--workers 0]
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


RECIPES = {  # (patch size, patches per image per epoch), as in plugins/<head>/presets/{cpu,paper}.yaml
    "cpu": (128, 3),
    "paper": (224, 25),
}


def measure(table, patch_size: int, patches: int, batch: int, workers: int, folder: Path) -> dict[str, float]:
    from biqabench.data import ImageCache, PatchDataset

    idx = np.arange(len(table))

    def dataset(cache):
        # as the runner trains: uint8 patches, normalised by the training step on its device
        return PatchDataset(table, idx, patch_size, patches, train=True, seed=0, cache=cache, as_uint8=True)

    t1, t2 = run_epochs(dataset(ImageCache(folder=folder)), [0, 1], batch, workers)
    (t_disk,) = run_epochs(dataset(ImageCache(folder=folder, memory_bytes=0)), [2], batch, workers)
    (t_every,) = run_epochs(dataset(ImageCache(memory_bytes=0)), [3], batch, workers)
    return {"epoch1": t1, "epoch2": t2, "disk": t_disk, "every": t_every}


def main() -> None:
    import torch

    from biqabench.data import IQATable

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", default="1024x768", help="WxH of the generated JPEGs")
    ap.add_argument("--recipe", choices=[*RECIPES, "both"], default="both",
                    help="patch size and patches per image: cpu = 128px x 3, paper = 224px x 25")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: main process)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for batching (1, as in DataLoader workers: on a busy CPU, "
                         "more threads make the timing depend on the neighbours' load)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    recipes = list(RECIPES) if args.recipe == "both" else [args.recipe]

    print(f"{args.images} generated JPEGs {width}x{height}, batch {args.batch}, workers {args.workers}, "
          f"torch threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "img").mkdir()
        paths = make_jpegs(tmp / "img", args.images, width, height)
        table = IQATable("bench", tmp, paths, [p.name for p in paths], np.linspace(0, 100, len(paths)), (0, 100))
        for name in recipes:
            patch_size, patches = RECIPES[name]
            t = measure(table, patch_size, patches, args.batch, args.workers, tmp / f"decoded-{name}")
            print(f"\nrecipe {name}: {patches} patches of {patch_size}px per image per epoch "
                  f"({args.images * patches} patches)")
            print(f"  epoch 1 (decode once, fill cache)     {t['epoch1']:7.3f} s")
            print(f"  epoch 2 (cached)                      {t['epoch2']:7.3f} s")
            print(f"  epoch, fresh process on disk cache    {t['disk']:7.3f} s")
            print(f"  epoch decoding every time             {t['every']:7.3f} s")
            print(f"  epoch-1 / epoch-2 time:               {t['epoch1'] / t['epoch2']:6.1f}x  (target >= 3x)")
            print(f"  ratio vs decoding every time:         {t['every'] / t['epoch2']:6.1f}x  "
                  "(decode-every-time epoch / cached epoch)")


if __name__ == "__main__":
    main()
