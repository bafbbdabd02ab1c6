"""The protocol card of an HTML report: what a reviewer needs to trust or reproduce the numbers.

Read from a run's ``manifest.json`` (and its first split file, to show that the splits keep every
content on one side), in the words of docs/protocol.md.  A card is a list of sections, each a
list of ``{label, value, code, href}`` rows, plus a datasets table; :mod:`report_run` and
:mod:`report_matrix` put it on the page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from biqabench.results.summary import BOOT_SEED, N_BOOT

KIND_WORDS = {"eval": "eval: fine-tuning a head on each split", "probe": "probe: ridge on frozen backbone features",
              "test": "test: a trained model scored zero-shot on whole sets"}


def relative_link(target: Path, out_dir: Path) -> str:
    """``target`` as a URL relative to the folder the report is written to."""
    rel = os.path.relpath(Path(target).resolve(), Path(out_dir).resolve())
    return quote(Path(rel).as_posix())


def human_seconds(s: Any) -> str:
    try:
        s = float(s)
    except (TypeError, ValueError):
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    h, rest = divmod(int(round(s)), 3600)
    return f"{h} h {rest // 60} min" if h else f"{rest // 60} min {rest % 60} s"


def row(label: str, value: Any, *, code: bool = False, href: str | None = None) -> dict | None:
    if value is None or value == "" or value == []:
        return None
    return {"label": label, "value": str(value), "code": code, "href": href}


def section(title: str, *rows: dict | None) -> dict:
    return {"title": title, "rows": [r for r in rows if r is not None]}


def seeds_text(seeds: list) -> str | None:
    if not seeds:
        return None
    s = [int(x) for x in seeds]
    return f"{s[0]}..{s[-1]}" if len(s) > 2 and s == list(range(s[0], s[0] + len(s))) else ", ".join(map(str, s))


def content_aware(run_dir: Path, manifest: dict) -> str | None:
    """Whether the splits kept every content on one side, read from the first split file."""
    files = manifest.get("split_files") or []
    path = run_dir / files[0]["file"] if files and isinstance(files[0], dict) and files[0].get("file") else None
    if path is None or not path.is_file():
        return None
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError):
        return None
    if not {"image", "content", "part"} <= set(df.columns):
        return None
    contents = df["content"].nunique()
    if contents >= len(df):
        return f"by image: every image is its own unit ({len(df)} images; authentic set)"
    shared = int((df.groupby("content")["part"].nunique() > 1).sum())
    verdict = "no content in two parts" if shared == 0 else f"{shared} contents in more than one part"
    return f"yes: by reference content ({contents} contents, {len(df)} images; {verdict})"


def _share(value: Any, of: str) -> str | None:
    try:
        return f"{float(value):.0%} of {of} ({value})"
    except (TypeError, ValueError):
        return None


def splits_section(run_dir: Path, m: dict, out_dir: Path) -> dict:
    files = m.get("split_files") or []
    link = relative_link(run_dir / "splits", out_dir) if (run_dir / "splits").is_dir() else None
    return section(
        "Splits",
        row("splits", f"{m.get('splits')} ({m.get('splits_from')})" if m.get("splits_from") else m.get("splits")),
        row("seeds", seeds_text(m.get("seeds") or [])),
        row("test share", _share(m.get("test_frac"), "the training set's units")),
        row("validation share", _share(m.get("val_frac"), "the training part's units")),
        row("content-aware", content_aware(run_dir, m)),
        row("split files", f"{len(files)} files (splits/split_<k>.csv; sha256 of each in manifest.json)"
            if files else None, href=link),
    )


def _recipe_text(r: dict) -> str | None:
    if not isinstance(r, dict) or not r:
        return None
    parts = [f"{r.get('optimizer')} lr {r.get('lr')} (head x{r.get('head_lr_mult')})",
             f"weight decay {r.get('weight_decay')}", f"batch {r.get('batch_size')}", f"{r.get('epochs')} epochs",
             f"patch {r.get('patch_size')} px, {r.get('train_patches')} train / {r.get('test_patches')} test patches",
             f"loss {r.get('loss')}"]
    if r.get("lr_step"):
        parts.append(f"lr x{r.get('lr_gamma')} every {r.get('lr_step')} epochs")
    if r.get("freeze_backbone"):
        parts.append("backbone frozen" + (", features standardised" if r.get("standardize_features") else ""))
    return "; ".join(parts)


def training_section(m: dict) -> dict:
    probe = m.get("probe") if isinstance(m.get("probe"), dict) else {}
    alphas = m.get("alphas") or []
    return section(
        "Training and model selection",
        row("recipe", f"{m.get('recipe_preset')} preset: {m.get('recipe_source')}" if m.get("recipe_source") else None),
        row("recipe settings", _recipe_text(m.get("recipe") or {})),
        row("training target", m.get("training_target")),
        row("probe features", f"images at {probe.get('size')} px (shorter side){' and half scale' if probe.get('half_scale') else ''}; "
            f"{probe.get('pooling')}; {m.get('feature_dim')} dimensions" if probe else None),
        row("ridge alpha", f"{probe.get('alpha_by')}; grid {probe.get('alpha_grid')}; chosen per split: "
            f"{', '.join(f'{a:g}' for a in alphas)}" if probe and alphas else None),
        row("model selection", m.get("model_selection")),
        row("skipped batches", _skipped(m)),
    )


def _skipped(m: dict) -> str | None:
    parts = [f"{m[k]} {w}" for k, w in (("nan_skipped", "non-finite losses skipped"),
                                         ("scaler_skipped", "fp16 steps skipped by the grad scaler")) if m.get(k)]
    return "; ".join(parts) or None


def metrics_section(m: dict) -> dict:
    fit = m.get("plcc_fit") or "logistic4"
    words = "5-parameter logistic (VQEG: logistic plus a linear term)" if fit == "logistic5" else "4-parameter logistic"
    sizes = m.get("input_size")
    size_text = "; ".join(f"{k}: {v}" for k, v in sizes.items()) if isinstance(sizes, dict) else sizes
    return section(
        "Metrics",
        row("PLCC fitting", f"{fit}: a {words} fitted on each split and test set maps scores onto the MOS scale "
            "for the logistic PLCC and RMSE; the raw PLCC uses the scores as they are"),
        row("across splits", f"median over splits; 95% CI: percentile bootstrap of the median "
            f"(scipy.stats.bootstrap, {N_BOOT} resamples, seed {BOOT_SEED}); mean ± sample std"),
        row("input sizes", size_text),
    )


def _versions(m: dict) -> str | None:
    v = m.get("versions")
    if not isinstance(v, dict):
        return None
    return ", ".join(f"{k} {x}" for k, x in v.items())


def environment_section(m: dict) -> dict:
    commit = m.get("git_commit")
    nondet = m.get("nondeterministic_ops") or []
    return section(
        "Software and machine",
        row("versions", _versions(m)),
        row("python", m.get("python")),
        row("git commit", f"{commit}{' (uncommitted changes)' if m.get('git_dirty') else ''}" if commit else None,
            code=True),
        row("machine", ", ".join(str(x) for x in (m.get("hostname"), m.get("platform")) if x) or None),
        row("device", m.get("device")),
        row("precision", m.get("precision")),
        row("processes", m.get("world_size") if (m.get("world_size") or 1) > 1 else None),
        row("CUDA (torch build)", m.get("torch_cuda")),
        row("deterministic", None if "deterministic" not in m else
            f"{m['deterministic']}" + (f" (ops without a deterministic kernel: {', '.join(nondet)})" if nondet else "")),
    )


def time_section(m: dict) -> dict:
    return section(
        "Time",
        row("status", m.get("status")),
        row("error", m.get("error")),
        row("created", m.get("created")),
        row("finished", m.get("finished") or (m.get("updated") if m.get("status") == "finished" else None)),
        row("wall time", human_seconds(m.get("wall_seconds")) if m.get("wall_seconds") is not None else None),
        row("command", " ".join(m.get("argv") or []) or None, code=True),
    )


def what_section(m: dict) -> dict:
    model = m.get("model") if isinstance(m.get("model"), dict) else {}
    return section(
        "What ran",
        row("kind", KIND_WORDS.get(m.get("kind"), m.get("kind"))),
        row("protocol", m.get("protocol")),
        row("head", m.get("head")),
        row("backbone", m.get("backbone")),
        row("weights", f"{m.get('weights')} ({m.get('weights_source')})"
            if m.get("weights_source") not in (None, m.get("weights")) else m.get("weights")),
        row("weights file", m.get("weights_file"), code=True),
        row("weights sha256", m.get("weights_sha256"), code=True),
        row("pretraining run", m.get("weights_pretraining_run"), code=True),
        row("backbone state sha256", m.get("backbone_state_sha256"), code=True),
        row("model", m.get("model_source") or model.get("source"), code=True),
        row("trained on", m.get("train")),
        row("tested on", ", ".join(m.get("test") or []) if isinstance(m.get("test"), list) else m.get("test")),
    )


def datasets_table(m: dict) -> list[dict]:
    """One row per dataset: role, images, scale, input size, fingerprint."""
    sizes = m.get("input_size") if isinstance(m.get("input_size"), dict) else {}
    tests = m.get("test") or []
    tests = tests if isinstance(tests, list) else [tests]
    rows = []
    for name, d in (m.get("datasets") or {}).items():
        roles = [r for r, yes in (("train", name == m.get("train")), ("test", name in tests or name == m.get("train")))
                 if yes]
        scale = d.get("scale") or []
        rows.append({"name": name, "role": " + ".join(roles) or "-", "images": d.get("images"),
                     "scale": f"{float(scale[0]):g} to {float(scale[1]):g}" if len(scale) == 2 else "-",
                     "higher_better": "yes" if d.get("higher_better", True) else "no",
                     "input_size": sizes.get(name, "-"), "fingerprint": d.get("fingerprint") or "-"})
    return rows


def protocol_card(run, out_dir: Path) -> dict:
    """The card of one run: sections of rows and the datasets table."""
    m = run.manifest
    sections = [what_section(m), splits_section(run.path, m, out_dir), training_section(m), metrics_section(m),
                environment_section(m), time_section(m)]
    return {"sections": [s for s in sections if s["rows"]], "datasets": datasets_table(m)}


__all__ = ["content_aware", "datasets_table", "environment_section", "human_seconds", "metrics_section",
           "protocol_card", "relative_link", "splits_section", "time_section", "training_section", "what_section"]
