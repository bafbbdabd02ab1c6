"""The CLI: help that teaches, registry listings, one-line errors, plugin listing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from biqabench.cli import app, main

runner = CliRunner()


def test_help_lists_commands_and_subcommand_help_explains_options():
    out = runner.invoke(app, ["--help"]).output
    for cmd in ("pretrain", "plugins", "backbones", "heads", "datasets", "weights"):
        assert cmd in out
    out = runner.invoke(app, ["pretrain", "--help"]).output
    assert "--backbone" in out and "--resume" in out and "--precision" in out


def test_plugins_list_shows_bundled_plugins_from_the_distribution():
    out = runner.invoke(app, ["plugins", "list"]).output
    for name in ("torchvision_backbones", "qpt", "hyperiqa", "tres", "linear", "datasets"):
        line = next(l for l in out.splitlines() if f" {name} " in l)
        assert "biqabench" in line and "ok" in line


def test_backbones_list():
    out = runner.invoke(app, ["backbones", "list"]).output
    assert all(n in out for n in ("resnet18", "resnet34", "resnet50", "resnet101"))


def test_weights_list_shows_store_contents(tmp_path):
    from biqabench.components.backbones import create_backbone
    from biqabench.components.weights import WeightsStore

    WeightsStore(tmp_path).save(create_backbone("tiny").state_dict(), producer="qpt", backbone="tiny")
    out = runner.invoke(app, ["weights", "list", "--store", str(tmp_path)]).output
    assert "qpt" in out and "tiny" in out and "imagenet" in out


def test_errors_are_one_line_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "qpt", "--backbone", "resnet5O"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown backbone 'resnet5O'") and "did you mean" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "biqabench", "backbones", "list"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "resnet50" in out.stdout


def test_importing_the_cli_loads_no_plugin_and_no_torch():
    """The app is built on first use (biqabench.cli.app / main), not at import."""
    import subprocess
    import sys

    probe = ("import sys, biqabench.cli; "
             "print(sorted(m for m in sys.modules if m.startswith('biqabench_plugins') or m == 'torch'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
