"""Provenance an eval run pins: the exact weights file, and whether torch ran deterministically.

Why pin the file.  ``--weights qpt`` means "the newest QPT weights for this backbone": a name
whose meaning changes each time someone pretrains again.  So a run records the file the name
resolved to, its sha256 and the pretraining run that made it, and ``--resume`` loads that file,
never the newest one, after checking its sha256: a run whose weights changed under it is refused
(mixing two pretrainings in one table of splits would make every later number meaningless).

Why report determinism.  ``--deterministic`` asks torch for deterministic algorithms, but some
(mostly CUDA) kernels have none; they run anyway (``warn_only``) and are listed in the manifest,
so a reader knows whether bit-for-bit reruns can be expected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Iterator

import torch

from biqabench import io
from biqabench.errors import BiqaError

log = logging.getLogger(__name__)

_NONDETERMINISTIC = re.compile(r"^\s*(\S+) does not have a deterministic implementation")


def _pretraining_run(file: Path) -> str | None:
    """The pretraining run folder recorded next to a store file (``<stamp>.json`` extra.run_dir)."""
    sidecar = file.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        return (json.loads(sidecar.read_text()).get("extra") or {}).get("run_dir")
    except (OSError, ValueError, AttributeError):
        return None


def resolve_pinned(spec: str, backbone: str, store=None) -> tuple[dict | None, str, dict]:
    """``--weights`` -> (state_dict or None, source, provenance) with the file it resolved to.

    Provenance: ``weights_file`` (absolute path, None for random), ``weights_sha256`` and
    ``weights_pretraining_run`` (the run that produced a store file, when known).
    """
    from biqabench import weights as W

    spec = str(spec).strip()
    if spec in ("", "random", "none", "scratch"):
        return None, "random", {"weights_file": None, "weights_sha256": None, "weights_pretraining_run": None}
    if spec == "imagenet":
        state, source = W._imagenet_state(backbone)  # downloads once when online
        file = W.imagenet_checkpoint(backbone)[1]
    elif W._looks_like_path(spec):
        file = Path(spec)
        state, source = W.read_state_dict(file), str(spec)
    else:
        store = store or W.WeightsStore()
        rec = store.latest(spec, backbone)
        if rec is None:
            return (*W.resolve_state_dict(spec, backbone, store), {})  # raises the store's one-line error
        file = rec.file
        if io.sha256_file(file) != rec.sha256:
            raise BiqaError(f"weights file {file} does not match the sha256 its manifest records; it was changed "
                            f"after pretraining: pretrain again or delete it")
        state, source = W.read_state_dict(file), f"{spec} ({file})"
    prov = {"weights_file": str(Path(file).resolve()), "weights_sha256": io.sha256_file(file),
            "weights_pretraining_run": _pretraining_run(Path(file))}
    return state, source, prov


def load_pinned(manifest: dict, run: str | os.PathLike) -> tuple[dict, str, dict]:
    """The weights a run recorded, after checking they are byte for byte the same file."""
    from biqabench.weights import read_state_dict

    file, digest = Path(manifest["weights_file"]), manifest.get("weights_sha256")
    if not file.is_file():
        raise BiqaError(f"run {run} was made with weights {file}, which no longer exists; resume cannot "
                        "substitute other weights: restore that file or start a new run")
    now = io.sha256_file(file)
    if digest and now != digest:
        raise BiqaError(f"run {run} was made with weights {file} (sha256 {digest[:12]}...); that file changed "
                        f"(now {now[:12]}...): resume refuses to mix weights, start a new run")
    prov = {k: manifest.get(k) for k in ("weights_file", "weights_sha256", "weights_pretraining_run")}
    return read_state_dict(file), str(manifest.get("weights_source") or file), prov


def run_weights(cfg, run_path: Path | None) -> tuple[dict | None, str, dict]:
    """Weights for an eval run: a resumed run's pinned file, else ``cfg.weights`` resolved now."""
    if run_path is not None:
        from biqabench.results import read_manifest

        manifest = read_manifest(run_path)
        if manifest.get("weights_file"):
            return load_pinned(manifest, run_path)
        if "weights_file" in manifest:  # pinned as random
            return None, "random", {k: manifest.get(k) for k in ("weights_file", "weights_sha256")}
    return resolve_pinned(cfg.weights, cfg.backbone)


@contextlib.contextmanager
def determinism(enabled: bool, found: list[str] | None = None) -> Iterator[list[str]]:
    """With ``enabled``: torch's deterministic algorithms on (warn-only, so kernels without a
    deterministic version still run) and cuDNN autotuning off; yields ``found`` (a new list when
    None), filled as the block runs with the ops that have no deterministic implementation."""
    found = [] if found is None else found
    if not enabled:
        yield found
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducible GEMMs
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    original = warnings.showwarning

    def spy(message, category, filename, lineno, file=None, line=None):
        m = _NONDETERMINISTIC.match(str(message))
        if m:
            if m.group(1) not in found:
                found.append(m.group(1))
                log.warning("--deterministic: %s has no deterministic implementation (it ran anyway)", m.group(1))
            return
        original(message, category, filename, lineno, file, line)

    warnings.showwarning = spy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)
            warnings.showwarning = spy
            yield found
    finally:
        warnings.showwarning = original
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


__all__ = ["determinism", "load_pinned", "resolve_pinned", "run_weights"]
