"""The README's Python: every name it imports from biqabench exists (and is the function, not a
submodule of the same name), and its snippets run as written."""

from __future__ import annotations

import ast
import os
import re
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO


def python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def imported_names(blocks: list[str]) -> set[str]:
    names = set()
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module == "biqabench":
                names |= {a.name for a in node.names}
    return names


def test_every_name_the_readme_imports_exists():
    import biqabench

    names = imported_names(python_blocks())
    assert {"load_model", "predict", "pretrain", "evaluate"} <= names
    for name in sorted(names):
        obj = getattr(biqabench, name)
        assert not isinstance(obj, types.ModuleType), f"biqabench.{name} is a module, not the API function"
        assert name in biqabench.__all__, name
    import biqabench.components.pretrain  # noqa: F401 - importing the modules must not shadow the functions
    import biqabench.model.predict  # noqa: F401
    from biqabench import predict, pretrain
    assert callable(predict) and not isinstance(predict, types.ModuleType)
    assert callable(pretrain) and not isinstance(pretrain, types.ModuleType)
    package = Path(biqabench.__file__).parent  # no module or subpackage at the top shares an API name
    assert not {p.stem for p in package.iterdir() if p.suffix == ".py" or p.is_dir()} & set(biqabench.__all__)


def run_blocks(blocks, tiny_model_run, tmp_path, monkeypatch) -> dict:
    runs = tmp_path / "results" / "runs"
    shutil.copytree(tiny_model_run, runs / tiny_model_run.name)  # "latest" names this one at first
    monkeypatch.setenv("BIQABENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BIQABENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(name)
    env: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), env)  # noqa: S102 - our own README
    return env


def test_readme_scoring_snippet_runs(tiny_model_run, tmp_path, monkeypatch):
    blocks = [b for b in python_blocks() if "evaluate(" not in b]
    assert blocks, "the README shows scoring in Python"
    env = run_blocks(blocks, tiny_model_run, tmp_path, monkeypatch)
    assert len(env["scores"]) == 2 and np.isfinite(env["scores"]).all()


@pytest.mark.slow
def test_readme_snippets_run(tiny_model_run, tmp_path, monkeypatch):
    """All of them, the API tour too (toy sizes: ~20 CPU seconds of QPT and fine-tuning)."""
    env = run_blocks(python_blocks(), tiny_model_run, tmp_path, monkeypatch)
    assert len(env["scores"]) == 2 and np.isfinite(env["scores"]).all()
    assert env["m"].info.train_set == "demo-a" and os.path.isdir(env["run"])
