"""Head presets ship inside each head's plugin package, so an installed copy finds them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biqabench.components.heads import head_spec, presets_in

REPO = Path(__file__).resolve().parents[2]
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
    from biqabench.base.errors import BiqaError

    with pytest.raises(BiqaError, match="cpu, paper"):
        head_spec("linear").preset("tiny")


PROBE = """
import json, sys
from biqabench.runtime.device import get_runtime
from biqabench.components.heads import head_spec
from biqabench.evaluation.runner import EvalConfig, resolve_recipe
import biqabench
out = {"package": biqabench.__file__}
for head in ("hyperiqa", "tres", "linear"):
    recipe, source, preset = resolve_recipe(EvalConfig(head=head, recipe="cpu"), head_spec(head), get_runtime("cpu", "fp32"))
    out[head] = {"source": source, "preset": preset, "patch_size": recipe.patch_size,
                 "file": str(head_spec(head).presets["cpu"])}
print(json.dumps(out))
"""


def clean_copy(tmp_path: Path) -> Path:
    """The checkout without build/ or .egg-info leftovers (nor its own results/, which is not the
    biqabench.results package): what a fresh clone would build."""
    src = tmp_path / "src"
    leftovers = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache")

    def ignore(folder, names):
        return set(leftovers(folder, names)) | ({"results"} if Path(folder) == REPO else set())

    shutil.copytree(REPO, src, ignore=ignore)
    return src


def test_wheel_builds_without_packaging_warnings_and_ships_presets_and_licenses(tmp_path):
    """Building the wheel (what ``pip install .`` does) warns about nothing: no deprecated license
    table, no presets folder that setuptools would drop; the presets, the report templates and
    LICENSE/NOTICE are in it."""
    import re
    import zipfile

    src, dist = clean_copy(tmp_path), tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    warnings = sorted(set(re.findall(r"\b\w*(?:Warning|Deprecation)\b.*", r.stdout + r.stderr)))
    assert warnings == [], warnings
    (wheel,) = dist.glob("biqabench-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for plugin in (*HEADS, "qpt", "moco", "arniqa", "bnstats"):  # heads' and pretrainers' presets
        assert {f"biqabench_plugins/{plugin}/presets/cpu.yaml", f"biqabench_plugins/{plugin}/presets/paper.yaml"} <= names
    assert {"biqabench/results/templates/run.html.j2", "biqabench/results/templates/style.css"} <= names  # reports
    modules = {str(p.relative_to(REPO)) for d in ("biqabench",) for p in (REPO / d).rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel (pyproject's packages): {sorted(modules - names)}"
    assert {n.rsplit("/", 1)[-1] for n in names if "/licenses/" in n} == {"LICENSE", "NOTICE"}
    assert "License-Expression: MIT" in metadata.splitlines()


def test_non_editable_install_uses_the_packaged_presets(tmp_path):
    """A real ``pip install --target`` of the project, run from another folder: the recipe comes
    from the installed package's presets (not the source checkout, not a fallback)."""
    src = clean_copy(tmp_path)
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
