"""The figures of an HTML report (:mod:`biqabench.results.report`), embedded in the page.

Every figure is drawn by :mod:`biqabench.base.plots` (the same scatter, training and loss figures a
run folder's ``plots/`` holds as PNG) or, for the per-split paired plot of a matrix, here; each is
saved as SVG into a ``data:`` URI, so the report is one file that opens offline and from an
e-mail attachment.  An image is a dict ``{id, src, alt, caption}``: the template gives every
one its alt text and caption.
"""

from __future__ import annotations

import base64
import io as _io
import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from biqabench.base import plots


def svg_uri(fig: Figure) -> str:
    """``fig`` as a ``data:image/svg+xml;base64,...`` URI (no date in it: the same run renders the
    same bytes)."""
    FigureCanvasAgg(fig)
    buf = _io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "biqabench-report"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image(id_: str, fig: Figure, alt: str, caption: str) -> dict:
    return {"id": re.sub(r"[^A-Za-z0-9_-]+", "-", id_).strip("-"), "src": svg_uri(fig), "alt": alt,
            "caption": caption}


def scatter_images(predictions: pd.DataFrame, plcc_fit: str = "logistic4") -> list[dict]:
    """One scatter (prediction against MOS, with the logistic fitted on that split) per test set."""
    fit = "5-parameter (VQEG)" if plcc_fit == "logistic5" else "4-parameter"
    images = []
    for name, fig in plots.scatter_figures(predictions).items():
        title = fig.axes[0].get_title().replace("\n", ": ") if fig.axes else name
        images.append(_image(
            f"scatter-{name}", fig,
            alt=f"Scatter plot of predicted score (x) against MOS (y) on {title}, with the fitted logistic curve",
            caption=(f"{name}: predictions against MOS on the split whose SRCC is the median (its number is in the "
                     f"title); the line is a logistic fitted to that split's points (the summary table's "
                     f"logistic PLCC uses a {fit} logistic).")))
    return images


def training_image(history: pd.DataFrame) -> dict | None:
    """Training loss and validation SRCC per epoch, one line per split (None: nothing trained)."""
    if history.empty:
        return None
    splits = history["split"].nunique() if "split" in history.columns else 1
    x = "step" if "step" in history.columns else "epoch"
    return _image("training-curves", plots.training_figure(history),
                  alt=f"Line charts of the training loss and the validation SRCC against {x}, one line per split "
                      f"({splits} split{'s' if splits != 1 else ''})",
                  caption=f"Training loss and validation SRCC per {x}, one line per split; the epoch with the best "
                          "validation SRCC is the one tested (see model selection in the protocol card).")


def read_losses(run_dir: str | None) -> list[float]:
    """The per-step losses a pretraining run folder kept (``losses.json``), or []."""
    if not run_dir:
        return []
    path = Path(run_dir) / "losses.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    losses = data.get("losses") if isinstance(data, dict) else data
    if not isinstance(losses, list):
        return []
    return [float(v) for v in losses if isinstance(v, (int, float))]


def pretraining_image(weights: str, run_dir: str | None) -> dict | None:
    """The pretraining loss curve of the weights' run (None when it kept no losses)."""
    losses = read_losses(run_dir)
    if not losses:
        return None
    label = Path(str(weights)).stem if "/" in str(weights) else str(weights)
    last = losses[-max(1, len(losses) // 10):]
    return _image(f"pretraining-{label}", plots.loss_figure(losses, f"pretraining of the {label} weights"),
                  alt=f"Line chart of the pretraining loss of the {label} weights over {len(losses)} steps, from "
                      f"{losses[0]:.3g} to a final mean of {np.mean(last):.3g}",
                  caption=f"Pretraining loss of the {label} weights, per step, with its running mean "
                          f"(from {run_dir}/losses.json).")


def paired_values(df: pd.DataFrame, head: str, train: str, test: str, order: list[str],
                  metric: str = "srcc") -> pd.DataFrame:
    """Per split (rows) the ``metric`` of each weights (columns, in ``order``) for one head and
    dataset: the values a paired plot connects."""
    g = df[(df["head"] == head) & (df["test_set"].astype(str) == test)]
    if "train_set" in g.columns:
        g = g[g["train_set"].astype(str) == train]
    wide = g.assign(split=g["split"].astype(str)).pivot_table(index="split", columns="weights", values=metric,
                                                             aggfunc="first")
    return wide[[w for w in order if w in wide.columns]]


def paired_image(wide: pd.DataFrame, head: str, dataset: str, baseline: str, metric_label: str = "SRCC",
                 unit: str = "split") -> dict | None:
    """One line per split (``unit``: per row of ``wide``, e.g. a pretraining seed) across the weights
    (baseline first): consistency is seen, not claimed."""
    if wide.shape[1] < 2 or wide.empty:
        return None
    fig = Figure(figsize=(max(3.2, 1.6 * wide.shape[1] + 1.2), 3.4))
    ax = fig.add_subplot()
    xs = np.arange(wide.shape[1])
    base = wide[baseline] if baseline in wide.columns else wide.iloc[:, 0]
    for split, row in wide.iterrows():
        values = row.to_numpy(dtype=float)
        up = np.nanmedian(values[1:]) > base[split] if np.isfinite(base[split]) else False
        ax.plot(xs, values, marker="o", ms=3.5, lw=1.1, alpha=0.8, color="C2" if up else "C3")
    ax.plot(xs, wide.median().to_numpy(dtype=float), color="black", lw=2.2, marker="D", ms=5, label="median")
    ax.set_xticks(xs, [str(c) for c in wide.columns])
    ax.set_xlim(-0.3, len(xs) - 0.7)
    ax.set_ylabel(metric_label)
    ax.set_title(f"{head} on {dataset}: {metric_label} per {unit}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    summary = _paired_summary(wide, base, unit)
    return _image(f"paired-{head}-{dataset}", fig,
                  alt=f"Paired plot of {metric_label} per {unit} for {head} on {dataset}, one line per {unit} from "
                      f"{' to '.join(map(str, wide.columns))}: {summary}",
                  caption=f"{head} on {dataset}: {summary}.")


def _paired_summary(wide: pd.DataFrame, base: pd.Series, unit: str = "split") -> str:
    parts = []
    for col in wide.columns:
        if col == base.name:
            continue
        d = (wide[col] - base).to_numpy(dtype=float)
        d = d[np.isfinite(d)]
        parts.append(f"{col} higher than {base.name} on {int((d > 0).sum())} of {d.size} {unit}s")
    return "; ".join(parts) or "one weights only"


def study_image(long: pd.DataFrame) -> dict:
    """A study's SRCC against pretraining step (:func:`biqabench.base.plots.study_figure`)."""
    strategies = ", ".join(dict.fromkeys(long["strategy"].astype(str)))
    return _image("study-curves", plots.study_figure(long),
                  alt=f"SRCC against pretraining step for {strategies}: per strategy the mean over seeds of the "
                      "per-seed median over splits, with a band from the lowest to the highest seed",
                  caption="Median SRCC over splits against the pretraining step: line, the mean over seeds; band, "
                          "the lowest to the highest seed; a dashed level, a strategy with one step (random).")


__all__ = ["paired_image", "paired_values", "pretraining_image", "read_losses", "scatter_images", "study_image",
           "svg_uri", "training_image"]
