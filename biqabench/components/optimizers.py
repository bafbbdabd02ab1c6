"""The optimisers a head's recipe can name (``recipe.optimizer``), declared once.

Why one table: the recipe check (:func:`biqabench.components.heads.validate_recipe`), the fine-tuning loop
(:func:`biqabench.training.engine.make_optimizer`), QPT's pretraining loop (its ``optim.optimizer``) and the
error messages all read it, so an optimiser added here is accepted, built and listed everywhere at
once.  Every builder goes through :meth:`biqabench.runtime.device.Runtime.optimizer` (torch's fused kernels
where the device has them).

``lars`` is timm's LARS (You et al. 2017, "Large batch training of convolutional networks"): SGD
whose step for each tensor is scaled by ``trust_coeff * |w| / (|g| + weight_decay * |w|)``, so no
tensor moves by more than a set fraction of its own norm per step.  Why it is here: in QPT's
first steps plain SGD multiplied the norm of a freshly initialised ResNet-50's stem by 12 in 40
steps (lr 0.003; still 2x at lr 0.0003), replacing its filters with gradient noise, and the
frozen features were then worse than the random ones it started from (docs/qpt.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from biqabench.base.errors import BiqaError

if TYPE_CHECKING:  # pragma: no cover
    from biqabench.runtime.device import Runtime

#: What a builder reads of its settings: ``lr``, ``weight_decay``, ``optimizer``, and where they have
#: them ``momentum`` (default 0.9) and ``trust_coeff`` (LARS, default 0.001).  A head's
#: :class:`biqabench.components.heads.TrainRecipe` and QPT's ``OptimConfig`` are both read this way.
Recipe = Any


def _adam(runtime: "Runtime", groups: list, recipe: Recipe) -> torch.optim.Optimizer:
    return runtime.optimizer(torch.optim.Adam, groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _adamw(runtime: "Runtime", groups: list, recipe: Recipe) -> torch.optim.Optimizer:
    return runtime.optimizer(torch.optim.AdamW, groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _sgd(runtime: "Runtime", groups: list, recipe: Recipe) -> torch.optim.Optimizer:
    return runtime.optimizer(torch.optim.SGD, groups, lr=recipe.lr, momentum=getattr(recipe, "momentum", 0.9),
                             weight_decay=recipe.weight_decay)


def _lars(runtime: "Runtime", groups: list, recipe: Recipe) -> torch.optim.Optimizer:
    from timm.optim import Lars

    # always_adapt: every tensor (BatchNorm and biases too) gets the trust ratio, whatever its decay
    return runtime.optimizer(Lars, groups, lr=recipe.lr, momentum=getattr(recipe, "momentum", 0.9),
                             weight_decay=recipe.weight_decay, trust_coeff=getattr(recipe, "trust_coeff", 0.001),
                             always_adapt=True)


#: recipe name -> builder ``(runtime, param_groups, recipe) -> optimizer``.
OPTIMIZERS: dict[str, Callable[["Runtime", list, Recipe], torch.optim.Optimizer]] = {
    "adam": _adam,
    "adamw": _adamw,
    "sgd": _sgd,
    "lars": _lars,
}


def check_optimizer(name: str, where: str = "recipe") -> str:
    """``name`` as :data:`OPTIMIZERS` spells it (case ignored); else a one-line error naming ``where``."""
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise BiqaError(f"{where}: optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    return key


def build_optimizer(runtime: "Runtime", groups: list, recipe: Recipe) -> torch.optim.Optimizer:
    """The optimiser ``recipe.optimizer`` names, over ``groups``."""
    return OPTIMIZERS[check_optimizer(recipe.optimizer)](runtime, groups, recipe)
