"""pyiqa at run time: its metrics as models, its HyperIQA / TReS checkpoints in our heads.

Sources (``--model`` / :func:`biqabench.load_model`):

* ``pyiqa:METRIC:FILE`` where an installed head loads METRIC's checkpoints (``HeadSpec.pyiqa``;
  the bundled HyperIQA and TReS heads do, with parity-tested loaders): pyiqa's published checkpoint
  ``FILE`` loaded into that head and scored by our engine on our protocol (seeded crops, batched,
  bf16 where native);
* ``pyiqa:NAME[:FILE]``: any blind (NR) pyiqa metric, run by pyiqa itself on each whole image
  (``FILE``: its ``pretrained_model_path``).  Scale and direction come from pyiqa's metadata
  (``score_range``, ``lower_better``).

Weights come only from the local caches (torch hub's ``pyiqa`` folder, the Hugging Face cache):
pyiqa downloads inside its constructors, so construction runs with every download function
replaced by one that raises (named file, where to put it), Hugging Face in offline mode and, as
a last net, sockets refusing to connect.  The originals are restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import math
import socket
import sys
from pathlib import Path
from unittest import mock

import numpy as np

from biqabench.base.errors import BiqaError
from biqabench.model.parts import HeadBackend, ModelInfo

class _MissingWeights(BiqaError):
    pass


def parse_source(source: str) -> tuple[str, str]:
    """``pyiqa:NAME[:FILE]`` -> (NAME, FILE or "")."""
    _, _, rest = source.partition(":")
    name, _, file = rest.partition(":")
    if not name:
        raise BiqaError(f"--model {source!r}: name a pyiqa metric, e.g. pyiqa:piqe or pyiqa:hyperiqa:FILE")
    return name.strip(), file.strip()


def _configs() -> dict:
    try:
        from pyiqa.default_model_configs import DEFAULT_CONFIGS
    except ImportError:
        raise BiqaError("pyiqa is not installed: pip install pyiqa (needed for --model pyiqa:...)") from None
    return DEFAULT_CONFIGS


def _metric_config(name: str) -> dict:
    configs = _configs()
    if name not in configs:
        close = difflib.get_close_matches(name, list(configs), n=4, cutoff=0.5)
        raise BiqaError(f"pyiqa has no metric {name!r}" + (f"; did you mean: {', '.join(close)}?" if close else
                        "; list them with python -c 'import pyiqa; print(pyiqa.list_models(metric_mode=\"NR\"))'"))
    cfg = configs[name]
    if cfg.get("metric_mode") != "NR":
        raise BiqaError(f"pyiqa metric {name!r} is full-reference (it compares with a reference image); "
                        "biqabench scores blind (NR) metrics only")
    return cfg


def parse_range(text: str | None) -> tuple[tuple[float, float], bool]:
    """pyiqa's ``score_range`` (``'~0, ~100'``, ``'1, 5'``, ``'0, ~'``) -> ((lo, hi), approximate)."""
    if not text:
        return (float("nan"), float("nan")), True
    parts = [p.strip() for p in str(text).split(",")]
    vals = []
    for p in parts[:2]:
        v = p.lstrip("~").strip()
        try:
            vals.append(float(v))
        except ValueError:
            vals.append(float("nan"))
    while len(vals) < 2:
        vals.append(float("nan"))
    return (vals[0], vals[1]), "~" in str(text)


def _refuse_url(url, dst=None, *args, **kwargs):
    where = f" at {dst}" if dst else ""
    raise _MissingWeights(f"needs {Path(str(dst or url)).name}, which is not in the local cache; biqabench "
                          f"never downloads: fetch {url} once and place it{where}")


def _refuse_socket(self, address):
    raise _MissingWeights(f"tried to reach the network ({address}) for weights that are not in the local cache; "
                          "biqabench never downloads: fetch them with pyiqa once while online")


@contextlib.contextmanager
def offline():
    """While pyiqa builds a metric: no download of any kind, a one-line error naming the file."""
    import torch.hub

    real = torch.hub.download_url_to_file
    with contextlib.ExitStack() as stack:
        for mod in list(sys.modules.values()):
            if getattr(mod, "download_url_to_file", None) is real:
                stack.enter_context(mock.patch.object(mod, "download_url_to_file", _refuse_url))
        try:
            import huggingface_hub.constants as hf_constants

            stack.enter_context(mock.patch.object(hf_constants, "HF_HUB_OFFLINE", True))
        except ImportError:
            pass
        stack.enter_context(mock.patch.object(socket.socket, "connect", _refuse_socket))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # pyiqa prints "Downloading: ..."
        yield


