"""The optimiser table is the one place optimiser names live: the recipe check, the builder and
the error message all follow it."""

import dataclasses

import pytest
import torch

from biqabench import optimizers
from biqabench.device import get_runtime
from biqabench.errors import BiqaError
from biqabench.heads import TrainRecipe, validate_recipe


def _groups():
    return [{"params": [torch.nn.Parameter(torch.zeros(3))]}]


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW),
                                      ("sgd", torch.optim.SGD)])
def test_each_name_builds_its_optimiser_with_the_recipe_settings(name, cls):
    recipe = TrainRecipe(optimizer=name, lr=3e-4, weight_decay=1e-3)
    opt = optimizers.build_optimizer(get_runtime("cpu", "fp32"), _groups(), recipe)
    assert type(opt) is cls
    assert opt.defaults["lr"] == 3e-4 and opt.defaults["weight_decay"] == 1e-3
    if cls is torch.optim.SGD:
        assert opt.defaults["momentum"] == 0.9


def test_a_name_added_to_the_table_is_accepted_and_built_everywhere(monkeypatch):
    monkeypatch.setitem(optimizers.OPTIMIZERS, "rmsprop",
                        lambda runtime, groups, recipe: runtime.optimizer(torch.optim.RMSprop, groups, lr=recipe.lr))
    recipe = validate_recipe(TrainRecipe(optimizer="rmsprop"))
    assert type(optimizers.build_optimizer(get_runtime("cpu", "fp32"), _groups(), recipe)) is torch.optim.RMSprop
    with pytest.raises(BiqaError, match="not one of adam, adamw, sgd, rmsprop"):
        validate_recipe(dataclasses.replace(recipe, optimizer="adamax"), where="my.yaml")


def test_an_unknown_name_is_one_line_naming_where():
    with pytest.raises(BiqaError, match=r"^my\.yaml: optimizer 'adamax' is not one of adam, adamw, sgd$"):
        optimizers.check_optimizer("adamax", "my.yaml")
