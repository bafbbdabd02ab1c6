"""Provenance an eval run pins: the exact weights file, and whether torch ran deterministically.

Why pin the file.  ``--weights qpt`` means "the newest QPT weights for this backbone": a name
whose meaning changes each time someone pretrains again.  So a run records the file the name
resolved to (:class:`biqabench.components.weights.ResolvedWeights`: ``weights_file``, ``weights_sha256``,
``weights_pretraining_run``), and ``--resume`` loads that file, never the newest one, after
checking its sha256: a run whose weights changed under it is refused (mixing two pretrainings in
one table of splits would make every later number meaningless).

Why report determinism.  ``--deterministic`` asks torch for deterministic algorithms, but some
(mostly CUDA) kernels have none; they run anyway (``warn_only``) and are listed in the manifest,
so a reader knows whether bit-for-bit reruns can be expected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Iterator

import torch

from biqabench.base import io
from biqabench.base.errors import BiqaError
from biqabench.components.weights import ResolvedWeights, pretraining_run, read_state_dict, resolve_weights

log = logging.getLogger(__name__)

_NONDETERMINISTIC = re.compile(r"^\s*(\S+) does not have a deterministic implementation")


def load_pinned(manifest: dict, run: str | os.PathLike):
    """The weights a run recorded, after checking they are byte for byte the same file."""
    file, digest = Path(manifest["weights_file"]), manifest.get("weights_sha256")
    if not file.is_file():
        raise BiqaError(f"run {run} was made with weights {file}, which no longer exists; resume cannot "
                        "substitute other weights: restore that file or start a new run")
    now = io.sha256_file(file)
    if digest and now != digest:
        raise BiqaError(f"run {run} was made with weights {file} (sha256 {digest[:12]}...); that file changed "
                        f"(now {now[:12]}...): resume refuses to mix weights, start a new run")
    return ResolvedWeights(str(manifest.get("weights") or file), str(manifest.get("backbone") or ""),
                           read_state_dict(file), str(manifest.get("weights_source") or file), now, file)


def run_weights(cfg, folder=None):
    """Weights for an eval run: a resumed run's pinned file, else ``cfg.weights`` resolved now
    (a store file whose bytes no longer match its recorded sha256 is refused)."""
    if folder is not None:
        manifest = folder.read_manifest()
        if manifest.get("weights_file"):
            return load_pinned(manifest, folder.path)
    resolved = resolve_weights(cfg.weights, cfg.backbone)
    if resolved.file is not None and resolved.sha256 and io.sha256_file(resolved.file) != resolved.sha256:
        raise BiqaError(f"weights file {resolved.file} does not match the sha256 its manifest records; it was "
                        "changed after pretraining: pretrain again or delete it")
    return resolved


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

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        original = warnings.showwarning

        def spy(message, category, filename, lineno, file=None, line=None):
            m = _NONDETERMINISTIC.match(str(message))
            if not m:
                return original(message, category, filename, lineno, file, line)
            if m.group(1) not in found:
                found.append(m.group(1))
                log.warning("--deterministic: %s has no deterministic implementation (it ran anyway)", m.group(1))
            return None

        warnings.showwarning = spy
        try:
            yield found
        finally:
            torch.use_deterministic_algorithms(before[0], warn_only=before[1])
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


__all__ = ["determinism", "load_pinned", "pretraining_run", "run_weights"]