def _create_metric(name: str, file: str, device):
    import pyiqa

    kwargs = {"pretrained_model_path": file} if file else {}
    if file and not Path(file).is_file():
        raise BiqaError(f"pyiqa:{name}:{file}: no such file")
    try:
        with offline():
            return pyiqa.create_metric(name, as_loss=False, device=device, **kwargs)
    except _MissingWeights as exc:
        raise BiqaError(f"pyiqa metric {name!r} {exc}") from None
    except BiqaError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyiqa/HF raise many kinds; one line naming the metric
        text = " ".join(str(exc).split())[:240]
        hint = ("; its weights are not in the local Hugging Face cache and biqabench never downloads"
                if "offline" in text.lower() or "LocalEntryNotFound" in type(exc).__name__ else "")
        raise BiqaError(f"pyiqa metric {name!r} could not be built: {type(exc).__name__}: {text}{hint}") from None


class PyiqaMetricBackend:
    """A pyiqa metric scoring whole images, one per forward (pyiqa metrics take any size)."""

    min_side = 0

    def __init__(self, name: str, file: str):
        self.name, self.file = name, file
        self.metric = None
        self._device = None

    @property
    def net(self):
        return None if self.metric is None else self.metric.net

    def prepare(self, runtime) -> None:
        if self.metric is None or self._device != runtime.device:
            self.metric = _create_metric(self.name, self.file, runtime.device)
            self._device = runtime.device

    def score(self, images, runtime, *, seed: int, progress: bool = False, desc: str = "score") -> np.ndarray:
        import torch
        from biqabench.runtime.progress import ProgressBar as tqdm

        out = []
        with torch.inference_mode():
            for _, arr in tqdm(images, desc=desc, disable=not progress, leave=False, unit="img"):
                x = torch.from_numpy(arr).to(runtime.device)[None].float().div_(255.0)
                out.append(float(self.metric(x).float().mean().cpu()))
        return np.asarray(out, dtype=np.float64)


def checkpoint_model(name: str, file: str) -> tuple[ModelInfo, HeadBackend]:
    """pyiqa metric ``name``'s checkpoint ``file`` in the installed head whose plugin loads that
    layout (:class:`biqabench.components.heads.PyiqaCheckpoint`), scored on our protocol."""
    from biqabench.components.backbones import create_backbone
    from biqabench.components.heads import create_head, pyiqa_head
    from biqabench.components.plugins import registry
    from biqabench.components.weights import read_state_dict

    spec = pyiqa_head(name)
    if spec is None:
        able = ", ".join(f"{e.obj.pyiqa_metric} ({e.name})" for e in registry("heads").entries() if e.obj.pyiqa)
        raise BiqaError(f"pyiqa:{name}:{file}: no installed head loads pyiqa {name!r} checkpoints (installed: "
                        f"{able or 'none'}); a head plugin declares it with HeadSpec(pyiqa=PyiqaCheckpoint(...))")
    if not Path(file).is_file():
        raise BiqaError(f"pyiqa:{name}:{file}: no such checkpoint file")
    state = read_state_dict(file)
    backbone = spec.pyiqa.backbone(state)
    head = create_head(spec.name, create_backbone(backbone, weights="random"), recipe=spec.recipe)
    spec.pyiqa.load(head, state)
    cfg = _configs().get(name, {})
    scale, approx = parse_range(cfg.get("score_range"))
    info = ModelInfo(
        head=spec.name, backbone=backbone, recipe=dataclasses.asdict(spec.recipe), patch_size=spec.recipe.patch_size,
        test_patches=spec.recipe.test_patches, scale=scale, higher_better=not cfg.get("lower_better", False),
        train_set=str(cfg.get("metric_opts", {}).get("train_dataset", "koniq")), weights=f"pyiqa:{Path(file).name}",
        source=f"pyiqa:{name}:{file}", extra={"approximate_scale": approx, "pyiqa_checkpoint": str(file)},
    )
    return info, HeadBackend(head, info.patch_size, info.test_patches)


def metric_model(name: str, file: str) -> tuple[ModelInfo, PyiqaMetricBackend]:
    cfg = _metric_config(name)
    scale, approx = parse_range(cfg.get("score_range"))
    info = ModelInfo(head=name, backbone="", patch_size=0, test_patches=0, scale=scale,
                     higher_better=not cfg.get("lower_better", False), weights="pyiqa",
                     train_set=str(cfg.get("metric_opts", {}).get("pretrained", "") or ""),
                     source=f"pyiqa:{name}" + (f":{file}" if file else ""),
                     extra={"approximate_scale": approx, "pyiqa_metric": name,
                            "pyiqa_version": _pyiqa_version()})
    return info, PyiqaMetricBackend(name, file)


def _pyiqa_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyiqa")
    except PackageNotFoundError:
        return ""


def load_pyiqa(source: str):
    """(ModelInfo, backend) for a ``pyiqa:...`` source: a checkpoint file of a metric an installed
    head loads goes into that head, anything else is run by pyiqa."""
    from biqabench.components.heads import pyiqa_head

    name, file = parse_source(source)
    if file and pyiqa_head(name) is not None:
        return checkpoint_model(name, file)
    return metric_model(name, file)


def is_finite_range(scale: tuple[float, float]) -> bool:
    return all(math.isfinite(v) for v in scale)


__all__ = ["load_pyiqa", "offline", "parse_range", "parse_source", "PyiqaMetricBackend", "checkpoint_model",
           "metric_model", "is_finite_range"]
