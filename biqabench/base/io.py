"""Atomic file writes and safe checkpoint reading.

Long runs are interrupted (Ctrl-C, SIGTERM, full disks).  Every file biqabench writes goes to a
temporary name in the same folder and is renamed into place, so a reader sees either the old
file or the new one, never half of one.  Checkpoints are read with ``weights_only=True``: a
pickle that would execute code is refused rather than run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import torch

from biqabench.base.errors import BiqaError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


class _HeldSignals:
    """SIGINT/SIGTERM held back (``pthread_sigmask``) while a temporary file is created or
    removed, so a Ctrl-C that lands between ``mkstemp`` and the ``try`` that cleans up, or at the
    top of that ``finally``, cannot leave a ``*.tmp`` behind.  A held signal is delivered the
    moment it is released, inside the ``try``, where the cleanup sees it.  No-op off the main
    thread and where the OS has no signal masks.  The mask is the main thread's: a process-wide
    signal that the kernel hands to another thread (torch's, a loader's) still trips the main
    thread's handler at once, so with other threads running this narrows the window rather than
    closes it; interrupt handlers sweep the run folder (:func:`remove_temporaries`)."""

    SIGNALS = {signal.SIGINT, signal.SIGTERM}

    def __init__(self) -> None:
        self._active = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
        self._previous: set | None = None

    def hold(self) -> None:
        if self._active and self._previous is None:
            self._previous = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)

    def release(self) -> None:
        if self._previous is not None:
            previous, self._previous = self._previous, None
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.
    Whatever happens (an error, Ctrl-C at any point), the temporary file does not outlive it."""
    path = Path(path)
    held = _HeldSignals()
    held.hold()
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise BiqaError(f"cannot write {path}: {exc.strerror or exc}; choose a writable folder") from None
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            held.release()  # a signal held since mkstemp arrives here, inside the cleanup's try
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual mode
            os.replace(tmp_path, path)
        except OSError as exc:
            raise BiqaError(f"cannot write {path}: {exc.strerror or exc} (nothing was half-written)") from None
        finally:
            held.hold()
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
    finally:
        held.release()


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of interrupted atomic writes (``.<name>.<random>.tmp``) under a
    folder that only this process writes (a run folder: one writer, see biqabench.training.checkpoint).
    Called where an interruption is handled, for a Ctrl-C that landed at the very top of a
    write's cleanup, the one moment :func:`atomic_path` cannot guard."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class WriteRecorder:
    """A file wrapper for ``torch.save`` that counts (and, with ``hashing``, sha256-hashes) the
    bytes written and remembers the OSError of a failed write.

    ``torch.save`` reports a full disk as ``RuntimeError: [enforce fail ...] unexpected pos``;
    writing through Python's file object keeps the real cause (ENOSPC, EFBIG, EROFS...), which
    :func:`torch_save_into` re-raises and :func:`atomic_path` then turns into a one-line error.
    :mod:`biqabench.training.checkpoint` hashes while writing, so its integrity record costs no second read.
    """

    def __init__(self, f, hashing: bool = False) -> None:
        self._f = f
        self.sha = hashlib.sha256() if hashing else None
        self.size = 0
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            n = self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise
        view = memoryview(data)
        if self.sha is not None:
            self.sha.update(view)
        self.size += view.nbytes
        return n

    def flush(self) -> None:
        self._f.flush()


def torch_save_into(obj: Any, out: WriteRecorder) -> None:
    """``torch.save(obj, out)``, raising the write's own OSError (ENOSPC...) rather than torch's
    ``RuntimeError`` wording of it."""
    try:
        torch.save(obj, out)
    except RuntimeError:
        if out.error is not None:
            raise out.error from None
        raise


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write a .safetensors file atomically.

    Serialised in memory and written by Python, so a full disk is an ``OSError`` (and a one-line
    error), not a ``SafetensorError`` from inside the Rust writer.
    """
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def ensure_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """``mkdir -p`` with a one-line error (read-only disk, a file where a folder should be...)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BiqaError(f"cannot create {what} {path}: {exc.strerror or exc}; choose a writable location") from None
    return path


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a torch checkpoint safely (``weights_only=True``); refuse code-executing pickles."""
    path = Path(path)
    if not path.is_file():
        raise BiqaError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "UnpicklingError" in type(exc).__name__:
            # torch's text suggests weights_only=False; what the user needs is which object was refused
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            culprit = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln.lower()), "")
            raise BiqaError(
                f"refused to load {path}: it contains Python objects beyond tensors and plain data "
                f"(loading it could run code{': ' + culprit if culprit else ''}). "
                "Re-save it as a plain state_dict or safetensors."
            ) from None
        raise BiqaError(f"cannot read checkpoint {path}: {msg} (truncated or not a torch file?)") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
