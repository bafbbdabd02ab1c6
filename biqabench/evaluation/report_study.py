"""What the HTML report of a pretraining study (``results/studies/<name>/``) shows, as a dict.

Everything comes from the study's folder: ``table.csv`` (each strategy at its last step, the
statistics of :mod:`biqabench.base.seed_stats`), ``long.csv`` (every seed and split, for the plot
of SRCC against pretraining step and the per-seed paired plot), ``study.yaml`` (the settings) and
``study.json`` (every cell's status, folder and wall time), plus the cells' own run folders (the
protocol card of the first evaluation, the pretraining loss curves, links to their reports).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import yaml

from biqabench.base.errors import BiqaError
from biqabench.base.seed_stats import seed_medians
from biqabench.results.folder import Run, RunFolder
from biqabench.results.report import REPORT, render
from biqabench.results.report_card import environment_section, human_seconds, metrics_section, relative_link, row, \
    section, splits_section
from biqabench.results.report_plots import paired_image, pretraining_image, study_image
from biqabench.results.report_run import file_links, number

STUDY_INFO = "study.json"
STATS = ("median", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high", "p")


def looks_like_study(folder: Path) -> bool:
    return folder.is_dir() and (folder / STUDY_INFO).is_file() and (folder / "study.yaml").is_file()


def study_context(folder: Path, out_dir: Path) -> dict:
    folder = Path(folder)
    if not looks_like_study(folder):
        raise BiqaError(f"{folder} is not a study folder (no {STUDY_INFO} and study.yaml); "
                        "run `biqabench study STUDY.yaml` first")
    settings = yaml.safe_load((folder / "study.yaml").read_text(encoding="utf-8")) or {}
    info = json.loads((folder / STUDY_INFO).read_text(encoding="utf-8"))
    cells = info.get("cells", [])
    table = pd.read_csv(folder / "table.csv") if (folder / "table.csv").is_file() else pd.DataFrame()
    long = pd.read_csv(folder / "long.csv") if (folder / "long.csv").is_file() else pd.DataFrame()
    baseline = str(settings.get("baseline", ""))
    done = sum(c.get("status") == "finished" for c in cells)
    return {
        "kind": "study", "title": str(settings.get("name") or folder.name), "baseline": baseline,
        "summary": (f"{done} of {len(cells)} cells finished; backbone {settings.get('backbone')}; "
                    f"{len(settings.get('seeds') or [])} pretraining seeds; {settings.get('splits')} splits of "
                    f"{settings.get('train') or 'the embedded demo set'}."),
        "rows": table_rows(table),
        "curves": study_image(long) if not long.empty else None,
        "paired": seed_paired_images(long, table, baseline),
        "cells": cell_rows(cells, out_dir),
        "card": study_card(settings, info, cells, out_dir),
        "pretraining": _losses(cells),
        "files": file_links(folder, out_dir) + _study_files(folder, out_dir),
    }


def table_rows(table: pd.DataFrame) -> list[dict]:
    """The study table's rows, each statistic as a number cell with every digit in data-value."""
    rows = []
    for r in table.to_dict("records"):
        stats = {k: number(r.get(k)) for k in STATS}
        if stats["p"]["value"] is not None:
            stats["p"]["text"] = f"{stats['p']['value']:.3g}"
        rows.append({"strategy": str(r["strategy"]), "protocol": str(r["protocol"]), "test_set": str(r["test_set"]),
                     "step": int(r["step"]), "seeds": int(r["seeds"]), "stats": stats,
                     "seeds_up": _text(r.get("seeds_up")), "seed_diffs": _text(r.get("seed_diffs")),
                     "per_seed": _text(r.get("per_seed"))})
    return rows


def _text(v) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) or str(v) == "" else str(v)


