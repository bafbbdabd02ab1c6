"""Installing the example third-party plugin (really, with pip) makes its components appear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "biqabench-example-plugin"


def _run(args, env, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)


def _clean_copy(project, tmp_path):
    """The example's sources in a fresh folder: pip builds in the folder it installs from, so that
    the repository gets no build/ or .egg-info/, and no stale build/lib file is installed."""
    import shutil

    return shutil.copytree(project, tmp_path / project.name,
                           ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))


def test_pip_installed_example_plugin_is_discovered(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ)
    r = _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
              "--no-index", "--target", str(target), str(_clean_copy(EXAMPLE, tmp_path))], env)
    assert r.returncode == 0, r.stderr
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    cli = [sys.executable, "-m", "biqabench"]
    out = _run(cli + ["plugins", "list"], env).stdout
    line = next(l for l in out.splitlines() if " example " in l)
    assert "biqabench-example-plugin" in line and "0.1.0" in line and "ok" in line
    assert "attnpool" in _run(cli + ["heads", "list"], env).stdout
    assert "toynet" in _run(cli + ["backbones", "list"], env).stdout
    assert "hello you" in _run(cli + ["example", "hello", "--name", "you"], env).stdout
    # restricted to bundled plugins, the third-party one disappears
    env["BIQABENCH_PLUGINS"] = "builtin"
    assert " example " not in _run(cli + ["plugins", "list"], env).stdout


def test_broken_plugin_shows_as_broken_while_commands_still_work(tmp_path):
    from conftest import make_fake_distribution

    site = make_fake_distribution(tmp_path / "site", "broken-dist", {"broken": "raise RuntimeError('bad plugin')\n"})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    cli = [sys.executable, "-m", "biqabench"]
    out = _run(cli + ["plugins", "list"], env)
    line = next(l for l in out.stdout.splitlines() if " broken " in l)
    assert "BROKEN" in line and "bad plugin" in line and "broken-dist" in line
    r = _run(cli + ["backbones", "list"], env)
    assert r.returncode == 0 and "resnet50" in r.stdout


PRETRAINER = REPO / "examples" / "biqabench-example-pretrainer"


def test_pip_installed_example_pretrainer_pretrains_and_probes(tmp_path):
    """The third-party rotation pretrainer, installed with pip, runs on the core loop end to end:
    pretrain (then resume a finished run), then probe its weights."""
    source = (PRETRAINER / "biqabench_rotation" / "__init__.py").read_text()
    assert len(source.splitlines()) <= 80
    target = tmp_path / "site"
    env = dict(os.environ, BIQABENCH_WEIGHTS=str(tmp_path / "weights"), BIQABENCH_RESULTS=str(tmp_path / "results"),
               BIQABENCH_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    r = _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
              "--no-index", "--target", str(target), str(_clean_copy(PRETRAINER, tmp_path))], env)
    assert r.returncode == 0, r.stderr
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    cli = [sys.executable, "-m", "biqabench"]
    assert "rotation" in _run(cli + ["pretrainers", "list"], env).stdout
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("crop_size: 32\nworkers: 0\ncheckpoint_every: 2\n")
    pretrain = cli + ["pretrain", "rotation", "--backbone", "tiny", "--steps", "4", "--batch-size", "4",
                      "--patch-size", "16", "--config", str(cfg), "--device", "cpu", "--precision", "fp32",
                      "--run-dir", str(tmp_path / "run"), "--no-progress"]
    r = _run(pretrain, env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "saved rotation weights for tiny" in r.stdout
    r = _run(pretrain + ["--resume"], env)  # already finished: publishes again, trains nothing
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(cli + ["probe", "--weights", "rotation", "--backbone", "tiny", "--splits", "2", "--size", "64",
                    "--device", "cpu", "--run-dir", str(tmp_path / "probe"), "--no-progress"], env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    manifest = json.loads((tmp_path / "probe" / "manifest.json").read_text())
    assert manifest["weights"] == "rotation" and manifest["status"] == "finished"
    assert "rotation" in manifest["weights_source"]
