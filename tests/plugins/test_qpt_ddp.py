"""``torchrun --nproc_per_node 2 -m biqabench pretrain qpt``: DDP with gloo on CPU, rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from biqabench.base import io

pytestmark = pytest.mark.slow  # two fresh Python processes importing torch: ~20-60 s on 2 cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(data / f"{i}.png")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("crop_size: 32\nqueue_size: 64\nembed_dim: 8\nworkers: 0\nnegative_degradations: 1\n")
    run_dir = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", BIQABENCH_WEIGHTS=str(tmp_path / "store"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "biqabench", "pretrain", "qpt", "--backbone", "tiny", "--data", str(data), "--steps", "3",
           "--batch-size", "2", "--patch-size", "16", "--config", str(cfg), "--device", "cpu",
           "--precision", "fp32", "--run-dir", str(run_dir)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    manifests = list((tmp_path / "store" / "qpt" / "tiny").glob("*.json"))
    assert len(manifests) == 1  # only rank 0 writes
    extra = json.loads(manifests[0].read_text())["extra"]
    assert extra["world_size"] == 2 and extra["images_seen"] == 3 * 2 * 2
    state = io.load_torch(run_dir / "checkpoint.pt")
    # keys of both processes were gathered before enqueueing: 3 steps x 2 ranks x 2 images x (1 + 1) keys
    assert int(state["model"]["queue.ptr"]) == 24
