"""Whole QPT step batches built in DataLoader workers: the same batches (and weights) whatever the
number of workers, the same as degrading in the training process, and logged to recipes.jsonl
so that a step can be audited and replayed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biqabench_plugins.qpt import recipe_log
from biqabench_plugins.qpt.data import CropDataset, StepBatches, StepSampler, ViewSpec, list_images
from biqabench_plugins.qpt.degradations import DegradationConfig, Recipe
from biqabench_plugins.qpt.pretrainer import run_qpt
from test_qpt_pretrain import image_folder, request


def _loader(paths, workers: int, start: int = 0):
    ds = StepBatches(CropDataset(paths, 32, seed=4), batch_size=3, seed=4, rank=0, world=1,
                     views=ViewSpec(DegradationConfig(), 16, negative_degradations=2))
    return torch.utils.data.DataLoader(ds, batch_size=None, sampler=StepSampler(start), num_workers=workers)


def _take(loader, n: int):
    it = iter(loader)
    out = [next(it) for _ in range(n)]
    del it
    return out


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    paths = list_images(image_folder(tmp_path / "data"))
    alone, pooled = _take(_loader(paths, 0), 4), _take(_loader(paths, 2), 4)
    for a, b in zip(alone, pooled):
        assert a.query.dtype == torch.uint8 and a.key_deg.shape == (3, 2, 3, 16, 16)
        assert torch.equal(a.query, b.query) and torch.equal(a.key_pos, b.key_pos) and torch.equal(a.key_deg, b.key_deg)
        assert a.recipes == b.recipes and a.samples == b.samples and a.noise_seed == b.noise_seed
    assert not torch.equal(alone[0].query, alone[1].query)  # steps differ
    # a loader started at step 2 (a resumed run) gives steps 2 and 3 exactly
    resumed = _take(_loader(paths, 0, start=2), 2)
    assert all(torch.equal(a.key_deg, b.key_deg) for a, b in zip(resumed, alone[2:]))


def test_runs_with_0_and_2_workers_train_the_same_weights(tmp_path):
    data = image_folder(tmp_path / "data")
    runs = {}
    for workers in (0, 2):
        from test_qpt_pretrain import tiny_config

        cfg = tiny_config(tmp_path / "cfg" / f"w{workers}", workers=workers)  # not where request() writes
        rec = run_qpt(request(tmp_path / f"w{workers}", data, steps=3, config=cfg))
        assert json.loads(rec.file.with_suffix(".json").read_text())["config"]["workers"] == workers
        runs[workers] = (json.loads((tmp_path / f"w{workers}" / "run" / "losses.json").read_text())["losses"],
                         load_file(str(rec.file)))
    (l0, w0), (l2, w2) = runs[0], runs[2]
    assert l0 == l2
    assert all(torch.equal(w0[k], w2[k]) for k in w0)


def test_degrading_in_workers_or_on_the_device_gives_the_same_run(tmp_path):
    data = image_folder(tmp_path / "data")
    from test_qpt_pretrain import tiny_config

    losses = {}
    for where in ("workers", "device"):
        cfg = tiny_config(tmp_path / "cfg" / where, degrade_on=where)
        run_qpt(request(tmp_path / where, data, steps=2, config=cfg))
        losses[where] = json.loads((tmp_path / where / "run" / "losses.json").read_text())["losses"]
    assert losses["workers"] == losses["device"]


def test_recipes_are_logged_every_n_steps_and_replay_the_batch(tmp_path):
    data = image_folder(tmp_path / "data")
    from test_qpt_pretrain import tiny_config

    cfg = tiny_config(tmp_path / "cfg", log_recipes_every=2, negative_degradations=4)
    rec = run_qpt(request(tmp_path, data, steps=5, config=cfg))
    entries = recipe_log.read(tmp_path / "run")
    assert [e["step"] for e in entries] == [0, 2, 4]
    e = entries[1]
    assert len(e["recipes"]) == len(e["samples"]) == len(e["files"]) == 4
    assert all(len(rs) == 5 for rs in e["recipes"])  # d1 + the 4 other degradations asked for
    assert all(Recipe.from_dict(d).ops for rs in e["recipes"] for d in rs)
    assert all((data / f).is_file() for f in e["files"])
    manifest = json.loads(rec.file.with_suffix(".json").read_text())["extra"]
    assert manifest["degradation_space_level"] == "kinds"
    assert 1e7 <= float(manifest["degradation_space_size"]) < 1e8  # not the parameter-level 10^29
    # replay: the logged samples, recipes and noise seed rebuild the step's views exactly
    paths = list_images(data)
    spec = ViewSpec(DegradationConfig(), 16, negative_degradations=4)
    ds = StepBatches(CropDataset(paths, 32, seed=3), 4, seed=3, views=spec)
    original = ds[2]
    again = recipe_log.replay_views(e, CropDataset(paths, 32, seed=3), spec)
    assert torch.equal(original.query, again.query) and torch.equal(original.key_deg, again.key_deg)


def test_a_resumed_run_drops_log_lines_past_its_checkpoint(tmp_path):
    log = recipe_log.RecipeLog(tmp_path, 1, 0, [Path("a.png")], Path("."))
    (tmp_path / recipe_log.FILE).write_text("".join(json.dumps({"step": s}) + "\n" for s in range(6)))
    recipe_log.RecipeLog(tmp_path, 1, 0, [Path("a.png")], Path("."), start_step=4)
    assert [e["step"] for e in recipe_log.read(tmp_path)] == [0, 1, 2, 3]
    assert log.due(3) and not recipe_log.RecipeLog(tmp_path, 0, 0, [], Path(".")).due(0)


@pytest.mark.parametrize("bad", [{"degrade_on": "gpu"}, {"log_recipes_every": -1}])
def test_bad_data_settings_name_the_key(tmp_path, bad):
    from biqabench.base.errors import BiqaError
    from biqabench_plugins.qpt.pretrainer import load_config

    with pytest.raises(BiqaError, match=next(iter(bad))):
        load_config(None, bad)


@pytest.mark.slow  # inductor compiles C++ kernels: minutes on a small CPU
def test_compiled_qpt_step_equals_the_eager_step():
    from biqabench.runtime.device import get_runtime
    from biqabench_plugins.qpt.pretrainer import QPTConfig, QPTTrainer

    cfg = QPTConfig(batch_size=4, crop_size=32, patch_size=16, queue_size=32, embed_dim=16)
    crops = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    losses = {}
    for compile_ in (False, True):
        rt = get_runtime("cpu", "fp32", compile=compile_)
        trainer = QPTTrainer.build("tiny", cfg, rt, total_steps=4)
        assert (trainer.forward is trainer.model) != compile_
        losses[compile_] = [trainer.step(trainer.make_batch(crops, s), s)["loss"] for s in range(2)]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-5)
