"""``torchrun --nproc_per_node 2 -m biqabench eval``: DDP fine-tuning with gloo on CPU, rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow  # two fresh Python processes importing torch per head: ~30 s each on 2 cores

TINY = dict(patch_size=32, train_patches=2, test_patches=2, batch_size=8, epochs=2, lr=1e-3, lr_step=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("head", ["linear", "hyperiqa", "tres"])
def test_two_process_gloo_eval(tmp_path, head):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"recipe_overrides": TINY, "workers": 0}))
    results = tmp_path / "results"
    env = dict(os.environ, OMP_NUM_THREADS="1", BIQABENCH_RESULTS=str(results))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "biqabench", "eval", "--config", str(cfg), "--head", head, "--weights", "random",
           "--backbone", "tiny", "--splits", "2", "--device", "cpu", "--precision", "fp32", "--no-progress"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = list((results / "runs").iterdir())
    assert len(runs) == 1, runs  # both processes worked on one run folder, written by rank 0
    run = runs[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["world_size"] == 2
    metrics = pd.read_csv(run / "metrics.csv")
    assert sorted(zip(metrics.split, metrics.test_set)) == [(0, "demo-a"), (0, "demo-b"), (1, "demo-a"), (1, "demo-b")]
    assert metrics[["srcc", "plcc"]].notna().all().all()
    preds = pd.read_csv(run / "predictions.csv")
    assert not preds.duplicated(["split", "test_set", "image"]).any()
    assert not list(run.glob("splits/*/checkpoint.pt"))
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2 * TINY["epochs"]
