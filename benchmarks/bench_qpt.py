"""QPT pretraining: step speed against a plain fp32 MoCo step, and whether the data keeps up.

**Step** (same model, same initial weights, same batch of degraded patches, same QC-Loss):

* ours: :meth:`QPTTrainer.step` of ``biqabench pretrain qpt``: model prepared by the Runtime
  (channels_last), bf16 autocast, SGD;
* reference: the same :class:`QPTModel` in fp32, default (NCHW) layout, called eagerly:
  ``loss = model(query, key_pos, key_deg); loss.backward(); optimizer.step()``.

Timed alternately after one warm-up step each; the best step of each side is kept.

**Data pipeline**: the training loop of :func:`run_qpt` on CPU (DataLoader over
:class:`StepBatches` with ``workers`` processes building whole step batches: crops, recipes,
degradations, uint8 patches), then ``batch.to(runtime)`` and ``step``, timed per phase.
"Waiting for data" is the time the trainer is not computing the model: blocked in
``next(loader)`` plus normalising.  The first step (worker start-up, first decodes) is not counted.

Run:  python benchmarks/bench_qpt.py [--backbone resnet50] [--batch 16] [--steps 3] [--pipeline-steps 8]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from typing import Callable

import torch

import common
from common import Result, ratio_result


def _config(batch: int, workers: int = 2, **values):
    from biqabench_plugins.qpt.pretrainer import load_config

    return load_config(None, {"batch_size": batch, "workers": workers, **values})


def _crops(cfg, step: int, seed: int = 0) -> torch.Tensor:
    """Pristine uint8 crops of step ``step``, exactly as the run's DataLoader would give them."""
    from biqabench_plugins.qpt.data import CropDataset, list_images
    from biqabench_plugins.qpt.pretrainer import default_data

    ds = CropDataset(list_images(default_data()), cfg.crop_size, seed)
    b = cfg.batch_size
    return torch.stack([ds[i] for i in range(step * b, (step + 1) * b)])


def _contiguous(batch):
    """A copy of a QPTBatch with every tensor in the default (NCHW) layout."""
    return dataclasses.replace(batch, query=batch.query.contiguous(), key_pos=batch.key_pos.contiguous(),
                               key_deg=batch.key_deg.contiguous())


