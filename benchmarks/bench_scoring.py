"""Scoring speed: our HyperIQA head against pyiqa's HyperNet with the same weights.

Both score the same images with 25 crops of 224 px each and average, as HyperIQA's test
protocol does:

* **ours**: :func:`biqabench.engine.predict_images` with a bf16 Runtime (autocast,
  channels_last, ``inference_mode``), all crops of ``batch_images`` images in one forward;
  crops from :func:`biqabench.data.image_patches` (the data layer normalises them);
* **reference**: pyiqa's ``HyperNet`` in fp32 eager mode with its own pre-processing (uniform
  crops, in-model normalisation), one image (25 crops) per forward, under ``no_grad``.

The two are timed alternately, chunk by chunk, in the same process.  Then our fp32 path scores
the same images with the same crops, and the bf16 scores must rank the images like it
(SRCC >= 0.999); the mean absolute difference is reported too.

Weights: random (nothing is downloaded; pyiqa's model is built with every download stubbed),
with BatchNorm statistics calibrated on a few other photos.  Why calibrated: with raw random
statistics the network is badly conditioned and gives every image nearly the same score
(spread ~1e-3), so *any* rounding reorders them and the agreement check would be meaningless;
calibrated, the spread across images is of the order a trained model has.

Run:  python benchmarks/bench_scoring.py [--images 8] [--batch-images 4] [--threads 0]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch

import common
from common import Result, ratio_result

PATCH = 224
CROPS = 25


def demo_images(n: int, which: str = "demo-a") -> tuple[list[torch.Tensor], np.ndarray]:
    """``n`` uint8 images (3, 256, 256) of the embedded demo set, spread over contents and
    distortion levels, and their pseudo-MOS."""
    from biqabench.data import ImageCache, load_dataset

    table = load_dataset(which)
    idx = np.unique(np.linspace(0, len(table.paths) - 1, n).round().astype(int))
    cache = ImageCache(memory_bytes=0)
    return [cache.get(table.paths[i]) for i in idx], np.asarray(table.mos)[idx]


@torch.no_grad()
def calibrate_batchnorm(ref: torch.nn.Module, images: list[torch.Tensor], seed: int = 0) -> None:
    """Set pyiqa's backbone BatchNorm running statistics to those of real photo crops."""
    from biqabench.data import image_patches

    x = torch.cat([image_patches(img, PATCH, 2, seed=(seed, i)) for i, img in enumerate(images)])
    net = ref.base_model
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass sets the batch statistics
    net.train()
    net(x)
    net.eval()


def build_models(seed: int = 0, calibrate_with: int = 4):
    """(pyiqa HyperNet, our head), both holding the same calibrated random weights."""
    from pyiqa_offline import hypernet_pair

    from biqabench_plugins.hyperiqa import load_pyiqa_checkpoint

    ref, ours = hypernet_pair(seed)
    if calibrate_with:
        calib, _ = demo_images(calibrate_with, "demo-b")  # other photos than the scored ones
        calibrate_batchnorm(ref, calib, seed)
        load_pyiqa_checkpoint(ours, ref.state_dict())
    return ref.eval(), ours.eval()


def our_scores(model, images: list[torch.Tensor], runtime, batch_images: int, seed: int = 0,
               offset: int = 0) -> np.ndarray:
    """Our scoring path: crops per image from the data layer, ``predict_images`` on them."""
    from biqabench.data import image_patches
    from biqabench.engine import predict_images

    stream = (image_patches(img, PATCH, CROPS, seed=(seed, offset + i)) for i, img in enumerate(images))
    return predict_images(model, stream, runtime, batch_images=batch_images, progress=False)


@torch.no_grad()
def reference_scores(ref, images: list[torch.Tensor]) -> np.ndarray:
    """pyiqa's path: a [0, 1] image in, its 25 uniform crops and normalisation inside the model."""
    return np.asarray([float(ref(img[None].float() / 255.0)) for img in images], dtype=np.float64)


def measure(n_images: int = 8, batch_images: int = 4, seed: int = 0, progress: bool = True) -> Result:
    from scipy.stats import spearmanr

    from biqabench.device import get_runtime

    say = print if progress else (lambda *a, **k: None)
    ref, ours = build_models(seed)
    images, mos = demo_images(n_images)
    n = len(images)
    bf16, fp32 = get_runtime("cpu", "bf16"), get_runtime("cpu", "fp32")
    fast = bf16.prepare(copy.deepcopy(ours))
    exact = fp32.prepare(copy.deepcopy(ours))

    # warm-up at the timed batch shapes (oneDNN builds its kernels per shape on first use)
    warm = images[:batch_images]
    our_scores(fast, warm, bf16, batch_images, seed)
    reference_scores(ref, warm[:1])

    t_ours = t_ref = 0.0
    pred_fast, pred_ref = [], []
    for start in range(0, n, batch_images):
        chunk = images[start:start + batch_images]
        t = time.perf_counter()
        pred_fast.append(our_scores(fast, chunk, bf16, batch_images, seed, offset=start))
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        pred_ref.append(reference_scores(ref, chunk))
        t_ref += time.perf_counter() - t
        say(f"  scoring: {start + len(chunk)}/{n} images  ours {t_ours:.1f} s  pyiqa {t_ref:.1f} s", flush=True)
    p_fast, p_ref = np.concatenate(pred_fast), np.concatenate(pred_ref)
    p_exact = our_scores(exact, images, fp32, batch_images, seed)

    srcc = float(spearmanr(p_fast, p_exact).correlation)
    mad = float(np.mean(np.abs(p_fast - p_exact)))
    srcc_pyiqa = float(spearmanr(p_exact, p_ref).correlation)
    agree = srcc >= 0.999
    notes = (f"bf16 vs our fp32: SRCC {srcc:.4f} (>= 0.999 {'ok' if agree else 'FAILED'}), "
             f"mean |diff| {mad:.2e} (score spread {np.std(p_exact):.3f}); "
             f"vs pyiqa's own crops SRCC {srcc_pyiqa:.3f}; {n} images x {CROPS} crops")
    return ratio_result(
        "1. scoring, hyperiqa r50, 25 crops", n / t_ours, n / t_ref, "img/s", 3.0, extra_ok=agree,
        ours_label=f"predict_images bf16+channels_last, {batch_images} images/forward",
        reference_label="pyiqa HyperNet fp32 eager, 1 image/forward", notes=notes,
        extra={"srcc_bf16_fp32": srcc, "mean_abs_diff": mad, "srcc_fp32_pyiqa": srcc_pyiqa,
               "score_std": float(np.std(p_exact)), "images": n, "seconds_ours": t_ours, "seconds_ref": t_ref},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch-images", type=int, default=4, help="images whose crops share one forward (ours)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    a = ap.parse_args(argv)
    common.set_threads(a.threads)
    r = measure(a.images, a.batch_images)
    print(f"{r.name}: ours {common.fmt(r.ours)} {r.unit}, pyiqa {common.fmt(r.reference)} {r.unit}, "
          f"{r.ratio:.2f}x (target {r.target_text}) -> {'pass' if r.passed else 'FAIL'}\n  {r.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
