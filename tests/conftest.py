"""Shared fixtures. Tests never download: a guard turns any network access into a failure."""

from __future__ import annotations

import functools
import os
import socket
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BIQABENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


#: The smallest fine-tuning recipe that still trains: one epoch of 2 patches of 32 px per image.
TINY_RECIPE = {"patch_size": 32, "train_patches": 2, "test_patches": 2, "batch_size": 32, "epochs": 1,
               "lr_step": 0}

#: Source of a third-party plugin module registering a linear head; NAME is the head's name.
HEAD_PLUGIN = """
import torch
from biqabench.plugin_api import HeadSpec, IQAHead, TrainRecipe, hookimpl

class Head(IQAHead):
    def __init__(self, backbone, recipe):
        super().__init__(backbone)
        self.fc = torch.nn.Linear(backbone.out_channels, 1)
    def forward(self, x):
        return self.fc(self.backbone.pooled(x)).squeeze(1)

@hookimpl
def register_heads(register):
    register(HeadSpec("NAME", Head, TrainRecipe(patch_size=32)))
"""


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a non-local connection fails the test instead of downloading."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            raise RuntimeError(f"test tried to reach the network ({address}); tests must not download")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _isolated_results(tmp_path_factory, monkeypatch):
    """Each test writes results, weights and caches under its own temporary folder."""
    base = tmp_path_factory.mktemp("biqa")
    monkeypatch.setenv("BIQABENCH_RESULTS", str(base / "results"))
    monkeypatch.delenv("BIQABENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(base / "torch_home"))
    # the decoded/embedded caches are safe to share between tests (keyed by content)
    monkeypatch.setenv("BIQABENCH_CACHE", os.environ.get("BIQABENCH_TEST_CACHE", str(REPO / ".cache" / "test")))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real-data checks run only where it exists)")
    return SHARED_DATA


def photo_folder(root: Path, n: int = 6, side: int = 48) -> Path:
    """``n`` small photo-like images (blocky content plus noise) for pretraining tests."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.random((6, 6, 3))
        img = np.kron(base, np.ones((side // 6, side // 6, 1))) * 200 + rng.random((side, side, 3)) * 40
        Image.fromarray(img.astype(np.uint8)).save(root / f"img{i}.png")
    return root


def make_fake_distribution(root: Path, dist: str, plugins: dict[str, str], version: str = "1.0") -> Path:
    """Write importable plugin modules plus a ``.dist-info`` declaring them as ``biqabench`` entry
    points, exactly as pip would; put ``root`` on sys.path to make importlib.metadata see them."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[biqabench]"]
    for name, source in plugins.items():
        module = f"{dist.replace('-', '_')}_{name}"
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        lines.append(f"{name} = {module}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``biqabench ARGS`` in-process: (exit code, stdout, stderr), nothing checked."""
    from biqabench.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def invoke_cli(capsys, *args, one_line: bool = True) -> tuple[int, str, str]:
    """Run ``biqabench`` in-process: (exit code, stdout, last stderr line). A failing command must
    print no traceback and end on an ``error: ...`` line (the only line when ``one_line``)."""
    code, out, err = run_cli(capsys, *args)
    assert "Traceback" not in err, err
    lines = [ln for ln in (x.split("\r")[-1] for x in err.split("\n")) if ln.strip()]
    if code:
        assert lines and lines[-1].startswith("error: "), err
        assert not one_line or len(lines) == 1, err
    return code, out, lines[-1] if lines else ""


def forwarded_options(monkeypatch, module, name: str, args: list[str]) -> dict:
    """The keyword arguments ``biqabench ARGS`` passes to ``module.name`` (stubbed: the command
    stops there), to check that command-line flags reach the function."""
    from typer.testing import CliRunner

    from biqabench.cli import app
    from biqabench.base.errors import BiqaError

    seen = {}

    def stub(config=None, **kw):
        seen.update(kw)
        raise BiqaError("stop here")

    monkeypatch.setattr(module, name, stub)
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and seen, result.output
    return seen


@pytest.fixture(scope="session")
def tiny_model_run(tmp_path_factory):
    """A finished one-split eval run of the linear head on the tiny backbone (seconds of training),
    for the tests of load_model / score / export / test."""
    from biqabench.evaluation.runner import EvalConfig, evaluate

    recipe = dict(patch_size=32, train_patches=2, test_patches=2, batch_size=32, epochs=1, lr=1e-3, lr_step=0)
    cfg = EvalConfig(head="linear", weights="random", backbone="tiny", splits=1, recipe="cpu",
                     recipe_overrides=recipe, device="cpu", precision="fp32", workers=0)
    run_dir = tmp_path_factory.mktemp("model_results") / "runs" / "20260101-000000-eval-linear-tiny-ab12"
    return evaluate(cfg, run_dir=run_dir, progress=False)


@functools.lru_cache(maxsize=1)
def slurm_unavailable() -> str:
    """Why the tests marked ``slurm`` cannot run here ("" when a SLURM controller answers)."""
    import shutil
    import subprocess

    missing = [c for c in ("sinfo", "sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} not on PATH); as root, .ci/slurm_up.sh installs and "
                "starts a one-node cluster")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s (slurmctld down?); .ci/slurm_up.sh starts it"
    states = proc.stdout.split()
    if proc.returncode != 0 or not states:
        why = (proc.stderr.strip().splitlines() or ["no nodes"])[-1]
        return f"no SLURM controller answers (sinfo: {why}); .ci/slurm_up.sh starts a one-node cluster"
    if not any(s.rstrip("*~#").startswith(("idle", "mix", "alloc", "comp")) for s in states):
        return f"the SLURM node(s) are not usable (states: {', '.join(states)}); see /var/log/slurm/"
    return ""


def pytest_runtest_setup(item):
    if item.get_closest_marker("slurm") is not None:
        reason = slurm_unavailable()
        if reason:
            pytest.skip(reason)


class BackboneImageCounter:
    """Counts images through the backbone's forward pass."""

    def __init__(self, monkeypatch):
        import torch

        from biqabench.components.backbones import Backbone

        self.images = 0
        real_call = torch.nn.Module.__call__
        counter = self

        def call(module, *args, **kwargs):
            if isinstance(module, Backbone) and args:
                counter.images += int(args[0].shape[0])
            return real_call(module, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, "__call__", call)
