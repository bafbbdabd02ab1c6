"""``biqabench.model.predict``: score image files with any model source in one call.

    from biqabench import predict
    scores = predict("RUN_ID", ["photos/"])          # DataFrame: image, pred, pred_norm, scale, note, error

A thin layer over :func:`biqabench.load_model` and :func:`biqabench.model.scoring.score_paths`; the
model source is anything ``load_model`` takes (a run, an exported file, ``pyiqa:NAME[:FILE]``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def predict(model, inputs: str | Path | list[str | Path], *, device: str = "auto", precision: str = "auto",
            progress: bool = True, skip_bad: bool = False, split: int = 0) -> pd.DataFrame:
    """Scores for ``inputs`` (files, folders, globs) on the model's native scale (for a run: its
    training set's MOS scale and direction)."""
    from biqabench.model.load import load_model
    from biqabench.model.scoring import score_paths

    m = load_model(model, device=device, precision=precision, split=split)
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    return score_paths(m, items, skip_bad=skip_bad, progress=progress)
