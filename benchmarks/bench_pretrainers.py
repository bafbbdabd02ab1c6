"""The pretrainers on the core loop (MoCo v2, ARNIQA, bnstats): step speed and the data share.

**Step** (rows 3d-3f; same model, same initial weights, same batches, same loss):

* ours: :meth:`PretrainTrainer.step` as ``biqabench pretrain NAME`` runs it: the model prepared by
  the Runtime (channels_last), bf16 autocast;
* reference: the same strategy on a copy of the same initial model in the default (NCHW) layout,
  in plain fp32 eager (``Runtime(cpu, fp32)``).

Timed alternately after one warm-up step each; the best step of each side is kept.  bnstats has
no backward: its "step" is the forward pass that updates the BatchNorm statistics.

**Data pipeline** (rows 3d'-3f'): the core loop's DataLoader over ``StepBatches`` whose workers
build whole step batches with the strategy's builder (MoCo's augmentations, ARNIQA's distortion
compositions, bnstats' patches), then ``batch.to(runtime)`` and the step, timed per phase.  The
share is the time the trainer is not computing the model (waiting on ``next(loader)`` plus
normalising), over the whole step.  The first step (worker start-up, first decodes) is not counted.

Run:  python benchmarks/bench_pretrainers.py [--only moco,arniqa] [--backbone resnet50] [--batch 16]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

import common
from common import Result, ratio_result

NAMES = ("moco", "arniqa", "bnstats")
ROWS = {"moco": "3d", "arniqa": "3e", "bnstats": "3f"}
TITLES = {"moco": "MoCo v2", "arniqa": "ARNIQA", "bnstats": "bnstats"}


def method_class(name: str):
    from biqabench.components.plugins import registry

    return registry("pretrainers").get(name).method_class()


def _crops(cfg, step: int, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    from biqabench.training.pretrain_data import CropDataset, default_data, list_images, step_samples

    ds = CropDataset(list_images(default_data()), cfg.crop_size, seed)
    samples = list(step_samples(step, cfg.batch_size))
    return torch.stack([ds[i] for i in samples]), samples


def _trainers(name: str, backbone: str, batch: int, seed: int):
    """(ours: bf16 + channels_last, reference: the same initial model in fp32 NCHW), and the config."""
    from biqabench.runtime.device import Runtime, get_runtime
    from biqabench.training.pretraining import PretrainTrainer

    method = method_class(name)
    cfg = method.load_config(None, {"batch_size": batch, "workers": 0})
    ours = PretrainTrainer.create(method, backbone, cfg, get_runtime("cpu", "bf16"), 1000, seed)
    plain = copy.deepcopy(ours.model).to(memory_format=torch.contiguous_format)
    reference = PretrainTrainer(method(cfg, plain, seed=seed), Runtime(torch.device("cpu"), "fp32"), 1000)
    return ours, reference, cfg


def measure_step(name: str, backbone: str = "resnet50", batch: int = 16, steps: int = 3, seed: int = 0,
                 progress: bool = True) -> Result:
    say = print if progress else (lambda *a, **k: None)
    ours, reference, cfg = _trainers(name, backbone, batch, seed)
    build = ours.method.batch_builder()
    raw = []
    for step in range(steps + 1):
        crops, samples = _crops(cfg, step, seed)
        raw.append(build(crops, step=step, rank=0, samples=samples))
    batches = {"ours": [b.to(ours.runtime) for b in raw], "reference": [b.to(reference.runtime) for b in raw]}
    losses: dict[str, list[float]] = {"ours": [], "reference": []}

    def runner(side: str, trainer):
        def go() -> None:
            i = len(losses[side])
            losses[side].append(trainer.step(batches[side][i % len(raw)], i)["loss"])
        return go

    say(f"  {TITLES[name]} step: {backbone}, {batch} photos, {cfg.patch_size}px views, {steps} timed steps per side",
        flush=True)
    best = common.paired_best({"ours": runner("ours", ours), "reference": runner("reference", reference)},
                               rounds=steps, warmup=1)
    first = losses["ours"][0], losses["reference"][0]
    rel = abs(first[0] - first[1]) / max(abs(first[1]), 1e-12)
    same = rel < 0.10 or name == "bnstats"  # bnstats' "loss" is a relative change: rounding dominates it
    target = 1.0 if name == "bnstats" else 2.0
    return ratio_result(
        f"{ROWS[name]}. {TITLES[name]} step, {backbone.replace('resnet', 'r')}, batch {batch}, {cfg.patch_size}px",
        batch / best["ours"], batch / best["reference"], "img/s", target, extra_ok=same,
        ours_label="PretrainTrainer.step: bf16 autocast + channels_last",
        reference_label="same strategy and initial model, plain fp32 eager",
        notes=f"first-step {ours.method.loss_name} bf16 {first[0]:.4f} vs fp32 {first[1]:.4f} ({rel:.1%} apart"
              f"{'' if same else ', TOO FAR'})" + ("; forward only (no backward)" if name == "bnstats" else ""),
        extra={"step_s_ours": best["ours"], "step_s_ref": best["reference"]},
    )


def measure_pipeline(name: str, backbone: str = "resnet50", batch: int = 16, steps: int = 8, workers: int = 2,
                     seed: int = 0, progress: bool = True, precision: str = "auto") -> Result:
    from biqabench.runtime.device import get_runtime
    from biqabench.training import pretrain_data as pdata
    from biqabench.training.pretraining import PretrainTrainer

    say = print if progress else (lambda *a, **k: None)
    method = method_class(name)
    cfg = method.load_config(None, {"batch_size": batch, "workers": workers})
    runtime = get_runtime("cpu", precision)
    trainer = PretrainTrainer.create(method, backbone, cfg, runtime, steps + 1, seed)
    loader = torch.utils.data.DataLoader(
        pdata.StepBatches(pdata.CropDataset(pdata.list_images(pdata.default_data()), cfg.crop_size, seed), batch,
                          seed, build=trainer.method.batch_builder()),
        batch_size=None, sampler=pdata.StepSampler(0), num_workers=workers, worker_init_fn=pdata.low_priority_worker)
    wait = prep = comp = 0.0
    it = iter(loader)
    say(f"  {TITLES[name]} pipeline: {backbone}, {workers} workers building whole batches, {steps} timed steps",
        flush=True)
    for step in range(steps + 1):
        t0 = time.perf_counter()
        views = next(it)
        t1 = time.perf_counter()
        b = views.to(runtime)
        t2 = time.perf_counter()
        trainer.step(b, step)
        t3 = time.perf_counter()
        if step:  # step 0 pays worker start-up and first decodes
            wait, prep, comp = wait + t1 - t0, prep + t2 - t1, comp + t3 - t2
    del it
    share = (wait + prep) / (wait + prep + comp)
    target = 0.10
    return common.Result(
        f"{ROWS[name]}'. {TITLES[name]} data pipeline, {workers} workers", share * 100, target * 100, "% of step",
        target / share, 1.0, share < target, target_text="< 10%",
        ours_label="time not computing the model: next(loader) (batches built in the workers) + batch.to(runtime)",
        reference_label="target share",
        notes=f"per step: waiting on the loader {wait / steps * 1e3:.0f} ms, normalising {prep / steps * 1e3:.0f} ms, "
              f"model step {comp / steps * 1e3:.0f} ms; {runtime.precision}",
        extra={"wait_s": wait / steps, "to_s": prep / steps, "step_s": comp / steps, "share": share},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(NAMES))
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side for the step comparison")
    ap.add_argument("--pipeline-steps", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    a = ap.parse_args(argv)
    common.set_threads(a.threads)
    for name in a.only.split(","):
        for r in (measure_step(name, a.backbone, a.batch, a.steps),
                  measure_pipeline(name, a.backbone, a.batch, a.pipeline_steps, a.workers)):
            print(f"{r.name}: ours {common.fmt(r.ours)} {r.unit}, reference {common.fmt(r.reference)} {r.unit}, "
                  f"target {r.target_text} -> {'pass' if r.passed else 'FAIL'}\n  {r.notes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
