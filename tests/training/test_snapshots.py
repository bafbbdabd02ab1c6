"""Backbone snapshots at chosen steps of one pretraining run (``pretrain --snapshots``): written at
those steps, equal to the published weights at the last step, and rewritten identically by a run
that was interrupted and resumed between them."""

from __future__ import annotations

import os
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from biqabench.base.errors import BiqaError
from biqabench.components.pretrain import PretrainRequest
from biqabench.components.weights import WeightsStore
from biqabench.training.pretraining import Interrupted, run_pretraining
from biqabench.training.snapshots import parse_steps, snapshot_files
from biqabench_plugins.moco.pretrainer import MoCo
from conftest import photo_folder as image_folder

TINY = {"batch_size": 4, "crop_size": 32, "patch_size": 16, "workers": 0, "checkpoint_every": 2,
        "optim": {"warmup_steps": 1}, "queue_size": 16, "embed_dim": 8}


def request(folder, name, data, **kw) -> PretrainRequest:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return PretrainRequest(**{**dict(backbone="tiny", data=str(data), steps=5, config=str(folder / "tiny.yaml"),
                                     device="cpu", precision="fp32", seed=2, run_dir=folder / "run",
                                     store=WeightsStore(folder / "store"), progress=False), **kw})


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_snapshots_are_the_backbone_at_their_steps_and_survive_a_resume(tmp_path):
    data = image_folder(tmp_path / "data")
    full = run_pretraining(MoCo, request(tmp_path / "a", "moco", data, snapshots=(0, 2, 5)))
    snaps = snapshot_files(tmp_path / "a" / "run")
    assert sorted(snaps) == [0, 2, 5]
    first, middle, last = (load_file(str(snaps[s])) for s in (0, 2, 5))
    assert _same(last, load_file(str(full.file)))             # the last step is the published backbone
    assert not _same(first, middle) and not _same(middle, last)  # they are taken while it trains

    def interrupt(step, stats):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        run_pretraining(MoCo, request(tmp_path / "b", "moco", data, snapshots=(0, 2, 5)), on_step=interrupt)
    assert sorted(snapshot_files(tmp_path / "b" / "run")) == [0, 2]
    run_pretraining(MoCo, request(tmp_path / "b", "moco", data, snapshots=(0, 2, 5), resume=True))
    again = snapshot_files(tmp_path / "b" / "run")
    assert sorted(again) == [0, 2, 5]
    for step in (0, 2, 5):
        assert _same(load_file(str(again[step])), load_file(str(snaps[step]))), step


def test_snapshot_steps_are_checked_before_any_step(tmp_path):
    with pytest.raises(BiqaError, match="step 9 is past the run's last step"):
        run_pretraining(MoCo, request(tmp_path, "moco", image_folder(tmp_path / "data"), snapshots=(0, 9)))
    assert parse_steps("250, 0,250") == (0, 250)
    with pytest.raises(BiqaError, match="comma list of whole numbers"):
        parse_steps("0,ten")
    with pytest.raises(BiqaError, match="negative"):
        parse_steps("-1,5")
