"""Provenance: what a reader needs to reproduce a run (package versions, git commit, platform).

Written into every run's ``manifest.json`` by :meth:`biqabench.results.RunFolder.write_manifest`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

VERSIONED_PACKAGES = ("biqabench", "torch", "torchvision", "numpy", "pandas", "scipy", "pyiqa")


def now() -> str:
    """The local time with its offset, to the second (manifest timestamps)."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.lru_cache(maxsize=1)
def _git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout biqabench is imported from; (None, None) outside one.

    Only a source checkout (a pyproject.toml next to the package) is asked, so an installed copy
    inside some unrelated repository does not report that repository's commit.
    """
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "pyproject.toml").is_file():
        return None, None
    commit = _git(["rev-parse", "HEAD"], repo)
    if not commit:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], repo)
    return commit, (bool(status) if status is not None else None)


def environment_info() -> dict[str, Any]:
    """Package versions, git commit, Python and platform: what a reader needs to reproduce a run."""
    commit, dirty = _git_state()
    info: dict[str, Any] = {
        "versions": _package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "argv": list(sys.argv),
    }
    torch = sys.modules.get("torch")  # only if already imported: importing torch here costs seconds
    if torch is not None:
        info["torch_cuda"] = getattr(torch.version, "cuda", None)
    return info


def jsonable(obj: Any) -> Any:
    """Plain JSON values: dataclasses, paths, numpy scalars, sets; NaN/inf become null."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)

