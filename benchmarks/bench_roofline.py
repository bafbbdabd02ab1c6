"""How close the bf16 ResNet-50 forward comes to this machine's bf16 matrix-multiply speed.

FLOPs of the forward are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (convs
and matmuls, 2 per multiply-add); its time is measured in biqabench's inference setting (bf16
autocast, channels_last, ``inference_mode``).  The ceiling is a large bf16 matrix product timed
alternately with it in the same process: the best this CPU does on the most favourable
workload, not a datasheet figure.  The ratio says how much headroom is left in the network
itself (memory-bound BatchNorm/ReLU/adds, small late-stage maps), as opposed to the data path.
An fp32 matrix product is timed too: the bf16/fp32 matmul ratio is the scale of every
bf16-vs-fp32 speed-up in the table (convolutions can beat it somewhat, because fp32 convolutions
are further from their peak than fp32 matmuls).

Run:  python benchmarks/bench_roofline.py [--batch 16] [--size 224] [--matmul 2048]
"""

from __future__ import annotations

import argparse
import sys

import torch

import common
from common import Result


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def measure(batch: int = 16, size: int = 224, matmul: int = 2048, rounds: int = 3, progress: bool = True) -> Result:
    from biqabench.components.backbones import create_backbone
    from biqabench.runtime.device import get_runtime

    say = print if progress else (lambda *a, **k: None)
    runtime = get_runtime("cpu", "bf16")
    model = runtime.prepare(create_backbone("resnet50", weights="random")).eval()
    flops = forward_flops(model, torch.randn(1, 3, size, size)) * batch  # linear in the batch
    x = runtime.to(torch.randn(batch, 3, size, size))
    a = torch.randn(matmul, matmul, dtype=torch.bfloat16)
    b = torch.randn(matmul, matmul, dtype=torch.bfloat16)
    a32, b32 = a.float(), b.float()
    mm_flops = 2 * matmul ** 3

    def forward() -> None:
        with torch.inference_mode(), runtime.autocast():
            model(x)

    def product() -> None:
        torch.mm(a, b)

    def product_fp32() -> None:
        torch.mm(a32, b32)

    say(f"  roofline: resnet50 forward, batch {batch}x{size}px, vs {matmul}^3 bf16 matmul", flush=True)
    best = common.paired_best({"forward": forward, "matmul": product, "matmul_fp32": product_fp32}, rounds=rounds)
    achieved = flops / best["forward"] / 1e9
    ceiling = mm_flops / best["matmul"] / 1e9
    fp32 = mm_flops / best["matmul_fp32"] / 1e9
    return Result(
        "7. resnet50 bf16 forward vs bf16 matmul", achieved, ceiling, "GFLOP/s", achieved / ceiling, 0.0, True,
        target_text="report", ours_label=f"resnet50 forward (bf16, channels_last), batch {batch}",
        reference_label=f"bf16 matmul {matmul}x{matmul}",
        notes=f"{flops / batch / 1e9:.2f} GFLOP per {size}px image (FlopCounterMode); "
              f"achieved {achieved:.0f} of {ceiling:.0f} GFLOP/s = {achieved / ceiling:.0%} of the matmul rate; "
              f"an fp32 matmul runs at {fp32:.0f} GFLOP/s in the same run: bf16 is {ceiling / fp32:.1f}x fp32 "
              f"on this CPU's matrix units (the scale for every bf16-vs-fp32 speed-up above)",
        extra={"flops_per_image": flops / batch, "forward_s": best["forward"], "matmul_s": best["matmul"],
               "matmul_fp32_gflops": fp32},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--matmul", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    a = ap.parse_args(argv)
    common.set_threads(a.threads)
    r = measure(a.batch, a.size, a.matmul, a.rounds)
    print(f"{r.name}: {common.fmt(r.ours)} of {common.fmt(r.reference)} {r.unit} = {r.ratio:.0%}\n  {r.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
