"""IQA heads: models built *around* a given backbone, each with its training recipe as data.

A head plugin registers a :class:`HeadSpec`.  The runner never special-cases a head: it builds
``spec.build(backbone, recipe)``, trains with ``model.loss(x, mos)`` and the optimiser groups of
``model.param_groups(recipe)``, and predicts with ``model(x)``.  Scores are on the normalised
scale (0..1, higher is better) during training; datasets map them back to their native scale.
"""

from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from biqabench.components.backbones import Backbone, create_backbone
from biqabench.base.config import override
from biqabench.components.feature_norm import StageStandardizer
from biqabench.components.optimizers import check_optimizer
from biqabench.components.plugins import registry


@dataclass
class TrainRecipe:
    """How a head is trained and tested. Defaults are HyperIQA's paper settings."""

    patch_size: int = 224
    train_patches: int = 25      # random patches drawn per training image per epoch (0, with cache_features:
                                 # the grid of patch_size crops that covers the image, biqabench.data.grid_boxes)
    test_patches: int = 25       # patches per test image, scores averaged (0: the covering grid)
    batch_size: int = 96
    epochs: int = 16
    lr: float = 2e-5             # backbone learning rate
    head_lr_mult: float = 10.0   # the head's parameters learn this many times faster
    weight_decay: float = 5e-4
    optimizer: str = "adam"      # a key of biqabench.components.optimizers.OPTIMIZERS
    lr_step: int = 6             # divide lr by 1/lr_gamma every lr_step epochs (0: constant)
    lr_gamma: float = 0.1
    loss: str = "l1"
    freeze_backbone: bool = False  # linear probe: the backbone is not trained
    cache_features: bool = False   # with freeze_backbone: backbone features of fixed crops computed once
                                   # per image and reused by every split and epoch (biqabench.training.features)
    standardize_features: bool = False  # with cache_features: each channel of the frozen features is
                                   # standardised with the training split's mean/std (biqabench.components.feature_norm)
    resize: int | str = 0        # resize the short side to this before cropping (0: as is; "<=N": shrink
                                 # images whose short side is longer than N to N, leave smaller ones)
    hflip: bool = True           # random horizontal flips of training patches
    vflip: bool = False          # random vertical flips of training patches (TReS's reference code)
    target: str = "normalised"   # what the loss sees: normalised (0..1) | native (the dataset's MOS scale)
    options: dict = field(default_factory=dict)  # head-specific extras


def validate_recipe(recipe: TrainRecipe, where: str = "recipe") -> TrainRecipe:
    """Catch values no training run can use (0 epochs, a negative learning rate...) before any
    work starts, naming the key; head-specific settings are checked by the head itself."""
    from biqabench.base.errors import BiqaError

    for key in ("patch_size", "batch_size", "epochs"):
        if getattr(recipe, key) < 1:
            raise BiqaError(f"{where}: {key} must be at least 1, got {getattr(recipe, key)}")
    for key in ("train_patches", "test_patches"):
        if getattr(recipe, key) < 0:
            raise BiqaError(f"{where}: {key} must be at least 1, or 0 for the crops that cover the image, "
                            f"got {getattr(recipe, key)}")
    if recipe.train_patches == 0 and not recipe.cache_features:
        raise BiqaError(f"{where}: train_patches: 0 (the crops that cover each image) needs cache_features: true "
                        "(fixed crops, computed once); a fine-tune draws train_patches random crops per epoch")
    if recipe.lr_step < 0:
        raise BiqaError(f"{where}: lr_step must be 0 or more, got {recipe.lr_step}")
    from biqabench.base.resize import parse_resize

    try:
        parse_resize(recipe.resize)
    except BiqaError as exc:
        raise BiqaError(f"{where}: {exc}") from None
    if not (recipe.lr > 0 and recipe.lr != float("inf")):
        raise BiqaError(f"{where}: lr must be a positive number, got {recipe.lr}")
    for key in ("head_lr_mult", "weight_decay", "lr_gamma"):
        value = getattr(recipe, key)
        if not 0 <= value < float("inf"):
            raise BiqaError(f"{where}: {key} must be a finite number >= 0, got {value}")
    from biqabench.components.targets import check_target

    check_target(recipe.target, where)
    if recipe.cache_features and not recipe.freeze_backbone:
        raise BiqaError(f"{where}: cache_features needs freeze_backbone: true (a backbone that trains "
                        "changes its features every step)")
    if recipe.standardize_features and not recipe.cache_features:
        raise BiqaError(f"{where}: standardize_features needs cache_features: true (the statistics are "
                        "those of the training split's cached features)")
    check_optimizer(recipe.optimizer, where)
    top = recipe.lr * max(1.0, recipe.head_lr_mult)
    if top > torch.finfo(torch.float32).max:  # the optimiser could not even apply it
        raise BiqaError(f"{where}: lr {recipe.lr:g} (x{recipe.head_lr_mult:g} for the head) is beyond float32 "
                        "range; use a learning rate like 1e-4")
    return recipe


