"""Run every speed benchmark, print one table, and keep it in benchmarks/README.md.

Each row is a ratio measured in this run against a reference measured alongside it (see
``common.py``), so the table holds on a noisy machine; absolute figures are shown for context.

    python benchmarks/run_all.py            # full sizes (about 10 minutes on 2 busy cores)
    python benchmarks/run_all.py --quick    # smaller sizes (a few minutes)
    python benchmarks/run_all.py --only scoring,qpt --no-readme

Threads: by default every benchmark runs torch with ONE intra-op thread (``--threads 0`` keeps
torch's default of one per core).  On a small shared CPU, a second OpenMP thread mostly waits
at barriers for a core held by a neighbour: measured here, a ResNet-50 QPT step took 0.5 s with
one thread and 2-18 s with two while other jobs ran.  Both sides of every ratio always get the
same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


# ------------------------------------------------------------------------------------------------
# the benchmarks, each a function (quick) -> list of rows
# ------------------------------------------------------------------------------------------------
def scoring(quick: bool):
    import bench_scoring

    return [bench_scoring.measure(n_images=4 if quick else 8, batch_images=4)]


def finetune(quick: bool):
    import bench_finetune

    steps = 2 if quick else 3
    # a timm backbone, on the runtime's automatic precision: emulated bf16 (CPUs without AMX or
    # AVX512-BF16) made ConvNeXt's step 17x slower than fp32 here, so "auto" keeps fp32 there
    timm_row = bench_finetune.measure(batch=16, steps=steps, backbone="convnext_tiny", precision="auto")
    timm_row.name = "2b. fine-tune step, hyperiqa convnext_tiny (timm), batch 16"
    return [bench_finetune.measure(batch=16, steps=steps), timm_row]


def qpt(quick: bool):
    import bench_qpt

    steps = 2 if quick else 3
    return [bench_qpt.measure_step("resnet50", 16, steps),
            bench_qpt.measure_step("resnet50", 16, steps, patch=128),
            bench_qpt.measure_pipeline("resnet50", 16, steps=4 if quick else 8, workers=2)]


def pretrainers(quick: bool):
    import bench_pretrainers

    steps = 2 if quick else 3
    rows = []
    for name in bench_pretrainers.NAMES:
        rows += [bench_pretrainers.measure_step(name, "resnet50", 16, steps),
                 bench_pretrainers.measure_pipeline(name, "resnet50", 16, steps=4 if quick else 8, workers=2)]
    return rows


def compile_step(quick: bool):
    import bench_qpt

    return [bench_qpt.measure_compile("tiny" if quick else "resnet18", 16, steps=2 if quick else 3)]


def degradations(quick: bool):
    import bench_degradations

    r = bench_degradations.measure(batch=32 if quick else 64, size=128, repeats=2 if quick else 3, threads=1)
    r.name = "4. " + r.name if not r.name[:1].isdigit() else r.name
    return [r]


def data(quick: bool):
    """The decoded-image cache: epoch 2 (cached) against epoch 1 (decoding), two patch recipes."""
    import numpy as np

    import bench_data
    from common import ratio_result

    from biqabench.data import IQATable

    n = 12 if quick else 24
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "img").mkdir()
        paths = bench_data.make_jpegs(tmp / "img", n, 1024, 768)
        table = IQATable("bench", tmp, paths, [p.name for p in paths], np.linspace(0, 100, n), (0, 100))
        for recipe in ("cpu", "paper"):
            patch, per_image = bench_data.RECIPES[recipe]
            t = bench_data.measure(table, patch, per_image, 32, 0, tmp / f"decoded-{recipe}")
            rows.append(ratio_result(
                f"5. data, epoch 2 vs 1, {recipe} recipe", t["epoch2"], t["epoch1"], "s/epoch", 3.0,
                higher_is_better=False, ours_label="epoch 2: crops from the decoded-image cache",
                reference_label="epoch 1: decode every image once",
                notes=f"{n} JPEGs 1024x768, {per_image} patches of {patch}px per image; an epoch decoding "
                      f"for every patch takes {t['every']:.2f} s ({t['every'] / t['epoch2']:.1f}x the cached one), "
                      f"a fresh cache on the disk layer {t['disk']:.2f} s",
                extra=t))
    return rows


def memory(quick: bool):
    import bench_memory

    return [bench_memory.measure_scoring(100 if quick else 250, 400 if quick else 1000),
            bench_memory.measure_qpt(50, 400),
            bench_memory.measure_qpt_steps(20 if quick else 200, 200 if quick else 2000)]


def roofline(quick: bool):
    import bench_roofline

    return [bench_roofline.measure(batch=8 if quick else 16, rounds=2 if quick else 3)]


#: Run only when named in --only: compiling a step with inductor took 11 minutes for the tiny
#: backbone on a loaded 2-core machine (the first run; kernels are cached afterwards).
OPT_IN = ("compile",)

BENCHMARKS: dict[str, Callable] = {
    "scoring": scoring, "finetune": finetune, "qpt": qpt, "pretrainers": pretrainers, "compile": compile_step, "degradations": degradations,
    "data": data,
    "memory": memory, "roofline": roofline,
}


# ------------------------------------------------------------------------------------------------
# table and README
# ------------------------------------------------------------------------------------------------
def verdict(r) -> str:
    if r.extra.get("error"):
        return "error"
    if r.target_text == "report":
        return "info"
    return "pass" if r.passed else "FAIL"


def table_rows(results) -> list[list[str]]:
    from common import fmt

    rows = []
    for r in results:
        if r.extra.get("error"):
            rows.append([r.name, "-", "-", "-", r.target_text, "error"])
            continue
        ratio = f"{r.ratio:.0%}" if r.target_text == "report" else f"{r.ratio:.2f}x"
        rows.append([r.name, f"{fmt(r.ours)} {r.unit}", f"{fmt(r.reference)} {r.unit}", ratio, r.target_text,
                     verdict(r)])
    return rows


HEADERS = ["benchmark", "ours", "reference", "ratio", "target", "result"]


def render_markdown(results, machine: dict, args: argparse.Namespace, wall: float) -> str:
    from tabulate import tabulate

    lines = [START, "", f"Run {machine['date']} with `python benchmarks/run_all.py"
             f"{' --quick' if args.quick else ''}{f' --threads {args.threads}' if args.threads != 1 else ''}` "
             f"({wall / 60:.1f} min).", "",
             "| machine | |", "|---|---|"]
    labels = {"cpu": "CPU", "cores": "cores", "cpu_features": "matrix/vector units", "torch_threads": "torch threads",
              "gpu": "GPU", "torch": "torch", "python": "Python", "load_average": "load average at start"}
    lines += [f"| {labels[k]} | {machine[k]} |" for k in labels]
    lines += ["", tabulate(table_rows(results), headers=HEADERS, tablefmt="github"), "", "What each row compared:", ""]
    for r in results:
        what = f"ours = {r.ours_label}; reference = {r.reference_label}." if r.ours_label else ""
        lines.append(f"- **{r.name}**: {what} {r.notes}".rstrip())
    lines += ["", END]
    return "\n".join(lines)


def write_readme(block: str) -> None:
    text = README.read_text() if README.is_file() else "# Speed benchmarks\n\n"
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Latest results\n\n" + block + "\n"
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, README)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    ap.add_argument("--only", default="", help=f"comma list of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every benchmark (0: torch's default)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.threads > 0:  # before torch is imported, so child processes get it too
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(HERE))
    import common
    from tabulate import tabulate

    common.set_threads(args.threads)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or [n for n in BENCHMARKS if n not in OPT_IN]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    machine = common.machine()
    print(f"{machine['cpu']}, {machine['cores']} cores ({machine['cpu_features']}), torch {machine['torch']}, "
          f"{machine['torch_threads']} thread(s), load {machine['load_average']}", flush=True)
    results = []
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"\n== {name}", flush=True)
        try:
            rows = BENCHMARKS[name](args.quick)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            rows = [common.Result(f"{name}", float("nan"), float("nan"), "", float("nan"), 0.0, False,
                                  target_text="-", notes=f"error: {type(exc).__name__}: {exc}",
                                  extra={"error": str(exc)})]
        for r in rows:
            print(f"  {r.name}: {verdict(r)} ({r.ratio:.3g}, target {r.target_text}); {r.notes}", flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
        results += rows
    wall = time.perf_counter() - t_all

    print()
    print(tabulate(table_rows(results), headers=HEADERS, tablefmt="simple"))
    print(f"\n{sum(verdict(r) == 'pass' for r in results)} pass, {sum(verdict(r) == 'FAIL' for r in results)} fail, "
          f"{sum(verdict(r) == 'error' for r in results)} error; {wall / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": [r.as_dict() for r in results]}, indent=2,
                                        default=str))
    if not args.no_readme:
        write_readme(render_markdown(results, machine, args, wall))
        print(f"table written to {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
