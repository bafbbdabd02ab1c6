"""Decode each image once, crop patches from the decoded pixels many times.

IQA recipes draw 25 patches per image per epoch for 10-20 epochs; decoding the JPEG/BMP for each
patch is the classic bottleneck.  :class:`ImageCache` decodes (and, where the recipe says so,
resizes) an image the first time it is asked for and keeps the uint8 pixels:

* in memory, per process, up to a byte budget (least recently used entries go first);
* optionally on disk as ``.npy`` files keyed by path, file size, mtime and resize, so DataLoader
  workers, later epochs and later runs share one decode.  Each file is stat'ed once per cache
  (one dataset load), not once per patch.  Entries are written atomically, so
  concurrent workers never read half a file.

With DataLoader workers, each worker holds its own memory cache (nothing large is pickled to
it); use ``persistent_workers=True`` to keep those across epochs, or a cache ``folder``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from biqabench.data.images import decode_array
from biqabench.base.errors import BiqaError
from biqabench.base.paths import cache_root

log = logging.getLogger(__name__)

_FORMAT = "v1"  # bump when the decoded representation changes
DEFAULT_MEMORY = 2 << 30


def _memory_budget() -> int:
    env = os.environ.get("BIQABENCH_CACHE_MEMORY_MB")
    try:
        return int(float(env) * (1 << 20)) if env else DEFAULT_MEMORY
    except ValueError:
        raise BiqaError(f"BIQABENCH_CACHE_MEMORY_MB must be a number, got {env!r}") from None


def default_cache_folder() -> Path:
    """``cache_root()/decoded``: where a disk cache goes unless told otherwise."""
    return cache_root() / "decoded"


class ImageCache:
    """Decoded uint8 images, (3, H, W), keyed by file.

    ``resize``: shorter side in pixels after decoding (0 keeps the original size), or (W, H).
    ``folder``: a disk cache folder (None: memory only).  ``memory_bytes``: per-process budget of
    the memory layer (default 2 GiB or ``$BIQABENCH_CACHE_MEMORY_MB``; 0 disables it).
    """

    def __init__(self, resize: int = 0, folder: Path | str | None = None, memory_bytes: int | None = None):
        from biqabench.data.images import parse_resize

        self.resize = parse_resize(resize)  # N (short side) or (W, H)
        self.folder = Path(folder) if folder is not None else None
        self.memory_bytes = _memory_budget() if memory_bytes is None else int(memory_bytes)
        self._mem: OrderedDict[str, np.ndarray] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}  # absolute path -> entry key, stat'ed once (see _key)
        self.decodes = 0   # how many times an image was actually decoded (for tests and benchmarks)
        self.hits = 0

    # workers get an empty memory layer, not a pickled copy of gigabytes of pixels
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_mem"] = OrderedDict()
        state["_used"] = 0
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _key(self, path: Path) -> str:
        """The entry of ``path``: its absolute name, size, mtime, the resize and the format.

        The file is stat'ed the first time this cache is asked for it, not once per patch (25 an
        epoch): a cache serves one dataset load (the runner makes one per dataset), and a file
        edited before the next load (run) gets a new key there, so it is decoded again.
        """
        name = os.path.abspath(path)
        key = self._keys.get(name)
        if key is None:
            st = os.stat(name)
            raw = f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{self.resize}\0{_FORMAT}"
            key = self._keys[name] = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]
        return key

    def _disk_path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.npy"

    def _remember(self, key: str, arr: np.ndarray) -> None:
        if arr.nbytes > self.memory_bytes:
            return
        with self._lock:
            if key in self._mem:
                return
            self._mem[key] = arr
            self._used += arr.nbytes
            while self._used > self.memory_bytes and self._mem:
                _, old = self._mem.popitem(last=False)
                self._used -= old.nbytes

    def get_array(self, path: str | os.PathLike) -> np.ndarray:
        """The decoded image as a read-only uint8 array (3, H, W); do not modify it."""
        path = Path(path)
        try:
            key = self._key(path)
        except FileNotFoundError:
            raise BiqaError(f"image {path} does not exist") from None
        with self._lock:
            arr = self._mem.get(key)
            if arr is not None:
                self._mem.move_to_end(key)
                self.hits += 1
                return arr
        if self.folder is not None:
            disk = self._disk_path(key)
            if disk.is_file():
                try:
                    arr = np.load(disk, allow_pickle=False)
                    problem = None if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[0] == 3 else \
                        f"holds a {arr.dtype} array of shape {arr.shape}"
                except (OSError, ValueError, EOFError) as exc:
                    problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if problem is None:
                    arr.setflags(write=False)
                    self._remember(key, arr)
                    self.hits += 1
                    return arr
                # never trusted; the decode below overwrites it, so this is said once per entry
                log.warning("decoded-image cache entry %s is damaged (%s); rebuilt from %s", disk, problem, path)
        arr = decode_array(path, self.resize)
        arr.setflags(write=False)
        self.decodes += 1
        if self.folder is not None:
            self._write(self._disk_path(key), arr)
        self._remember(key, arr)
        return arr

    def get(self, path: str | os.PathLike) -> torch.Tensor:
        """The decoded image as a torch uint8 tensor (3, H, W) (a copy: safe to modify)."""
        return torch.from_numpy(np.array(self.get_array(path), copy=True))

    @staticmethod
    def _write(target: Path, arr: np.ndarray) -> None:
        tmp = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npy.tmp", dir=target.parent)
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, target)
        except OSError as exc:  # a full or read-only disk slows things down but breaks nothing
            log.warning("could not write decoded-image cache %s: %s", target, exc)
            if tmp is not None:  # no half-written entry left behind
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def warm(self, paths: Iterable[str | os.PathLike], workers: int | None = None,
             progress: bool = True) -> dict[Path, str]:
        """Decode every image now (threads: PIL releases the GIL while decoding).

        Returns {path: reason} for images that failed to decode, so callers can report them all
        before training starts instead of crashing in the middle of an epoch.
        """
        paths = [Path(p) for p in paths]
        workers = workers or min(8, os.cpu_count() or 1)
        bad: dict[Path, str] = {}

        def one(p: Path) -> None:
            try:
                self.get_array(p)
            except BiqaError as exc:
                bad[p] = str(exc)

        bar = None
        if progress and len(paths) > 200:
            from tqdm import tqdm
            bar = tqdm(total=len(paths), desc="decoding images", unit="img")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(one, paths):
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return bad
