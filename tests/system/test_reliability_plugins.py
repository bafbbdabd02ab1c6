"""Broken third-party plugins at the command level: the tool keeps working, `plugins list` says
what is broken, and using a component that a broken plugin would have provided says why it is
missing.  (API-level checks: tests/components/test_plugins.py; a pip-installed plugin: plugins/test_example_plugin.py.)"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from biqabench.cli import main
from biqabench.base.errors import BiqaError
from biqabench.components.plugins import reset_harness
from conftest import HEAD_PLUGIN as HEAD  # NAME: the head's name
from conftest import TINY_RECIPE, invoke_cli, make_fake_distribution

IMPORT_ERROR = "import not_a_module_anywhere\n" + HEAD.replace("NAME", "never-seen")
HOOK_RAISES = """
from biqabench.plugin_api import hookimpl
@hookimpl
def register_heads(register):
    register("half-registered", object())
    raise ValueError("boom in hook")
"""
EXPLODES = HEAD.replace("NAME", "explodes-forward").replace(
    "return self.fc(self.backbone.pooled(x)).squeeze(1)", "raise RuntimeError('kaboom in forward')") + """
def build_fails(backbone, recipe):
    raise RuntimeError("kaboom in build")

@hookimpl(specname="register_heads")
def register_more(register):
    register(HeadSpec("explodes-build", build_fails, TrainRecipe(patch_size=32)))
"""
COMMANDS_RAISE = """
from biqabench.plugin_api import hookimpl
@hookimpl
def register_commands(cli):
    raise RuntimeError("boom in register_commands")
"""


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Install fake plugin distributions for this test only (importlib.metadata finds them on sys.path)."""
    modules: list[str] = []

    def _install(dist: str, plugins: dict[str, str]) -> Path:
        root = make_fake_distribution(tmp_path / dist, dist, plugins)
        monkeypatch.syspath_prepend(str(root))
        modules.extend(f"{dist.replace('-', '_')}_{name}" for name in plugins)
        importlib.invalidate_caches()
        reset_harness()
        return root

    yield _install
    reset_harness()
    for m in modules:
        sys.modules.pop(m, None)


def cli(capsys, *args) -> tuple[int, str, str]:
    return invoke_cli(capsys, *args)


def row(out: str, plugin: str) -> str:
    return next(ln for ln in out.splitlines() if f" {plugin} " in ln)


def tiny_eval_config(tmp_path: Path) -> Path:
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"weights": "random", "backbone": "tiny", "splits": 1,
                                    "recipe_overrides": TINY_RECIPE}))
    return path


FAST = ["--device", "cpu", "--precision", "fp32", "--workers", "0", "--no-progress"]


def test_import_error_is_listed_and_named_when_its_head_is_asked_for(tmp_path, capsys, install):
    install("brokendist", {"brokenplug": IMPORT_ERROR, "goodplug": HEAD.replace("NAME", "good-head")})
    code, out, _ = cli(capsys, "plugins", "list")
    assert code == 0
    line = row(out, "brokenplug")
    assert "BROKEN: import failed: ModuleNotFoundError: No module named 'not_a_module_anywhere'" in line
    assert "ok" in row(out, "goodplug") and "ok" in row(out, "linear")
    code, out, _ = cli(capsys, "heads", "list", "--format", "plain")
    assert code == 0 and "good-head" in out and "linear" in out
    code, _, line = cli(capsys, "eval", "--head", "never-seen", "--config", tiny_eval_config(tmp_path), *FAST)
    assert code == 2
    assert "unknown head 'never-seen'" in line
    assert "plugins that failed to load (it may be theirs): brokenplug (import failed:" in line
    assert "see: biqabench plugins list" in line


def test_exception_inside_a_register_hook(tmp_path, capsys, install):
    install("hookdist", {"raises": HOOK_RAISES})
    code, out, _ = cli(capsys, "plugins", "list")
    assert code == 0
    assert "BROKEN: hook register_heads raised ValueError: boom in hook" in row(out, "raises")
    code, out, _ = cli(capsys, "heads", "list", "--format", "plain")
    assert code == 0 and "half-registered" not in out and "hyperiqa" in out   # never half-registered
    code, _, line = cli(capsys, "eval", "--head", "half-registered", "--config", tiny_eval_config(tmp_path), *FAST)
    assert code == 2 and "unknown head 'half-registered'" in line and "raises (hook register_heads raised" in line


def test_exception_inside_a_heads_code(tmp_path, capsys, install):
    install("explodist", {"explodes": EXPLODES})
    cfg = tiny_eval_config(tmp_path)
    code, _, line = cli(capsys, "eval", "--head", "explodes-build", "--config", cfg, *FAST)
    assert code == 2
    assert ("head 'explodes-build' (plugin 'explodes') failed to build on backbone 'tiny': "
            "RuntimeError: kaboom in build; a bug in that plugin (rerun with --debug for the traceback)") in line
    with pytest.raises(BiqaError) as exc:  # --debug shows the traceback, with the plugin's error as cause
        main(["--debug", "eval", "--head", "explodes-build", "--config", str(cfg), *FAST])
    assert isinstance(exc.value.__cause__, RuntimeError)
    # an exception while training: one line, exit 1 (a bug, not a user error), the run marked failed
    code, _, line = cli(capsys, "eval", "--head", "explodes-forward", "--config", cfg, *FAST)
    assert code == 1
    assert line.startswith("error: unexpected RuntimeError: kaboom in forward -- a bug in biqabench or a plugin")
    assert "--debug" in line
    runs = list((Path(os.environ["BIQABENCH_RESULTS"]) / "runs").iterdir())
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "RuntimeError: kaboom in forward"


def test_two_plugins_claiming_one_name(tmp_path, capsys, install):
    same = HEAD.replace("NAME", "dup-head")
    install("clashdist", {"clash_a": same, "clash_b": same})
    code, out, _ = cli(capsys, "plugins", "list")
    assert code == 0
    lines = [row(out, "clash_a"), row(out, "clash_b")]
    broken = [ln for ln in lines if "BROKEN" in ln]
    assert len(broken) == 1
    assert "head 'dup-head' is registered by two plugins:" in broken[0]
    assert "'clash_a'" in broken[0] and "'clash_b'" in broken[0]
    assert "uninstall one or restrict plugins with BIQABENCH_PLUGINS" in broken[0]
    code, out, _ = cli(capsys, "heads", "list", "--format", "plain")
    assert code == 0 and len([ln for ln in out.splitlines() if ln.startswith("dup-head ")]) == 1
    code, _, err = cli(capsys, "eval", "--head", "dup-head", "--backbone", "tiny", "--weights", "random")
    assert code == 2 and "'clash_a'" in err and "'clash_b'" in err


def test_register_commands_hook_raising_keeps_the_cli_working(tmp_path):
    """Commands are added when the CLI module is imported, so this one needs a fresh process."""
    site = make_fake_distribution(tmp_path / "site", "cmddist", {"cmdboom": COMMANDS_RAISE})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "biqabench", "plugins", "list"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "BROKEN: hook register_commands raised RuntimeError: boom in register_commands" in row(proc.stdout, "cmdboom")
    assert "Traceback" not in proc.stderr
