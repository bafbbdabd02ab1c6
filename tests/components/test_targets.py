"""Per-head training targets: TReS trains on native MOS, so its loss balance is the reference's on any scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biqabench.components.backbones import TinyBackbone
from biqabench.data import IQATable
from biqabench.data.patches import PatchDataset
from biqabench.base.errors import BiqaError
from biqabench.components.heads import create_head, head_spec, validate_recipe
from biqabench.components.targets import to_normalised, training_targets
from biqabench_plugins.tres.loss import tres_terms

QUALITY = np.array([0.10, 0.35, 0.50, 0.80, 0.95, 0.20])  # the same six images' relative quality


def _table(name: str, lo: float, hi: float, higher_better: bool = True) -> IQATable:
    names = [f"{name}{i}.png" for i in range(len(QUALITY))]
    q = QUALITY if higher_better else 1.0 - QUALITY
    return IQATable(name, None, [Path("/x") / n for n in names], names, lo + q * (hi - lo), (lo, hi),
                    higher_better=higher_better)


def _reference_terms(head, x, label):
    """The reference training loop's terms (isalirezag/TReS), written out from its formula: L1 of
    both views to the *raw* label, and the two detached feature-consistency L1s."""
    a, b = head.view(x), head.view(torch.flip(x, dims=[3]))
    regression = F.l1_loss(a.score, label) + F.l1_loss(b.score, label)
    consistency = (F.l1_loss(a.encoded, b.encoded) + F.l1_loss(a.last, b.last)
                   + F.l1_loss(b.encoded, a.encoded) + F.l1_loss(b.last, a.last))
    return regression, consistency


def test_tres_declares_native_targets_and_the_others_normalised():
    assert head_spec("tres").recipe.target == "native"
    assert head_spec("hyperiqa").recipe.target == "normalised" and head_spec("linear").recipe.target == "normalised"


@pytest.mark.parametrize("scale", [(0.0, 100.0), (0.0, 5.0)])  # CLIVE-like and BID-like MOS scales
def test_tres_loss_balance_equals_the_reference_on_every_scale(scale):
    torch.manual_seed(0)
    head = create_head("tres", TinyBackbone()).eval()  # eval: no dropout, terms are deterministic
    table = _table("set", *scale)
    recipe = head_spec("tres").recipe
    # what the runner feeds the head: the PatchDataset's targets for the recipe's declared target
    ds = PatchDataset(table, np.arange(len(table)), 32, 1, train=False,
                      targets=training_targets(table, recipe.target), cache=_FakeCache())
    y = torch.stack([ds[i][1] for i in range(len(ds))])
    assert torch.allclose(y.double(), torch.as_tensor(table.mos), atol=1e-4)  # raw MOS, as the reference
    x = torch.randn(len(table), 3, 64, 64)
    with torch.no_grad():
        ours = tres_terms(head, x, y)
        ref_reg, ref_cons = _reference_terms(head, x, torch.as_tensor(table.mos, dtype=torch.float32))
        normalised = tres_terms(head, x, torch.as_tensor(table.mos_norm, dtype=torch.float32))
    ratio = (ours["consistency"] / ours["regression"]).item()
    assert ratio == pytest.approx((ref_cons / ref_reg).item(), rel=1e-5)
    # on normalised MOS the consistency term would weigh several times more than the reference's
    assert (normalised["consistency"] / normalised["regression"]).item() > 3 * ratio


class _FakeCache:
    """Pixels without files: every image is a flat grey 64x64 patch source."""

    def get_array(self, path):
        return np.full((3, 64, 64), 128, dtype=np.uint8)


def test_native_scores_are_normalised_with_the_training_scale():
    live_like = _table("live", 0.0, 100.0, higher_better=False)  # DMOS: lower is better
    norm = to_normalised(live_like.scale, live_like.higher_better, live_like.mos, "native")
    assert np.allclose(norm, live_like.mos_norm)
    assert np.allclose(to_normalised((0, 5), True, [0.3], "normalised"), [0.3])


def test_unknown_target_is_a_one_line_error():
    from biqabench.base.config import override

    with pytest.raises(BiqaError, match="target 'raw' is not one of normalised, native"):
        validate_recipe(override(head_spec("linear").recipe, {"target": "raw"}))


def test_tres_run_records_its_target(tmp_path):
    from biqabench.evaluation.runner import EvalConfig, evaluate

    tiny = dict(patch_size=32, train_patches=1, test_patches=1, batch_size=16, epochs=1, lr=1e-4, lr_step=0)
    cfg = EvalConfig(head="tres", weights="random", backbone="tiny", splits=1, recipe="cpu", recipe_overrides=tiny,
                     device="cpu", precision="fp32", workers=0, test=[], save_model=False)
    import json

    run = evaluate(cfg, run_dir=tmp_path / "r", progress=False)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["training_target"].startswith("native MOS (0..100")
    assert manifest["recipe"]["target"] == "native"
