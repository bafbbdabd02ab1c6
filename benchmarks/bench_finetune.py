"""Fine-tuning step speed: biqabench's training step against a plain fp32 eager loop.

Same model (HyperIQA on ResNet-50, identical initial weights), same batch of 224 px patches,
same optimiser (the head recipe's Adam with its two learning-rate groups):

* **ours**: the step of :func:`biqabench.training.engine.train_head`: model prepared by the Runtime
  (channels_last), input moved with ``runtime.to``, loss under ``runtime.autocast()`` (bf16),
  backward, optimiser step;
* **reference**: the textbook loop: fp32 weights and inputs in the default (NCHW) layout,
  ``loss = model.loss(x, mos); loss.backward(); optimizer.step()``.

Steps are timed alternately (ours, reference, ours, ...) after one warm-up step each; the best
step of each side is kept.  Both start from the same weights, and their first-step losses are
compared as a check that the fast path computes the same objective.

Run:  python benchmarks/bench_finetune.py [--batch 16] [--steps 3] [--backbone resnet50]
"""

from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch

import common
from common import Result, ratio_result


def patch_batch(batch: int, size: int = 224, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised crops of the embedded demo photos and their normalised pseudo-MOS."""
    from biqabench.data import ImageCache, image_patches, load_dataset

    table = load_dataset("demo-a")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(table.paths), size=batch, replace=len(table.paths) < batch)
    cache = ImageCache(memory_bytes=0)
    x = torch.cat([image_patches(cache.get(table.paths[i]), size, 1, seed=(seed, int(i)), train=True) for i in idx])
    mos = torch.as_tensor(table.mos_norm[idx], dtype=torch.float32)
    return x, mos


def measure(batch: int = 16, steps: int = 3, backbone: str = "resnet50", patch: int = 224, seed: int = 0,
            progress: bool = True, precision: str = "bf16") -> Result:
    from biqabench.components.backbones import create_backbone
    from biqabench.runtime.device import get_runtime
    from biqabench.training.engine import make_optimizer
    from biqabench.components.heads import head_spec

    say = print if progress else (lambda *a, **k: None)
    spec = head_spec("hyperiqa")
    recipe = spec.recipe
    torch.manual_seed(seed)
    base = spec.build(create_backbone(backbone, weights="random"), recipe)
    x, mos = patch_batch(batch, patch, seed)

    runtime = get_runtime("cpu", precision)  # "auto": bf16 only where the CPU runs it natively
    fast = runtime.prepare(copy.deepcopy(base)).train()
    fast_opt = make_optimizer(fast, recipe, runtime)  # fused where torch has it
    scaler = runtime.grad_scaler()

    plain = copy.deepcopy(base).train()
    plain_opt = torch.optim.Adam([g for g in plain.param_groups(recipe) if g["params"]], lr=recipe.lr,
                                 weight_decay=recipe.weight_decay)  # torch's default (foreach) update

    losses: dict[str, list[float]] = {"ours": [], "reference": []}

    def ours() -> None:  # engine.train_head's inner loop body
        xb, yb = runtime.to(x), mos.to(runtime.device)
        with runtime.autocast():
            loss = fast.loss(xb, yb)
        fast_opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(fast_opt)
        scaler.update()
        losses["ours"].append(loss.item())

    def reference() -> None:
        loss = plain.loss(x, mos)
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        plain_opt.step()
        losses["reference"].append(loss.item())

    say(f"  fine-tune: {backbone}, batch {batch}x{patch}px, {steps} timed steps per side", flush=True)
    best = common.paired_best({"ours": ours, "reference": reference}, rounds=steps, warmup=1)
    first = losses["ours"][0], losses["reference"][0]
    rel = abs(first[0] - first[1]) / max(abs(first[1]), 1e-12)
    same = rel < 0.05
    return ratio_result(
        f"2. fine-tune step, hyperiqa {backbone.replace('resnet', 'r')}, batch {batch}",
        batch / best["ours"], batch / best["reference"], "patch/s", 2.0, extra_ok=same,
        ours_label=f"engine step: Runtime {runtime.precision}"
                   f"{' autocast' if runtime.amp_dtype is not None else ''} + channels_last + fused Adam",
        reference_label="plain fp32 eager loop (NCHW)",
        notes=f"{patch}px patches; first-step loss {runtime.precision} {first[0]:.4f} vs fp32 {first[1]:.4f} "
              f"({rel:.1%} apart{'' if same else ', TOO FAR'})",
        extra={"step_s_ours": best["ours"], "step_s_ref": best["reference"], "loss_ours": first[0],
               "loss_ref": first[1], "batch": batch, "patch": patch},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side (best kept)")
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--patch", type=int, default=224)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--precision", default="bf16", help="ours: bf16 | fp32 | auto (bf16 where native)")
    a = ap.parse_args(argv)
    common.set_threads(a.threads)
    r = measure(a.batch, a.steps, a.backbone, a.patch, precision=a.precision)
    print(f"{r.name}: ours {common.fmt(r.ours)} {r.unit}, plain fp32 {common.fmt(r.reference)} {r.unit}, "
          f"{r.ratio:.2f}x (target {r.target_text}) -> {'pass' if r.passed else 'FAIL'}\n  {r.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
