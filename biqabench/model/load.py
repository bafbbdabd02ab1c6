"""A trained model as one object: ``m = load_model(SOURCE); m("photo.jpg")``.

SOURCE is a finished ``eval`` run (id, unique prefix or folder), a file written by
``biqabench export``, or ``pyiqa:NAME[:FILE]`` (a pyiqa metric, or pyiqa's HyperIQA / TReS
checkpoint loaded into our heads).  Whatever the source, scoring goes the way evaluation scores
test images: decode through :mod:`biqabench.data.images`, the training set's resize, the same
seeded test crops (:func:`biqabench.data.patches.test_crop_seed`), ImageNet normalisation and
:func:`biqabench.training.engine.predict_images` (batched, ``inference_mode``, bf16 autocast and folded
BatchNorm where the hardware runs bf16 natively).  Scores come back on the model's native scale
(the training set's MOS scale and direction, or the pyiqa metric's own).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from biqabench.base.errors import BiqaError
from biqabench.model.parts import HeadBackend, ModelInfo


@dataclass
class Scored:
    """One image through :meth:`Model.score_files`: its native score, or why it has none."""

    image: str
    pred: float = float("nan")
    note: str = ""       # e.g. "upscaled: 20x16 is smaller than the 224 px test crop"
    error: str = ""      # set when the file could not be read (then pred is nan)


class Model:
    """A scoring model: ``m(x)`` -> native scores.  Build with :func:`load_model`.

    ``x``: a path, a list of paths, a PIL image, a numpy array ((H, W, 3) or (3, H, W), uint8 or
    0..1 floats) or a torch tensor ((3, H, W) or a batch (N, 3, H, W)).  One image gives a float,
    several an array.  ``backend`` is a :class:`HeadBackend` (our heads) or a pyiqa metric
    wrapper; both take uint8 (3, H, W) images and return raw scores.
    """

    def __init__(self, info: ModelInfo, backend, device: str = "auto", precision: str = "auto"):
        self.info = info
        self.backend = backend
        self.to(device, precision)

    # -- what it is ----------------------------------------------------------------------------
    @property
    def scale(self) -> tuple[float, float]:
        return self.info.scale

    @property
    def lower_better(self) -> bool:
        return not self.info.higher_better

    @property
    def device(self):
        return self.runtime.device

    @property
    def precision(self) -> str:
        return self.runtime.precision

    @property
    def net(self):
        """The torch module that scores (our head, or pyiqa's metric network)."""
        return self.backend.net

    def __repr__(self) -> str:
        what = f"{self.info.head}" + (f" on {self.info.backbone}" if self.info.backbone else "")
        return (f"Model({what}, trained on {self.info.train_set or '?'}, scale {self.info.scale_text()}, "
                f"{self.device}, {self.precision}, from {self.info.source})")

    def to(self, device: str | Any = "auto", precision: str | None = None) -> "Model":
        """Move to ``device`` (auto | cpu | cuda[:i] | mps); ``precision`` as in ``--precision``."""
        from biqabench.runtime.device import get_runtime

        keep = getattr(self, "runtime", None)
        self.runtime = get_runtime(str(device), precision or ("auto" if keep is None else keep.precision))
        self.backend.prepare(self.runtime)
        return self

    # -- scoring -------------------------------------------------------------------------------
    def __call__(self, x) -> float | np.ndarray:
        from biqabench.data.images import array_to_chw, pil_to_rgb

        single, items = True, []
        if isinstance(x, (str, os.PathLike)):
            items = [Path(x)]
        elif isinstance(x, (list, tuple)):
            single, items = False, list(x)
        elif _is_batch(x):
            single, items = False, list(x)
        else:
            items = [x]
        images = []
        for k, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                images.append((Path(item).name, _decode(Path(item), self.info.resize)))
            elif hasattr(item, "mode") and hasattr(item, "convert"):  # a PIL image
                images.append(("", np.asarray(pil_to_rgb(item, self.info.resize)).transpose(2, 0, 1)))
            else:
                images.append(("", _resized(array_to_chw(item, what=f"input {k}"), self.info.resize)))
        native = self.score_images(images)
        return float(native[0]) if single else native

    def score_images(self, images: Iterable[tuple[str, np.ndarray]], *, progress: bool = False,
                     desc: str = "score") -> np.ndarray:
        """Native scores of ``(name, uint8 (3, H, W))`` pairs; ``name`` seeds the test crops."""
        raw = self.backend.score(images, self.runtime, seed=self.info.seed, progress=progress, desc=desc)
        return self.info.offset + self.info.gain * np.asarray(raw, dtype=np.float64)

    def score_files(self, files: list[Path], *, skip_bad: bool = False, resize: int | None = None,
                    names: list[str] | None = None, progress: bool = False, desc: str = "score") -> list[Scored]:
        """Score image files, decoded ahead in a thread while the model runs.

        ``skip_bad``: an unreadable file gets an ``error`` and no score and the others go on;
        otherwise the first one stops with its one-line error.  ``names`` (default: the file
        names) seed the test crops, as the dataset's image names do in evaluation.
        """
        from biqabench.runtime.progress import ProgressBar as tqdm

        resize = self.info.resize if resize is None else resize
        names = names if names is not None else [f.name for f in files]
        out = [Scored(str(f)) for f in files]
        kept: list[int] = []
        bar = tqdm(total=len(files), desc=desc, unit="img", disable=not progress, leave=False)
        min_side = self.backend.min_side

        def stream() -> Iterator[tuple[str, np.ndarray]]:
            for i, arr in prefetch(files, lambda f: _decode(f, resize)):
                bar.update(1)
                if isinstance(arr, BiqaError):
                    if not skip_bad:
                        raise BiqaError(f"{arr} (--skip-bad scores the other images and lists this one)")
                    out[i].error = str(arr)
                    bar.set_postfix(skipped=sum(bool(s.error) for s in out))
                    continue
                if min_side and min(arr.shape[1:]) < min_side:
                    out[i].note = (f"upscaled: {arr.shape[2]}x{arr.shape[1]} is smaller than the "
                                   f"{min_side} px test crop")
                kept.append(i)
                yield names[i], arr

        try:
            scores = self.score_images(stream(), desc=desc)
        finally:
            bar.close()
        for i, s in zip(kept, scores):
            out[i].pred = float(s)
        return out


def _is_batch(x) -> bool:
    return getattr(x, "ndim", 0) == 4


def _resized(arr: np.ndarray, resize: int) -> np.ndarray:
    if not resize or min(arr.shape[1:]) == resize:
        return arr
    from PIL import Image

    from biqabench.data.images import pil_to_rgb

    return np.asarray(pil_to_rgb(Image.fromarray(arr.transpose(1, 2, 0)), resize)).transpose(2, 0, 1)


def _decode(path: Path, resize: int) -> np.ndarray:
    from biqabench.data.images import decode_array

    return decode_array(path, resize)


def prefetch(items: list, fn: Callable, workers: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(i, fn(items[i]))`` in order, computed ahead in ``workers`` threads (default: up to 4,
    one per core; PIL decodes without the GIL, so decoding overlaps the forward passes); a
    :class:`BiqaError` raised by ``fn`` is yielded as the value, so the caller decides whether it
    stops the run.  At most ``2 * workers`` decoded images wait, so memory stays flat."""
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    depth = 2 * workers

    def safe(item):
        try:
            return fn(item)
        except BiqaError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        it = iter(enumerate(items))
        for i, item in it:
            pending.append((i, pool.submit(safe, item)))
            if len(pending) >= depth:
                break
        while pending:
            i, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt[0], pool.submit(safe, nxt[1])))
            yield i, fut.result()


def load_model(source, *, device: str = "auto", precision: str = "auto", split: int = 0) -> Model:
    """A :class:`Model` from a run (id, prefix or folder), an exported file or ``pyiqa:NAME[:FILE]``.

    ``split``: which split's model of a run (only the splits whose model the run kept).
    """
    if isinstance(source, Model):
        return source
    text = str(source)
    if text.startswith("pyiqa:"):
        from biqabench.model.pyiqa_models import load_pyiqa

        info, backend = load_pyiqa(text)
        return Model(info, backend, device, precision)
    from biqabench.model.sources import head_from_file, head_from_run, looks_like_model_file

    path = Path(text)
    if path.is_file():
        if not looks_like_model_file(path):
            raise BiqaError(f"--model {path} is a file but not a biqabench model (.safetensors written by "
                            "`biqabench export`); a run is named by its id or folder, a pyiqa model as pyiqa:NAME")
        head, info = head_from_file(path)
    else:
        head, info = head_from_run(text, split)
    return Model(info, HeadBackend(head, info.patch_size, info.test_patches), device, precision)
