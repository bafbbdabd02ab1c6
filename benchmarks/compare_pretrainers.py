"""What each pretext buys frozen features: qpt, moco, arniqa, bnstats and random, probed alike.

Protocol (offline, CPU; issue 23's note):

1. Pretrain a backbone (resnet18 by default) with each strategy's CPU preset on the same photo
   folder (default ``../shared/data/imagenet-sample``), with the same ``--steps`` and ``--seed``,
   one after the other (each pretraining starts from the same random initialisation: the
   strategies differ only in their pretext).  Each run's wall time and CPU time are recorded.
2. Probe every result with ``biqabench probe`` (ridge on frozen features of the whole image and
   a half-scale copy, alpha by inner CV on the training part) on clive-dev with ``--splits``
   seeded content-aware splits at ``--size`` px, and ``random`` weights at the same seed (the
   initialisation every pretraining started from, identity BatchNorm) on the same splits.
3. Write ``compare.csv`` / ``compare.md`` into ``--out``: median SRCC with its 95% bootstrap CI,
   the paired difference with bnstats (median, splits up, Wilcoxon signed-rank p over the same
   splits), and each pretraining's wall and CPU time.

Finished pretrainings and probes are kept and reused, so an interrupted comparison continues where
it stopped (a pretraining stopped mid-run resumes from its checkpoint).

Run:  nice -n 5 python benchmarks/compare_pretrainers.py --steps 300 --out results/study/compare-pretrainers
      python benchmarks/compare_pretrainers.py --names qpt,bnstats --steps 50 --splits 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("BIQABENCH_SHARED_DATA", HERE.parents[1] / "shared" / "data"))
NAMES = ("qpt", "moco", "arniqa", "bnstats")
BASELINE = "bnstats"


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def pretrain(name: str, a, out: Path) -> dict:
    """One strategy's CPU-preset pretraining (kept in ``out/pretrain/<name>``); its record."""
    from biqabench.components.plugins import registry
    from biqabench.components.pretrain import PretrainRequest
    from biqabench.components.weights import WeightsStore
    from biqabench.training.pretraining import run_spec

    run_dir, done = out / "pretrain" / name, out / "pretrain" / name / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0, c0 = time.time(), _cpu_seconds()
    resume = (run_dir / "checkpoint.pt").is_file()
    print(f"pretraining {name}: {a.backbone}, {a.steps} steps, seed {a.seed}{' (resuming)' if resume else ''}",
          flush=True)
    record = run_spec(registry("pretrainers").get(name), PretrainRequest(
        backbone=a.backbone, data=str(a.data), steps=a.steps, seed=a.seed, run_dir=run_dir, resume=resume,
        store=WeightsStore(out / "weights"), device="cpu", precision=a.precision, progress=not a.quiet))
    info = {"name": name, "weights": str(record.file), "steps": record.extra.get("steps"),
            "wall_s": record.extra.get("wall_time_s"), "cpu_s": round(_cpu_seconds() - c0, 1),
            "session_wall_s": round(time.time() - t0, 1), "final_loss": record.extra.get("final_loss"),
            "loss_name": record.extra.get("loss_name")}
    done.write_text(json.dumps(info, indent=1))
    return info


def probe(label: str, weights: str, a, out: Path) -> list[float]:
    """``biqabench probe`` of ``weights`` (kept in ``out/probes/<label>``); the per-split test SRCC."""
    import pandas as pd

    from biqabench.evaluation.probe import ProbeConfig, run_probe

    run_dir = out / "probes" / label
    manifest = run_dir / "manifest.json"
    if not (manifest.is_file() and json.loads(manifest.read_text()).get("status") == "finished"):
        print(f"probing {label} on {a.probe_set} ({a.splits} splits, {a.size} px)", flush=True)
        cfg = ProbeConfig(weights=weights, backbone=a.backbone, train=a.probe_set, data_root=str(a.probe_root),
                          size=a.size, splits=a.splits, seed=a.seed, device="cpu", precision="fp32")
        run_probe(cfg, run_dir=run_dir, progress=not a.quiet)
    m = pd.read_csv(run_dir / "metrics.csv")
    return m[m.kind == "intra"].sort_values("split").srcc.to_list()


def table(srcc: dict[str, list[float]], runs: dict[str, dict]):
    """One row per weights: median SRCC, CI, the paired comparison with bnstats, time."""
    import pandas as pd
    from scipy.stats import wilcoxon

    from biqabench.base.metrics import aggregate

    base = np.asarray(srcc.get(BASELINE, []))
    rows = []
    for label, values in srcc.items():
        v = np.asarray(values)
        agg = aggregate(v)
        row = {"weights": label, "splits": len(v), "SRCC median": agg["median"], "CI low": agg["ci_low"],
               "CI high": agg["ci_high"]}
        if label != BASELINE and len(base) == len(v):
            d = v - base
            row.update({f"vs {BASELINE}": float(np.median(d)), "splits up": f"{int((d > 0).sum())}/{len(d)}",
                        "Wilcoxon p": float(wilcoxon(v, base).pvalue) if np.any(d != 0) else 1.0})
        run = runs.get(label, {})
        row.update({"pretrain wall s": run.get("wall_s"), "pretrain CPU s": run.get("cpu_s")})
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", default=",".join(NAMES), help="pretrainers to compare (random is always probed)")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--data", type=Path, default=SHARED / "imagenet-sample", help="unlabelled photos")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="fp32", help="pretraining precision (the probe is fp32)")
    ap.add_argument("--probe-set", default="clive")
    ap.add_argument("--probe-root", type=Path, default=SHARED / "clive-dev")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("results/study/compare-pretrainers"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    runs = {name: pretrain(name, a, out) for name in a.names.split(",")}  # one at a time
    srcc = {name: probe(name, run["weights"], a, out) for name, run in runs.items()}
    srcc["random"] = probe("random", "random", a, out)
    df = table(srcc, runs)
    df.to_csv(out / "compare.csv", index=False)
    from biqabench.results import render

    text = render(df, "markdown")
    setup = (f"{a.backbone}, {a.steps} steps per CPU preset, seed {a.seed}, pretrained on {a.data}; probe: "
             f"{a.probe_set} ({a.probe_root}), {a.splits} splits, {a.size} px, ridge on frozen features")
    (out / "compare.md").write_text(f"# Pretrainers compared\n\n{setup}\n\n{text}\n")
    print(setup)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
