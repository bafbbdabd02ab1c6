"""Weights resolution: MoCo checkpoints, wrong backbones, malicious pickles, safetensors, the store."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from biqabench.components.backbones import create_backbone
from biqabench.base.errors import BiqaError
from biqabench.components.weights import WeightsStore, imagenet_checkpoint, load_weights, read_state_dict, resolve_weights


@pytest.fixture(scope="module")
def resnet50_state():
    torch.manual_seed(0)
    return {k: v.clone() for k, v in create_backbone("resnet50").state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_moco_checkpoint_with_prefixes_and_projection_loads_into_resnet50(tmp_path, resnet50_state):
    ckpt = {"epoch": 200, "arch": "resnet50", "state_dict": {}}
    for k, v in resnet50_state.items():
        ckpt["state_dict"][f"module.encoder_q.{k}"] = v
        ckpt["state_dict"][f"module.encoder_k.{k}"] = v + 1  # key encoder: must not be used
    ckpt["state_dict"]["module.encoder_q.fc.0.weight"] = torch.randn(2048, 2048)
    ckpt["state_dict"]["module.encoder_q.fc.2.weight"] = torch.randn(128, 2048)
    ckpt["state_dict"]["module.queue"] = torch.randn(128, 65536 // 64)
    path = tmp_path / "moco_v2_800ep.pth.tar"
    torch.save(ckpt, path)
    model = create_backbone("resnet50")
    report = load_weights(model, str(path), "resnet50")
    assert _equal(model.state_dict(), resnet50_state)
    assert "module.encoder_q.fc.0.weight" in report.dropped and "module.queue" in report.dropped
    assert report.loaded == len(resnet50_state)


def test_wrong_backbone_checkpoint_fails_clearly(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(create_backbone("resnet18").state_dict(), path)
    with pytest.raises(BiqaError) as e:
        load_weights(create_backbone("resnet50"), str(path), "resnet50")
    msg = str(e.value)
    assert "does not fit backbone 'resnet50'" in msg and "tensors matched" in msg and "missing e.g." in msg
    assert "\n" not in msg


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/biqabench_pwned_marker",))


def test_malicious_pickle_is_refused_without_executing(tmp_path):
    marker = Path("/tmp/biqabench_pwned_marker")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil()}, path)
    with pytest.raises(BiqaError, match="refused to load"):
        read_state_dict(path)
    assert not marker.exists()
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(BiqaError):
        read_state_dict(raw)
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(create_backbone("tiny").state_dict(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BiqaError, match="cut.pth"):
        read_state_dict(path)


def test_safetensors_round_trip_is_bit_exact(tmp_path, resnet50_state):
    store = WeightsStore(tmp_path / "store")
    rec = store.save(resnet50_state, producer="qpt", backbone="resnet50", config={"steps": 3})
    assert rec.file.suffix == ".safetensors" and rec.file.with_suffix(".json").is_file()
    back = read_state_dict(rec.file)
    assert _equal(back, {k: v.contiguous() for k, v in resnet50_state.items()})
    model = create_backbone("resnet50")
    load_weights(model, str(rec.file))
    assert _equal(model.state_dict(), resnet50_state)


def test_store_resolves_newest_weights_by_pretrainer_name(tmp_path):
    store = WeightsStore(tmp_path / "store")
    first = create_backbone("tiny").state_dict()
    torch.manual_seed(1)
    second = create_backbone("tiny").state_dict()
    store.save(first, producer="qpt", backbone="tiny")
    rec = store.save(second, producer="qpt", backbone="tiny")
    assert store.latest("qpt", "tiny").file == rec.file
    resolved = resolve_weights("qpt", "tiny", store)
    assert _equal(resolved.state, second) and "qpt" in resolved.source
    with pytest.raises(BiqaError, match="biqabench pretrain qpt --backbone resnet18"):
        resolve_weights("qpt", "resnet18", store)


def test_unknown_weights_name_suggests(tmp_path):
    with pytest.raises(BiqaError, match="did you mean 'imagenet'"):
        resolve_weights("imagenett", "resnet18", WeightsStore(tmp_path))


def test_imagenet_uses_the_torch_hub_cache_file(tmp_path, monkeypatch):
    """Offline, ImageNet weights are read from the file torchvision would have downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    url, cached = imagenet_checkpoint("resnet18")
    assert cached.name == url.rsplit("/", 1)[-1] and str(tmp_path) in str(cached)
    with pytest.raises(BiqaError) as e:  # offline: the network guard refuses the download
        resolve_weights("imagenet", "resnet18")
    assert str(cached) in str(e.value) and "place that file" in str(e.value)
    state = create_backbone("resnet18").state_dict()
    full = dict(state, **{"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    cached.parent.mkdir(parents=True)
    torch.save(full, cached)
    model = create_backbone("resnet18", weights="imagenet")
    assert _equal(model.state_dict(), state)


def test_resolve_weights_is_one_route_with_label_source_and_digest(tmp_path):
    from biqabench.base import io
    from biqabench.components.weights import resolve_weights

    torch.manual_seed(3)
    state = create_backbone("tiny").state_dict()
    path = tmp_path / "my-qpt.safetensors"
    io.save_safetensors({f"module.encoder_q.{k}": v for k, v in state.items()}, path)
    resolved = resolve_weights(str(path), "tiny")
    assert resolved.label == "my-qpt" and resolved.source == str(path)
    assert resolved.sha256 == io.sha256_file(path)
    model = create_backbone("tiny")
    report = resolved.load_into(model)
    assert _equal(model.state_dict(), state) and report.loaded == len(state)
    assert resolved.describe()["weights_sha256"] == resolved.sha256
    random = resolve_weights("random", create_backbone("tiny"))
    assert random.state is None and random.label == "random" and random.sha256 is None
    assert random.load_into(model).loaded == 0
    # the same fit report for a backbone that does not match
    with pytest.raises(BiqaError, match="does not fit backbone 'tiny': 0 of"):
        resolve_weights(str(path), "tiny").load_into(create_backbone("tiny", width=4))


def test_create_backbone_weights_take_the_same_route(tmp_path):
    from biqabench.base import io

    torch.manual_seed(4)
    state = create_backbone("tiny").state_dict()
    path = tmp_path / "w.safetensors"
    io.save_safetensors(state, path)
    assert _equal(create_backbone("tiny", weights=str(path)).state_dict(), state)