#: The training losses the base class implements (``recipe.loss``); a head with its own
#: objective (TReS's ranking + consistency terms) overrides :meth:`IQAHead.loss` instead.
BASE_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


def check_base_loss(loss: str, head: str) -> str:
    """``loss`` normalised, if the base class implements it; else a one-line error."""
    from biqabench.base.errors import BiqaError

    name = str(loss).strip().lower()
    if name not in BASE_LOSSES:
        raise BiqaError(f"{head} recipe: loss {loss!r} is not supported; use {' or '.join(BASE_LOSSES)}")
    return name


class IQAHead(nn.Module):
    """Base class: holds ``self.backbone`` and ``self.recipe``; subclasses implement
    ``forward(x) -> (B,)``, one score per patch (the runner averages a test image's patches)."""

    #: Whether the head applies :attr:`feature_norm` where it reads the backbone's features (a head
    #: that does sets this, so a recipe with ``standardize_features`` may be used with it).
    standardizes_features = False

    def __init__(self, backbone: Backbone, recipe: TrainRecipe | None = None):
        super().__init__()
        self.backbone = backbone
        self.recipe = recipe if recipe is not None else TrainRecipe()  # create_head sets it too
        self.frozen_backbone = False  # set by create_head for a linear probe
        if self.uses_base_loss():
            check_base_loss(self.recipe.loss, type(self).__name__)
        self.feature_norm: StageStandardizer | None = None
        if self.recipe.standardize_features:
            self.feature_norm = StageStandardizer(self.feature_channels())

    def feature_channels(self) -> list[int]:
        """Channels of each tensor ``cache_features`` returns (what :attr:`feature_norm` standardises):
        by default the backbone's stages."""
        return list(self.backbone.channels)

    def standardize(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """``feats`` through :attr:`feature_norm` (recipe ``standardize_features``), else unchanged."""
        return feats if self.feature_norm is None else self.feature_norm(feats)

    @classmethod
    def uses_base_loss(cls) -> bool:
        return cls.loss is IQAHead.loss

    def train(self, mode: bool = True) -> "IQAHead":
        """A frozen backbone stays in eval mode: a linear probe must not drift BN statistics."""
        super().train(mode)
        if mode and self.frozen_backbone:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, x: torch.Tensor, mos: torch.Tensor) -> torch.Tensor:
        """Training loss on a batch of patches and their MOS: ``recipe.loss`` (l1 or mse)."""
        return self.criterion(self(x), mos)

    def criterion(self, pred: torch.Tensor, mos: torch.Tensor) -> torch.Tensor:
        """``recipe.loss`` (l1 or mse) between predicted and true normalised MOS."""
        fn = BASE_LOSSES[check_base_loss(self.recipe.loss, type(self).__name__)]
        return fn(pred.float().reshape(-1), mos.reshape(-1).float())

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
        """Whether this head trains from cached features (it implements ``score_features`` and,
        if it has its own ``loss``, its own ``loss_features`` too)."""
        cls = type(self)
        return (cls.score_features is not IQAHead.score_features
                and (cls.uses_base_loss() or cls.loss_features is not IQAHead.loss_features))

    def loss_features(self, feats: list[torch.Tensor], mos: torch.Tensor) -> torch.Tensor:
        """The training loss from cached features: ``criterion(score_features(feats), mos)``."""
        return self.criterion(self.score_features(feats), mos)

    def head_parameters(self):
        ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def param_groups(self, recipe: TrainRecipe) -> list[dict]:
        """Optimiser groups: backbone at ``lr``, the rest at ``lr * head_lr_mult``."""
        groups = [{"params": self.head_parameters(), "lr": recipe.lr * recipe.head_lr_mult, "name": "head"}]
        if not recipe.freeze_backbone:
            groups.append({"params": list(self.backbone.parameters()), "lr": recipe.lr, "name": "backbone"})
        return groups


