"""Training checkpoints for both loops (head fine-tuning and QPT): crash-safe, verified, two kept.

Why each step of :func:`save` is there (a research machine loses power, is OOM-killed with
SIGKILL, fills its disk):

* the state goes to a temporary file in the same folder, is flushed and ``fsync``-ed, then
  renamed over the checkpoint, and the folder is ``fsync``-ed: after a crash the name points at a
  whole old file or a whole new one, even across a power cut;
* the bytes are hashed while they are written, and a trailer after the torch archive stores the
  sha256, the size and the run's settings (``meta``).  ``torch.load`` ignores the trailer, so the
  file stays an ordinary torch checkpoint; :func:`load` checks the hash, so a truncated file or
  flipped bits are found before anything is trained on them;
* the previous checkpoint is kept as ``<name>.prev``: when the newest one is damaged, :func:`load`
  says so in one line and continues from the previous one instead of losing the run.

``load(path, expect=meta)`` also compares the settings that must not change across a resume
(seed, recipe, world size...) and stops with one line naming the differences.

Only plain tensors, numbers, strings, lists and dicts go in: checkpoints are read with
``weights_only=True`` (:func:`biqabench.base.io.load_torch`), so a file can never run code.

Fault injection for tests: ``BIQABENCH_FAULT=slow-checkpoint:<seconds>`` pauses half-way
through each write (so a test can SIGKILL a process inside it);
``BIQABENCH_FAULT=enospc-checkpoint:<n>`` fails the n-th write of the process (1-based) with
ENOSPC, as a full disk would.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from biqabench.base import io
from biqabench.base.errors import BiqaError

log = logging.getLogger(__name__)

FORMAT = "biqabench-checkpoint/1"
MAGIC = b"BIQACKP1"
_TAIL = struct.Struct("<Q8s")  # trailer length, magic: the last 16 bytes of the file
PREVIOUS_SUFFIX = ".prev"
_writes = 0  # checkpoint writes in this process (for the ENOSPC fault injection)


@dataclass
class Loaded:
    """A verified checkpoint: its ``state``, the ``meta`` it was saved with and the file it came from."""

    state: Any
    meta: dict
    path: Path
    fallback: bool = False  # True when the newest file was damaged and the previous one was used


def previous_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + PREVIOUS_SUFFIX)


# -- writing -------------------------------------------------------------------------------------
class _FaultyWriter(io.WriteRecorder):
    """:class:`biqabench.base.io.WriteRecorder` (hashing) with an injected fault half-way through the
    write: a pause, or ENOSPC as a full disk would raise it (``BIQABENCH_FAULT``, tests only)."""

    def __init__(self, f, fault: tuple[str, float]) -> None:
        super().__init__(f, hashing=True)
        self._fault: tuple[str, float] | None = fault

    def write(self, data) -> int:
        if self._fault is not None and self.size > 0:
            (kind, arg), self._fault = self._fault, None
            if kind == "slow-checkpoint":
                self.flush()
                time.sleep(arg)
            elif kind == "enospc-checkpoint":
                self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                raise self.error
        return super().write(data)


def _fault() -> tuple[str, float] | None:
    """The injected fault for this write, if ``BIQABENCH_FAULT`` asks for one (tests only)."""
    spec = os.environ.get("BIQABENCH_FAULT", "")
    kind, _, arg = spec.partition(":")
    if kind == "slow-checkpoint":
        return kind, float(arg or 1.0)
    if kind == "enospc-checkpoint" and _writes == int(arg or 1):
        return kind, 0.0
    return None


def save(path: str | os.PathLike, state: Any, meta: dict | None = None) -> Path:
    """Write ``state`` to ``path`` crash-safely; the file it replaces becomes ``<path>.prev``.

    ``meta``: plain JSON values describing the settings a resume must match (see :func:`load`).
    A failed write (full disk...) raises a one-line :class:`BiqaError` and leaves ``path`` and
    ``<path>.prev`` as they were.
    """
    global _writes
    path = Path(path)
    _writes += 1
    trailer_meta = json.loads(json.dumps(meta or {}, default=str))
    _remove_stale_temporaries(path)  # one writer per checkpoint: any other temporary is a killed write's
    with io.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            fault = _fault()
            out = _FaultyWriter(f, fault) if fault else io.WriteRecorder(f, hashing=True)
            io.torch_save_into(state, out)
            trailer = json.dumps({"format": FORMAT, "sha256": out.sha.hexdigest(), "size": out.size,
                                  "meta": trailer_meta}, sort_keys=True).encode("utf-8")
            f.write(trailer + _TAIL.pack(len(trailer), MAGIC))
            f.flush()
            os.fsync(f.fileno())
        if path.is_file():  # keep the last two: the current file becomes the previous one
            os.replace(path, previous_path(path))
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a power cut after rename() may otherwise undo it)."""
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened or synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- reading -------------------------------------------------------------------------------------
def read_trailer(path: Path) -> dict | None:
    """The trailer of a biqabench checkpoint; None for a plain torch file (no trailer).

    Raises ``ValueError`` naming what is wrong when the file is damaged.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < _TAIL.size:
            raise ValueError(f"only {size} bytes (truncated)")
        f.seek(size - _TAIL.size)
        length, magic = _TAIL.unpack(f.read(_TAIL.size))
        if magic != MAGIC:
            f.seek(max(0, size - (1 << 16)))
            if MAGIC in f.read():  # ours, with bytes after the record: not what was written
                raise ValueError("bytes after its integrity record (appended to or damaged)")
            return None
        if length > size - _TAIL.size:
            raise ValueError("damaged trailer")
        f.seek(size - _TAIL.size - length)
        try:
            trailer = json.loads(f.read(length))
        except ValueError:
            raise ValueError("damaged trailer") from None
        if not isinstance(trailer, dict) or trailer.get("size") != size - _TAIL.size - length:
            raise ValueError("size does not match its record (truncated or appended to)")
        f.seek(0)
        sha, left = hashlib.sha256(), trailer["size"]
        while left > 0:
            block = f.read(min(1 << 20, left))
            if not block:
                raise ValueError("truncated")
            sha.update(block)
            left -= len(block)
    if sha.hexdigest() != trailer.get("sha256"):
        raise ValueError("its sha256 does not match the one recorded: damaged on disk")
    return trailer


def _read(path: Path, map_location) -> Loaded:
    """One file, verified; raises ``ValueError`` / ``BiqaError`` when it is damaged."""
    trailer = read_trailer(path)
    if trailer is None:
        log.info("%s has no integrity record (written by an older biqabench); reading it unverified", path)
    state = io.load_torch(path, map_location=map_location)
    return Loaded(state, dict((trailer or {}).get("meta") or {}), path)


def load(path: str | os.PathLike, expect: dict | None = None, map_location: str | torch.device = "cpu",
         what: str = "--resume") -> Loaded:
    """Read the checkpoint at ``path`` (or, if it is missing or damaged, ``<path>.prev``), verified.

    A damaged newest file is reported in one warning line naming it and the file used instead.
    ``expect``: settings that must equal those stored at :func:`save` time; a difference stops
    with one line listing them (``key: saved vs now``).  Keys absent from the stored meta are not
    compared (older checkpoints).  Raises :class:`BiqaError` if no usable checkpoint exists.
    """
    path = Path(path)
    _remove_stale_temporaries(path)
    problems = []
    for candidate in (path, previous_path(path)):
        if not candidate.is_file():
            continue
        try:
            loaded = _read(candidate, map_location)
        except (ValueError, BiqaError, OSError) as exc:
            problems.append(f"{candidate} is damaged ({_reason(exc)})")
            continue
        if problems:
            loaded.fallback = True
            log.warning("checkpoint %s; continuing from the previous one, %s", problems[0], candidate)
        if expect:
            check_meta(loaded, expect, what)
        return loaded
    if problems:
        raise BiqaError(f"{what}: no usable checkpoint: {'; '.join(problems)}; drop --resume to start over")
    raise BiqaError(f"{what}: no checkpoint at {path}")


def _reason(exc: Exception) -> str:
    text = str(exc)
    prefix = "cannot read checkpoint "
    if isinstance(exc, BiqaError) and text.startswith(prefix):  # io.load_torch's wording, minus the path
        text = text.split(": ", 1)[-1]
    return text


def _flat(d: dict, prefix: str = "") -> dict:
    """``{"recipe": {"lr": 1}}`` -> ``{"recipe.lr": 1}``: a difference names the one key."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_meta(loaded: Loaded, expect: dict, what: str = "--resume") -> None:
    saved = _flat(loaded.meta)
    now = _flat(json.loads(json.dumps(expect, default=str)))
    problems = [f"{k}: {saved[k]!r} vs {now[k]!r}" for k in sorted(now) if k in saved and saved[k] != now[k]]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; {len(problems) - 4} more" if len(problems) > 4 else "")
        raise BiqaError(f"{what}: checkpoint {loaded.path} was made with other settings ({shown}); "
                        "rerun with the same options, or drop --resume to start over")


def exists(path: str | os.PathLike) -> bool:
    """Whether a checkpoint (or its previous copy) is there to resume from."""
    return Path(path).is_file() or previous_path(path).is_file()


def remove(path: str | os.PathLike) -> None:
    """Delete a checkpoint and its previous copy (a finished split needs neither)."""
    for p in (Path(path), previous_path(path)):
        p.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, what: str = "run folder"):
    """Hold ``<folder>/.lock`` (``flock``) while a run writes checkpoints there.

    Two runs sharing one folder (two ``pretrain qpt --backbone X`` without ``--run-dir`` use the
    same default) would overwrite each other's checkpoints; the second one stops in one line
    instead.  The lock goes with the process, so a killed run never leaves a stale one.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unguarded
        yield
        return
    folder = io.ensure_dir(folder, what)
    lock = folder / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise BiqaError(f"{what} {folder} is in use by another run (pid {owner}); wait for it to finish, "
                            "or give this run its own --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of a write that a SIGKILL or power cut interrupted: never read, removed."""
    if not path.parent.is_dir():
        return
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            log.info("removed %s, left by an interrupted checkpoint write", tmp)
