"""The optimisers a head's recipe can name (``recipe.optimizer``), declared once.

Why one table: the recipe check (:func:`biqabench.heads.validate_recipe`), the fine-tuning loop
(:func:`biqabench.engine.make_optimizer`) and the error messages all read it, so an optimiser
added here is accepted, built and listed everywhere at once.  Every builder goes through
:meth:`biqabench.device.Runtime.optimizer` (torch's fused kernels where the device has them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from biqabench.errors import BiqaError

if TYPE_CHECKING:  # pragma: no cover
    from biqabench.device import Runtime

#: What a builder reads of the head's training recipe (:class:`biqabench.heads.TrainRecipe`, which
#: sits above this table: it checks its ``optimizer`` here): ``lr``, ``weight_decay``, ``optimizer``.
Recipe = Any


def _adam(runtime: "Runtime", groups: list, recipe: Recipe) -> torch.optim.Optimizer:
    return runtime.optimizer(torch.optim.Adam, groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _adamw(runtime: "Runtime", groups: list, recipe: Recipe) -> torch.optim.Optimizer:
    return runtime.optimizer(torch.optim.AdamW, groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _sgd(runtime: "Runtime", groups: list, recipe: Recipe) -> torch.optim.Optimizer:
    return runtime.optimizer(torch.optim.SGD, groups, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)


#: recipe name -> builder ``(runtime, param_groups, recipe) -> optimizer``.
OPTIMIZERS: dict[str, Callable[["Runtime", list, Recipe], torch.optim.Optimizer]] = {
    "adam": _adam,
    "adamw": _adamw,
    "sgd": _sgd,
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
