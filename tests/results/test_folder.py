"""Run folders, the tables read back from them, plots and the ``biqabench results`` commands.

Runs are made in tmp_path from synthetic metrics whose medians are known, so every delta in the
compare and paper tables can be checked by hand.
"""

from __future__ import annotations

import dataclasses
import io as _io
import json
import math
import secrets
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from biqabench.base import plots
from biqabench import results as R
from biqabench.base.errors import BiqaError
from biqabench.base.metrics import compute_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, head: str, weights: str, srcc: dict[str, list[float]], *, backbone: str = "resnet50",
             train: str = "koniq", finished: bool = True, predictions: bool = False) -> Path:
    """A run whose per-split SRCC per test set is ``srcc`` (PLCC = SRCC + 0.01), written split by split."""
    run = R.RunFolder.create("eval", f"{head}-{weights}", root).path
    R.RunFolder(run).write_manifest(head=head, weights=weights, backbone=backbone, protocol="intra", train=train,
                     test=list(srcc), splits=len(next(iter(srcc.values()))))
    n_splits = len(next(iter(srcc.values())))
    rng = np.random.default_rng(0)
    for k in range(n_splits):
        if predictions:
            frames = []
            for test in srcc:
                mos = rng.uniform(1, 5, 40)
                frames.append(pd.DataFrame({"test_set": test, "image": [f"{test}_{i}.jpg" for i in range(40)],
                                            "mos": mos, "pred": mos / 5 + rng.normal(0, 0.05 * (k + 1), 40)}))
            R.RunFolder(run).write_predictions(pd.concat(frames), split=k)
        rows = [{"train_set": train, "test_set": test, "srcc": v[k], "krcc": v[k] - 0.2, "plcc": v[k] + 0.01,
                 "plcc_logistic": v[k] + 0.02, "rmse_logistic": 0.3, "mapping": "logistic", "n": 40}
                for test, v in srcc.items()]
        R.RunFolder(run).write_metrics(pd.DataFrame(rows), split=k)
    if finished:
        R.RunFolder(run).mark_finished(wall_seconds=1.5)
    return run


@pytest.fixture
def two_runs(tmp_path):
    base = make_run(tmp_path, "hyperiqa", "imagenet", {"koniq": [0.80, 0.82, 0.81], "clive": [0.70, 0.74, 0.72]})
    qpt = make_run(tmp_path, "hyperiqa", "qpt", {"koniq": [0.85, 0.86, 0.84], "clive": [0.79, 0.77, 0.78]})
    return tmp_path, base, qpt


# -- run folders ---------------------------------------------------------------------------------
def test_new_run_dir_id_layout(tmp_path):
    run = R.RunFolder.create("eval", "HyperIQA / QPT weights", tmp_path).path
    assert run.parent == tmp_path / "runs"
    parts = run.name.split("-")
    assert len(parts[0]) == 8 and parts[0].isdigit() and len(parts[1]) == 6 and parts[1].isdigit()
    assert run.name[16:].startswith("eval-hyperiqa-qpt-weights-") and len(parts[-1]) == 4
    assert R.RunFolder(run).read_manifest()["status"] == "running"
    assert R.runs_root(tmp_path / "runs") == tmp_path / "runs"  # --root results/runs works too


