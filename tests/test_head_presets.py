"""Head presets ship inside each head's plugin package, so an installed copy finds them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biqabench.heads import head_spec, presets_in

REPO = Path(__file__).resolve().parents[1]
HEADS = ("hyperiqa", "tres", "linear")


@pytest.mark.parametrize("name", HEADS)
def test_bundled_heads_ship_cpu_and_paper_presets(name):
    spec = head_spec(name)
    assert {"cpu", "paper"} <= set(spec.presets)
    for preset, path in spec.presets.items():
        assert path.is_file() and path.parent.name == "presets", path
        assert spec.preset(preset).patch_size >= 32


def test_presets_in_reads_a_package_folder(tmp_path, monkeypatch):
    pkg = tmp_path / "myheadpkg"
    (pkg / "presets").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "presets" / "fast.yaml").write_text("epochs: 1\n")
    (pkg / "presets" / "notes.txt").write_text("not a preset\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert presets_in("myheadpkg") == {"fast": pkg / "presets" / "fast.yaml"}
    (pkg2 := tmp_path / "nopresets").mkdir()
    (pkg2 / "__init__.py").write_text("")
    assert presets_in("nopresets") == {}


def test_unknown_preset_names_the_shipped_ones():
    from biqabench.errors import BiqaError

    with pytest.raises(BiqaError, match="cpu, paper"):
        head_spec("linear").preset("tiny")


PROBE = """
import json, sys
from biqabench.device import get_runtime
from biqabench.heads import head_spec
from biqabench.runner import EvalConfig, resolve_recipe
import biqabench
out = {"package": biqabench.__file__}
for head in ("hyperiqa", "tres", "linear"):
    recipe, source, preset = resolve_recipe(EvalConfig(head=head, recipe="cpu"), head_spec(head), get_runtime("cpu", "fp32"))
    out[head] = {"source": source, "preset": preset, "patch_size": recipe.patch_size,
                 "file": str(head_spec(head).presets["cpu"])}
print(json.dumps(out))
"""


def test_non_editable_install_uses_the_packaged_presets(tmp_path):
    """A real ``pip install --target`` of the project, run from another folder: the recipe comes
    from the installed package's presets (not the source checkout, not a fallback)."""
    src = tmp_path / "src"  # a clean copy: no build/ or .egg-info leftovers of the checkout
    leftovers = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache")

    def ignore(folder, names):  # and the checkout's own results/ (not the biqabench.results package)
        return set(leftovers(folder, names)) | ({"results"} if Path(folder) == REPO else set())

    shutil.copytree(REPO, src, ignore=ignore)
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(src)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), BIQABENCH_PLUGINS="builtin")
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=elsewhere,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(out["package"]).resolve().is_relative_to(target.resolve())
    for head in HEADS:
        info = out[head]
        assert info["preset"] == "cpu"
        assert Path(info["file"]).resolve().is_relative_to(target.resolve()), info
        assert f"{head} preset cpu" in info["source"] and "defaults" not in info["source"]
    assert out["hyperiqa"]["patch_size"] == head_spec("hyperiqa").preset("cpu").patch_size