@dataclass(frozen=True)
class PyiqaCheckpoint:
    """How a head takes pyiqa's published checkpoints of its architecture (``pyiqa:METRIC:FILE``).

    The head's own plugin ships this, so the core loads pyiqa checkpoints into any installed head
    (bundled or third-party) without knowing their layouts: ``backbone(state)`` names the backbone
    the state dict holds, the head is built around it, and ``load(head, state)`` moves the tensors
    in (returning a :class:`biqabench.components.weights.LoadReport`, raising a one-line error on misfit).
    """

    backbone: Callable[[Mapping[str, torch.Tensor]], str]
    load: Callable[[nn.Module, Mapping[str, torch.Tensor]], Any]
    metric: str = ""  # pyiqa's metric name for these checkpoints ("": the head's own name)


@dataclass
class HeadSpec:
    """What a head plugin registers.

    ``presets`` maps a preset name (``cpu``, ``paper``...) to a YAML file of recipe overrides; a
    plugin ships them as package data and fills this with :func:`presets_in` so that an installed
    copy finds them (``biqabench eval --recipe cpu``).  The built-in ``recipe`` is paper scale.
    """

    name: str
    build: Callable[[Backbone, TrainRecipe], IQAHead]
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    description: str = ""
    reference: str = ""  # paper / code it follows
    presets: Mapping[str, Path] = field(default_factory=dict)
    options: type | None = None  # dataclass of the head's ``recipe.options`` keys (None: it takes none)
    pyiqa: PyiqaCheckpoint | None = None  # loads pyiqa's checkpoints of this architecture (None: none)

    @property
    def pyiqa_metric(self) -> str:
        """The pyiqa metric whose checkpoints this head loads ("" when it loads none)."""
        return "" if self.pyiqa is None else (self.pyiqa.metric or self.name)

    def check_options(self, recipe: TrainRecipe) -> Any:
        """``recipe.options`` as the head's options dataclass (names and types checked, with a
        "did you mean"); the head itself checks what the values mean together."""
        from biqabench.base.errors import BiqaError

        if self.options is None:
            if recipe.options:
                raise BiqaError(f"{self.name} recipe: the {self.name} head takes no options, got "
                                f"{sorted(recipe.options)}")
            return None
        return override(self.options(), recipe.options, where=f"{self.name} recipe options")

    def preset(self, name: str) -> TrainRecipe:
        """The built-in recipe with preset ``name``'s overrides applied (validated)."""
        from biqabench.base.config import load_yaml
        from biqabench.base.errors import BiqaError

        if name not in self.presets:
            shipped = ", ".join(sorted(self.presets)) or "none"
            raise BiqaError(f"head {self.name!r} ships no preset {name!r} (its presets: {shipped})")
        path = self.presets[name]
        return validate_recipe(override(self.recipe, load_yaml(path), where=f"recipe {path}"), where=f"recipe {path}")


