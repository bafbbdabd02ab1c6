"""Provenance: the weights file a run resolved is pinned (sha256) and resume refuses a changed file;
checkpoints carry every RNG state; --deterministic lists the ops that have no deterministic kernel."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from biqabench.training import engine
from biqabench.components.backbones import create_backbone
from biqabench.base.errors import BiqaError
from biqabench.evaluation.pinning import determinism
from biqabench.evaluation.runner import EvalConfig, evaluate
from biqabench.components.weights import WeightsStore, resolve_weights

TINY = dict(patch_size=32, train_patches=1, test_patches=1, batch_size=32, epochs=1, lr=1e-3, lr_step=0)


def _store_weights(tmp_path, seed: int):
    torch.manual_seed(seed)
    store = WeightsStore(tmp_path / "weights")
    rec = store.save(create_backbone("tiny").state_dict(), producer="qpt", backbone="tiny",
                     extra={"run_dir": f"/runs/pretrain-{seed}"})
    return store, rec


def test_pretrainer_name_resolves_to_a_pinned_file(tmp_path):
    store, rec = _store_weights(tmp_path, 0)
    resolved = resolve_weights("qpt", "tiny", store)
    prov = resolved.describe()
    assert prov["weights_file"] == str(rec.file.resolve()) and prov["weights_sha256"] == rec.sha256
    assert prov["weights_pretraining_run"] == "/runs/pretrain-0" and resolved.state
    assert resolve_weights("random", "tiny").describe()["weights_file"] is None


def test_resume_uses_the_pinned_file_and_refuses_a_changed_one(tmp_path, monkeypatch):
    monkeypatch.setenv("BIQABENCH_WEIGHTS", str(tmp_path / "weights"))
    store, first = _store_weights(tmp_path, 0)
    cfg = EvalConfig(head="linear", weights="qpt", backbone="tiny", splits=1, recipe="cpu", recipe_overrides=TINY,
                     device="cpu", precision="fp32", workers=0, test=[], save_model=False)
    import biqabench.evaluation.pinning as P

    run = evaluate(cfg, run_dir=tmp_path / "run", progress=False)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["weights_file"] == str(first.file.resolve()) and manifest["weights_sha256"] == first.sha256
    _store_weights(tmp_path, 1)  # newer qpt weights appear: a resumed run must not pick them up
    seen = {}
    real = P.load_pinned

    def spy(m, r):
        seen["file"] = m["weights_file"]
        return real(m, r)

    monkeypatch.setattr(P, "load_pinned", spy)
    evaluate(resume=run, progress=False)
    assert seen["file"] == str(first.file.resolve())
    first.file.write_bytes(first.file.read_bytes() + b"\0")  # the pinned file changes
    with pytest.raises(BiqaError, match="resume refuses to mix weights"):
        evaluate(resume=run, progress=False)


def test_rng_state_round_trips_and_names_cuda_when_used():
    state = engine._rng_state()
    a = torch.rand(3)
    engine._set_rng_state(state)
    assert torch.equal(torch.rand(3), a)
    assert ("cuda" in state) == (torch.cuda.is_available() and torch.cuda.is_initialized())


def test_determinism_lists_ops_without_a_deterministic_kernel():
    before = torch.are_deterministic_algorithms_enabled()
    with determinism(True) as found:
        assert torch.are_deterministic_algorithms_enabled()
        warnings.warn("scatter_add_cuda_kernel does not have a deterministic implementation, but you set ...")
        warnings.warn("scatter_add_cuda_kernel does not have a deterministic implementation, but you set ...")
    assert found == ["scatter_add_cuda_kernel"]
    assert torch.are_deterministic_algorithms_enabled() == before
    with determinism(False) as none:
        assert none == [] and torch.are_deterministic_algorithms_enabled() == before
