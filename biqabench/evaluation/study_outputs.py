"""A study's outputs, from its cells' run folders alone: the long table, the tables, the plot.

``long.csv``: one row per (strategy, seed, step, protocol, test set, split): the raw numbers.
``table.md``/``table.csv``: each strategy at its last step; ``steps.csv``: every step.  Both from
:func:`biqabench.base.seed_stats.study_table`, whose statistics count the seeds (see ``NOTE``).
``study.png``: SRCC against pretraining step, one line and band per strategy
(:func:`biqabench.base.plots.study_plot`); ``report.html``: all of it on one page
(:mod:`biqabench.evaluation.report_study`).  ``study.json``: the settings, every cell's status,
folder and wall time, and the machine.  Re-running the study rewrites them from the cells, so
the same finished cells always give the same files.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from biqabench.base import io

LONG_COLUMNS = ["strategy", "seed", "step", "protocol", "test_set", "kind", "split", "srcc", "plcc", "n"]

NOTE = """
What the columns are.  Per seed, the median over its splits of the test SRCC; **SRCC**: the mean of
those per-seed medians over the seeds, with a 95% interval from a hierarchical bootstrap (resample
seeds, then splits within each seed).  **diff**: against the baseline over the (seed, split) pairs
that share a split: per seed the median of its per-split differences (listed in *per-seed diff*),
then their mean over seeds with a 95% t interval; **p**: two-sided one-sample t-test of the
per-seed differences (the pretraining seed is the replicate; the splits of one seed overlap, so a
p over splits alone would be optimistic).  **seeds up**: seeds whose difference is above zero.
With 3 seeds the t interval is wide and only large, consistent effects reach p < 0.05; the
simulated size and power are in docs/protocol.md.
"""


def long_table(evals: list) -> pd.DataFrame:
    """Every finished evaluation cell's per-split metrics, labelled with its cell."""
    from biqabench.results.folder import RunFolder

    frames = []
    for cell in evals:
        if cell.status() != "finished":
            continue
        m = RunFolder(cell.folder).read_metrics()
        m = m.assign(strategy=cell.source.strategy.name, seed=cell.source.seed, step=cell.step,
                     protocol=cell.protocol.name)
        frames.append(m[[c for c in LONG_COLUMNS if c in m.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LONG_COLUMNS)


def final_steps(study) -> dict[str, int]:
    return {s.name: study.steps_of(s) for s in study.pretrainers}


def tables(study, long: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(each strategy at its last step, every step)."""
    from biqabench.base.seed_stats import study_table

    last = final_steps(study)
    final = long[long["step"] == long["strategy"].map(last)]
    table = study_table(final.drop(columns=["step"]), study.baseline)
    table.insert(3, "step", table["strategy"].map(last))
    return table, study_table(long, study.baseline)


def _ci(level: float, lo: float, hi: float, signed: bool = False) -> str:
    if not math.isfinite(level):
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(level)} [{f.format(lo)}, {f.format(hi)}]" if math.isfinite(lo) else f.format(level)


def markdown(study, table: pd.DataFrame) -> str:
    from biqabench.results.rendering import render

    show = pd.DataFrame({
        "strategy": table["strategy"], "protocol": table["protocol"], "test set": table["test_set"],
        "step": table["step"], "seeds": table["seeds"],
        "SRCC [95% CI]": [_ci(r.median, r.ci_low, r.ci_high) for r in table.itertuples()],
        f"diff vs {study.baseline} [95% CI]": [_ci(r.diff, r.diff_ci_low, r.diff_ci_high, True)
                                               for r in table.itertuples()],
        "p": ["-" if not math.isfinite(p) else f"{p:.3f}" for p in table["p"]],
        "seeds up": table["seeds_up"].replace("", "-"), "per-seed diff": table["seed_diffs"].replace("", "-"),
    })
    head = (f"# Study {study.name}\n\nBackbone {study.backbone}; pretrained on "
            f"{study.photos or 'the embedded demo images'}; seeds {', '.join(map(str, study.seeds))}; "
            f"evaluated on {study.train or 'the embedded demo set'} ({study.splits} splits, split seed "
            f"{study.split_seed}); baseline {study.baseline}.  Each strategy at its last step "
            "(every step: steps.csv).\n\n")
    return head + render(show, "markdown") + "\n" + NOTE


def cell_records(pretrain: list, evals: list) -> list[dict]:
    import json

    out = []
    for cell in [*pretrain, *evals]:
        wall = None
        for name, key in (("run.json", "wall_time_s"), ("manifest.json", "wall_seconds")):
            try:
                wall = json.loads((cell.folder / name).read_text()).get(key, wall)
            except (OSError, ValueError):
                pass
        out.append({"cell": cell.key, "kind": "pretrain" if not hasattr(cell, "protocol") else cell.protocol.kind,
                    "status": cell.status(), "folder": str(cell.folder), "wall_s": wall})
    return out


def write_study_outputs(study, pretrain: list, evals: list, folder: Path) -> Path:
    from biqabench.base.plots import study_plot
    from biqabench.evaluation.report_study import study_report
    from biqabench.results.report import write_report_quietly
    from biqabench.evaluation.study_config import settings
    from biqabench.results.environment import environment_info, jsonable

    long = long_table(evals)
    io.write_text(folder / "long.csv", long.to_csv(index=False))
    records = cell_records(pretrain, evals)
    walls = [r["wall_s"] for r in records if isinstance(r["wall_s"], (int, float))]
    io.write_json(folder / "study.json", jsonable({
        "settings": settings(study), "cells": records, "cell_wall_s_total": round(sum(walls), 1),
        "environment": environment_info()}))
    if long.empty or study.baseline not in set(long["strategy"]):
        io.write_text(folder / "table.md", f"# Study {study.name}\n\n(no table yet: the baseline "
                      f"{study.baseline!r} has no finished evaluation)\n")
        return folder
    table, steps = tables(study, long)
    io.write_text(folder / "table.csv", table.to_csv(index=False))
    io.write_text(folder / "steps.csv", steps.to_csv(index=False))
    io.write_text(folder / "table.md", markdown(study, table))
    study_plot(long, folder / "study.png", title=f"{study.name}: {study.backbone}, "
               f"{len(study.seeds)} pretraining seeds, {study.splits} splits")
    write_report_quietly(study_report, folder)
    return folder
