"""Benchmark matrices: planning, dry runs, resumable execution and the paper-style table."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from biqabench.components.backbones import create_backbone
from biqabench.evaluation.benchmark import load_matrix, plan, run_matrix
from biqabench.cli import app
from biqabench.base.errors import BiqaError
from biqabench.components.weights import WeightsStore

TINY = dict(patch_size=32, train_patches=2, test_patches=2, batch_size=32, epochs=1, lr=1e-3, lr_step=0)


def _matrix(tmp_path, **kw):
    m = dict(name="t", heads=["linear"], weights=["random", "qpt"], baseline="random", backbone="tiny",
             train=["demo-a"], test=["demo-a", "demo-b"], splits=1, recipe="cpu", recipe_overrides=TINY,
             device="cpu", precision="fp32")
    m.update(kw)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    return path


def test_dry_run_lists_every_job(tmp_path):
    path = _matrix(tmp_path, heads=["linear", "hyperiqa"], train=["demo-a", "demo-b"])
    out = CliRunner().invoke(app, ["benchmark", str(path), "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "8 jobs, 8 to run" in out.output
    assert "hyperiqa__qpt__demo-b" in out.output and "pending" in out.output


def test_typos_in_a_matrix_are_caught_before_running(tmp_path):
    with pytest.raises(BiqaError, match="did you mean 'hyperiqa'"):
        load_matrix(_matrix(tmp_path, heads=["hyperiq"]))
    with pytest.raises(BiqaError, match="unknown weights 'imagnet'"):
        load_matrix(_matrix(tmp_path, weights=["imagnet"]))
    with pytest.raises(BiqaError, match="unknown key 'head'"):
        load_matrix(_matrix(tmp_path, head="linear"))


def test_matrix_runs_resumes_and_writes_the_paper_table(tmp_path):
    torch_state = create_backbone("tiny").state_dict()
    WeightsStore().save(torch_state, producer="qpt", backbone="tiny")
    m = load_matrix(_matrix(tmp_path))
    table = run_matrix(m, progress=False, echo=lambda *_: None)
    jobs = plan(m)
    assert all(j.status() == "finished" for j in jobs)
    folder = jobs[0].folder.parent
    for f in ("table.md", "table.tex", "table.csv", "metrics.csv"):
        assert (folder / f).is_file()
    text = (folder / "table.md").read_text()
    assert "Gain from swapping weights" in text and "demo-a" in text
    assert len(table) == 2  # linear+random, linear+qpt
    # a second call finds everything finished and runs nothing
    stamps = {j.key: (j.folder / "metrics.csv").stat().st_mtime_ns for j in jobs}
    run_matrix(m, progress=False, echo=lambda *_: None)
    assert stamps == {j.key: (j.folder / "metrics.csv").stat().st_mtime_ns for j in jobs}
    per_job = pd.read_csv(folder / "metrics.csv")
    assert set(per_job["weights"]) == {"random", "qpt"}
