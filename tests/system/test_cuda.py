"""On a CUDA GPU: every head's training and scoring step, a QPT step and run, degradations on
CUDA against CPU, DDP with NCCL at world size 1.  Marked ``cuda``; skipped without a GPU, so CPU
CI stays green.  ``benchmarks/gpu_check.sh`` runs them (``pytest -m cuda``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _textured(n: int, size: int, seed: int = 0) -> torch.Tensor:
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, size // 4, size // 4, generator=g), size=(size, size), mode="bicubic",
                      align_corners=False)
    return (x + 0.15 * torch.rand(n, 3, size, size, generator=g)).clamp(0.05, 0.95)


@pytest.mark.parametrize("name", ["hyperiqa", "tres", "linear"])
def test_every_head_trains_and_scores_on_cuda(name):
    from biqabench.components.backbones import create_backbone
    from biqabench.runtime.device import get_runtime
    from biqabench.training.engine import make_optimizer, predict_images
    from biqabench.components.heads import create_head, head_spec

    rt = get_runtime("cuda", "bf16")
    recipe = head_spec(name).recipe
    torch.manual_seed(0)
    head = rt.prepare(create_head(name, create_backbone("resnet18", weights="random"), recipe=recipe)).train()
    opt = make_optimizer(head, recipe, rt)
    x, mos = rt.to(torch.rand(8, 3, 224, 224)), torch.linspace(0.1, 0.9, 8, device="cuda")
    for _ in range(2):
        with rt.autocast():
            loss = head.loss(x, mos)
        assert torch.isfinite(loss) and loss.device.type == "cuda"
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores = predict_images(head, (torch.rand(5, 3, 224, 224) for _ in range(3)), rt, progress=False)
    assert scores.shape == (3,) and np.isfinite(scores).all()


def test_degradations_on_cuda_equal_cpu_within_a_level():
    from biqabench_plugins.qpt.degradations import DegradationConfig, Recipe, degrade_batch, sample_recipe

    rng = np.random.default_rng(0)
    x = _textured(24, 64)
    recipes = [sample_recipe(DegradationConfig(), rng) for _ in range(24)]
    exact = [Recipe(tuple(o for o in r.ops if o.name not in ("noise", "jpeg"))) for r in recipes]
    cpu, gpu = degrade_batch(x, exact), degrade_batch(x.cuda(), exact)
    assert gpu.device.type == "cuda"
    assert float((cpu - gpu.cpu()).abs().max()) * 255 <= 1.0 + 1e-4  # float rounding flips a level at most
    no_noise = [Recipe(tuple(o for o in r.ops if o.name != "noise")) for r in recipes]
    d = (degrade_batch(x, no_noise) - degrade_batch(x.cuda(), no_noise).cpu()).abs() * 255
    assert float(d.mean()) < 1.0 and float((d > 4).float().mean()) < 0.01  # nvJPEG vs libjpeg: a level or two


def test_noise_on_cuda_has_the_cpu_distribution():
    from biqabench_plugins.qpt.degradations import Recipe, degrade_batch, op

    flat = torch.full((8, 3, 96, 96), 0.5)
    for o in (op("noise", kind="gaussian", sigma=20.0, gray=False), op("noise", kind="poisson", scale=2.0, gray=True)):
        r = [Recipe((o,))] * 8
        c = degrade_batch(flat, r, torch.Generator().manual_seed(0)) - 0.5
        g = degrade_batch(flat.cuda(), r, torch.Generator(device="cuda").manual_seed(0)).cpu() - 0.5
        assert abs(float(c.std()) / float(g.std()) - 1) < 0.05 and abs(float(g.mean())) < 0.01


def test_qpt_step_degrades_on_the_gpu(tmp_path):
    from biqabench.runtime.device import get_runtime
    from biqabench_plugins.qpt.pretrainer import QPTConfig, QPTTrainer

    rt = get_runtime("cuda", "bf16")
    cfg = QPTConfig(batch_size=8, crop_size=128, patch_size=64, queue_size=64)
    trainer = QPTTrainer.build("resnet18", cfg, rt, total_steps=4)
    crops = torch.randint(0, 256, (8, 3, 128, 128), dtype=torch.uint8)
    assert not trainer.views_in_workers()
    views = trainer.make_views(crops, 0)
    assert views.query.device.type == "cuda" and views.query.dtype == torch.uint8
    stats = trainer.step(views.to(rt), 0)
    assert np.isfinite(stats["loss"])


def _folder(root):
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray((rng.random((80, 80, 3)) * 255).astype(np.uint8)).save(root / f"{i}.png")
    return root


def test_qpt_run_on_cuda_with_workers(tmp_path):
    from biqabench.components.pretrain import PretrainRequest
    from biqabench.components.weights import WeightsStore
    from biqabench_plugins.qpt.pretrainer import run_qpt

    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 4\ncrop_size: 64\npatch_size: 32\nqueue_size: 32\nworkers: 2\nlog_recipes_every: 1\n")
    rec = run_qpt(PretrainRequest(backbone="resnet18", data=str(_folder(tmp_path / "d")), steps=3, config=str(cfg),
                                  device="cuda", precision="bf16", seed=0, run_dir=tmp_path / "run",
                                  store=WeightsStore(tmp_path / "store"), progress=False))
    extra = json.loads(rec.file.with_suffix(".json").read_text())["extra"]
    assert extra["device"].startswith("cuda") and np.isfinite(extra["final_loss"])
    assert len((tmp_path / "run" / "recipes.jsonl").read_text().splitlines()) == 3


def test_ddp_with_nccl_at_world_size_1(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", BIQABENCH_WEIGHTS=str(tmp_path / "store"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("crop_size: 64\nqueue_size: 32\nembed_dim: 8\nworkers: 0\nnegative_degradations: 1\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "biqabench", "pretrain", "qpt",
           "--backbone", "resnet18", "--data", str(_folder(tmp_path / "d")), "--steps", "2", "--batch-size", "4",
           "--patch-size", "32", "--config", str(cfg), "--device", "cuda", "--precision", "bf16",
           "--run-dir", str(tmp_path / "run"), "--no-progress"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    manifest = next((tmp_path / "store" / "qpt" / "resnet18").glob("*.json"))
    assert json.loads(manifest.read_text())["extra"]["world_size"] == 1


def test_ddp_step_with_nccl_at_world_size_1():
    """A real NCCL process group of one: DDP's gradient all-reduce and a broadcast run on the GPU."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from biqabench.components.backbones import create_backbone
    from biqabench.runtime.device import get_runtime
    from biqabench.components.heads import create_head, head_spec

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        rt = get_runtime("cuda", "bf16")
        recipe = head_spec("hyperiqa").recipe
        head = rt.prepare(create_head("hyperiqa", create_backbone("resnet18", weights="random"), recipe=recipe))
        model = DDP(head, device_ids=[0])
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x, mos = rt.to(torch.rand(4, 3, 224, 224)), torch.rand(4, device="cuda")
        with rt.autocast():
            scores = model(x)
            loss = (scores.float() - mos).abs().mean()
        loss.backward()
        opt.step()
        t = torch.tensor([3.0], device="cuda")
        dist.broadcast(t, 0)
        assert dist.get_backend() == "nccl" and float(t) == 3.0 and torch.isfinite(loss)
    finally:
        dist.destroy_process_group()


