"""IQA heads: models built *around* a given backbone, each with its training recipe as data.

A head plugin registers a :class:`HeadSpec`.  The runner never special-cases a head: it builds
``spec.build(backbone, recipe)``, trains with ``model.loss(x, mos)`` and the optimiser groups of
``model.param_groups(recipe)``, and predicts with ``model(x)``.  Scores are on the normalised
scale (0..1, higher is better) during training; datasets map them back to their native scale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from biqabench.backbones import Backbone, create_backbone
from biqabench.config import override
from biqabench.plugins import registry


@dataclass
class Recipe:
    """How a head is trained and tested. Defaults are HyperIQA's paper settings."""

    patch_size: int = 224
    train_patches: int = 25      # random patches drawn per training image per epoch
    test_patches: int = 25       # patches per test image, scores averaged
    batch_size: int = 96
    epochs: int = 16
    lr: float = 2e-5             # backbone learning rate
    head_lr_mult: float = 10.0   # the head's parameters learn this many times faster
    weight_decay: float = 5e-4
    optimizer: str = "adam"      # adam | adamw | sgd
    lr_step: int = 6             # divide lr by 1/lr_gamma every lr_step epochs (0: constant)
    lr_gamma: float = 0.1
    loss: str = "l1"
    freeze_backbone: bool = False  # linear probe: the backbone is not trained
    cache_features: bool = False   # with freeze_backbone: backbone features of fixed crops computed once
                                   # per image and reused by every split and epoch (biqabench.features)
    resize: int = 0              # resize the short side to this before cropping (0: as is)
    hflip: bool = True           # random horizontal flips of training patches
    vflip: bool = False          # random vertical flips of training patches (TReS's reference code)
    options: dict = field(default_factory=dict)  # head-specific extras


def validate_recipe(recipe: Recipe, where: str = "recipe") -> Recipe:
    """Catch values no training run can use (0 epochs, a negative learning rate...) before any
    work starts, naming the key; head-specific settings are checked by the head itself."""
    from biqabench.errors import BiqaError

    for key in ("patch_size", "train_patches", "test_patches", "batch_size", "epochs"):
        if getattr(recipe, key) < 1:
            raise BiqaError(f"{where}: {key} must be at least 1, got {getattr(recipe, key)}")
    for key in ("lr_step", "resize"):
        if getattr(recipe, key) < 0:
            raise BiqaError(f"{where}: {key} must be 0 or more, got {getattr(recipe, key)}")
    if not (recipe.lr > 0 and recipe.lr != float("inf")):
        raise BiqaError(f"{where}: lr must be a positive number, got {recipe.lr}")
    for key in ("head_lr_mult", "weight_decay", "lr_gamma"):
        value = getattr(recipe, key)
        if not 0 <= value < float("inf"):
            raise BiqaError(f"{where}: {key} must be a finite number >= 0, got {value}")
    if recipe.cache_features and not recipe.freeze_backbone:
        raise BiqaError(f"{where}: cache_features needs freeze_backbone: true (a backbone that trains "
                        "changes its features every step)")
    if str(recipe.optimizer).lower() not in ("adam", "adamw", "sgd"):
        raise BiqaError(f"{where}: optimizer {recipe.optimizer!r} is not one of adam, adamw, sgd")
    top = recipe.lr * max(1.0, recipe.head_lr_mult)
    if top > torch.finfo(torch.float32).max:  # the optimiser could not even apply it
        raise BiqaError(f"{where}: lr {recipe.lr:g} (x{recipe.head_lr_mult:g} for the head) is beyond float32 "
                        "range; use a learning rate like 1e-4")
    return recipe


