"""`biqabench score` end to end against pyiqa's `create_metric('hyperiqa')` loop, same weights.

Both score the same image *files* (decoding included) with a ResNet-50 HyperIQA:

* **ours**: what ``biqabench score FILES --model pyiqa:hyperiqa:CKPT`` runs
  (:func:`biqabench.load_model` + :func:`biqabench.model.scoring.score_paths`): the checkpoint loaded
  into our head, files decoded one ahead in a thread, 25 seeded crops, batched
  ``predict_images`` (bf16 autocast, channels_last, folded BatchNorm where the hardware runs bf16;
  fp32 elsewhere: ``--precision auto``);
* **reference**: ``pyiqa.create_metric('hyperiqa')`` holding the same weights, called once per
  file path (pyiqa reads the file itself), as a user's loop does.

Chunks of files are timed alternately (ours, pyiqa, ours, ...) in one process.  Agreement: our
scores at the benchmark's precision against our fp32 path (SRCC >= 0.999); against pyiqa's own
scores (its uniform crops, not ours) the SRCC is reported for information.

Weights: the random-but-fitted HyperIQA of ``bench_scoring.py`` (BatchNorm calibrated, last layer
fitted to demo-b), written as a pyiqa-format checkpoint; nothing is downloaded.  Images: LIVE
Challenge photos from ``../shared/data/clive-dev`` when present (500x500 JPEGs), else the
embedded demo images (256 px PNGs), cycled to ``--images``.

Measured (AVX2 only, no native bf16, so ``auto`` is fp32; 2 cores shared with ~8 jobs, load ~15;
8 demo files, 4 per alternation, 1 thread): ours 0.026 img/s, pyiqa 0.020 img/s, 1.30x; SRCC
1.0000 against our fp32 path (the same path here).  The 3x target assumes bf16 hardware (AMX /
AVX-512-BF16 or a GPU), where ``bench_scoring.py`` measures the engine's bf16 gain; on fp32 the
gain is batching and decoding ahead only.

Run:  python benchmarks/bench_score_command.py [--images 500] [--chunk 10] [--precision auto]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import common
from common import Result, ratio_result

# ../shared/data next to the checkout (as the tests look for it), or $BIQABENCH_SHARED_DATA
SHARED = Path(os.environ.get("BIQABENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def image_files(n: int) -> tuple[list[Path], str]:
    clive = SHARED / "clive-dev" / "Images"
    files = sorted(p for p in clive.glob("*") if p.suffix.lower() in (".jpg", ".bmp")) if clive.is_dir() else []
    where = "LIVE Challenge (clive-dev)"
    if not files:
        from biqabench.data import load_dataset

        files = list(load_dataset("demo-a").paths) + list(load_dataset("demo-b").paths)
        where = "embedded demo-a/demo-b"
    return list(itertools.islice(itertools.cycle(files), n)), where


def reference_metric(state: dict):
    """pyiqa's create_metric('hyperiqa') built offline (no downloads), holding ``state``."""
    from pyiqa_offline import offline_pyiqa

    import pyiqa

    with offline_pyiqa():
        metric = pyiqa.create_metric("hyperiqa", device="cpu", pretrained=False)
    metric.net.load_state_dict(state)
    return metric.eval()


def measure(n_images: int = 500, chunk: int = 10, precision: str = "auto", progress: bool = True,
            fit_with: int = 48) -> Result:
    from bench_scoring import build_models
    from scipy.stats import spearmanr

    from biqabench import load_model
    from biqabench.model.scoring import score_paths

    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    ref, _ = build_models(0, fit_with=fit_with)
    say(f"  weights built and fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    state = ref.state_dict()
    ckpt = Path(tempfile.mkdtemp()) / "hyperiqa-bench.pth"
    torch.save({"params": state}, ckpt)
    ours = load_model(f"pyiqa:hyperiqa:{ckpt}", device="cpu", precision=precision)
    metric = reference_metric(state)
    files, where = image_files(n_images)

    score_paths(ours, files[:2], progress=False)  # warm-up (oneDNN builds kernels per shape)
    with torch.inference_mode():
        metric(str(files[0]))
    t_ours = t_ref = 0.0
    p_ours, p_ref = [], []
    for start in range(0, len(files), chunk):
        part = files[start:start + chunk]
        t = time.perf_counter()
        p_ours.append(score_paths(ours, part, progress=False).pred.to_numpy())
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        with torch.inference_mode():
            p_ref.append(np.asarray([float(metric(str(f))) for f in part]))
        t_ref += time.perf_counter() - t
        say(f"  {start + len(part)}/{len(files)} images: ours {t_ours:.1f} s, pyiqa {t_ref:.1f} s", flush=True)
    p_ours, p_ref = np.concatenate(p_ours), np.concatenate(p_ref)
    exact = load_model(f"pyiqa:hyperiqa:{ckpt}", device="cpu", precision="fp32")
    p_exact = score_paths(exact, files, progress=False).pred.to_numpy() if ours.precision != "fp32" else p_ours
    srcc = float(spearmanr(p_ours, p_exact).correlation)
    srcc_pyiqa = float(spearmanr(p_ours, p_ref).correlation)
    agree = srcc >= 0.999
    n = len(files)
    notes = (f"{n} files ({where}); ours at {ours.precision} vs our fp32: SRCC {srcc:.4f} "
             f"(>= 0.999 {'ok' if agree else 'FAILED'}); vs pyiqa's own crops SRCC {srcc_pyiqa:.3f}")
    return ratio_result(
        "score command vs pyiqa create_metric loop, hyperiqa r50", n / t_ours, n / t_ref, "img/s", 3.0,
        extra_ok=agree, ours_label=f"biqabench score (load_model + score_paths), {ours.precision}",
        reference_label="pyiqa.create_metric('hyperiqa'), one file per call", notes=notes,
        extra={"images": n, "precision": ours.precision, "srcc_vs_fp32": srcc, "srcc_vs_pyiqa": srcc_pyiqa,
               "seconds_ours": t_ours, "seconds_ref": t_ref},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=10, help="files per alternation")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (bf16 without native support is emulated: slow)")
    ap.add_argument("--fit-images", type=int, default=48, help="demo-b images the last layer is fitted on")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    a = ap.parse_args(argv)
    common.set_threads(a.threads)
    r = measure(a.images, a.chunk, a.precision, fit_with=a.fit_images)
    print(f"{r.name}: ours {common.fmt(r.ours)} {r.unit}, pyiqa {common.fmt(r.reference)} {r.unit}, "
          f"{r.ratio:.2f}x (target {r.target_text}) -> {'pass' if r.passed else 'FAIL'}\n  {r.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
