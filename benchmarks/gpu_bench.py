"""The measured half of ``benchmarks/gpu_check.sh``: one table of what a GPU machine does with us.

Rows (each on the one GPU, in this process, so the figures share the machine's state):

* ``cuda tests``: the outcome of ``pytest -m cuda`` (read from its JUnit file, ``--junit``);
* QPT pretraining at the paper's settings (ResNet-50, 224 px patches from 320 px crops, 256
  images per step, one other degradation, queue 65536, bf16): images/s (target >= 2,000), the
  share of the step spent waiting for the DataLoader (target < 10%), the GPU degradation's share,
  peak GPU memory.  The loop is ``run_qpt``'s on CUDA: workers decode and crop generated JPEGs
  (the decoded-image cache off, as on ImageNet where nothing repeats within an epoch), the GPU
  degrades and cuts patches, then the MoCo step;
* HyperIQA fine-tuning at its paper recipe (ResNet-50, batch 96 x 224 px, bf16): patches/s;
* scoring (HyperIQA ResNet-50, 25 crops per image): ours (``predict_images``, bf16) against
  pyiqa's ``HyperNet`` fp32 on the same GPU (target >= 3x); skipped, saying so, without pyiqa;
* achieved TFLOP/s of the ResNet-50 bf16 training step (FLOPs counted by ``FlopCounterMode``)
  against the bf16 matmul rate measured in the same run.

``--dry-run`` runs every row on CPU at toy sizes (tiny backbone, a few images, seconds): it
checks the plumbing only, and its figures mean nothing.  ``tests/benchmarks/test_gpu_check.py`` runs it.

    python benchmarks/gpu_bench.py [--dry-run] [--junit FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    name: str
    value: str
    target: str = ""
    result: str = "info"  # pass | FAIL | info | skipped | error
    notes: str = ""


@dataclass
class Sizes:
    """Paper settings on a GPU; toys for --dry-run."""

    device: str
    backbone: str
    qpt_batch: int
    crop: int
    patch: int
    queue: int
    qpt_steps: int
    images: int
    image_size: tuple[int, int]
    ft_batch: int
    ft_steps: int
    score_images: int
    matmul: int
    workers: int

    @classmethod
    def for_run(cls, dry: bool) -> "Sizes":
        if dry:
            return cls("cpu", "tiny", 4, 48, 32, 64, 2, 6, (64, 56), 4, 1, 1, 256, 0)
        workers = max(1, min(14, (os.cpu_count() or 2) - 2))
        return cls("cuda", "resnet50", 256, 320, 224, 65536, 10, 512, (500, 375), 96, 10, 16, 8192, workers)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], device: str, rounds: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


# ------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------
def cuda_tests(junit: Path | None) -> list[Row]:
    if junit is None or not junit.is_file():
        return [Row("cuda tests (pytest -m cuda)", "-", "all pass", "error", "no JUnit file from pytest")]
    root = ET.parse(junit).getroot()
    cases = list(root.iter("testcase"))
    failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c for c in cases if c.find("skipped") is not None]
    passed = len(cases) - len(failed) - len(skipped)
    result = "FAIL" if failed else ("skipped" if skipped and not passed else "pass")
    notes = "; ".join(f"failed: {c.get('name')}" for c in failed[:5])
    if skipped and not passed:
        notes = f"all skipped ({skipped[0].find('skipped').get('message', '')[:80]})"
    return [Row("cuda tests (pytest -m cuda)", f"{passed} passed, {len(failed)} failed, {len(skipped)} skipped",
                "all pass", result, notes)]


def make_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    """Photo-like JPEGs (smooth shapes and texture), so decoding costs what photos cost."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        fx, fy = rng.uniform(0.005, 0.03, 2)
        base = 127 + 60 * np.sin(xx * fx + i) * np.cos(yy * fy)
        rgb = np.stack([base, np.roll(base, 17, 1), np.roll(base, 29, 0)], -1) + rng.normal(0, 10, (h, w, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"img{i:04d}.jpg", quality=90)


def qpt_pretraining(s: Sizes, folder: Path) -> list[Row]:
    """run_qpt's CUDA loop, timed per phase (loader wait, GPU degradation, step)."""
    from biqabench.runtime.device import get_runtime
    from biqabench_plugins.qpt import data as qdata
    from biqabench_plugins.qpt.pretrainer import QPTTrainer, load_config

    cfg = load_config(None, {"batch_size": s.qpt_batch, "crop_size": s.crop, "patch_size": s.patch,
                             "negative_degradations": 1, "queue_size": s.queue, "projector_bn": False,
                             "momentum": 0.999, "workers": s.workers})
    runtime = get_runtime(s.device, "bf16")
    trainer = QPTTrainer.build(s.backbone, cfg, runtime, total_steps=1000)
    paths = qdata.list_images(folder)
    loader = torch.utils.data.DataLoader(
        qdata.StepBatches(qdata.CropDataset(paths, cfg.crop_size, 0, cache_mb=0), cfg.batch_size, 0),
        batch_size=None, sampler=qdata.StepSampler(0), num_workers=s.workers, pin_memory=s.device == "cuda",
        persistent_workers=s.workers > 0, prefetch_factor=4 if s.workers else None)
    it = iter(loader)
    warm = 3 if s.device == "cuda" else 1
    wait = degrade = total = 0.0
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(warm + s.qpt_steps):
        t0 = time.perf_counter()
        _, crops = next(it)
        t1 = time.perf_counter()
        views = trainer.make_views(crops, step).to(runtime)
        sync(s.device)
        t2 = time.perf_counter()
        trainer.step(views, step)  # returns floats: synchronises
        t3 = time.perf_counter()
        if step >= warm:
            wait, degrade, total = wait + t1 - t0, degrade + t2 - t1, total + t3 - t0
    del it
    ips = s.qpt_steps * cfg.batch_size / total
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if s.device == "cuda" else float("nan")
    what = f"{s.backbone}, {cfg.patch_size} px patches of {cfg.crop_size} px crops, batch {cfg.batch_size}, bf16"
    return [
        Row(f"QPT pretraining, {what}", f"{ips:,.0f} img/s", ">= 2,000 img/s", "pass" if ips >= 2000 else "FAIL",
            f"{s.workers} decoding workers, {len(paths)} generated JPEGs {s.image_size[0]}x{s.image_size[1]}, "
            f"{s.qpt_steps} timed steps after {warm}"),
        Row("QPT data wait (blocked on the DataLoader)", f"{wait / total:.1%} of step", "< 10%",
            "pass" if wait / total < 0.10 else "FAIL", f"{wait / s.qpt_steps * 1e3:.0f} ms per step"),
        Row("QPT degradation + patching on the GPU", f"{degrade / total:.1%} of step", "", "info",
            f"{degrade / s.qpt_steps * 1e3:.0f} ms per step (2 degradations x {cfg.batch_size} crops)"),
        Row("QPT peak GPU memory", f"{peak:.1f} GiB", "", "info", "torch.cuda.max_memory_allocated"),
    ]


def finetuning(s: Sizes) -> list[Row]:
    """HyperIQA's paper recipe step, as engine.train_head runs it (bf16 autocast, channels_last)."""
    from biqabench.components.backbones import create_backbone
    from biqabench.runtime.device import get_runtime
    from biqabench.training.engine import make_optimizer
    from biqabench.components.heads import head_spec

    spec = head_spec("hyperiqa")
    recipe = spec.recipe
    runtime = get_runtime(s.device, "bf16")
    torch.manual_seed(0)
    model = runtime.prepare(spec.build(create_backbone(s.backbone, weights="random"), recipe)).train()
    opt = make_optimizer(model, recipe, runtime)
    size = s.patch if s.device == "cuda" else 64
    x = runtime.to(torch.rand(s.ft_batch, 3, size, size))
    y = torch.rand(s.ft_batch, device=runtime.device)

    def step() -> None:
        with runtime.autocast():
            loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = best_time(step, s.device, s.ft_steps, warmup=2 if s.device == "cuda" else 1)
    return [Row(f"HyperIQA fine-tuning, {s.backbone}, batch {s.ft_batch} x {size} px, bf16",
                f"{s.ft_batch / t:,.0f} patch/s", "", "info", f"best of {s.ft_steps} steps, {t * 1e3:.0f} ms per step")]


def scoring(s: Sizes) -> list[Row]:
    """Ours (bf16 predict_images) against pyiqa's HyperNet (fp32) on the same device."""
    name = "scoring, hyperiqa r50, 25 crops"
    try:
        import pyiqa  # noqa: F401
    except ImportError:
        return [Row(name, "-", ">= 3x pyiqa", "skipped", "pyiqa is not installed here: row skipped "
                    "(install its wheel to measure it; see benchmarks/README.md)")]
    if s.device == "cpu":
        return [Row(name, "-", ">= 3x pyiqa", "skipped", "dry run: pyiqa found, not timed on CPU")]
    sys.path.insert(0, str(HERE))
    import bench_scoring as bs

    from biqabench.runtime.device import get_runtime

    ref, ours = bs.build_models(0)
    runtime = get_runtime("cuda", "bf16")
    ref, fast = ref.cuda(), runtime.prepare(ours)
    images, _ = bs.demo_images(s.score_images)

    @torch.no_grad()
    def reference() -> None:
        for img in images:
            float(ref(img[None].cuda().float() / 255.0))

    t_ref = best_time(reference, "cuda", 2)
    t_ours = best_time(lambda: bs.our_scores(fast, images, runtime, 8), "cuda", 2)
    ratio = t_ref / t_ours
    return [Row(name, f"{len(images) / t_ours:,.1f} vs {len(images) / t_ref:,.1f} img/s = {ratio:.2f}x",
                ">= 3x pyiqa", "pass" if ratio >= 3 else "FAIL",
                f"{len(images)} demo images; pyiqa HyperNet fp32, 1 image per forward, its own crops")]


def roofline(s: Sizes) -> list[Row]:
    """Achieved TFLOP/s of a bf16 ResNet training step against the bf16 matmul rate."""
    from torch.utils.flop_counter import FlopCounterMode

    from biqabench.components.backbones import create_backbone
    from biqabench.runtime.device import get_runtime

    runtime = get_runtime(s.device, "bf16")
    net = runtime.prepare(create_backbone(s.backbone, weights="random")).train()
    size = s.patch if s.device == "cuda" else 64
    x = runtime.to(torch.randn(s.ft_batch, 3, size, size))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def step() -> None:
        with runtime.autocast():
            out = net(x)
            loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    t = best_time(step, s.device, 5 if s.device == "cuda" else 1)
    a = torch.randn(s.matmul, s.matmul, device=runtime.device, dtype=torch.bfloat16)
    t_mm = best_time(lambda: a @ a, s.device, 5 if s.device == "cuda" else 1)
    achieved, peak = flops / t / 1e12, 2 * s.matmul ** 3 / t_mm / 1e12
    return [Row(f"achieved TFLOP/s, {s.backbone} bf16 training step, batch {s.ft_batch}",
                f"{achieved:.1f} of {peak:.1f} TFLOP/s = {achieved / peak:.0%}", "", "info",
                f"{flops / 1e9:.0f} GFLOP per step (FlopCounterMode); bf16 matmul {s.matmul}^2 in the same run")]


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------
def machine(device: str) -> str:
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "none (dry run)"
    return f"GPU {gpu}; {os.cpu_count()} CPU cores; torch {torch.__version__}"


def render(rows: list[Row], head: str) -> str:
    from tabulate import tabulate

    table = tabulate([[r.name, r.value, r.target, r.result, r.notes] for r in rows],
                     headers=["check", "measured", "target", "result", "notes"], tablefmt="github")
    return f"{head}\n\n{table}\n"


def run(dry: bool, junit: Path | None) -> list[Row]:
    s = Sizes.for_run(dry)
    rows = cuda_tests(junit)
    steps: list[tuple[str, Callable[[], list[Row]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jpegs"
        folder.mkdir()
        make_jpegs(folder, s.images, s.image_size)
        steps = [("QPT pretraining", lambda: qpt_pretraining(s, folder)), ("fine-tuning", lambda: finetuning(s)),
                 ("scoring", lambda: scoring(s)), ("roofline", lambda: roofline(s))]
        for name, fn in steps:
            t = time.perf_counter()
            try:
                rows += fn()
            except Exception as exc:  # noqa: BLE001 - one failing row must not hide the others
                rows.append(Row(name, "-", "", "error", f"{type(exc).__name__}: {str(exc)[:200]}"))
            print(f"  {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    if dry:  # toy sizes on CPU: a target verdict would mean nothing
        for r in rows[1:]:
            if r.result in ("pass", "FAIL"):
                r.result = "dry run"
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: check the plumbing in seconds")
    ap.add_argument("--junit", type=Path, default=None, help="JUnit XML of `pytest -m cuda`")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    if not a.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; run with --dry-run to check the script on CPU", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    t = time.perf_counter()
    rows = run(a.dry_run, a.junit)
    head = (f"GPU check{' (DRY RUN: CPU, toy sizes; figures mean nothing)' if a.dry_run else ''}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.perf_counter() - t:.0f} s; "
            f"{machine('cpu' if a.dry_run else 'cuda')}")
    print(render(rows, head))
    if a.json:
        a.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return 1 if any(r.result in ("FAIL", "error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