class IQAHead(nn.Module):
    """Base class: holds ``self.backbone``; subclasses implement ``forward(x) -> (B,)`` scores."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.frozen_backbone = False  # set by create_head for a linear probe

    def train(self, mode: bool = True) -> "IQAHead":
        """A frozen backbone stays in eval mode: a linear probe must not drift BN statistics."""
        super().train(mode)
        if mode and self.frozen_backbone:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, x: torch.Tensor, mos: torch.Tensor) -> torch.Tensor:
        """Training loss on a batch of patches and their normalised MOS. Default: L1."""
        return self.criterion(self(x), mos)

    def criterion(self, pred: torch.Tensor, mos: torch.Tensor) -> torch.Tensor:
        """The loss between predicted and true normalised MOS (L1 unless the head says otherwise)."""
        return F.l1_loss(pred.float(), mos.float())

    # -- training from cached backbone features (recipe ``cache_features``) -----------------
    # A head that can score from the frozen backbone's output implements ``score_features``;
    # ``cache_features`` may shrink that output to what the head reads, where that is exact.
    def cache_features(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """What of the backbone's stage maps to keep per crop (default: all of them)."""
        return list(maps)

    def score_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Scores (B,) from ``cache_features(backbone(x))``; equals ``forward(x)``."""
        raise NotImplementedError(f"{type(self).__name__} does not score from cached features")

    @property
    def scores_features(self) -> bool:
        return type(self).score_features is not IQAHead.score_features

    def loss_features(self, feats: list[torch.Tensor], mos: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.score_features(feats), mos)

    def head_parameters(self):
        ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def param_groups(self, recipe: Recipe) -> list[dict]:
        """Optimiser groups: backbone at ``lr``, the rest at ``lr * head_lr_mult``."""
        groups = [{"params": self.head_parameters(), "lr": recipe.lr * recipe.head_lr_mult, "name": "head"}]
        if not recipe.freeze_backbone:
            groups.append({"params": list(self.backbone.parameters()), "lr": recipe.lr, "name": "backbone"})
        return groups


@dataclass
class HeadSpec:
    """What a head plugin registers."""

    name: str
    build: Callable[[Backbone, Recipe], IQAHead]
    recipe: Recipe = field(default_factory=Recipe)
    description: str = ""
    reference: str = ""  # paper / code it follows


def head_spec(name: str) -> HeadSpec:
    return registry("heads").get(name)


def create_head(name: str, backbone: Backbone | str = "resnet50", weights: str = "random",
                recipe: Recipe | dict | None = None) -> IQAHead:
    """Build head ``name`` around a backbone (a module, or a backbone name plus ``weights``)."""
    spec = head_spec(name)
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, weights=weights)
    if recipe is None:
        recipe = spec.recipe
    elif isinstance(recipe, dict):
        recipe = override(spec.recipe, recipe, where=f"recipe for head {name!r}")
    try:
        head = spec.build(backbone, recipe)
    except Exception as exc:  # noqa: BLE001 - name the plugin instead of showing its traceback
        from biqabench.errors import BiqaError

        if isinstance(exc, BiqaError):
            raise
        plugin = registry("heads").entry(name).plugin if name in registry("heads") else "?"
        detail = " ".join(str(exc).split())[:200]
        raise BiqaError(f"head {name!r} (plugin {plugin!r}) failed to build on backbone "
                        f"{getattr(backbone, 'name', type(backbone).__name__)!r}: {type(exc).__name__}: {detail}; "
                        "a bug in that plugin (rerun with --debug for the traceback)") from exc
    if recipe.freeze_backbone:
        for p in backbone.parameters():
            p.requires_grad_(False)
        head.frozen_backbone = True
        head.train(head.training)
    return head


def load_foreign_state_dict(head: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *,
                            rename: Sequence[tuple[str, str]] = (), ignore: Callable[[str], bool] | None = None,
                            what: str = "checkpoint"):
    """Load another codebase's checkpoint of the same architecture into ``head``.

    Heads that mirror a reference implementation (pyiqa's HyperNet and TReS) keep its parameter
    names, so loading is prefix renaming (``rename``: ``(old, new)`` pairs, first match wins) plus
    dropping tensors ours does not hold (``ignore(key)``).  A ``module.`` prefix (DataParallel) is
    stripped.  Files are read by :func:`biqabench.weights.read_state_dict` (never runs pickled
    code).  Any missing, unexpected or wrongly shaped tensor is a :class:`BiqaError` naming
    examples, so a checkpoint never half-loads.  Returns a :class:`biqabench.weights.LoadReport`.
    """
    from biqabench.errors import BiqaError
    from biqabench.weights import LoadReport, read_state_dict

    if isinstance(source, Mapping):
        state, name = dict(source), what
    else:
        state, name = read_state_dict(source), f"{what} {source}"
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if ignore is not None and ignore(k):
            dropped.append(key)
            continue
        for old, new in rename:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        mapped[k] = value
    target = head.state_dict()
    unexpected = [k for k in mapped if k not in target]
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    bad_shape = [f"{k} {tuple(v.shape)} vs ours {tuple(target[k].shape)}"
                 for k, v in mapped.items() if k in target and v.shape != target[k].shape]
    if unexpected or missing or bad_shape:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing, e.g. {', '.join(missing[:3])}")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected, e.g. {', '.join(unexpected[:3])}")
        if bad_shape:
            detail.append(f"{len(bad_shape)} of another shape, e.g. {'; '.join(bad_shape[:2])}")
        backbone = getattr(getattr(head, "backbone", None), "name", "?")
        raise BiqaError(f"{name} does not fit head {type(head).__name__} on backbone {backbone!r}: "
                        f"{'; '.join(detail)}. Was it trained with another backbone or head?")
    for k, v in target.items():  # num_batches_tracked is optional in many checkpoints
        mapped.setdefault(k, v)
    head.load_state_dict(mapped, strict=True)
    return LoadReport(name, len(state) - len(dropped), dropped)