def test_new_run_dir_is_collision_safe_across_threads(tmp_path):
    made: list[Path] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def start_runs():
        barrier.wait()
        for _ in range(8):
            path = R.RunFolder.create("eval", "same-label", tmp_path).path
            with lock:
                made.append(path)

    threads = [threading.Thread(target=start_runs) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 128 == len(set(made))
    assert all(R.RunFolder(p).read_manifest()["id"] == p.name for p in made)


def test_new_run_dir_retries_a_taken_name(tmp_path, monkeypatch):
    suffixes = iter(["aaaa", "aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(suffixes))
    # both calls in the same second, as a collision needs; on a loaded machine they may not be
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20260101-000000")
    first = R.RunFolder.create("eval", "x", tmp_path).path
    second = R.RunFolder.create("eval", "x", tmp_path).path
    assert first.name.endswith("-aaaa") and second.name.endswith("-bbbb")


def test_manifest_records_environment_and_keeps_fields(tmp_path):
    @dataclasses.dataclass
    class Recipe:
        lr: float = 2e-5
        out: Path = Path("x/y")

    run = R.RunFolder.create("eval", "m", tmp_path).path
    R.RunFolder(run).write_manifest(head="linear", seeds=[0, 1], device="cpu", precision="bf16", config=Recipe(),
                     fingerprints={"koniq": "abc"}, score=float("nan"), count=np.int64(3))
    m = json.loads((run / "manifest.json").read_text())
    assert set(R.VERSIONED_PACKAGES) <= set(m["versions"])
    assert m["versions"]["numpy"] == np.__version__ and m["versions"]["pandas"] == pd.__version__
    for key in ("git_commit", "python", "platform", "created", "kind", "id"):
        assert key in m
    assert m["git_commit"] is None or len(m["git_commit"]) == 40
    assert m["config"] == {"lr": 2e-5, "out": "x/y"} and m["score"] is None and m["count"] == 3
    R.RunFolder(run).mark_finished(wall_seconds=4.2)
    m2 = R.RunFolder(run).read_manifest()
    assert m2["status"] == "finished" and m2["head"] == "linear" and m2["created"] == m["created"]
    assert R.load_run(run).status == "finished"


def test_split_by_split_writes_merge_and_resume(tmp_path):
    run = R.RunFolder.create("eval", "splits", tmp_path).path
    for k in (2, 10, 0):
        R.RunFolder(run).write_metrics(pd.DataFrame([{"train_set": "a", "test_set": "a", "srcc": k / 10, "krcc": 0, "plcc": 0,
                                            "plcc_logistic": 0, "rmse_logistic": 0, "mapping": "logistic",
                                            "n": 5}]), split=k)
    top = pd.read_csv(run / "metrics.csv")
    assert list(top["split"]) == [0, 2, 10]  # natural order, not "10" before "2"
    assert list(top.columns[:10]) == list(R.METRICS_FILE_COLUMNS)
    assert R.RunFolder(run).completed_splits() == ["0", "2", "10"]
    R.RunFolder(run).write_metrics(pd.DataFrame([{"train_set": "a", "test_set": "a", "srcc": 0.99, "krcc": 0, "plcc": 0,
                                        "plcc_logistic": 0, "rmse_logistic": 0, "mapping": "logistic",
                                        "n": 5}]), split=2)  # a re-run split replaces, never duplicates
    assert list(R.RunFolder(run).read_metrics()["srcc"]) == [0.0, 0.99, 1.0]
    assert not list(run.rglob("*.tmp"))


def test_writers_check_columns(tmp_path):
    run = R.RunFolder.create("eval", "bad", tmp_path).path
    with pytest.raises(ValueError, match=r"missing \['pred'\]"):
        R.RunFolder(run).write_predictions(pd.DataFrame({"split": [0], "test_set": ["a"], "image": ["x"], "mos": [1.0]}))
    R.RunFolder(run).write_predictions(pd.DataFrame({"test_set": ["a"], "image": ["x"], "mos": [1.0], "pred": [0.2],
                                           "extra": [1]}), split="0")
    assert list(R.RunFolder(run).read_predictions().columns) == ["split", "test_set", "image", "mos", "pred", "extra"]


def test_summary_describes_run_and_medians(two_runs):
    _, base, _ = two_runs
    text = R.RunFolder(base).write_summary().read_text()
    assert "| head" in text and "hyperiqa" in text and "imagenet" in text
    row = next(line for line in text.splitlines() if line.startswith("| koniq") and "| clive" in line)
    assert "0.720" in row and "0.730" in row  # clive: SRCC median 0.72, PLCC median 0.73
    koniq = next(line for line in text.splitlines() if line.startswith("| koniq       | koniq"))
    assert "0.810" in koniq and "0.810 ± 0.010" in koniq  # median and mean ± sample std


# -- reading runs back ---------------------------------------------------------------------------
def test_list_runs(two_runs):
    root, base, qpt = two_runs
    crashed = R.RunFolder.create("eval", "crashed-early", root).path
    runs = R.list_runs(root)
    assert list(runs.columns) == list(R.LIST_COLUMNS)
    assert list(runs["id"]) == sorted([base.name, qpt.name, crashed.name])  # ids sort by start time
    by_id = runs.set_index("id")
    assert by_id.loc[qpt.name, "median_srcc"] == "koniq 0.850, clive 0.780"
    assert by_id.loc[qpt.name, "weights"] == "qpt" and by_id.loc[qpt.name, "splits"] == 3
    assert by_id.loc[base.name, "test"] == "koniq, clive" and by_id.loc[base.name, "train"] == "koniq"
    assert sorted(runs["status"]) == ["finished", "finished", "incomplete"]
    assert R.list_runs(root / "elsewhere").empty


def test_load_run_by_prefix_fragment_path_and_latest(two_runs):
    root, base, qpt = two_runs
    assert R.load_run(qpt.name, root).path == qpt
    assert R.load_run(qpt.name[:-3], root).path == qpt  # unique prefix
    assert R.load_run("hyperiqa-qpt", root).path == qpt  # unique fragment
    assert R.load_run(str(base)).path == base  # a folder path
    assert R.load_run("latest", root).id == max(base.name, qpt.name)
    with pytest.raises(BiqaError, match="matches 2 runs"):
        R.load_run(base.name[:8], root)
    with pytest.raises(BiqaError, match=r"did you mean: .*hyperiqa-qpt"):
        R.load_run(qpt.name[:-6] + "zz", root)
    with pytest.raises(BiqaError, match="no runs in"):
        R.load_run("x", root / "empty")


def test_compare_runs_medians_and_deltas(two_runs):
    root, base, qpt = two_runs
    table = R.compare_runs([base.name, qpt.name], root)
    assert list(table.columns) == ["train_set", "test_set", "metric", "hyperiqa/imagenet/resnet50", "hyperiqa/qpt/resnet50",
                                   "delta hyperiqa/qpt/resnet50"]
    t = table.set_index(["test_set", "metric"])
    assert t.loc[("koniq", "srcc"), "hyperiqa/imagenet/resnet50"] == pytest.approx(0.81)
    assert t.loc[("koniq", "srcc"), "delta hyperiqa/qpt/resnet50"] == pytest.approx(0.04)
    assert t.loc[("clive", "srcc"), "delta hyperiqa/qpt/resnet50"] == pytest.approx(0.06)
    assert t.loc[("clive", "plcc"), "delta hyperiqa/qpt/resnet50"] == pytest.approx(0.06)
    assert t.loc[("clive", "plcc"), "hyperiqa/qpt/resnet50"] == pytest.approx(0.79)
    reverse = R.compare_runs([qpt.name, base.name], root).set_index(["test_set", "metric"])
    assert reverse.loc[("koniq", "srcc"), "delta hyperiqa/imagenet/resnet50"] == pytest.approx(-0.04)


def test_compare_runs_with_missing_test_set_and_same_labels(tmp_path):
    a = make_run(tmp_path, "linear", "qpt", {"koniq": [0.6, 0.7]})
    b = make_run(tmp_path, "linear", "qpt", {"koniq": [0.5, 0.5], "spaq": [0.8, 0.8]})
    table = R.compare_runs([a, b])
    labels = [c for c in table.columns if c.startswith("linear/qpt")]
    assert len(labels) == 2 and labels[0] != labels[1]  # same head/weights: ids tell them apart
    spaq = table[(table.test_set == "spaq") & (table.metric == "srcc")].iloc[0]
    assert math.isnan(spaq[labels[0]]) and spaq[labels[1]] == pytest.approx(0.8)
    assert math.isnan(spaq[f"delta {labels[1]}"])
    koniq = table[(table.test_set == "koniq") & (table.metric == "srcc")].iloc[0]
    assert koniq[f"delta {labels[1]}"] == pytest.approx(0.5 - 0.65)


def test_paper_table(tmp_path):
    runs = [
        make_run(tmp_path, "hyperiqa", "imagenet", {"koniq": [0.90, 0.91, 0.92], "clive": [0.85, 0.86, 0.84]}),
        make_run(tmp_path, "hyperiqa", "qpt", {"koniq": [0.93, 0.92, 0.94], "clive": [0.89, 0.90, 0.88]}),
        make_run(tmp_path, "linear", "imagenet", {"koniq": [0.70, 0.72, 0.71], "clive": [0.60, 0.60, 0.60]}),
        make_run(tmp_path, "linear", "qpt", {"koniq": [0.80, 0.80, 0.80], "clive": [0.70, 0.75, 0.72]}),
        make_run(tmp_path, "tres", "qpt", {"koniq": [0.90, 0.90, 0.90], "clive": [0.80, 0.80, 0.80]}),
    ]
    df = R.collect_metrics(runs)
    assert {"run", "head", "weights", "backbone"} <= set(df.columns) and len(df) == 30
    table = R.paper_table(df)
    assert table.index.names == ["head", "weights"]  # one backbone: no backbone level
    assert list(table.columns) == [("koniq", "SRCC"), ("koniq", "PLCC"), ("koniq->clive", "SRCC"),
                                   ("koniq->clive", "PLCC")]
    assert table.loc[("hyperiqa", "qpt"), ("koniq", "SRCC")] == pytest.approx(0.93)
    assert table.loc[("linear", "qpt"), ("koniq->clive", "PLCC")] == pytest.approx(0.73)
    two_backbones = pd.concat([df, df.assign(backbone="resnet18", srcc=df["srcc"] - 0.1)])
    assert R.paper_table(two_backbones).index.names == ["head", "backbone", "weights"]
    gain = table.loc[[("hyperiqa", "qpt")]] - table.loc[("hyperiqa", "imagenet")].to_numpy()
    md = R.render(gain, "markdown", signed=True)  # a difference reads with its sign
    assert "+0.020" in md and "| hyperiqa" in md


def test_render_formats_roundtrip(two_runs):
    root, base, qpt = two_runs
    table = R.compare_runs([base, qpt])
    md = R.render(table, "markdown")
    assert md.splitlines()[1].startswith("|--") and "+0.040" in md
    tex = R.render(table, "latex")
    assert tex.startswith("\\begin{tabular}") and "train\\_set" in tex and "+0.040" in tex
    back = pd.read_csv(_io.StringIO(R.render(table, "csv")))
    assert np.allclose(back["delta hyperiqa/qpt/resnet50"], table["delta hyperiqa/qpt/resnet50"])
    paper = R.paper_table(R.collect_metrics([base, qpt]))
    assert "koniq$\\rightarrow$clive SRCC" in R.render(paper, "latex")
    path = R.write_table(paper, root / "tables" / "main.csv")
    assert pd.read_csv(path).columns[:3].tolist() == ["head", "weights", "koniq SRCC"]
    with pytest.raises(BiqaError, match="unknown table format"):
        R.render(table, "html")


# -- plots ---------------------------------------------------------------------------------------
def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_scatter_plot_per_test_set(tmp_path):
    run = make_run(tmp_path, "hyperiqa", "qpt", {"koniq": [0.8, 0.9, 0.85], "clive": [0.7, 0.7, 0.7]},
                   predictions=True)
    preds = R.RunFolder(run).read_predictions()
    written = plots.scatter_plot(preds, run / R.PLOTS_DIR)
    assert set(written) == {"koniq", "clive"}
    for path in written.values():
        w, h = _png_size(path)
        assert w > 300 and h > 300
    _, key = plots._pick_split(preds[preds.test_set == "koniq"], "median")
    per_split = {k: compute_metrics(g["pred"], g["mos"])["srcc"] for k, g in preds[preds.test_set == "koniq"]
                 .groupby("split")}
    assert per_split[key] == sorted(per_split.values())[1]  # the split with the median SRCC
    only = plots.scatter_plot(preds, tmp_path / "one", split=0, prefix="s0")
    assert only["koniq"].name == "s0-koniq.png"
    assert plots.scatter_plot(preds.iloc[0:0], tmp_path / "none") == {}


def test_training_curves(tmp_path):
    history = pd.DataFrame({
        "split": [0] * 5 + [1] * 5,
        "epoch": list(range(5)) * 2,
        "loss": np.r_[np.linspace(1, 0.2, 5), np.linspace(1.1, 0.3, 5)],
        "val_srcc": [np.nan, 0.5, 0.6, 0.7, 0.8] * 2,
    })
    assert _png_size(plots.training_curves(history, tmp_path / "curves.png"))[0] > 600  # two panels
    assert _png_size(plots.training_curves(history[["epoch", "loss"]], tmp_path / "loss.png"))[0] < 700
    assert _png_size(plots.training_curves(pd.DataFrame(), tmp_path / "empty.png"))
    with pytest.raises(ValueError, match="needs a loss"):
        plots.training_curves(pd.DataFrame({"epoch": [1]}), tmp_path / "bad.png")


# -- CLI -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from biqabench.cli import app

    assert [g.name for g in app.registered_groups].count("results") == 1  # attached once, by cli/root.py
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_list_show_compare(cli, two_runs):
    root, base, qpt = two_runs
    out = cli("results", "list", "--root", str(root))
    assert out.exit_code == 0, out.output
    assert base.name in out.output and "koniq 0.850, clive 0.780" in out.output

    out = cli("results", "show", "hyperiqa-qpt", "--root", str(root))
    assert out.exit_code == 0, out.output
    assert qpt.name in out.output and "status: finished" in out.output and "0.850" in out.output

    out = cli("results", "show", qpt.name[:-2], "--root", str(root), "--format", "csv")
    shown = pd.read_csv(_io.StringIO(out.output)).set_index("test_set")
    assert shown.loc["clive", "srcc_median"] == pytest.approx(0.78) and shown.loc["koniq", "splits"] == 3

    out = cli("results", "compare", "imagenet", "qpt", "--root", str(root), "--format", "csv", "--unpaired")
    assert out.exit_code == 0, out.output
    cmp = pd.read_csv(_io.StringIO(out.output)).set_index(["test_set", "metric"])
    assert cmp.loc[("clive", "srcc"), "delta hyperiqa/qpt/resnet50"] == pytest.approx(0.06)

    out = cli("results", "compare", "imagenet", "qpt", "--root", str(root), "--format", "latex", "--unpaired")
    assert out.output.startswith("\\begin{tabular}")

    assert cli("results", "list", "--root", str(root), "--format", "xml").exit_code == 2


def test_cli_unknown_run_is_a_one_line_error(two_runs, capsys):
    from biqabench.cli import main

    root, _, _ = two_runs
    with pytest.raises(SystemExit) as exc:
        main(["results", "show", "no-such-run", "--root", str(root)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run 'no-such-run'") and "did you mean" in err and len(err.splitlines()) == 1
