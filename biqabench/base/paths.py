"""Where biqabench keeps its outputs (one place, overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path


def results_root() -> Path:
    """``$BIQABENCH_RESULTS`` or ``./results``: run folders, weights store, tables."""
    return Path(os.environ.get("BIQABENCH_RESULTS", "results"))


def weights_root() -> Path:
    """``$BIQABENCH_WEIGHTS`` or ``<results>/weights``."""
    env = os.environ.get("BIQABENCH_WEIGHTS")
    return Path(env) if env else results_root() / "weights"


def cache_root() -> Path:
    """``$BIQABENCH_CACHE`` or ``~/.cache/biqabench``: decoded images, the embedded default set."""
    env = os.environ.get("BIQABENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "biqabench"