def measure_step(backbone: str = "resnet50", batch: int = 16, steps: int = 3, seed: int = 0, patch: int = 0,
                 progress: bool = True) -> Result:
    """``patch``: patch size (0: the config's, 64 px on CPU); crops are at least twice as large."""
    from biqabench.runtime.device import Runtime, get_runtime
    from biqabench_plugins.qpt.pretrainer import QPTTrainer

    say = print if progress else (lambda *a, **k: None)
    cfg = _config(batch)
    if patch and patch != cfg.patch_size:
        cfg = _config(batch, patch_size=patch, crop_size=max(cfg.crop_size, 2 * patch))
    runtime = get_runtime("cpu", "bf16")
    trainer = QPTTrainer.build(backbone, cfg, runtime, total_steps=1000, seed=seed)
    # the reference: the same initial model, back in the default layout, trained in plain fp32
    plain = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
    plain_runtime = Runtime(torch.device("cpu"), "fp32")
    plain_trainer = QPTTrainer(plain, cfg, plain_runtime, total_steps=1000, seed=seed)
    opt = plain_trainer.optimizer

    # the same degraded patches for both sides: the run's make_batch, then back to the default layout
    fast_batches = [trainer.make_batch(_crops(cfg, step, seed), step) for step in range(steps + 1)]
    batches = [_contiguous(b) for b in fast_batches]
    keys = batch + fast_batches[0].key_deg.shape[0] * fast_batches[0].key_deg.shape[1]
    losses: dict[str, list[float]] = {"ours": [], "reference": []}
    counter = {"ours": 0, "reference": 0}

    def ours() -> None:
        i = counter["ours"]
        losses["ours"].append(trainer.step(fast_batches[i], i)["loss"])
        counter["ours"] += 1

    def reference() -> None:  # the textbook MoCo step, same lr schedule and loss
        i = counter["reference"]
        from biqabench_plugins.qpt.pretrainer import lr_at

        for group in opt.param_groups:
            group["lr"] = lr_at(cfg.optim, i, 1000)
        plain.train()
        _, _, cpu_gen = plain_trainer.generators(i)
        b = batches[i]
        loss, _ = plain(b.query, b.key_pos, b.key_deg, cpu_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses["reference"].append(float(loss.detach()))
        counter["reference"] += 1

    say(f"  QPT step: {backbone}, {batch} images, patch {cfg.patch_size}px "
        f"({batch} queries + {keys} keys), {steps} timed steps per side", flush=True)
    best = common.paired_best({"ours": ours, "reference": reference}, rounds=steps, warmup=1)
    first = losses["ours"][0], losses["reference"][0]
    rel = abs(first[0] - first[1]) / max(abs(first[1]), 1e-12)
    same = rel < 0.10  # bf16 rounding of unit-norm embeddings moves the loss by a few % at T=0.2
    return ratio_result(
        f"3a. QPT step, {backbone.replace('resnet', 'r')}, batch {batch}, {cfg.patch_size}px", batch / best["ours"],
        batch / best["reference"], "img/s", 2.0, extra_ok=same,
        ours_label="QPTTrainer.step: bf16 autocast + channels_last",
        reference_label="same QPTModel, plain fp32 eager",
        notes=f"{cfg.patch_size}px patches, queue {cfg.queue_size}; first-step QC-Loss bf16 {first[0]:.4f} "
              f"vs fp32 {first[1]:.4f} ({rel:.1%} apart{'' if same else ', TOO FAR'})",
        extra={"step_s_ours": best["ours"], "step_s_ref": best["reference"], "loss_ours": first[0],
               "loss_ref": first[1]},
    )


def measure_pipeline(backbone: str = "resnet50", batch: int = 16, steps: int = 8, workers: int = 2, seed: int = 0,
                     progress: bool = True, profile: bool = False, precision: str = "auto") -> Result:
    """Phase times of the real loop; the row's figure is the share of step time spent on data.

    The loop is ``run_qpt``'s: a DataLoader over :class:`StepBatches` whose workers build whole
    step batches (crops, recipes, degradations, uint8 patches), then ``batch.to(runtime)``
    (normalise) and ``trainer.step``.  ``profile``: also return cProfile's top entries of the
    training process (what it spends its non-model time on).
    """
    from biqabench.runtime.device import get_runtime
    from biqabench_plugins.qpt import data as qdata
    from biqabench_plugins.qpt.pretrainer import QPTTrainer, default_data

    say = print if progress else (lambda *a, **k: None)
    cfg = _config(batch, workers)
    runtime = get_runtime("cpu", precision)  # auto: what `pretrain qpt` picks on this CPU
    trainer = QPTTrainer.build(backbone, cfg, runtime, total_steps=steps + 1, seed=seed)
    paths = qdata.list_images(default_data())
    loader = torch.utils.data.DataLoader(
        qdata.StepBatches(qdata.CropDataset(paths, cfg.crop_size, seed), batch, seed, views=trainer.view_spec()),
        batch_size=None, sampler=qdata.StepSampler(0), num_workers=workers,
        worker_init_fn=qdata.low_priority_worker,
    )
    wait = prep = comp = 0.0
    it = iter(loader)
    say(f"  QPT pipeline: {backbone}, {workers} workers building whole batches, {steps} timed steps", flush=True)
    prof = None
    for step in range(steps + 1):
        if step == 1 and profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        views = next(it)
        t1 = time.perf_counter()
        b = views.to(runtime)
        t2 = time.perf_counter()
        trainer.step(b, step)
        t3 = time.perf_counter()
        if step:  # step 0 pays worker start-up and first decodes
            wait, prep, comp = wait + t1 - t0, prep + t2 - t1, comp + t3 - t2
    if prof is not None:
        prof.disable()
    del it
    total = wait + prep + comp
    share = (wait + prep) / total
    target = 0.10
    extra = {"wait_s": wait / steps, "make_batch_s": prep / steps, "step_s": comp / steps, "share": share}
    if prof is not None:
        import io as _io
        import pstats

        out = _io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(12)
        extra["profile"] = out.getvalue()
    return common.Result(
        f"3b. QPT data pipeline, {workers} workers", share * 100, target * 100, "% of step", target / share,
        1.0, share < target, target_text="< 10%",
        ours_label="time not computing the model: next(loader) (whole batches built in the workers) + "
                   "batch.to(runtime) (uint8 -> normalised float)",
        reference_label="target share",
        notes=f"per step: waiting on the loader {wait / steps * 1e3:.0f} ms, normalising {prep / steps * 1e3:.0f} ms, "
              f"model step {comp / steps * 1e3:.0f} ms; {cfg.negative_degradations + 1} degradations of "
              f"{cfg.crop_size} px crops per image, built in {workers} niced worker(s); {runtime.precision}",
        extra=extra,
    )


def measure_compile(backbone: str = "resnet18", batch: int = 16, steps: int = 3, seed: int = 0, patch: int = 64,
                    progress: bool = True) -> Result:
    """``--compile`` against the eager step: same initial model, same batches, bf16 on CPU.

    Both are :meth:`QPTTrainer.step`; the compiled trainer pays inductor's compilation in its
    warm-up steps (reported, not timed).  Steps alternate; the best of each is kept.
    """
    from biqabench.runtime.device import Runtime, get_runtime
    from biqabench_plugins.qpt.pretrainer import QPTTrainer

    say = print if progress else (lambda *a, **k: None)
    cfg = _config(batch, patch_size=patch, crop_size=2 * patch)
    eager_rt = get_runtime("cpu", "bf16")
    eager = QPTTrainer.build(backbone, cfg, eager_rt, total_steps=1000, seed=seed)
    comp_rt = Runtime(eager_rt.device, eager_rt.precision, compile=True)
    compiled = QPTTrainer.build(backbone, cfg, comp_rt, total_steps=1000, seed=seed)
    batches = [eager.make_batch(_crops(cfg, step, seed), step) for step in range(steps + 2)]
    say(f"  QPT --compile: {backbone}, {batch} images, {patch}px; compiling (minutes on a small CPU)...", flush=True)
    t = time.perf_counter()
    first = compiled.step(batches[0], 0)["loss"], eager.step(batches[0], 0)["loss"]
    compiled.step(batches[1], 1)  # a second call may recompile (dynamic shapes are not marked)
    eager.step(batches[1], 1)
    t_compile = time.perf_counter() - t
    counter = {"c": 2, "e": 2}

    def run(which: str, trainer) -> Callable[[], None]:
        def go() -> None:
            i = counter[which]
            trainer.step(batches[min(i, len(batches) - 1)], i)
            counter[which] += 1
        return go

    best = common.paired_best({"compiled": run("c", compiled), "eager": run("e", eager)}, rounds=steps, warmup=0)
    rel = abs(first[0] - first[1]) / max(abs(first[1]), 1e-12)
    return ratio_result(
        f"3c. QPT step --compile, {backbone.replace('resnet', 'r')}, batch {batch}, {patch}px",
        batch / best["compiled"], batch / best["eager"], "img/s", 1.0,
        ours_label="QPTTrainer.step with --compile (torch.compile, inductor), bf16",
        reference_label="the same step eager, bf16 (the default path)",
        notes=f"compilation and first steps {t_compile:.0f} s (not timed); first-step QC-Loss compiled "
              f"{first[0]:.4f} vs eager {first[1]:.4f} ({rel:.1%} apart)",
        extra={"compile_s": t_compile, "loss_compiled": first[0], "loss_eager": first[1]},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side for the step comparison")
    ap.add_argument("--patch", type=int, default=0, help="patch size of the step comparison (0: the config's)")
    ap.add_argument("--pipeline-steps", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    a = ap.parse_args(argv)
    common.set_threads(a.threads)
    for r in (measure_step(a.backbone, a.batch, a.steps, patch=a.patch),
              measure_pipeline(a.backbone, a.batch, a.pipeline_steps, a.workers)):
        print(f"{r.name}: ours {common.fmt(r.ours)} {r.unit}, reference {common.fmt(r.reference)} {r.unit}, "
              f"target {r.target_text} -> {'pass' if r.passed else 'FAIL'}\n  {r.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
