"""Rendering: tables as markdown (GitHub), LaTeX or CSV, and a run's ``summary.md``."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from biqabench.base import io
from biqabench.base.errors import BiqaError
from biqabench.results.summary import BOOT_SEED, N_BOOT, summary_table

FORMATS = ("markdown", "latex", "csv")


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(x) for x in col if str(x)) for col in out.columns]
    if not isinstance(out.index, pd.RangeIndex) or any(n is not None for n in out.index.names):
        out = out.reset_index()
    return out


def render(df: pd.DataFrame, fmt: str = "markdown", floatfmt: str = ".3f", signed: bool = False) -> str:
    """A table as markdown (GitHub), LaTeX (tabulate) or CSV (full precision).

    Columns named ``delta ...`` (or all, with ``signed``) are shown
    with a sign; NaN shows as ``-``.
    """
    if fmt not in FORMATS:
        raise BiqaError(f"unknown table format '{fmt}'; use one of {', '.join(FORMATS)}")
    flat = _flat(df)
    if fmt == "csv":
        return flat.to_csv(index=False)
    formats = [("+" + floatfmt) if signed or str(c).startswith("delta") else floatfmt for c in flat.columns]
    headers = [str(c) for c in flat.columns]
    latex = fmt == "latex"

    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return None  # tabulate shows missingval
        if isinstance(v, np.generic):
            v = v.item()
        return _latex_escape(v) if latex and isinstance(v, str) else v

    rows = [[cell(v) for v in row] for row in flat.itertuples(index=False, name=None)]
    if latex:
        return tabulate(rows, headers=[_latex_escape(h) for h in headers], tablefmt="latex_raw", floatfmt=formats,
                        missingval="-")
    return tabulate(rows, headers=headers, tablefmt="github", floatfmt=formats, missingval="-")

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    """Escape LaTeX specials; ``train->test`` becomes an arrow."""
    out = re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIALS[m.group(0)], text)
    return out.replace("->", r"$\rightarrow$")


def write_table(df: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Render ``df`` and write it atomically; the format follows the suffix (.md, .tex, .csv)."""
    path = Path(path)
    fmt = fmt or {".md": "markdown", ".tex": "latex", ".csv": "csv"}.get(path.suffix.lower(), "markdown")
    text = render(df, fmt)
    return io.write_text(path, text if text.endswith("\n") else text + "\n")


_META_FIELDS = ("kind", "head", "weights", "backbone", "protocol", "train", "test",
                "splits", "seeds", "splits_from", "test_frac", "val_frac", "model_selection", "plcc_fit", "input_size",
                "training_target", "weights_file", "weights_sha256", "deterministic", "device", "precision",
                "wall_seconds", "created", "finished", "git_commit")


def _meta_value(v: Any) -> str | None:
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
        return ", ".join(str(x) for x in v)
    if isinstance(v, dict) and v and all(isinstance(x, (str, int, float)) for x in v.values()):
        return "; ".join(f"{k}: {x}" for k, x in v.items())  # e.g. input_size per dataset
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if isinstance(v, (str, int)):
        return str(v)
    return None  # nested values (configs) stay in manifest.json


def meta_rows(meta: dict) -> list[tuple[str, str]]:
    """(field, value) pairs worth showing a reader, in a fixed order."""
    rows = []
    for key in _META_FIELDS:
        if key in meta and meta[key] is not None:
            value = _meta_value(meta[key])
            if value is not None:
                rows.append((key, value))
    return rows


def summary_markdown(title: str, metrics_df: pd.DataFrame, info: dict) -> str:
    """``summary.md``'s text: what the run was, then per test set the median SRCC/PLCC over splits."""
    lines = [f"# {title}", ""]
    described = meta_rows(info)
    if described:
        lines += [tabulate(described, headers=["field", "value"], tablefmt="github"), ""]
    lines += ["## Results", ""]
    table = summary_table(metrics_df)
    if table.empty:
        lines += ["No finished splits yet.", ""]
    else:
        lines += [tabulate(table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True), ""]
        lines += [
            (f"SRCC and PLCC are medians over splits; the 95% CI is a percentile bootstrap of the median "
             f"(scipy.stats.bootstrap, {N_BOOT} resamples, seed {BOOT_SEED}); mean ± std uses the sample std. "
             f"PLCC (raw) is Pearson's correlation of the raw predictions; PLCC (logistic) and RMSE (logistic) "
             f"follow a {'5-parameter (VQEG)' if info.get('plcc_fit') == 'logistic5' else '4-parameter'} "
             f"logistic mapping of predictions onto the MOS scale ('fallback maps' counts splits where that fit "
             f"was impossible and a linear or no mapping was used). docs/protocol.md says what every number is."), "",
        ]
    outside = info.get("outside_scale") or {}
    if outside:
        parts = [f"{name} {v['outside']} of {v['predictions']} (scale {v['scale'][0]:g}-{v['scale'][1]:g})"
                 for name, v in outside.items()]
        lines += ["Predictions outside the dataset's scale (counted, not clipped): " + "; ".join(parts) + ".", ""]
    return "\n".join(lines)