def seed_paired_images(long: pd.DataFrame, table: pd.DataFrame, baseline: str) -> list[dict]:
    """Per protocol and test set, one line per pretraining seed from the baseline to each strategy
    (each at its last step): is the gain there for every seed?"""
    if long.empty or table.empty:
        return []
    last = dict(zip(table["strategy"], table["step"]))
    per_seed = seed_medians(long)
    per_seed = per_seed[per_seed["step"] == per_seed["strategy"].map(last)]
    images = []
    for (protocol, test_set), g in per_seed.groupby(["protocol", "test_set"], sort=False):
        wide = g.pivot(index="seed", columns="strategy", values="srcc")
        order = [baseline, *[s for s in wide.columns if s != baseline]]
        wide = wide[[s for s in order if s in wide.columns]]
        if baseline in wide.columns:
            image = paired_image(wide, str(protocol), str(test_set), baseline, "median SRCC over splits", unit="seed")
            if image is not None:
                images.append(image)
    return images


def cell_rows(cells: list[dict], out_dir: Path) -> list[dict]:
    rows = []
    for c in cells:
        folder = Path(c.get("folder", ""))
        report = folder / REPORT
        rows.append({"cell": c.get("cell"), "kind": c.get("kind"), "status": c.get("status"),
                     "wall": human_seconds(c.get("wall_s")),
                     "folder": relative_link(folder, out_dir) + "/" if folder.is_dir() else None,
                     "report": relative_link(report, out_dir) if report.is_file() else None})
    return rows


def study_card(settings: dict, info: dict, cells: list[dict], out_dir: Path) -> dict:
    """The study's own settings, then what its evaluations share (from the first finished one)."""
    pretrainers = settings.get("pretrainers") or {}
    protocols = settings.get("protocols") or {}
    own = section("The study", row("backbone", settings.get("backbone")),
                  row("pretraining photos", settings.get("photos") or "the embedded demo images", code=True),
                  row("seeds", ", ".join(map(str, settings.get("seeds") or []))),
                  row("steps", settings.get("steps")), row("snapshots", ", ".join(map(str, settings.get("snapshots") or []))),
                  row("shared pretraining settings", json.dumps(settings.get("pretraining") or {}), code=True),
                  row("strategies", "; ".join(f"{k}: {json.dumps(v)}" for k, v in pretrainers.items())),
                  row("protocols", "; ".join(f"{k}: {json.dumps(v)}" for k, v in protocols.items())),
                  row("baseline", settings.get("baseline")),
                  row("total wall time of the cells", human_seconds(info.get("cell_wall_s_total"))))
    sections = [own]
    first = next((Path(c["folder"]) for c in cells if c.get("kind") != "pretrain" and c.get("status") == "finished"
                  and RunFolder(c["folder"]).looks_like_run()), None)
    if first is not None:
        m = Run(first).manifest
        sections += [splits_section(first, m, out_dir), metrics_section(m), environment_section(m)]
    return {"sections": [s for s in sections if s["rows"]], "datasets": [], "weights": []}


def _losses(cells: list[dict]) -> list[dict]:
    """One pretraining loss curve per strategy (its first seed's run)."""
    images, seen = [], set()
    for c in cells:
        name = str(c.get("cell", "")).rsplit("-seed", 1)[0]
        if c.get("kind") == "pretrain" and name not in seen and (Path(c["folder"]) / "losses.json").is_file():
            seen.add(name)
            image = pretraining_image(c["cell"], c["folder"])
            if image is not None:
                images.append(image)
    return images


def _study_files(folder: Path, out_dir: Path) -> list[dict]:
    names = ["steps.csv", "long.csv", "study.png", "study.yaml", STUDY_INFO]  # table.*: file_links
    return [{"name": n, "href": relative_link(folder / n, out_dir), "size": f"{(folder / n).stat().st_size} B"}
            for n in names if (folder / n).is_file()]


def study_report(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the report of a study folder (default: ``report.html`` in it)."""
    from biqabench.base import io

    folder = Path(folder)
    path = Path(out) if out else folder / REPORT
    return io.write_text(path, render(study_context(folder, path.parent)))
