"""Weights: the store of pretrained backbones, and resolving ``--weights NAME`` into tensors.

Names a user can give:

* ``random``: keep the backbone's initialisation;
* ``imagenet``: torchvision's ImageNet-1k weights, from torch hub's cache folder
  (downloaded once when online; offline the error names the file to place there);
* a pretrainer name, e.g. ``qpt``: the newest weights that pretrainer saved for this backbone;
* a path to ``.safetensors`` or a torch checkpoint (``.pt/.pth/.pth.tar/.ckpt``); common wrapper
  prefixes (``module.``, ``encoder_q.``, ``backbone.``, ``model.``...) are stripped, projection
  and classifier tensors dropped.

This is the only module that reads weights files, so swapping weights into a head never touches
the head's code.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from biqabench.base import io
from biqabench.base.errors import BiqaError
from biqabench.base.paths import weights_root

log = logging.getLogger(__name__)

BUILTIN_NAMES = ("random", "imagenet")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".pth.tar", ".ckpt", ".bin", ".tar")
# Stripped (repeatedly, in any order) until a key matches the backbone.
PREFIXES = ("module.", "encoder_q.", "encoder.", "backbone.", "model.", "net.", "base_encoder.", "res.")
# Containers a checkpoint may wrap its state_dict in.
WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "params", "backbone")
IMAGENET_WEIGHTS = "IMAGENET1K_V1"


@dataclass
class WeightsRecord:
    """One entry of the weights store (the JSON manifest next to a .safetensors file)."""

    name: str  # producer, e.g. "qpt"
    backbone: str
    file: Path
    created: str
    sha256: str
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, path: Path) -> "WeightsRecord":
        data = json.loads(path.read_text())
        return cls(
            name=data["producer"], backbone=data["backbone"], file=path.with_suffix(".safetensors"),
            created=data["created"], sha256=data["sha256"], config=data.get("config", {}),
            extra=data.get("extra", {}),
        )


@dataclass
class LoadReport:
    source: str
    loaded: int
    dropped: list[str] = field(default_factory=list)


class WeightsStore:
    """``<root>/<producer>/<backbone>/<timestamp>.safetensors`` + ``.json`` manifests."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else weights_root()

    def save(self, state_dict: Mapping[str, torch.Tensor], *, producer: str, backbone: str,
             config: dict | None = None, extra: dict | None = None) -> WeightsRecord:
        now = _dt.datetime.now(_dt.timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
        path = self._claim(self.root / producer / backbone.replace("/", "--"), stamp)  # timm/resnet50 -> one folder
        io.save_safetensors(dict(state_dict), path, metadata={"producer": producer, "backbone": backbone})
        digest = io.sha256_file(path)
        manifest = {
            "producer": producer, "backbone": backbone, "created": now.isoformat(),
            "sha256": digest, "file": path.name, "config": config or {}, "extra": extra or {},
        }
        io.write_json(path.with_suffix(".json"), manifest)
        return WeightsRecord(producer, backbone, path, manifest["created"], digest, config or {}, extra or {})

    @staticmethod
    def _claim(folder: Path, stamp: str) -> Path:
        """A file name no other run uses: two runs saving in the same microsecond (two jobs on one
        store) must never overwrite each other.  The name is taken with O_EXCL; the empty file is
        replaced atomically by the weights, and listed only once its manifest exists (written last),
        so ``weights list`` never shows a half-written file."""
        for n in range(1000):
            path = folder / f"{stamp}{f'-{n}' if n else ''}.safetensors"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                return path
            except FileExistsError:
                continue
            except OSError as exc:
                raise BiqaError(f"cannot write {path}: {exc.strerror or exc}; choose a writable folder") from None
        raise BiqaError(f"could not find a free weights file name in {folder} after 1000 tries")

    def records(self, producer: str | None = None, backbone: str | None = None) -> list[WeightsRecord]:
        if not self.root.is_dir():
            return []
        out = []
        for manifest in sorted(self.root.glob("*/*/*.json")):
            try:
                rec = WeightsRecord.from_manifest(manifest)
            except (ValueError, KeyError, OSError):
                log.warning("skipping unreadable weights manifest %s", manifest)
                continue
            if not rec.file.is_file():
                continue
            if (producer is None or rec.name == producer) and (backbone is None or rec.backbone == backbone):
                out.append(rec)
        return sorted(out, key=lambda r: r.created)

    def latest(self, producer: str, backbone: str) -> WeightsRecord | None:
        recs = self.records(producer, backbone)
        return recs[-1] if recs else None


# -- reading files -----------------------------------------------------------------------------

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from common containers; never runs pickled code."""
    path = Path(path)
    if not path.is_file():
        raise BiqaError(f"weights file {path} does not exist")
    if path.name.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BiqaError(f"cannot read {path} as safetensors: {exc}") from None
    obj = io.load_torch(path)
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise BiqaError(f"{path} holds no state_dict of tensors (top-level keys: {_peek(obj)})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= max(1, len(obj) // 2)


def _peek(obj) -> str:
    return ", ".join(list(map(str, obj))[:6]) if isinstance(obj, Mapping) else type(obj).__name__


def remap_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module,
                     source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Match checkpoint keys to ``model``'s, stripping wrapper prefixes; return (state, dropped).

    A backbone's ``adapt_state_dict`` (e.g. a timm backbone taking timm / Hugging Face
    checkpoints as they are) translates the keys first.  Tensors the model does not hold (a MoCo
    queue, a projection head, a classifier) are dropped; a missing or wrongly shaped tensor is a
    :class:`BiqaError` (see :func:`check_fit`).
    """
    adapt = getattr(model, "adapt_state_dict", None)
    if callable(adapt):
        state = adapt(dict(state))
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        k = key
        while k not in target:
            for p in PREFIXES:
                if k.startswith(p):
                    k = k[len(p):]
                    break
            else:
                break
        if k in target and k not in out:
            out[k] = value
        else:
            dropped.append(key)
    name = getattr(model, "name", type(model).__name__)
    check_fit(out, target, source=source, subject=f"backbone {name!r}", unused=dropped,
              hint="Was it made for another backbone?")
    return _with_optional(out, target), dropped


def _with_optional(mapped: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for k in target:  # num_batches_tracked is optional in many checkpoints
        mapped.setdefault(k, target[k])
    return mapped


def check_fit(mapped: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *, source: str, subject: str,
              unused: Sequence[str] = (), unused_is_error: bool = False, hint: str = "") -> None:
    """The one fit report: raise a :class:`BiqaError` unless ``mapped`` fills ``target``.

    Missing tensors (BatchNorm's ``num_batches_tracked`` is optional), tensors of another shape
    and, when ``unused_is_error``, tensors the model does not hold are named with examples, so a
    checkpoint never half-loads.  Used for backbones (:func:`remap_state_dict`) and for whole
    heads (:func:`biqabench.components.heads.load_foreign_state_dict`).
    """
    required = [k for k in target if not k.endswith("num_batches_tracked")]
    missing = [k for k in required if k not in mapped]
    bad_shape = [f"{k} {tuple(v.shape)} vs ours {tuple(target[k].shape)}"
                 for k, v in mapped.items() if k in target and v.shape != target[k].shape]
    if not (missing or bad_shape or (unused_is_error and unused)):
        return
    matched = len(required) - len(missing) - len(bad_shape)
    detail = []
    if missing:
        detail.append(f"{len(missing)} missing e.g. {', '.join(missing[:3])}")
    if bad_shape:
        detail.append(f"{len(bad_shape)} of another shape e.g. {'; '.join(bad_shape[:2])}")
    if unused:
        detail.append(f"{len(unused)} {'unexpected' if unused_is_error else 'unused'} e.g. {', '.join(unused[:3])}")
    raise BiqaError(f"{source} does not fit {subject}: {matched} of {len(required)} tensors matched "
                    f"({'; '.join(detail)}). {hint}".rstrip())


def load_checked(model: nn.Module, mapped: dict[str, torch.Tensor], *, source: str, subject: str,
                 unused: Sequence[str] = (), unused_is_error: bool = False, hint: str = "") -> LoadReport:
    """:func:`check_fit`, then load ``mapped`` into ``model`` strictly; returns the report."""
    target = model.state_dict()
    check_fit(mapped, target, source=source, subject=subject, unused=unused, unused_is_error=unused_is_error,
              hint=hint)
    loaded = len(mapped)
    model.load_state_dict(_with_optional(dict(mapped), target), strict=True)
    return LoadReport(source, loaded, list(unused))


# -- resolution --------------------------------------------------------------------------------

def is_checkpoint_path(spec: str) -> bool:
    """Whether a ``--weights`` value names a file (rather than random, imagenet or a pretrainer)."""
    return "/" in spec or "\\" in spec or spec.endswith(CHECKPOINT_SUFFIXES) or Path(spec).is_file()


def weights_label(spec: str) -> str:
    """The short name of a ``--weights`` value for run ids, job keys and tables: the name itself,
    or a checkpoint file's stem."""
    spec = str(spec).strip() or "random"
    return Path(spec).stem if is_checkpoint_path(spec) else spec


@dataclass
class ResolvedWeights:
    """A ``--weights`` value resolved for one backbone: the tensors and where they came from."""

    spec: str                       # as given: random, imagenet, qpt, a path
    backbone: str
    state: dict[str, torch.Tensor] | None  # None: keep the backbone's random initialisation
    source: str                     # human-readable origin, e.g. "qpt (/store/qpt/resnet50/....safetensors)"
    sha256: str | None = None       # of the file read (None for random)
    file: Path | None = None        # the file read: what a run pins (biqabench.evaluation.pinning)

    @property
    def label(self) -> str:
        return weights_label(self.spec)

    def load_into(self, model: nn.Module) -> LoadReport:
        """Load into a backbone in place (wrapper prefixes stripped, extra tensors dropped)."""
        if self.state is None:
            return LoadReport("random", 0)
        mapped, dropped = remap_state_dict(self.state, model, self.source)
        model.load_state_dict(mapped, strict=True)
        if dropped:
            log.info("weights %s: dropped %d tensors not in the backbone (e.g. %s)", self.source, len(dropped),
                     ", ".join(dropped[:3]))
        return LoadReport(self.source, len(mapped), dropped)

    def describe(self) -> dict:
        """What a manifest records about the weights."""
        return {"weights": self.spec, "weights_source": self.source, "weights_sha256": self.sha256,
                "weights_file": str(Path(self.file).resolve()) if self.file else None,
                "weights_pretraining_run": pretraining_run(self.file) if self.file else None}


def pretraining_run(file: str | os.PathLike | None) -> str | None:
    """The pretraining run folder recorded next to a store file (``<stamp>.json``: extra.run_dir)."""
    if not file:
        return None
    sidecar = Path(file).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        return (json.loads(sidecar.read_text()).get("extra") or {}).get("run_dir")
    except (OSError, ValueError, AttributeError):
        return None


def imagenet_checkpoint(backbone_name: str) -> tuple[str, Path]:
    """(download URL, cache path) of torchvision's ImageNet weights for a backbone."""
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(backbone_name)
    except (ValueError, KeyError):
        raise BiqaError(f"--weights imagenet: no torchvision ImageNet weights for backbone {backbone_name!r}") from None
    w = getattr(enum, IMAGENET_WEIGHTS, None) or enum.DEFAULT
    filename = w.url.rsplit("/", 1)[-1]
    return w.url, Path(torch.hub.get_dir()) / "checkpoints" / filename


def _imagenet_state(backbone_name: str) -> tuple[dict[str, torch.Tensor], str, Path]:
    from biqabench.components.plugins import registry
    from biqabench.components.registry import UnknownComponentError

    try:
        own = registry("backbones").entry(backbone_name).meta.get("imagenet") if backbone_name else None
    except UnknownComponentError:
        own = None
    if own is not None:  # the backbone's plugin knows its ImageNet weights (e.g. timm's pretrained cfg)
        path = Path(own())
        return read_state_dict(path), f"imagenet ({path})", path
    url, cached = imagenet_checkpoint(backbone_name)
    if not cached.is_file():
        try:
            torch.hub.download_url_to_file(url, str(cached), progress=True)
        except Exception as exc:  # noqa: BLE001 - URLError, socket errors, SSL...
            raise BiqaError(
                f"--weights imagenet: could not download {url} ({type(exc).__name__}); "
                f"offline, place that file at {cached}"
            ) from None
    return read_state_dict(cached), f"imagenet ({cached})", cached


def resolve_weights(spec: str, backbone: str | nn.Module, store: WeightsStore | None = None) -> ResolvedWeights:
    """The one route from a ``--weights`` value to tensors for ``backbone`` (a name or a module).

    Mistakes (an unknown name, no weights of a pretrainer for this backbone, an unreadable file)
    are one-line errors naming the fix; whether the tensors fit is checked by
    :meth:`ResolvedWeights.load_into`.
    """
    backbone_name = backbone if isinstance(backbone, str) else getattr(backbone, "name", "")
    spec = str(spec).strip()
    if spec in ("", "random", "none", "scratch"):
        return ResolvedWeights(spec or "random", backbone_name, None, "random")
    if spec == "imagenet":
        state, source, file = _imagenet_state(backbone_name)
        return ResolvedWeights(spec, backbone_name, state, source, io.sha256_file(file), file)
    if is_checkpoint_path(spec):
        return ResolvedWeights(spec, backbone_name, read_state_dict(spec), spec, io.sha256_file(spec), Path(spec))
    store = store or WeightsStore()
    rec = store.latest(spec, backbone_name)
    if rec is None:
        _no_such_weights(spec, backbone_name, store)
    return ResolvedWeights(spec, backbone_name, read_state_dict(rec.file), f"{spec} ({rec.file})", rec.sha256,
                           rec.file)


def _no_such_weights(spec: str, backbone_name: str, store: WeightsStore) -> None:
    from biqabench.components.plugins import registry

    pretrainers = registry("pretrainers").names()
    others = sorted({r.backbone for r in store.records(spec)})
    if spec in pretrainers or others:
        have = f" (it has {spec} weights for: {', '.join(others)})" if others else ""
        raise BiqaError(
            f"no {spec!r} weights for backbone {backbone_name!r} in {store.root}{have}; "
            f"make them with: biqabench pretrain {spec} --backbone {backbone_name}"
        )
    from biqabench.components.registry import unknown_name_message

    raise BiqaError(
        unknown_name_message("weights", spec, list(BUILTIN_NAMES) + pretrainers)
        + "; or give a path to a .safetensors/.pth file" + registry("pretrainers").missing_hint
    )


def load_weights(model: nn.Module, spec: str, backbone_name: str | None = None,
                 store: WeightsStore | None = None) -> LoadReport:
    """Resolve ``spec`` and load it into ``model`` (a backbone) in place."""
    return resolve_weights(spec, backbone_name or getattr(model, "name", ""), store).load_into(model)


def describe_store(store: WeightsStore | None = None) -> list[dict]:
    """Rows for ``biqabench weights list``."""
    store = store or WeightsStore()
    rows = [{"name": n, "backbone": "any", "created": "", "file": "(built in)"} for n in BUILTIN_NAMES]
    for r in store.records():
        rows.append({"name": r.name, "backbone": r.backbone, "created": r.created[:19],
                     "file": str(r.file)})
    return rows


