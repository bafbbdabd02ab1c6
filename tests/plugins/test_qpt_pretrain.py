"""The QPT run: data streaming, weights in the store, checkpoints, and an interrupted run that
resumes onto exactly the loss curve of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biqabench.base import io
from biqabench.components.backbones import TinyBackbone
from biqabench.base.errors import BiqaError
from biqabench.components.pretrain import PretrainRequest
from biqabench.components.weights import WeightsStore, load_weights
from biqabench_plugins.qpt.data import CropDataset, StreamSampler, image_at, list_images
from biqabench_plugins.qpt.pretrainer import Interrupted, QPTConfig, load_config, run_qpt

REPO = Path(__file__).resolve().parents[2]


def image_folder(root: Path, n: int = 6) -> Path:
    """Small photos-like images in nested folders (ImageNet-style class folders), one too small."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"n0{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.random((6, 6, 3))
        img = np.kron(base, np.ones((8, 8, 1))) * 200 + rng.random((48, 48, 3)) * 40
        Image.fromarray(img.astype(np.uint8)).save(folder / f"img{i}.png")
    Image.fromarray((rng.random((20, 30, 3)) * 255).astype(np.uint8)).save(root / "small.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


def tiny_config(tmp_path: Path, **kw) -> str:
    values = {"batch_size": 4, "crop_size": 32, "patch_size": 16, "queue_size": 32, "embed_dim": 16,
              "workers": 0, "checkpoint_every": 2, "optim": {"warmup_steps": 2}}
    values.update(kw)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "qpt_tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump(values))
    return str(path)


def request(tmp_path: Path, data: Path, **kw) -> PretrainRequest:
    opts = dict(backbone="tiny", data=str(data), steps=6, config=tiny_config(tmp_path), device="cpu",
                precision="fp32", seed=3, run_dir=tmp_path / "run", store=WeightsStore(tmp_path / "store"),
                progress=False)
    opts.update(kw)
    return PretrainRequest(**opts)


# -- data ---------------------------------------------------------------------------------------------
def test_images_are_found_at_any_depth(tmp_path):
    paths = list_images(image_folder(tmp_path / "data"))
    assert len(paths) == 7 and all(p.suffix in (".png", ".jpg") for p in paths)
    with pytest.raises(BiqaError, match="no images"):
        list_images(_empty(tmp_path))
    with pytest.raises(BiqaError, match="not a folder"):
        list_images(tmp_path / "missing")


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    return tmp_path / "empty"


def test_sample_order_is_a_permutation_per_epoch_and_reproducible():
    n = 7
    first = [image_at(n, 0, s) for s in range(n)]
    second = [image_at(n, 0, s) for s in range(n, 2 * n)]
    assert sorted(first) == sorted(second) == list(range(n)) and first != second
    assert first == [image_at(n, 0, s) for s in range(n)]
    it = iter(StreamSampler(batch_size=3, start_step=2, rank=1, world=2))
    assert [next(it) for _ in range(6)] == [15, 16, 17, 21, 22, 23]  # steps 2 and 3, second block of 3


def test_crops_are_deterministic_and_small_images_upscaled(tmp_path):
    ds = CropDataset(list_images(image_folder(tmp_path / "data")), crop_size=32, seed=1)
    for s in range(9):
        a, b = ds[s], ds[s]
        assert a.shape == (3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)


def test_views_hold_query_positive_and_degradation_negatives():
    from biqabench_plugins.qpt.data import make_views
    from biqabench_plugins.qpt.degradations import DegradationConfig

    crops = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    batch, recipes = make_views(crops, DegradationConfig(), 16, np.random.default_rng(0), torch.Generator().manual_seed(0),
                                negative_degradations=2, patches_per_negative=2, return_recipes=True)
    assert batch.query.shape == batch.key_pos.shape == (3, 3, 16, 16)
    assert batch.key_deg.shape == (3, 4, 3, 16, 16)
    for per_image in recipes:  # d1, d2, d3 of one image are three different degradations
        assert len({r.key() for r in per_image}) == 3
    assert batch.query.dtype == torch.uint8  # patches travel as uint8 ...
    from biqabench.runtime.device import get_runtime

    dev = batch.to(get_runtime("cpu", "fp32"))  # ... and are normalised on the training device
    assert dev.query.dtype == torch.float32 and dev.key_deg.shape == batch.key_deg.shape
    # normalised with the ImageNet statistics: pixel 0..1 maps to about -2.1..2.6
    assert -2.2 < float(dev.query.min()) and float(dev.query.max()) < 2.7


# -- configs ------------------------------------------------------------------------------------------
def test_cpu_yaml_is_the_default_config():
    assert load_config(REPO / "configs" / "qpt_pretrain_cpu.yaml") == QPTConfig()


def test_paper_yaml_loads_and_differs():
    cfg = load_config(REPO / "configs" / "qpt_pretrain_paper.yaml")
    assert cfg.queue_size > QPTConfig().queue_size and cfg.batch_size > QPTConfig().batch_size
    assert cfg.optim.optimizer == "sgd" and QPTConfig().optim.optimizer == "lars"  # MoCo v2's / the CPU default


def test_the_optimiser_is_built_from_the_config(tmp_path):
    from timm.optim import Lars

    from biqabench.runtime.device import get_runtime
    from biqabench_plugins.qpt.pretrainer import QPTTrainer

    small = dict(batch_size=2, crop_size=32, patch_size=16, queue_size=8)
    for name, cls in (("lars", Lars), ("sgd", torch.optim.SGD)):
        cfg = load_config(values={**small, "optim": {"optimizer": name, "lr": 0.5}})
        trainer = QPTTrainer.build("tiny", cfg, get_runtime("cpu", "fp32"), total_steps=2)
        assert type(trainer.optimizer) is cls and trainer.optimizer.defaults["lr"] == 0.5
    f = tmp_path / "bad.yaml"
    f.write_text("optim:\n  optimizer: adagrad\n")
    with pytest.raises(BiqaError, match=r"bad\.yaml: optim: optimizer 'adagrad' is not one of"):
        load_config(f)


def test_config_errors_name_the_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("queue_sise: 10\n")
    with pytest.raises(BiqaError, match="queue_sise.*queue_size"):
        load_config(f)
    f.write_text("temperature: -1\n")
    with pytest.raises(BiqaError, match="temperature"):
        load_config(f)


def test_every_request_option_qpt_shares_is_mapped_onto_its_config():
    """One table (FROM_REQUEST) maps PretrainRequest fields onto QPTConfig keys: each names real
    fields on both sides, no request field named like a config key is left out, and each given
    option lands in the config, over the file's value."""
    import dataclasses

    from biqabench_plugins.qpt.config import FROM_REQUEST, config_for_request

    request_fields = {f.name for f in dataclasses.fields(PretrainRequest)}
    config_fields = {f.name for f in dataclasses.fields(QPTConfig)}
    assert set(FROM_REQUEST) <= request_fields and set(FROM_REQUEST.values()) <= config_fields
    assert request_fields & config_fields <= set(FROM_REQUEST)
    paper = REPO / "configs" / "qpt_pretrain_paper.yaml"
    base = load_config(paper)
    for name, key in FROM_REQUEST.items():
        given = (2 if name == "epochs" else 1) + int(getattr(base, key))  # differs from the file's value
        cfg = config_for_request(PretrainRequest(config=str(paper), **{name: given}))
        assert getattr(cfg, key) == given, name
        unchanged = {k for k in config_fields - {key, "crop_size", "epochs"} if getattr(cfg, k) != getattr(base, k)}
        assert not unchanged, (name, unchanged)
    assert config_for_request(PretrainRequest(config=str(paper), steps=3)).epochs == 0.0
    assert config_for_request(PretrainRequest(config=str(paper))) == base  # nothing given: the file


# -- runs ---------------------------------------------------------------------------------------------
def test_run_saves_backbone_weights_manifest_and_curve(tmp_path):
    data = image_folder(tmp_path / "data")
    rec = run_qpt(request(tmp_path, data, steps=4))
    assert rec.name == "qpt" and rec.backbone == "tiny" and rec.file.is_file()
    from safetensors.torch import load_file

    saved = load_file(str(rec.file))
    assert set(saved) == set(TinyBackbone().state_dict())  # the backbone's own key names, nothing else
    manifest = json.loads(rec.file.with_suffix(".json").read_text())
    extra = manifest["extra"]
    assert extra["steps"] == 4 and np.isfinite(extra["final_loss"]) and extra["wall_time_s"] >= 0
    assert manifest["config"]["batch_size"] == 4
    assert Path(extra["loss_curve"]).is_file() and Path(extra["loss_curve"]).parent == tmp_path / "run"
    assert len(json.loads((tmp_path / "run" / "losses.json").read_text())["losses"]) == 4
    net = TinyBackbone()
    load_weights(net, "qpt", backbone_name="tiny", store=WeightsStore(tmp_path / "store"))
    assert torch.equal(net.state_dict()["stages.0.0.weight"], saved["stages.0.0.weight"])
    state = io.load_torch(tmp_path / "run" / "checkpoint.pt")  # weights_only=True
    assert state["step"] == 4 and isinstance(state["rng"]["torch"], torch.Tensor)


def test_interrupted_run_resumes_onto_the_uninterrupted_curve(tmp_path):
    data = image_folder(tmp_path / "data")
    full = run_qpt(request(tmp_path / "a", data))
    reference = json.loads((tmp_path / "a" / "run" / "losses.json").read_text())["losses"]

    def interrupt(step, stats):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: finish the step, checkpoint, stop

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a shell (a background job ignores it)
    try:
        with pytest.raises(Interrupted, match="step 3"):
            run_qpt(request(tmp_path / "b", data), on_step=interrupt)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    finally:
        signal.signal(signal.SIGINT, before)
    state = io.load_torch(tmp_path / "b" / "run" / "checkpoint.pt")
    assert state["step"] == 3 and len(state["losses"]) == 3
    resumed = run_qpt(request(tmp_path / "b", data, resume=True))
    losses = json.loads((tmp_path / "b" / "run" / "losses.json").read_text())["losses"]
    assert len(losses) == len(reference) == 6
    assert np.allclose(losses, reference, rtol=1e-5, atol=1e-6), (losses, reference)
    from safetensors.torch import load_file

    a, b = load_file(str(full.file)), load_file(str(resumed.file))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_resume_needs_a_matching_checkpoint(tmp_path):
    data = image_folder(tmp_path / "data")
    with pytest.raises(BiqaError, match="no checkpoint"):
        run_qpt(request(tmp_path, data, resume=True))
    run_qpt(request(tmp_path, data, steps=2))
    with pytest.raises(BiqaError, match="batch_size"):
        run_qpt(request(tmp_path, data, steps=4, resume=True, batch_size=2))


def test_steps_and_epochs_are_exclusive(tmp_path):
    with pytest.raises(BiqaError, match="--steps or --epochs"):
        run_qpt(request(tmp_path, tmp_path, steps=2, epochs=1))
