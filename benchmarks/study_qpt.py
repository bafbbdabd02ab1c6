"""Does QPT at CPU scale learn quality?  Pretrain on real photos, probe at doubling steps.

Protocol (all offline, CPU):

1. Pretrain a backbone (resnet18 by default) with QPT on an unlabelled photo folder (default
   ``../shared/data/imagenet-sample``: 600 ImageNet photos, QPT's pretraining source), saving
   the query encoder's backbone at step 0 (the random initialisation QPT starts from), then at
   doubling steps (``--first`` 25: 25, 50, 100, ...) up to ``--steps``.
2. Probe every snapshot with ``biqabench.evaluation.probe`` on an IQA set (default ``clive-dev``): frozen
   features of each whole image and of its half-scale copy, mean + std per stage, ridge with
   alpha by inner CV on the training part, the same seeded content-aware splits as ``eval``.
3. Write ``study.csv`` / ``study.md`` (median SRCC, 95% CI, paired Wilcoxon signed-rank test of
   each step against step 0 over the same splits, splits up) and ``study.png`` (SRCC vs steps)
   into ``--out``.

Snapshots are taken from one run (one cosine schedule over ``--steps``), so the step-N snapshot
is not a finished N-step run: its learning rate has not decayed yet.

Run:  nice -n 5 python benchmarks/study_qpt.py --config configs/qpt_pretrain_cpu.yaml --steps 400 \
          --out results/study/qpt-cpu
      python benchmarks/study_qpt.py --probe-only --out results/study/qpt-cpu   # re-probe snapshots
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import os

HERE = Path(__file__).resolve().parent
#: ``$BIQABENCH_SHARED_DATA`` or ``../shared/data`` beside the checkout (as the tests look for it).
SHARED = Path(os.environ.get("BIQABENCH_SHARED_DATA", HERE.parents[1] / "shared" / "data"))


def snapshot_steps(first: int, total: int) -> list[int]:
    """0, first, 2*first, ... (doubling) and ``total``."""
    steps, s = [0], first
    while s < total:
        steps.append(s)
        s *= 2
    return steps + [total]


def pretrain_snapshots(backbone: str, config: str | None, data: Path, steps: int, first: int, out: Path,
                       seed: int = 0, overrides: dict | None = None, precision: str = "fp32",
                       resume: bool = False) -> list[Path]:
    """One ``biqabench pretrain qpt`` run (``run_qpt``) of ``steps`` steps; the query encoder's
    backbone at every snapshot step, as files.  Snapshots come from the run's own checkpoints
    (``checkpoint_every`` = the first snapshot step), so the loop is exactly the one users run."""
    import yaml

    from biqabench.base import io
    from biqabench.components.backbones import create_backbone
    from biqabench.components.pretrain import PretrainRequest
    from biqabench.components.weights import WeightsStore
    from biqabench_plugins.qpt.pretrainer import CHECKPOINT, load_config, run_qpt

    snaps = out / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    values = {**(overrides or {}), "checkpoint_every": first}
    cfg_file = out / "qpt_config.yaml"
    cfg_file.write_text(yaml.safe_dump({**(yaml.safe_load(Path(config).read_text()) if config else {}), **values}))
    cfg = load_config(cfg_file)  # validated before anything runs
    wanted = set(snapshot_steps(first, steps))
    files: list[Path] = []

    def snapshot(step: int, state: dict) -> None:
        path = snaps / f"step{step:05d}.safetensors"
        io.save_safetensors({k: v.contiguous() for k, v in state.items()}, path)
        files.append(path)

    torch.manual_seed(seed)  # QPTTrainer.build seeds the same way: this is the run's step-0 backbone
    if not (resume and (snaps / "step00000.safetensors").is_file()):
        snapshot(0, create_backbone(backbone, weights="random").state_dict())
    run_dir = out / "run"
    prefix = "encoder_q.backbone."

    def on_step(step: int, stats: dict) -> None:  # the checkpoint of step-1 was written after it
        if step - 1 in wanted and 0 < step - 1 < steps and not (snaps / f"step{step - 1:05d}.safetensors").is_file():
            model = io.load_torch(run_dir / CHECKPOINT, map_location="cpu")["model"]
            snapshot(step - 1, {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix)})

    t0 = time.time()
    record = run_qpt(PretrainRequest(backbone=backbone, data=str(data), steps=steps, config=str(cfg_file), seed=seed,
                                     device="cpu", precision=precision, run_dir=run_dir, resume=resume,
                                     store=WeightsStore(out / "weights")), on_step=on_step)
    from biqabench.components.weights import read_state_dict

    snapshot(steps, read_state_dict(record.file))
    io.write_json(out / "pretrain.json", {"backbone": backbone, "config": config, "overrides": overrides or {},
                                          "steps": steps, "seed": seed, "data": str(data), "precision": precision,
                                          "wall_s": _run_wall(run_dir, time.time() - t0), "weights": str(record.file),
                                          "qpt_config": __import__("dataclasses").asdict(cfg)})
    return files


def _run_wall(run_dir: Path, fallback: float) -> float:
    """The pretraining's wall time over all its sessions (run.json counts resumed runs whole)."""
    try:
        return float(json.loads((run_dir / "run.json").read_text())["wall_time_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return round(fallback, 1)


# -- probing the snapshots -----------------------------------------------------------------------
def probe_snapshots(out: Path, backbone: str, dataset: str, data_root: Path, size: int, splits: int,
                    steps: list[int] | None = None) -> list[dict]:
    """``biqabench probe`` of every snapshot in ``out/snapshots`` (one run folder each, under
    ``out/probes``); returns the per-split test SRCC of each."""
    import pandas as pd

    from biqabench.evaluation.probe import ProbeConfig, run_probe

    found = sorted((out / "snapshots").glob("step*.safetensors"))
    rows = []
    for f in found:
        step = int(f.stem[4:])
        if steps is not None and step not in steps:
            continue
        run_dir = out / "probes" / f"{f.stem}-size{size}"
        if not (run_dir / "metrics.csv").is_file() or json.loads((run_dir / "manifest.json").read_text()).get(
                "status") != "finished":
            cfg = ProbeConfig(weights=str(f), backbone=backbone, train=dataset, data_root=str(data_root),
                              size=size, splits=splits, device="cpu", precision="fp32")
            run_probe(cfg, run_dir=run_dir, progress=True)
        m = pd.read_csv(run_dir / "metrics.csv")
        m = m[m.kind == "intra"].sort_values("split")
        rows.append({"step": step, "size": size, "run": str(run_dir), "srcc": m.srcc.to_list(),
                     "plcc": m.plcc.to_list()})
    return rows


def study_table(rows: list[dict]):
    """Median SRCC with bootstrap CI per snapshot, and the paired comparison with step 0."""
    import pandas as pd
    from scipy.stats import wilcoxon

    from biqabench.base.metrics import aggregate

    base = {r["size"]: np.asarray(r["srcc"]) for r in rows if r["step"] == 0}
    out = []
    for r in sorted(rows, key=lambda r: (r["size"], r["step"])):
        v = np.asarray(r["srcc"])
        agg = aggregate(v)
        row = {"probe size": r["size"], "step": r["step"], "splits": len(v), "SRCC median": agg["median"],
               "CI low": agg["ci_low"], "CI high": agg["ci_high"], "PLCC median": float(np.median(r["plcc"]))}
        b = base.get(r["size"])
        if b is not None and len(b) == len(v) and r["step"] != 0:
            d = v - b
            row.update({"delta vs step 0": float(np.median(d)), "splits up": f"{int((d > 0).sum())}/{len(d)}",
                        "Wilcoxon p": float(wilcoxon(v, b).pvalue) if np.any(d != 0) else 1.0})
        out.append(row)
    return pd.DataFrame(out)


def study_plot(table, path: Path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    by = ["run", "probe size"] if "run" in table.columns else ["probe size"]
    for key, t in table.groupby(by):
        x = t["step"].to_numpy()
        y = t["SRCC median"].to_numpy()
        err = np.vstack([y - t["CI low"].to_numpy(), t["CI high"].to_numpy() - y])
        label = f"{key[0]}, probe at {key[1]} px" if len(by) == 2 else f"probe at {key[0]} px"
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    steps = sorted(int(v) for v in table["step"].unique())
    ax.set_xscale("symlog", linthresh=max(1, min([v for v in steps if v > 0] or [1])))
    ax.set_xticks(steps)
    ax.set_xticklabels([str(v) for v in steps])
    ax.minorticks_off()
    ax.set_xlabel("QPT pretraining steps (0 = the random initialisation)")
    ax.set_ylabel("clive-dev probe SRCC (median, 95% CI)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def probe_main(a, out: Path) -> int:
    from biqabench.results import render

    rows = []
    for size in a.probe_size:
        rows += probe_snapshots(out, a.backbone, a.probe_set, Path(a.probe_root), size, a.splits,
                                steps=a.probe_steps or None)
    table = study_table(rows)
    table.to_csv(out / "study.csv", index=False)
    meta = json.loads((out / "pretrain.json").read_text()) if (out / "pretrain.json").is_file() else {}
    wall = meta.get("wall_s") or (json.loads((out / "losses.json").read_text()).get("wall_s")
                                  if (out / "losses.json").is_file() else None)
    head = (f"QPT {a.backbone} on {meta.get('data', '?')} ({meta.get('overrides') or 'CPU preset'}), "
            f"pretraining wall {wall} s; probe: ridge on frozen features of {a.probe_set}, {a.splits} splits; "
            f"Wilcoxon: two-sided signed-rank test of the per-split SRCC against step 0")
    text = head + "\n\n" + render(table, "markdown") + "\n"
    (out / "study.md").write_text(text)
    study_plot(table, out / "study.png", f"QPT {a.backbone}: probe SRCC vs pretraining steps")
    print(text)
    return 0


def combine(folders: list[Path], plot: Path) -> "object":
    """One table and one plot of several study folders (each labelled by its folder name)."""
    import pandas as pd

    table = pd.concat([pd.read_csv(Path(f) / "study.csv").assign(run=Path(f).name) for f in folders],
                      ignore_index=True)
    plot.parent.mkdir(parents=True, exist_ok=True)
    study_plot(table, plot, "QPT ResNet-18 on imagenet-sample: clive-dev probe SRCC vs steps")
    return table


def _parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs (YAML values; dotted keys nest: optim.lr=0.01)."""
    import yaml

    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--config", default=None, help="QPT config YAML (default: the built-in CPU preset)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="QPT config overrides")
    ap.add_argument("--data", default=str(SHARED / "imagenet-sample"), help="unlabelled photos to pretrain on")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--first", type=int, default=25, help="first snapshot after step 0; then doubling")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="fp32", help="pretraining precision: fp32 | bf16 | auto (bf16 where "
                    "the CPU runs it natively: ~2x on AVX-512-BF16, ~5x on AMX); the probe is always fp32")
    ap.add_argument("--out", help="study folder (snapshots, table, plot)")
    ap.add_argument("--combine", nargs="+", metavar="FOLDER", help="plot these study folders together "
                    "into --plot (nothing is trained or probed)")
    ap.add_argument("--plot", default="study.png", help="with --combine: the figure to write")
    ap.add_argument("--probe-set", default="clive", help="dataset the snapshots are probed on")
    ap.add_argument("--probe-root", default=str(SHARED / "clive-dev"), help="its folder")
    ap.add_argument("--probe-size", type=int, nargs="+", default=[384],
                    help="probe input size(s), shorter side in px (biqabench probe --size)")
    ap.add_argument("--probe-steps", type=int, nargs="*", default=[], help="probe only these snapshots")
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--resume", action="store_true", help="continue an interrupted study's pretraining from its "
                    "last checkpoint (same options; snapshots already taken are kept)")
    ap.add_argument("--pretrain-only", action="store_true")
    ap.add_argument("--probe-only", action="store_true", help="probe the snapshots already in --out")
    a = ap.parse_args(argv)
    if a.combine:
        from biqabench.results import render

        print(render(combine([Path(f) for f in a.combine], Path(a.plot)), "markdown"))
        return 0
    if not a.out:
        ap.error("--out is required (or --combine)")
    out = Path(a.out)
    if not a.probe_only:
        pretrain_snapshots(a.backbone, a.config, Path(a.data), a.steps, a.first, out, a.seed,
                           _parse_overrides(a.set), a.precision, a.resume)
    if a.pretrain_only:
        return 0
    return probe_main(a, out)


if __name__ == "__main__":
    sys.exit(main())
