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


def test_pip_installed_example_plugin_is_discovered(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ)
    r = _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
              "--no-index", "--target", str(target), str(EXAMPLE)], env)
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