def test_a_matrix_pins_each_cell_to_a_gpu_of_this_machine(tmp_path, monkeypatch):
    """Local GPU placement on real GPUs: --jobs defaults to the GPU count, every cell's process
    sees exactly one GPU, and together they use every GPU (issue 25)."""
    import yaml

    from biqabench.evaluation import benchmark as matrix_mod

    monkeypatch.delenv("BIQABENCH_GPUS", raising=False)
    gpus = torch.cuda.device_count()
    record = ("import json, os, sys, torch; json.dump({'visible': os.environ.get('CUDA_VISIBLE_DEVICES'), "
              "'count': torch.cuda.device_count(), 'name': torch.cuda.get_device_name(0)}, open(sys.argv[1], 'w'))")
    monkeypatch.setattr(matrix_mod, "cell_command", lambda job: [sys.executable, "-c", record, str(job.folder / "seen.json")])
    path = tmp_path / "m.yaml"  # 9 cells: enough for every GPU of a 8-GPU machine
    path.write_text(yaml.safe_dump(dict(name="gpus", heads=["linear", "hyperiqa", "tres"],
                                        weights=["random", "imagenet", "qpt"], train=["demo-a"], test=[],
                                        backbone="tiny", device="auto")))
    m = matrix_mod.load_matrix(path)
    assert matrix_mod.default_jobs(m.base.device) == gpus
    matrix_mod.run_matrix(m, jobs=max(2, gpus), echo=lambda *_: None)
    seen = [json.loads((j.folder / "seen.json").read_text()) for j in matrix_mod.plan(m)]
    assert all(s["count"] == 1 for s in seen)  # one GPU each
    assert {s["visible"] for s in seen} == {str(i) for i in range(min(gpus, len(seen)))}
