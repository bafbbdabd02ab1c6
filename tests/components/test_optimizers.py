"""The optimiser table is the one place optimiser names live: the recipe check, the builder and
the error message all follow it."""

import dataclasses

import pytest
import torch

from biqabench.components import optimizers
from biqabench.runtime.device import get_runtime
from biqabench.base.errors import BiqaError
from biqabench.components.heads import TrainRecipe, validate_recipe


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
    with pytest.raises(BiqaError, match="not one of adam, adamw, sgd, lars, rmsprop"):
        validate_recipe(dataclasses.replace(recipe, optimizer="adamax"), where="my.yaml")


def test_an_unknown_name_is_one_line_naming_where():
    with pytest.raises(BiqaError, match=r"^my\.yaml: optimizer 'adamax' is not one of adam, adamw, sgd, lars$"):
        optimizers.check_optimizer("adamax", "my.yaml")


def test_lars_moves_each_tensor_by_at_most_lr_times_trust_of_its_norm():
    """What QPT's CPU default relies on: however large a tensor's gradient (a fresh stem's is), one
    step changes it by lr * trust_coeff of its own norm, never more."""
    from timm.optim import Lars

    settings = dataclasses.make_dataclass("S", ["optimizer", "lr", "weight_decay", "momentum", "trust_coeff"])
    torch.manual_seed(0)
    small, big = torch.nn.Parameter(torch.randn(64, 3, 7, 7) * 0.02), torch.nn.Parameter(torch.randn(256) * 5)
    opt = optimizers.build_optimizer(get_runtime("cpu", "fp32"), [{"params": [small, big]}],
                                     settings("lars", 1.0, 0.0, 0.9, 0.001))
    assert type(opt) is Lars and opt.defaults["trust_coeff"] == 0.001 and opt.defaults["momentum"] == 0.9
    before = [small.detach().clone(), big.detach().clone()]
    small.grad = torch.randn_like(small) * 1e4  # a gradient a million times the weights' scale
    big.grad = torch.randn_like(big) * 1e-3
    opt.step()
    for new, old in zip((small, big), before):
        assert (new.detach() - old).norm() <= 1.0 * 0.001 * old.norm() * (1 + 1e-4)
    sgd = optimizers.build_optimizer(get_runtime("cpu", "fp32"), [{"params": [p := torch.nn.Parameter(before[0].clone())]}],
                                     settings("sgd", 0.003, 0.0, 0.9, 0.001))
    p.grad = small.grad.clone()
    sgd.step()
    assert (p.detach() - before[0]).norm() > 100 * before[0].norm()  # plain SGD: the tensor is replaced