def presets_in(package: str) -> dict[str, Path]:
    """``{name: file}`` for the ``presets/<name>.yaml`` files shipped inside ``package``.

    Found through :mod:`importlib.resources`, so a wheel or ``pip install --target`` copy reads the
    files it installed rather than a source checkout's.
    """
    from importlib import resources

    folder = resources.files(package) / "presets"
    if not folder.is_dir():
        return {}
    return {Path(f.name).stem: Path(str(f)) for f in sorted(folder.iterdir(), key=lambda f: f.name)
            if f.name.endswith((".yaml", ".yml"))}


def head_spec(name: str) -> HeadSpec:
    return registry("heads").get(name)


def pyiqa_head(metric: str) -> HeadSpec | None:
    """The installed head that loads pyiqa ``metric``'s checkpoints, or None (pyiqa runs it itself).

    Two heads claiming one metric is an error naming both, as for two plugins claiming one name."""
    from biqabench.base.errors import BiqaError

    found = [e for e in registry("heads").entries() if e.obj.pyiqa_metric == metric]
    if len(found) > 1:
        raise BiqaError(f"pyiqa:{metric}: heads {', '.join(repr(e.name) for e in found)} (plugins "
                        f"{', '.join(repr(e.plugin) for e in found)}) both load its checkpoints; uninstall one "
                        "or restrict plugins with BIQABENCH_PLUGINS")
    return found[0].obj if found else None


def create_head(name: str, backbone: Backbone | str = "resnet50", weights: str = "random",
                recipe: TrainRecipe | dict | None = None) -> IQAHead:
    """Build head ``name`` around a backbone (a module, or a backbone name plus ``weights``)."""
    spec = head_spec(name)
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, weights=weights)
    if recipe is None:
        recipe = spec.recipe
    elif isinstance(recipe, dict):
        recipe = override(spec.recipe, recipe, where=f"recipe for head {name!r}")
    spec.check_options(recipe)
    try:
        head = spec.build(backbone, recipe)
    except Exception as exc:  # noqa: BLE001 - name the plugin instead of showing its traceback
        from biqabench.base.errors import BiqaError

        if isinstance(exc, BiqaError):
            raise
        plugin = registry("heads").entry(name).plugin if name in registry("heads") else "?"
        detail = " ".join(str(exc).split())[:200]
        raise BiqaError(f"head {name!r} (plugin {plugin!r}) failed to build on backbone "
                        f"{getattr(backbone, 'name', type(backbone).__name__)!r}: {type(exc).__name__}: {detail}; "
                        "a bug in that plugin (rerun with --debug for the traceback)") from exc
    head.recipe = recipe
    if head.uses_base_loss():
        check_base_loss(recipe.loss, name)
    if recipe.standardize_features and not head.standardizes_features:
        from biqabench.base.errors import BiqaError

        raise BiqaError(f"head {name!r} does not standardise its backbone features; remove standardize_features "
                        "from the recipe (heads that do: see docs/heads.md)")
    if recipe.standardize_features and head.feature_norm is None:  # a plugin built it on another recipe
        head.feature_norm = StageStandardizer(head.feature_channels())
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
    stripped.  Files are read by :func:`biqabench.components.weights.read_state_dict` (never runs pickled
    code).  Any missing, unexpected or wrongly shaped tensor is a :class:`BiqaError` naming
    examples, so a checkpoint never half-loads.  Returns a :class:`biqabench.components.weights.LoadReport`.
    """
    from biqabench.components.weights import load_checked, read_state_dict

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
    backbone = getattr(getattr(head, "backbone", None), "name", "?")
    report = load_checked(head, mapped, source=name, subject=f"head {type(head).__name__} on backbone {backbone!r}",
                          unused=unexpected, unused_is_error=True,
                          hint="Was it trained with another backbone or head?")
    report.dropped = dropped
    return report
