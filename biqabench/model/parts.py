"""What a :class:`biqabench.model.load.Model` is built from: its description and, for our heads, its backend.

:class:`ModelInfo` says what a model is and how its raw output maps to scores (``biqabench
export`` writes exactly this as a file's header); :class:`HeadBackend` scores one of our heads on
seeded test crops.  Every model source builds these two (an exported file or a run in
:mod:`biqabench.model.sources`, pyiqa's checkpoints in :mod:`biqabench.model.pyiqa_models`), and
:func:`biqabench.model.load.load_model` puts them together, so the sources never import the model
that dispatches to them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from biqabench.base.errors import BiqaError


@dataclass
class ModelInfo:
    """What a model is and how it scores; ``biqabench export`` writes exactly this as the header.

    The network's raw output maps to the native scale as ``offset + gain * raw`` (for our heads
    the raw output is the normalised 0..1 higher-is-better score; pyiqa's outputs are native).
    """

    head: str
    backbone: str = ""
    recipe: dict = field(default_factory=dict)   # the head's full training/test recipe
    patch_size: int = 224                        # test crop side
    test_patches: int = 25                       # test crops per image, scores averaged
    resize: int | str = 0                        # shorter side before cropping (0: as is), or "WxH"
    seed: int = 0                                # test crops are seeded by (file name, seed)
    scale: tuple[float, float] = (0.0, 1.0)      # native range (nan where unknown)
    higher_better: bool = True
    offset: float = 0.0
    gain: float = 1.0
    train_set: str = ""
    weights: str = ""                            # what the backbone started from (imagenet, qpt...)
    source: str = ""                             # where this model was loaded from
    extra: dict = field(default_factory=dict)    # run id, split, fingerprints, pyiqa metric...

    def __post_init__(self) -> None:
        self.scale = (float(self.scale[0]), float(self.scale[1]))

    def to_norm(self, native: np.ndarray) -> np.ndarray:
        """Native scores to 0..1, higher is better (oriented only, where the range is unknown)."""
        native = np.asarray(native, dtype=np.float64)
        lo, hi = self.scale
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            return native if self.higher_better else -native
        norm = (native - lo) / (hi - lo)
        return norm if self.higher_better else 1.0 - norm

    def scale_text(self) -> str:
        lo, hi = self.scale
        fmt = lambda v: f"{v:g}" if math.isfinite(v) else "?"  # noqa: E731
        approx = "~" if self.extra.get("approximate_scale") else ""
        return f"{approx}{fmt(lo)}-{approx}{fmt(hi)} ({'higher' if self.higher_better else 'lower'} is better)"

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["scale"] = [None if not math.isfinite(v) else v for v in self.scale]
        return d

    @classmethod
    def from_json(cls, d: dict, where: str = "model header") -> "ModelInfo":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown or "head" not in d:
            raise BiqaError(f"{where}: not a biqabench model header (unknown fields {unknown[:4]}, "
                            f"head {'present' if 'head' in d else 'missing'})")
        d = dict(d)
        d["scale"] = tuple(float("nan") if v is None else float(v) for v in d.get("scale", (0.0, 1.0)))
        return cls(**d)



class HeadBackend:
    """One of our :class:`~biqabench.components.heads.IQAHead` models, scored on seeded test crops."""

    def __init__(self, head, patch_size: int, test_patches: int, batch_patches: int = 64):
        self.head = head.eval()
        self.patch_size, self.test_patches, self.batch_patches = patch_size, test_patches, batch_patches
        self.min_side = patch_size
        self._net = head

    @property
    def net(self):
        return self.head

    def prepare(self, runtime) -> None:
        from biqabench.training.engine import inference_model

        self.head = runtime.prepare(self.head)
        self._net = inference_model(self.head, runtime)  # folded once, reused by every call

    def score(self, images, runtime, *, seed: int, progress: bool = False, desc: str = "score") -> np.ndarray:
        from biqabench.data.patches import image_patches, test_crop_seed
        from biqabench.training.engine import predict_images

        stream = (image_patches(arr, self.patch_size, self.test_patches, seed=test_crop_seed(name, seed))
                  for name, arr in images)
        return predict_images(self._net, stream, runtime, batch_patches=self.batch_patches,
                              progress=progress, desc=desc)
