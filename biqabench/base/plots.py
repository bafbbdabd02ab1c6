"""Figures for a run folder: prediction-vs-MOS scatter per test set, training curves, loss curves.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never
through pyplot: no GUI backend is touched, no global figure state leaks between threads or into a
user's notebook, and it works on headless machines.  Files are written atomically like every
other output.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from biqabench.base import io
from biqabench.base.metrics import compute_metrics, fit_logistic, srcc

DPI = 120


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _slug(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "set"


def _pick_split(group: pd.DataFrame, split: Any) -> tuple[pd.DataFrame, str]:
    """The rows of one split: a given one, or the split whose SRCC is the median (lower median)."""
    if "split" not in group.columns:
        return group, ""
    keys = group["split"].astype(str)
    if split != "median":
        return group[keys == str(split)], str(split)
    by_split = sorted(((srcc(g["pred"], g["mos"]), k) for k, g in group.groupby(keys, sort=True)),
                      key=lambda t: (np.isnan(t[0]), t[0]))
    _, key = by_split[(len(by_split) - 1) // 2]
    return group[keys == key], key


def scatter_figures(predictions_df: pd.DataFrame, *, split: Any = "median") -> dict[str, Figure]:
    """The figures :func:`scatter_plot` saves, ``{test set (or train->test): Figure}`` (reports
    embed them as SVG)."""
    if predictions_df.empty:
        return {}
    missing = [c for c in ("test_set", "mos", "pred") if c not in predictions_df.columns]
    if missing:
        raise ValueError(f"scatter_plot needs columns test_set, mos, pred; missing {missing}")
    by = ["train_set", "test_set"] if "train_set" in predictions_df.columns else ["test_set"]
    figures: dict[str, Figure] = {}
    for key, group in predictions_df.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        name = str(key[-1]) if len(key) == 1 or str(key[0]) == str(key[1]) else f"{key[0]}->{key[1]}"
        rows, chosen = _pick_split(group, split)
        if not rows.empty:
            figures[name] = _scatter_figure(rows, name, chosen)
    return figures


def _scatter_figure(rows: pd.DataFrame, name: str, chosen: str) -> Figure:
    x = rows["pred"].to_numpy(dtype=float)
    y = rows["mos"].to_numpy(dtype=float)
    m = compute_metrics(x, y)
    fig = Figure(figsize=(5, 4.2))
    ax = fig.add_subplot()
    ax.scatter(x, y, s=6, alpha=0.5, linewidths=0, rasterized=True, label="images")
    mapping = fit_logistic(x, y)
    finite = x[np.isfinite(x)]
    if mapping.kind != "none" and finite.size:
        grid = np.linspace(finite.min(), finite.max(), 200)
        ax.plot(grid, mapping(grid), color="C3", lw=1.5, label=f"{mapping.kind} fit")
        ax.legend(loc="best", fontsize=8)
    where = f" (split {chosen})" if chosen else ""
    ax.set_title(f"{name}{where}\nSRCC {m['srcc']:.3f}  PLCC {m['plcc']:.3f}  "
                 f"PLCC-logistic {m['plcc_logistic']:.3f}  n={m['n']}", fontsize=9)
    ax.set_xlabel("prediction")
    ax.set_ylabel("MOS")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def scatter_plot(predictions_df: pd.DataFrame, out_dir: str | os.PathLike, *, split: Any = "median",
                 prefix: str = "scatter") -> dict[str, Path]:
    """One PNG per test set: predictions (x) against MOS (y) with the fitted logistic curve.

    Each split trains its own model, so points of different splits are not pooled: ``split``
    chooses one split by key, or ``"median"`` (default) picks per test set the split with the
    median SRCC, a representative one.  The title gives that split's SRCC, raw PLCC and PLCC
    after the logistic mapping.  Returns ``{test set (or train->test): path}``.
    """
    return {name: _save(fig, Path(out_dir) / f"{prefix}-{_slug(name)}.png")
            for name, fig in scatter_figures(predictions_df, split=split).items()}


def _first(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in df.columns), None)


def training_curves(history_df: pd.DataFrame, path: str | os.PathLike, title: str | None = None) -> Path:
    """Training loss and validation SRCC against step (or epoch), one line per split if present.

    Reads ``step`` or ``epoch`` for x, ``loss`` or ``train_loss``, and ``val_srcc`` or ``srcc``;
    rows without a validation value (evaluated only every few steps) are skipped for that panel.
    """
    return _save(training_figure(history_df, title), path)


def training_figure(history_df: pd.DataFrame, title: str | None = None) -> Figure:
    """The figure :func:`training_curves` saves."""
    if history_df.empty:  # e.g. a head evaluated without training: still leave a figure that says so
        fig = Figure(figsize=(5, 3.6))
        fig.text(0.5, 0.5, "no training history recorded", ha="center", va="center")
        return fig
    x_col = _first(history_df, ("step", "epoch"))
    loss_col = _first(history_df, ("loss", "train_loss"))
    val_col = _first(history_df, ("val_srcc", "srcc"))
    if loss_col is None and val_col is None:
        raise ValueError(f"training_curves needs a loss/train_loss or val_srcc/srcc column; have {list(history_df.columns)}")
    panels = [c for c in (loss_col, val_col) if c is not None]
    fig = Figure(figsize=(5 * len(panels), 3.6))
    groups = list(history_df.groupby(history_df["split"].astype(str), sort=False)) if "split" in history_df.columns \
        else [("", history_df)]
    for i, col in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, g in groups:
            g = g[pd.to_numeric(g[col], errors="coerce").notna()]
            if g.empty:
                continue
            xs = g[x_col].to_numpy() if x_col else np.arange(len(g))
            ax.plot(xs, pd.to_numeric(g[col]).to_numpy(), marker="o" if len(g) < 30 else None, ms=3,
                    label=f"split {key}" if key else None)
        ax.set_xlabel(x_col or "record")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole numbers
        ax.set_ylabel("validation SRCC" if col == val_col else "training loss")
        ax.grid(alpha=0.3)
    legend = 1 < len(groups) <= 10 and fig.axes[0].get_legend_handles_labels()[0]
    if legend:  # one legend for both panels, beside them: inside, it hides the lines
        fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="center right", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 0.75 / fig.get_figwidth(), 1) if legend else None)
    return fig


def loss_curve(losses: list[float], path: str | os.PathLike, title: str, ylabel: str = "loss") -> Path:
    """A per-step training loss with its running mean (pretraining runs: ``loss.png``)."""
    return _save(loss_figure(losses, title, ylabel), path)


def loss_figure(losses: list[float], title: str, ylabel: str = "loss") -> Figure:
    """The figure :func:`loss_curve` saves."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.8, alpha=0.45, label="loss")
    if len(losses) >= 5:
        w = max(2, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, lw=1.6, label=f"mean of {w}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def study_plot(long: pd.DataFrame, path: str | os.PathLike, *, value: str = "srcc", title: str | None = None) -> Path:
    """:func:`study_figure` written to ``path`` (PNG, or SVG by its suffix)."""
    return _save(study_figure(long, value=value, title=title), path)


def study_figure(long: pd.DataFrame, *, value: str = "srcc", title: str | None = None) -> Figure:
    """A pretraining study's SRCC against pretraining step: one panel per protocol and test set,
    one line per strategy (the mean over seeds of each seed's median over splits) in a band from
    the lowest to the highest seed.  A strategy evaluated at one step only (random weights) is a
    dashed level with its band across the panel.  ``long``: :func:`biqabench.base.seed_stats.study_table`'s
    input, with a ``step`` column."""
    from biqabench.base.seed_stats import seed_curves

    curves = seed_curves(long, value)
    panels = list(curves.groupby(["protocol", "test_set"], sort=False))
    fig = Figure(figsize=(5.2 * len(panels), 3.8))
    steps = pd.to_numeric(curves["step"], errors="coerce")
    x_range = (float(steps.min()), float(steps.max())) if steps.notna().any() else (0.0, 1.0)
    for i, ((protocol, test_set), rows) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for j, (strategy, r) in enumerate(rows.groupby("strategy", sort=False)):
            r = r.sort_values("step")
            seeds = int(r["seeds"].max())
            label = f"{strategy} ({seeds} seed{'s' if seeds != 1 else ''})"
            if len(r) == 1:  # one snapshot: a level across the panel
                xs = np.asarray(x_range)
                ys, lo, hi = (np.repeat(float(r[c].iloc[0]), 2) for c in ("mean", "min", "max"))
                style = "--"
            else:
                xs = r["step"].to_numpy(dtype=float)
                ys, lo, hi = (r[c].to_numpy(dtype=float) for c in ("mean", "min", "max"))
                style = "-"
            ax.plot(xs, ys, style, color=f"C{j}", marker="o" if style == "-" and len(r) < 30 else None, ms=3,
                    label=label)
            ax.fill_between(xs, lo, hi, color=f"C{j}", alpha=0.18, linewidth=0)
        ax.set_title(f"{test_set} ({protocol})", fontsize=9)
        ax.set_xlabel("pretraining step")
        ax.set_ylabel(f"median {value.upper()} over splits")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="line: mean over seeds; band: min-max", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
