"""The bundled pretrainers on the core loop (issue 23): what ARNIQA's pairs share, what bnstats
measures, presets, and an exact resume after Ctrl-C for every strategy (the contrastive losses
against their formulas: tests/training/test_contrastive.py)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from biqabench.base.errors import BiqaError
from biqabench.components.pretrain import PretrainRequest
from biqabench.components.weights import WeightsStore
from biqabench.training.pretraining import Interrupted, run_pretraining
from biqabench_plugins.arniqa.pretrainer import Arniqa
from biqabench_plugins.bnstats.pretrainer import BNStats
from biqabench_plugins.moco.pretrainer import MoCo
from test_qpt_pretrain import image_folder

METHODS = {"moco": MoCo, "arniqa": Arniqa, "bnstats": BNStats}
TINY = {"batch_size": 4, "crop_size": 32, "patch_size": 16, "workers": 0, "checkpoint_every": 2,
        "optim": {"warmup_steps": 1}}
TINY_MORE = {"moco": {"queue_size": 16, "embed_dim": 8}, "arniqa": {"embed_dim": 8}, "bnstats": {}}


def request(tmp_path: Path, name: str, data: Path, **kw) -> PretrainRequest:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, **TINY_MORE[name]}))
    opts = dict(backbone="tiny", data=str(data), steps=5, config=str(cfg), device="cpu", precision="fp32", seed=2,
                run_dir=tmp_path / "run", store=WeightsStore(tmp_path / "store"), progress=False)
    opts.update(kw)
    return PretrainRequest(**opts)


def losses_of(run_dir: Path) -> list[float]:
    return json.loads((run_dir / "losses.json").read_text())["losses"]


# -- ARNIQA: a positive pair shares the degradation, not the content -----------------------------------
def test_arniqa_pairs_are_two_different_photos_with_one_composition(tmp_path):
    from biqabench.training.pretrain_data import CropDataset, StepBatches, image_at, list_images
    from biqabench_plugins.arniqa.pretrainer import ArniqaConfig, PairViews

    paths = list_images(image_folder(tmp_path / "data", n=12))
    cfg = ArniqaConfig(batch_size=8, crop_size=32, patch_size=16)
    batches = StepBatches(CropDataset(paths, 32, seed=1), 8, seed=1, build=PairViews(cfg, seed=1))
    for step in range(3):
        views = batches[step]
        comps, pairs = views.info["compositions"], views.info["pairs"]
        assert views["a"].shape == views["b"].shape == (8, 3, 16, 16)  # 4 pairs x (full, half scale)
        assert len(comps) == len(pairs) == 4
        for s_a, s_b in pairs:  # two different photos (13 in the folder, 8 a step)
            assert image_at(len(paths), 1, s_a) != image_at(len(paths), 1, s_b)
    # behaviour: on the same content, the two sides of a pair come out identical where the composition
    # is deterministic, and differ between pairs with different compositions
    flat = torch.tensor([200, 80, 40], dtype=torch.uint8).view(1, 3, 1, 1).expand(8, 3, 32, 32).contiguous()
    views = PairViews(ArniqaConfig(batch_size=8, crop_size=32, patch_size=16, pristine_prob=0.0), seed=3)(
        flat, step=0, rank=0)
    random_ops = {"whitenoise", "whitenoiseCC", "impulsenoise", "multnoise", "jitter", "noneccpatch", "colorblock"}
    compared = 0
    for i, comp in enumerate(views.info["compositions"]):
        if not {kind for kind, _, _ in comp} & random_ops:
            assert torch.equal(views["a"][i], views["b"][i]) and torch.equal(views["a"][4 + i], views["b"][4 + i])
            compared += 1
    assert compared >= 1
    assert len({tuple(views["a"][i].flatten().tolist()) for i in range(4)}) > 1  # pairs differ in degradation


def test_arniqa_compositions_follow_the_space():
    from biqabench_plugins.arniqa.distortions import GROUPS, LEVELS, TYPES, level_probabilities, sample_composition

    assert len(TYPES) == 24 and len(GROUPS) == 7 and all(len(LEVELS[t]) == 5 for t in TYPES)
    rng = np.random.default_rng(0)
    comps = [sample_composition(rng) for _ in range(400)]
    group_of = {t: g for g, ts in GROUPS.items() for t in ts}
    for comp in comps:
        assert len(comp) <= 4 and len({group_of[t] for t, _, _ in comp}) == len(comp)  # one type per group
    assert {len(c) for c in comps} == {0, 1, 2, 3, 4}  # pristine (5%) and 1-4 composed
    p = level_probabilities(5)
    assert p[0] > p[4] and abs(p.sum() - 1) < 1e-12


# -- bnstats: nothing learnt, statistics = the average of forward passes --------------------------------
def test_bnstats_changes_no_weight_and_measures_the_forward_average(tmp_path):
    from biqabench.components.backbones import create_backbone
    from biqabench.training.pretrain_data import CropDataset, StepBatches, Views, list_images, normalise
    from biqabench_plugins.bnstats.pretrainer import PatchViews, batch_norms

    data = image_folder(tmp_path / "data")
    rec = run_pretraining(BNStats, request(tmp_path, "bnstats", data, steps=4))
    saved = load_file(str(rec.file))
    torch.manual_seed(2)
    fresh = create_backbone("tiny", weights="random")
    stats_keys = {k for k in saved if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    for k, v in fresh.state_dict().items():
        if k not in stats_keys:
            assert torch.equal(saved[k], v), k  # every weight is the seed's initialisation
    # the plain average, by hand: the same 4 batches, each BatchNorm's input mean and unbiased variance
    seen: dict[str, list] = {}
    for name, bn in fresh.named_modules():
        if bn in batch_norms(fresh):
            bn.register_forward_pre_hook(lambda m, inp, name=name: seen.setdefault(name, []).append(
                (inp[0].mean((0, 2, 3)), inp[0].var((0, 2, 3), unbiased=True))))
    batches = StepBatches(CropDataset(list_images(data), 32, seed=2), 4, seed=2, build=PatchViews(16, seed=2))
    fresh.train()
    with torch.no_grad():
        for step in range(4):
            fresh(normalise(batches[step]["patches"]))
    assert len(seen) == len(batch_norms(fresh)) == 4 and all(len(v) == 4 for v in seen.values())
    for name, values in seen.items():
        mean = torch.stack([m for m, _ in values]).mean(0)
        var = torch.stack([v for _, v in values]).mean(0)
        torch.testing.assert_close(saved[f"{name}.running_mean"], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(saved[f"{name}.running_var"], var, rtol=1e-5, atol=1e-6)
    assert isinstance(batches[0], Views)


def test_random_and_bnstats_runs_say_what_their_batchnorm_is():
    from biqabench.components.weights import ResolvedWeights, resolve_weights

    assert "BatchNorm is the identity" in resolve_weights("random", "tiny").describe()["weights_note"]
    fake = ResolvedWeights("bnstats", "tiny", {}, "bnstats (file)")
    assert "BatchNorm statistics measured" in fake.describe()["weights_note"]


# -- presets -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(METHODS))
def test_cpu_preset_is_the_default_and_paper_preset_loads(name):
    method = METHODS[name]
    presets = method.presets()
    assert set(presets) >= {"cpu", "paper"}
    assert method.load_config("cpu") == method.config_type()
    paper = method.load_config("paper")
    assert paper.patch_size == 224 and paper != method.config_type()


def test_config_mistakes_name_the_key(tmp_path):
    with pytest.raises(BiqaError, match="batch_size must be even"):
        Arniqa.load_config(None, {"batch_size": 5})
    with pytest.raises(BiqaError, match="momentum"):
        MoCo.load_config(None, {"momentum": 1.5})
    with pytest.raises(BiqaError, match="queue_sise"):
        MoCo.load_config(None, {"queue_sise": 3})


# -- every pretrainer resumes after Ctrl-C onto the uninterrupted losses --------------------------------
@pytest.mark.parametrize("name", sorted(METHODS))
def test_interrupted_run_resumes_onto_the_uninterrupted_losses(tmp_path, name):
    data = image_folder(tmp_path / "data")
    method = METHODS[name]
    full = run_pretraining(method, request(tmp_path / "a", name, data))
    reference = losses_of(tmp_path / "a" / "run")

    def interrupt(step, stats):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: finish the step, checkpoint, stop

    with pytest.raises(Interrupted, match="step 3"):
        run_pretraining(method, request(tmp_path / "b", name, data), on_step=interrupt)
    resumed = run_pretraining(method, request(tmp_path / "b", name, data, resume=True))
    losses = losses_of(tmp_path / "b" / "run")
    assert len(losses) == len(reference) == 5
    np.testing.assert_allclose(losses, reference, rtol=0, atol=1e-6)
    a, b = load_file(str(full.file)), load_file(str(resumed.file))
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert json.loads(resumed.file.with_suffix(".json").read_text())["producer"] == name
