"""load_model: every source kind and input kind; export -> load gives the run's own scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from biqabench.base.errors import BiqaError


def demo_b_rows(run: Path, n: int = 6):
    from biqabench.data import load_dataset

    table = load_dataset("demo-b")
    preds = pd.read_csv(run / "predictions.csv")
    rows = preds[(preds.split == 0) & (preds.test_set == "demo-b")].head(n)
    return [table.paths[table.names.index(name)] for name in rows.image], rows.pred.to_numpy()


@pytest.mark.parametrize("how", ["folder", "id", "prefix"])
def test_load_model_from_a_run_reproduces_its_predictions(tiny_model_run, monkeypatch, how):
    from biqabench import load_model

    monkeypatch.setenv("BIQABENCH_RESULTS", str(tiny_model_run.parent.parent))
    source = {"folder": tiny_model_run, "id": tiny_model_run.name, "prefix": tiny_model_run.name[:12]}[how]
    files, expected = demo_b_rows(tiny_model_run)
    m = load_model(source, device="cpu", precision="fp32")
    assert np.allclose(m(files), expected, atol=1e-4)
    assert m(files[0]) == pytest.approx(expected[0], abs=1e-4)  # one path -> one float
    assert isinstance(m(files[0]), float)


def test_model_properties_and_to(tiny_model_run):
    from biqabench import load_model

    m = load_model(tiny_model_run, device="cpu", precision="fp32")
    assert m.scale == (0.0, 100.0) and m.lower_better is False
    assert m.device.type == "cpu" and m.precision == "fp32"
    assert m.to("cpu") is m and m.info.train_set == "demo-a"
    assert "linear" in repr(m) and "demo-a" in repr(m)


def test_every_input_kind_gives_the_same_score(tiny_model_run, tmp_path):
    """Path, PIL, numpy (HWC, CHW, float 0..1), tensor and batches agree.  The image is exactly one
    test crop in size, so every crop is the whole image whatever the seed (a file's name seeds its
    crops; in-memory images have none)."""
    from biqabench import load_model

    m = load_model(tiny_model_run, device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    hwc2 = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(hwc).save(tmp_path / "a.png")
    ref = m(tmp_path / "a.png")
    chw = torch.from_numpy(hwc.transpose(2, 0, 1).copy())
    for x in (Image.fromarray(hwc), hwc, hwc.transpose(2, 0, 1), hwc / 255.0, chw, chw.float() / 255.0,
              str(tmp_path / "a.png")):
        assert m(x) == pytest.approx(ref, abs=1e-5), type(x)
    batch = torch.stack([chw, torch.from_numpy(hwc2.transpose(2, 0, 1).copy())]).float() / 255.0
    both = m(batch)
    assert both.shape == (2,) and both[0] == pytest.approx(ref, abs=1e-5)
    assert np.allclose(m([hwc, hwc2]), both, atol=1e-5)
    assert np.allclose(m(np.stack([hwc, hwc2])), both, atol=1e-5)  # (N, H, W, 3)


def test_bad_in_memory_input_is_one_line(tiny_model_run):
    from biqabench import load_model

    m = load_model(tiny_model_run, device="cpu", precision="fp32")
    with pytest.raises(BiqaError, match=r"expected an image of shape"):
        m(np.zeros((5, 7, 9), dtype=np.uint8))
    with pytest.raises(BiqaError, match="NaN"):
        m(np.full((32, 32, 3), np.nan))


def test_export_then_load_without_the_run_gives_the_same_scores(tiny_model_run, tmp_path):
    from safetensors import safe_open

    from biqabench import load_model
    from biqabench.model.export import export_run

    run = shutil.copytree(tiny_model_run, tmp_path / "copy")
    files, expected = demo_b_rows(tiny_model_run)
    out, _ = export_run(run, tmp_path / "model.safetensors")
    shutil.rmtree(run)  # the file alone must be enough
    m = load_model(out, device="cpu", precision="fp32")
    assert np.allclose(m(files), expected, atol=1e-4)
    with safe_open(str(out), framework="pt") as f:  # tensors + JSON text only: nothing to unpickle
        header = json.loads(f.metadata()["biqabench_model"])
    model = header["model"]
    assert header["format"] == "biqabench-model" and header["biqabench_version"]
    assert (model["head"], model["backbone"], model["train_set"]) == ("linear", "tiny", "demo-a")
    assert (model["patch_size"], model["test_patches"], model["scale"], model["higher_better"]) == (32, 2, [0.0, 100.0], True)
    assert model["recipe"]["lr"] == 1e-3 and model["extra"]["train_fingerprint"]


def test_model_file_errors_are_one_line(tiny_model_run, tmp_path):
    from biqabench import load_model
    from biqabench.base.io import save_safetensors

    bare = save_safetensors({"w": torch.zeros(2)}, tmp_path / "weights.safetensors")
    with pytest.raises(BiqaError, match="no biqabench header"):
        load_model(bare)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(b"\x10\x00garbage")
    with pytest.raises(BiqaError, match="cannot read .*cut.safetensors as safetensors"):
        load_model(cut)
    other = tmp_path / "notes.txt"
    other.write_text("hi")
    with pytest.raises(BiqaError, match="not a biqabench model"):
        load_model(other)
    with pytest.raises(BiqaError, match="kept no model for split 3"):
        load_model(tiny_model_run, split=3)


def test_pyiqa_metric_needing_no_weights_scores_offline(tmp_path):
    from biqabench import load_model

    m = load_model("pyiqa:piqe", device="cpu")
    assert m.lower_better and m.scale == (0.0, 100.0)
    rng = np.random.default_rng(1)
    sharp = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    s = m([sharp, np.full((96, 96, 3), 128, np.uint8)])
    assert s.shape == (2,) and np.isfinite(s).all() and s[0] != s[1]


def test_pyiqa_metric_with_missing_weights_names_the_file():
    from biqabench import load_model

    with pytest.raises(BiqaError) as err:
        load_model("pyiqa:musiq", device="cpu")
    text = str(err.value)
    assert "musiq_koniq_ckpt" in text and "never downloads" in text and "\n" not in text


@pytest.mark.parametrize("source, match", [("pyiqa:psnr", "full-reference"), ("pyiqa:piq", "did you mean: piqe"),
                                            ("pyiqa:hyperiqa:/nope.pth", "no such checkpoint")])
def test_pyiqa_source_mistakes(source, match):
    from biqabench import load_model

    with pytest.raises(BiqaError, match=match):
        load_model(source, device="cpu")


def test_pyiqa_hyperiqa_checkpoint_loads_into_our_head(tmp_path):
    """A checkpoint in pyiqa's layout ({'params': ...}, backbone under base_model.) written from a
    random head of ours: pyiqa:hyperiqa:FILE rebuilds exactly that head and scores like it."""
    from biqabench import load_model
    from biqabench_plugins.hyperiqa import RECIPE, HyperIQAHead
    from biqabench_plugins.torchvision_backbones.resnet import ResNetBackbone

    torch.manual_seed(0)
    ours = HyperIQAHead(ResNetBackbone("resnet50"), RECIPE).eval()
    state = {("base_model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
             for k, v in ours.state_dict().items()}
    torch.save({"params": state}, tmp_path / "HyperIQA-resnet50-koniq10k.pth")
    m = load_model(f"pyiqa:hyperiqa:{tmp_path / 'HyperIQA-resnet50-koniq10k.pth'}", device="cpu", precision="fp32")
    assert m.info.backbone == "resnet50" and m.info.test_patches == 25 and m.scale == (0.0, 1.0)
    for k, v in ours.state_dict().items():
        assert torch.equal(m.net.state_dict()[k], v), k
    img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)  # one crop size: crops = image
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())
    from biqabench.data import normalise

    with torch.no_grad():
        direct = float(ours(normalise(x.numpy())[None]).mean())
    assert m(img) == pytest.approx(direct, rel=1e-5)  # last bits differ with the CPU's kernels


@pytest.mark.slow
def test_pyiqa_tres_checkpoint_finds_its_backbone_and_loads(tmp_path):
    """pyiqa's TReS layout (whole torchvision ResNet under model., its unused fc kept): the
    backbone depth is read from the checkpoint, and the head holds exactly those tensors."""
    from biqabench import load_model
    from biqabench_plugins.torchvision_backbones.resnet import ResNetBackbone
    from biqabench_plugins.tres import RECIPE, TReSHead

    torch.manual_seed(0)
    ours = TReSHead(ResNetBackbone("resnet18"), RECIPE).eval()
    state = {("model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
             for k, v in ours.state_dict().items()}
    state["model.fc.weight"], state["model.fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save({"params": state}, tmp_path / "tres.pth")
    m = load_model(f"pyiqa:tres:{tmp_path / 'tres.pth'}", device="cpu", precision="fp32")
    assert m.info.backbone == "resnet18" and m.info.head == "tres" and m.scale == (0.0, 100.0)
    assert m.info.train_set == "koniq" and m.info.test_patches == RECIPE.test_patches
    for k, v in ours.state_dict().items():
        assert torch.equal(m.net.state_dict()[k], v), k


class _DbcnnLikeHead:
    """A third party's head that loads pyiqa ``dbcnn`` checkpoints with its own loader (registered
    in-test, as a plugin outside this repository would through its entry point)."""

    calls: list = []

    @classmethod
    def module(cls, name: str = "dbcnn-ours"):
        import types

        from biqabench.components.heads import HeadSpec, IQAHead, PyiqaCheckpoint, TrainRecipe, load_foreign_state_dict
        from biqabench.components.hookspecs import hookimpl

        class Head(IQAHead):
            def __init__(self, backbone, recipe):
                super().__init__(backbone)
                self.fc = torch.nn.Linear(backbone.out_channels, 1)

            def forward(self, x):
                return self.fc(self.backbone.pooled(x)).squeeze(1)

        def load(head, state):
            cls.calls.append(sorted(state)[:1])
            return load_foreign_state_dict(head, state, rename=(("features.", "backbone."),), what="dbcnn checkpoint")

        mod = types.ModuleType(f"{name}_plugin")

        @hookimpl
        def register_heads(register):
            register(HeadSpec(name, Head, TrainRecipe(patch_size=32, test_patches=2),
                              pyiqa=PyiqaCheckpoint(backbone=lambda state: "resnet18", load=load, metric="dbcnn")))

        mod.register_heads = register_heads
        mod.Head = Head
        return mod


@pytest.fixture
def dbcnn_head():
    from biqabench.components.plugins import get_harness

    harness = get_harness()
    mod = _DbcnnLikeHead.module()
    harness.register(mod, name="dbcnn_head_plugin")
    yield mod
    harness.unregister("dbcnn_head_plugin")


def test_a_third_party_head_loads_pyiqa_checkpoints_with_its_own_loader(tmp_path, dbcnn_head):
    """pyiqa:dbcnn:FILE goes to the installed head that declares it (HeadSpec.pyiqa), through the
    plugin's loader, with the backbone the plugin reads off the checkpoint; the core names no head."""
    from biqabench import load_model
    from biqabench.components.backbones import create_backbone
    from biqabench.components.heads import TrainRecipe

    torch.manual_seed(0)
    ours = dbcnn_head.Head(create_backbone("resnet18", weights="random"), TrainRecipe(patch_size=32)).eval()
    state = {("features." + k[len("backbone."):] if k.startswith("backbone.") else k): v
             for k, v in ours.state_dict().items()}
    torch.save({"params": state}, tmp_path / "dbcnn.pth")
    _DbcnnLikeHead.calls.clear()
    m = load_model(f"pyiqa:dbcnn:{tmp_path / 'dbcnn.pth'}", device="cpu", precision="fp32")
    assert _DbcnnLikeHead.calls and m.info.head == "dbcnn-ours" and m.info.backbone == "resnet18"
    assert m.info.test_patches == 2 and m.scale == (0.0, 1.0)  # the recipe's, and pyiqa's range for dbcnn
    for k, v in ours.state_dict().items():
        assert torch.equal(m.net.state_dict()[k], v), k


def test_pyiqa_checkpoint_without_a_head_for_it_is_one_line(tmp_path, dbcnn_head):
    from biqabench.components.plugins import get_harness
    from biqabench.model.pyiqa_models import checkpoint_model

    file = tmp_path / "x.pth"
    with pytest.raises(BiqaError) as err:
        checkpoint_model("nima-koniq", str(file))
    text = str(err.value)
    assert "no installed head loads pyiqa 'nima-koniq' checkpoints" in text and "dbcnn (dbcnn-ours)" in text
    assert "\n" not in text
    get_harness().register(_DbcnnLikeHead.module("dbcnn-theirs"), name="dbcnn_head_plugin_2")
    try:
        with pytest.raises(BiqaError, match="heads 'dbcnn-ours', 'dbcnn-theirs' .* both load its checkpoints"):
            checkpoint_model("dbcnn", str(file))
    finally:
        get_harness().unregister("dbcnn_head_plugin_2")
