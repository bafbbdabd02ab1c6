"""Probe runs write eval's split files, honour --splits-from and --official-split, and pair in
``results compare`` with other probes and with eval runs."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
import torch

from biqabench.evaluation.compare import compare_paired
from biqabench.data.splitfiles import read_split_table, run_split_files, split_file
from biqabench.base.errors import BiqaError
from biqabench.evaluation.probe import FeatureCache, run_probe
from biqabench.evaluation.runner import EvalConfig, evaluate
from conftest import forwarded_options
from test_probe import _probe_kwargs, make_set

TINY = dict(patch_size=32, train_patches=2, test_patches=2, batch_size=32, epochs=1, lr=1e-3, lr_step=0)


@pytest.fixture(scope="module")
def gen_root(tmp_path_factory):
    return make_set(tmp_path_factory.mktemp("gen") / "set")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return FeatureCache(tmp_path_factory.mktemp("feat"))


def _probe(root, run_dir, cache, **more):
    return run_probe(progress=False, cache=cache, run_dir=run_dir, **_probe_kwargs(root, **more))


def _eval(root, run_dir, **more):
    cfg = EvalConfig(head="linear", weights="random", backbone="tiny", train="csv", test=[], data_root=str(root),
                     dataset_options={"csv": {"scale": "0,100"}}, splits=3, test_frac=0.25, recipe="cpu",
                     recipe_overrides=TINY, device="cpu", precision="fp32", workers=0, save_model=False, **more)
    return evaluate(cfg, run_dir=run_dir, progress=False)


def _manifest(run) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _same_files(a, b) -> None:
    files_a, files_b = run_split_files(a), run_split_files(b)
    assert len(files_a) == len(files_b) > 0
    for fa, fb in zip(files_a, files_b):
        assert fa.read_bytes() == fb.read_bytes()


@pytest.fixture(scope="module")
def probe_run(gen_root, cache, tmp_path_factory):
    return _probe(gen_root, tmp_path_factory.mktemp("runs") / "probe", cache)


def test_probe_writes_the_split_files_eval_writes_and_pairs_with_eval(gen_root, cache, probe_run, tmp_path):
    ev = _eval(gen_root, tmp_path / "eval")
    _same_files(probe_run, ev)  # same seed, dataset and fractions: byte-identical files
    parts = read_split_table(split_file(probe_run, 0))
    assert set(parts.values()) == {"train", "val", "test"} and len(parts) == 24
    pm, em = _manifest(probe_run), _manifest(ev)
    assert pm["seeds"] == em["seeds"] == [0, 1, 2]
    assert [r["sha256"] for r in pm["split_files"]] == [r["sha256"] for r in em["split_files"]]
    assert pm["splits_from"] == "seeds 0..2" and pm["val_frac"] == em["val_frac"]
    # the probe's test rows are the split file's test part
    preds = pd.read_csv(probe_run / "predictions.csv")
    tested = set(preds[(preds.split == 0) & (preds.test_set == "csv")].image)
    assert tested == {img for img, part in parts.items() if part == "test"}
    summary, _ = compare_paired([ev, probe_run])
    row = summary[summary.metric == "srcc"].iloc[0]
    assert row["splits"] == 3 and "ridge/random/tiny" in summary.columns


def test_splits_from_reuses_a_probe_or_an_eval_run_exactly(gen_root, cache, probe_run, tmp_path):
    own = _probe(gen_root, tmp_path / "b", cache, seed=7, splits=5)  # its own seeds: other splits
    assert split_file(own, 0).read_bytes() != split_file(probe_run, 0).read_bytes()
    other = _probe(gen_root, tmp_path / "b2", cache, seed=7, splits=5, splits_from=str(probe_run))
    _same_files(probe_run, other)
    m = _manifest(other)
    assert m["splits_from"] == probe_run.name and m["seeds"] == [0, 1, 2] and m["splits"] == 3
    ev = _eval(gen_root, tmp_path / "eval", seed=4, splits_from=str(other))  # eval reads a probe's files
    _same_files(probe_run, ev)
    again = evaluate(protocol="linear-probe", head="linear", progress=False, splits_from=str(ev),
                     run_dir=tmp_path / "lp", **{k: v for k, v in _probe_kwargs(gen_root, seed=9).items()
                                                 if k not in ("size", "folds")})
    _same_files(probe_run, again)  # eval --protocol linear-probe honours --splits-from too
    assert _manifest(again)["kind"] == "probe"


def test_splits_from_a_run_on_other_images_is_one_line(cache, probe_run, tmp_path):
    fewer = make_set(tmp_path / "fewer", n=21)  # the last content (c7) is gone
    with pytest.raises(BiqaError) as err:
        _probe(fewer, tmp_path / "c", cache, splits_from=str(probe_run))
    text = str(err.value)
    assert "\n" not in text and probe_run.name in text and "not in dataset 'csv'" in text and "c7_b" in text


def test_official_split_is_the_datasets_own(cache, tmp_path):
    root = make_set(tmp_path / "off")
    rows = list(csv.reader(open(root / "labels.csv")))
    part = {"c6": "val", "c7": "test"}
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*rows[0], "split"])
        w.writerows([*r, part.get(r[2], "train")] for r in rows[1:])
    run = _probe(root, tmp_path / "p", cache, official_split=True)
    files = run_split_files(run)
    assert len(files) == 1 and _manifest(run)["splits_from"] == "official"
    parts = read_split_table(files[0])
    assert {n for n, p in parts.items() if p == "test"} == {f"images/c7_b{i}.png" for i in range(3)}
    assert {n for n, p in parts.items() if p == "val"} == {f"images/c6_b{i}.png" for i in range(3)}


def test_results_compare_pairs_two_probes_of_other_weights(gen_root, cache, probe_run, tmp_path):
    from typer.testing import CliRunner

    from biqabench.components.backbones import create_backbone
    from biqabench.cli import app

    torch.manual_seed(123)
    weights = tmp_path / "other.pt"
    torch.save(create_backbone("tiny", weights="random").state_dict(), weights)
    other = _probe(gen_root, tmp_path / "w", cache, weights=str(weights), splits_from=str(probe_run))
    assert _manifest(other)["backbone_state_sha256"] != _manifest(probe_run)["backbone_state_sha256"]
    summary, per_split = compare_paired([probe_run, other])
    srcc = summary[summary.metric == "srcc"].iloc[0]
    assert {"ridge/random/tiny", "ridge/other/tiny", "Wilcoxon p", "95% CI"} <= set(summary.columns)
    a = pd.read_csv(probe_run / "metrics.csv").query("test_set == 'csv'").srcc
    b = pd.read_csv(other / "metrics.csv").query("test_set == 'csv'").srcc
    delta = float(pd.Series(b.to_numpy() - a.to_numpy()).median())
    assert srcc["splits"] == 3 and srcc["delta (median)"] == pytest.approx(delta)
    assert {"seed 0", "seed 1", "seed 2"} <= set(per_split.columns)
    out = CliRunner().invoke(app, ["results", "compare", str(probe_run), str(other)])
    assert out.exit_code == 0, out.output
    assert "Wilcoxon p" in out.output and "ridge/other/tiny" in out.output


def test_probe_cli_passes_splits_from_and_official_split(monkeypatch):
    import biqabench.evaluation.probe as probe_mod

    seen = forwarded_options(monkeypatch, probe_mod, "run_probe", ["probe", "--official-split", "--splits-from", "abc"])
    assert seen["official_split"] is True and seen["splits_from"] == "abc"
