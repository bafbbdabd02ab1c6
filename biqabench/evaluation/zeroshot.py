"""``biqabench test``: zero-shot cross-dataset evaluation of an existing model.

No training: the model (a run's, an exported file, a pyiqa metric or checkpoint) scores every
image of each named test set, and the run folder is the one ``eval`` writes (config.yaml,
manifest.json, splits/0/, predictions.csv, metrics.csv, summary.md, scatter plots), so
``results show`` and ``results compare`` put pyiqa's zoo and our models in one table.

Scores are compared with MOS the way ``eval`` compares its cross-dataset predictions: the
model's native score is normalised to 0..1 higher-is-better with the model's own scale
(:meth:`ModelInfo.to_norm`), then mapped onto the test set's MOS scale (``pred``; the raw
native score is kept as ``score``).  Metrics rows say ``train_set: zero-shot``, so test runs of
different models (pyiqa's and ours) line up by test set in ``results compare``.  The mapping is
linear and oriented, so SRCC/KRCC are the model's own, and PLCC/RMSE follow the usual logistic fit.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from biqabench.base.errors import BiqaError
from biqabench.base.metrics import metrics_rows
from biqabench.results.folder import RunFolder

log = logging.getLogger(__name__)

#: The train_set of every metrics row of a test run: no training happened in it (the model's own
#: training set is the manifest's ``train``), and test runs of different models line up by test set
#: in ``results compare``.
ZERO_SHOT = "zero-shot"


def _manifest(model, tables: dict, source: str) -> dict:
    info = model.info
    return {
        "kind": "test", "protocol": "zero-shot", "head": info.head, "weights": info.weights or "-",
        "backbone": info.backbone or "-", "model_source": source, "model": info.to_json(),
        "train": info.train_set, "test": list(tables), "splits": 1, "seeds": [info.seed],
        "device": str(model.device), "precision": model.precision,
        "datasets": {t.name: {"fingerprint": t.fingerprint(), "images": len(t), "options": t.options,
                              "root": str(t.root), "scale": list(t.scale), "higher_better": t.higher_better}
                     for t in tables.values()},
        "status": "running", "error": None,
    }


def _score_table(model, table, progress: bool, skip_bad: bool) -> tuple[list[dict], dict]:
    resize = int(table.options.get("resize") or 0) or model.info.resize  # as eval scores this set
    scored = model.score_files(list(table.paths), names=list(table.names), resize=resize, progress=progress,
                               skip_bad=skip_bad, desc=f"test {table.name}")
    native = np.asarray([s.pred for s in scored], dtype=np.float64)
    norm = model.info.to_norm(native)
    idx = np.arange(len(table))
    preds, row = metrics_rows(0, ZERO_SHOT, table.name, "cross", table, idx, norm)
    for p, s, note in zip(preds, native, (x.note for x in scored)):
        p["score"] = float(s)
        p["note"] = note
    if model.info.train_set == table.name:
        log.warning("%s was trained on %s: testing on it scores its own training images", model.info.source, table.name)
        row["kind"] = "seen"
    return preds, row


def test_model(model, tests: list[str] | str, *, data_root: str | None = None, skip_bad: bool = False,
               device: str = "auto", precision: str = "auto", run_dir: str | Path | None = None,
               dataset_options: dict | None = None, progress: bool = True) -> Path:
    """Score every image of each test set with ``model`` (any :func:`load_model` source) and write
    a run folder; returns its path."""
    from biqabench.data import load_dataset
    from biqabench.model.load import load_model

    started = time.time()
    names = [t.strip() for t in (tests.split(",") if isinstance(tests, str) else tests) if t.strip()]
    if not names:
        raise BiqaError("--test names no dataset; e.g. --test clive,koniq10k (see: biqabench datasets list)")
    m = load_model(model, device=device, precision=precision)
    source = m.info.source
    options = dataset_options or {}
    tables = {n: load_dataset(n, data_root or None, skip_bad=skip_bad, **options.get(n, {})) for n in names}
    label = f"{m.info.head}-{m.info.weights or 'model'}"
    folder = RunFolder(run_dir).ensure() if run_dir else RunFolder.create("test", label)
    folder.write_config({"model": source, "test": names, "data_root": data_root or "", "skip_bad": skip_bad,
                         "device": device, "precision": precision, "dataset_options": options})
    manifest = _manifest(m, tables, source)
    folder.write_manifest(**manifest)
    try:
        preds, rows = [], []
        for table in tables.values():
            p, r = _score_table(m, table, progress, skip_bad)
            preds += p
            rows.append(r)
        folder.write_predictions(pd.DataFrame(preds), split=0)
        folder.write_metrics(pd.DataFrame(rows), split=0)
    except Exception as exc:
        error = str(exc) if isinstance(exc, BiqaError) else f"{type(exc).__name__}: {exc}"
        folder.write_manifest(**{**manifest, "status": "failed", "error": error, "wall_seconds": time.time() - started})
        raise
    _finalize(folder, manifest, started)
    return folder.path


test_model.__test__ = False  # a library function, not a test for pytest to collect


def _finalize(folder, manifest: dict, started: float) -> None:
    """Merged tables, summary, one scatter plot per test set, the finished manifest."""
    from biqabench.base import plots
    from biqabench.evaluation.protocol import outside_scale_counts
    from biqabench.results.report import run_report, write_report_quietly

    metrics = folder.read_metrics()
    folder.write_metrics(metrics)
    predictions = folder.read_predictions()
    folder.write_predictions(predictions)
    manifest = {**manifest, "outside_scale": outside_scale_counts(predictions, manifest)}
    folder.write_summary(metrics, manifest)
    plots.scatter_plot(predictions, folder.plots_dir)  # no training curves: nothing was trained
    folder.write_manifest(**{**manifest, "status": "finished", "wall_seconds": time.time() - started})
    write_report_quietly(run_report, folder.path)
