"""HTML reports (``biqabench report``, and the report.html every finished run and matrix writes).

A tiny eval (3 splits, a cross-dataset set), a tiny matrix (random vs store weights with a
pretraining loss, 2 splits) and a probe are made once per module; the unit tests read their
reports with the standard library's HTML parser, and the ``browser`` tests load them in headless
Chromium (Debian's ``chromium`` through Playwright's Python API): no console error, no request
leaving the file, the numbers in the DOM equal to metrics.csv, every image loaded, a screenshot.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

from conftest import TINY_RECIPE, invoke_cli

from biqabench.results import RunFolder, summarize
from biqabench.evaluation.report_matrix import comparison_report
from biqabench.results.report import REPORT, render, run_report, write_report_quietly
from biqabench.results.report_run import run_context


# -- the runs, made once --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """{eval, matrix, probe}: folders of finished runs (each wrote its report.html)."""
    from biqabench.components.backbones import create_backbone
    from biqabench.components.weights import WeightsStore
    from biqabench.evaluation.benchmark import load_matrix, plan, run_matrix
    from biqabench.evaluation.probe import FeatureCache, run_probe
    from biqabench.evaluation.runner import EvalConfig, evaluate

    base = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIQABENCH_RESULTS", str(base / "results"))
        mp.setenv("BIQABENCH_WEIGHTS", str(base / "weights"))
        cfg = EvalConfig(head="linear", weights="random", backbone="tiny", splits=3, recipe="cpu",
                         test=["demo-a", "demo-b"], recipe_overrides={**TINY_RECIPE, "epochs": 2}, device="cpu",
                         precision="fp32", workers=0)
        run = evaluate(cfg, run_dir=base / "results" / "runs" / "20260101-000000-eval-linear-random-tiny-ab12",
                       progress=False)
        pretrain_dir = base / "pretrain-run"
        pretrain_dir.mkdir()
        (pretrain_dir / "losses.json").write_text(json.dumps({"losses": [1.0 / (1 + i) for i in range(40)]}))
        WeightsStore().save(create_backbone("tiny").state_dict(), producer="qpt", backbone="tiny",
                            extra={"run_dir": str(pretrain_dir)})
        spec = dict(name="tiny-matrix", heads=["linear"], weights=["random", "qpt"], baseline="random",
                    backbone="tiny", train=["demo-a"], test=["demo-a"], splits=2, recipe="cpu",
                    recipe_overrides=TINY_RECIPE, device="cpu", precision="fp32")
        (base / "m.yaml").write_text(json.dumps(spec))
        matrix = load_matrix(base / "m.yaml")
        run_matrix(matrix, progress=False, echo=lambda *_: None)
        matrix_folder = plan(matrix)[0].folder.parent
        probe = run_probe(backbone="tiny", weights="random", train="demo-a", size=32, splits=3, folds=3,
                          device="cpu", progress=False, cache=FeatureCache(base / "feat"))
        study = _tiny_study(base)
    return {"eval": Path(run), "matrix": matrix_folder, "probe": Path(probe), "study": study, "base": base}


def _tiny_study(base: Path) -> Path:
    """qpt and random, two seeds, a snapshot, the probe: results/studies/tiny-study (report.html in it)."""
    from biqabench.evaluation.study import run_study
    from biqabench.evaluation.study_config import load_study
    from conftest import photo_folder

    spec = {"name": "tiny-study", "backbone": "tiny", "photos": str(photo_folder(base / "photos")), "seeds": [0, 1],
            "steps": 4, "snapshots": [2], "pretrainers": {"qpt": {"options": {
                "batch_size": 4, "crop_size": 32, "patch_size": 16, "workers": 0, "queue_size": 16, "embed_dim": 8,
                "negative_degradations": 1}}, "random": {}},
            "baseline": "random", "protocols": {"probe": {"size": 32, "folds": 3}}, "splits": 3, "device": "cpu",
            "precision": "fp32"}
    (base / "study.yaml").write_text(json.dumps(spec))
    return run_study(load_study(base / "study.yaml"), progress=False, echo=lambda *_: None)


class Page(HTMLParser):
    """The parts of a report the tests look at: numbers, links, ids, images and their figures."""

    def __init__(self, text: str):
        super().__init__()
        self.numbers, self.links, self.ids, self.images, self.captions = [], [], set(), [], 0
        self._open: list[dict] = []
        self._figure = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "figure":
            self._figure = {"caption": False}
        if tag == "img":
            self.images.append({**a, "figure": self._figure})
        if tag == "figcaption" and self._figure is not None:
            self._figure["caption"] = True
        if "data-value" in a:
            self._open.append({**a, "tag": tag, "text": ""})

    def handle_data(self, data):
        if self._open:
            self._open[-1]["text"] += data

    def handle_endtag(self, tag):
        if self._open and self._open[-1]["tag"] == tag:
            self.numbers.append(self._open.pop())
        if tag == "figure":
            self._figure = None


def page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def _cells(p: Page, **where) -> list[dict]:
    return [n for n in p.numbers if all(n.get(f"data-{k.replace('_', '-')}") == str(v) for k, v in where.items())]


def _shown(cell: dict, value: float) -> None:
    """The text shown is the value rounded, and data-value is every digit of it."""
    assert float(cell["data-value"]) == pytest.approx(value, rel=1e-12, abs=1e-12)
    decimals = len(cell["text"].split(".")[1]) if "." in cell["text"] else 0
    assert float(cell["text"]) == pytest.approx(value, abs=0.51 * 10 ** -decimals + 1e-12 * abs(value))


def check_run_numbers(p: Page, folder: Path) -> int:
    """Every per-split cell equals metrics.csv, every summary cell equals summarize(metrics.csv)."""
    metrics = pd.read_csv(folder / "metrics.csv", dtype={"split": str})
    checked = 0
    for _, r in metrics.iterrows():
        for m in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse_logistic"):
            (cell,) = _cells(p, split=r["split"], test_set=r["test_set"], metric=m)
            _shown(cell, r[m])
            checked += 1
    for _, r in summarize(metrics).iterrows():
        for m in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse_logistic"):
            for stat in ("median", "ci_low", "ci_high", "mean", "std"):
                cells = _cells(p, train_set=r["train_set"], test_set=r["test_set"], metric=m, stat=stat)
                if math.isnan(r[f"{m}_{stat}"]):  # e.g. the std of one split: shown as "-", no data-value
                    assert cells == []
                    continue
                (cell,) = cells
                _shown(cell, r[f"{m}_{stat}"])
                checked += 1
    return checked


def check_offline_and_linked(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text), "a report must not name any URL"
    p = Page(text)
    for img in p.images:
        assert img["src"].startswith("data:image/svg+xml;base64,") and img.get("alt", "").strip()
        assert img["figure"] is not None and img["figure"]["caption"], "every image sits in a figure with a caption"
        svg = base64.b64decode(img["src"].split(",", 1)[1]).decode()
        assert not re.search(r'href="(?!#|data:)', svg), "an SVG refers to something outside itself"
    for href in p.links:
        if href.startswith("#"):
            assert href[1:] in p.ids, href
        else:
            assert (path.parent / unquote(href)).exists(), href


# -- unit tests ----------------------------------------------------------------------------------
def test_eval_writes_a_report_whose_numbers_are_metrics_csv(made):
    report = made["eval"] / REPORT
    assert report.is_file()
    p = page(report)
    assert check_run_numbers(p, made["eval"]) == 2 * 3 * 5 + 2 * 5 * 5  # 2 test sets x 3 splits, 2 summaries
    assert {"results-table", "split-table", "protocol-card", "protocol-datasets"} <= p.ids
    assert len(p.images) == 3  # a scatter per test set and the training curves
    check_offline_and_linked(report)
    text = report.read_text()
    manifest = json.loads((made["eval"] / "manifest.json").read_text())
    for needle in (manifest["datasets"]["demo-a"]["fingerprint"], manifest["git_commit"], "logistic4",
                   "no content in two parts", "seeds", "2000 resamples",
                   "{outside} of {predictions}".format(**manifest["outside_scale"]["demo-b"])):
        assert needle in text, needle


def test_the_matrix_report_shows_the_paper_table_and_the_paired_gain(made):
    from biqabench.evaluation.compare import paired_gain

    folder = made["matrix"]
    info = json.loads((folder / "matrix.json").read_text())
    assert info["baseline"] == "random" and [j["weights"] for j in info["jobs"]] == ["random", "qpt"]
    p = page(folder / REPORT)
    df = pd.read_csv(folder / "metrics.csv", dtype={"split": str})
    dataset = df["test_set"].where(df["train_set"] == df["test_set"], df["train_set"] + "->" + df["test_set"])
    medians = df.assign(dataset=dataset).groupby(["weights", "dataset"])[["srcc", "plcc"]].median()
    for (weights, ds), r in medians.iterrows():
        for m in ("srcc", "plcc"):
            (cell,) = _cells(p, head="linear", weights=weights, dataset=ds, metric=m, stat="median")
            _shown(cell, r[m])
    gain = paired_gain(df, "random")
    assert len(gain) == 1 and gain["splits up"][0] in {"0/2", "1/2", "2/2"}
    for _, g in gain.iterrows():
        (cell,) = _cells(p, weights="qpt vs random", dataset=g["dataset"], metric="srcc", stat="median_delta")
        _shown(cell, g["median delta SRCC"])
    assert sum(1 for i in p.images if i["alt"].startswith("Paired plot")) == 1
    assert any("pretraining loss" in i["alt"] for i in p.images)
    assert sum(1 for h in p.links if h.endswith("/report.html")) == 2  # each job's own report
    check_offline_and_linked(folder / REPORT)


def check_study_numbers(p: Page, folder: Path) -> int:
    """Every statistic of the study table on the page equals table.csv."""
    table = pd.read_csv(folder / "table.csv")
    checked = 0
    for _, r in table.iterrows():
        for stat in ("median", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high", "p"):
            cells = _cells(p, strategy=r["strategy"], protocol=r["protocol"], test_set=r["test_set"], stat=stat)
            if pd.isna(r[stat]):
                assert all("data-value" not in c for c in cells), (r["strategy"], stat)
                continue
            (cell,) = cells
            assert float(cell["data-value"]) == pytest.approx(r[stat], rel=1e-12, abs=1e-12)
            checked += 1
    return checked


def test_the_study_report_shows_its_table_curves_and_seeds(made):
    folder = made["study"]
    p = page(folder / REPORT)
    assert check_study_numbers(p, folder) == 2 * (3 + 7)  # 2 test sets x (random: 3 stats, qpt: 7)
    assert {"study-table", "cells-table", "protocol-card"} <= p.ids
    alts = [i["alt"] for i in p.images]
    assert sum(a.startswith("SRCC against pretraining step") for a in alts) == 1
    assert sum(a.startswith("Paired plot of median SRCC over splits per seed") for a in alts) == 2  # per test set
    assert any("pretraining loss" in a for a in alts)
    assert sum(1 for h in p.links if h.endswith("/report.html")) == 2 * (2 + 1)  # every probe cell's own report
    check_offline_and_linked(folder / REPORT)
    text = (folder / REPORT).read_text()
    assert "the seed is the replicate" in text and "negative_degradations" in text


def test_a_probe_report_has_no_training_section_but_its_alphas(made):
    report = made["probe"] / REPORT
    p = page(report)
    check_run_numbers(p, made["probe"])
    alphas = pd.read_csv(made["probe"] / "metrics.csv")["alpha"]
    assert len(_cells(p, metric="alpha")) == len(alphas)
    text = report.read_text()
    assert "Nothing was trained in this run" in text and "ridge on frozen backbone features" in text
    check_offline_and_linked(report)


def test_report_elsewhere_links_back_into_the_folder(made, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.html"
    code, stdout, _ = invoke_cli(capsys, "report", made["eval"], "-o", out)
    assert code == 0 and stdout.strip() == str(out)
    check_offline_and_linked(out)
    assert any(h.endswith("metrics.csv") for h in page(out).links)
    code, stdout, _ = invoke_cli(capsys, "report", made["matrix"], "-o", tmp_path / "m.html")
    assert code == 0 and "paper-table" in page(tmp_path / "m.html").ids


def test_a_comparison_report_pairs_runs_on_the_same_splits(made, tmp_path, capsys):
    jobs = sorted(p for p in made["matrix"].iterdir() if p.is_dir())
    out = comparison_report([j for j in jobs if "random" in j.name] + [j for j in jobs if "qpt" in j.name],
                            tmp_path / "c.html")
    p = page(out)
    assert {"gain-table", "paper-table"} <= p.ids and len(_cells(p, stat="median_delta")) == 2  # SRCC, PLCC
    code, _, line = invoke_cli(capsys, "report", made["eval"], jobs[0], "-o", tmp_path / "x.html")
    assert code != 0 and "cannot pair" in line  # 3 splits vs 2: not the same splits
    code, _, line = invoke_cli(capsys, "report", made["eval"], jobs[0])
    assert code != 0 and "-o" in line


def test_text_from_the_run_is_escaped(made, tmp_path):
    shutil.copytree(made["eval"], tmp_path / "run")
    RunFolder(tmp_path / "run").write_manifest(error="<script>alert(1)</script> & more")
    text = run_report(tmp_path / "run").read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text


def test_a_run_without_metrics_still_gets_a_report(tmp_path):
    folder = RunFolder.create("eval", "nothing-yet", tmp_path)
    text = run_report(folder.path).read_text()
    assert "No finished splits yet" in text and "incomplete" in text


def test_a_report_that_fails_to_render_never_costs_the_run(tmp_path, monkeypatch, caplog):
    import biqabench.results.report as report
    from biqabench.evaluation.runner import EvalConfig, evaluate

    monkeypatch.setattr(report, "render", lambda context: 1 / 0)
    cfg = EvalConfig(head="linear", weights="random", backbone="tiny", splits=1, recipe="cpu",
                     recipe_overrides=TINY_RECIPE, device="cpu", precision="fp32", workers=0)
    with caplog.at_level(logging.WARNING):
        run = evaluate(cfg, run_dir=tmp_path / "run", progress=False)
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
    assert not (run / REPORT).exists() and "could not write the HTML report" in caplog.text
    assert write_report_quietly(report.run_report, run) is None


def test_context_and_render_without_files(made, tmp_path):
    """The context is plain data (what a template or a test reads); render needs nothing else."""
    from biqabench.results import load_run

    context = run_context(load_run(made["eval"]), made["eval"])
    assert context["run"]["splits"] == 3 and [g["test_set"] for g in context["results"]] == ["demo-a", "demo-b"]
    assert {r["label"] for s in context["card"]["sections"] for r in s["rows"]} >= {
        "weights", "seeds", "test share", "validation share", "content-aware", "PLCC fitting", "input sizes",
        "versions", "machine", "device", "precision", "wall time", "model selection", "recipe"}
    html = render({**context, "scatter": [], "training": None})
    assert "<img" not in html and "Predictions against MOS" not in html and "results-table" in html


# -- in a real browser ---------------------------------------------------------------------------
def _browser():
    """(playwright context manager, chromium executable), or skip saying what is missing."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the browser checks need it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]'); the browser checks need it")
    return sync_playwright, exe


def _load(browser, path: Path, width: int = 1200):
    """Open ``path``: (page, console errors, URLs requested other than the file itself and data:)."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors, outside = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
    page.route("**/*", lambda route: (route.continue_() if route.request.url.startswith(("file:", "data:"))
                                      else (outside.append(route.request.url), route.abort())))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, errors, outside


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("BIQABENCH_SCREENSHOT_DIR"):
        target = Path(os.environ["BIQABENCH_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / shot.name)
    return shot


def _dom_numbers(page) -> Page:
    """The numbers as the browser parsed them (data-value and the text shown), into a Page."""
    cells = page.eval_on_selector_all("[data-value]", "els => els.map(e => Object.assign({text: e.textContent}, "
                                      "Object.fromEntries(Array.from(e.attributes).map(a => [a.name, a.value]))))")
    p = Page("")
    p.numbers = cells
    return p


@pytest.mark.browser
@pytest.mark.parametrize("which", ["eval", "matrix", "probe", "study"])
def test_reports_in_headless_chromium(made, which, tmp_path):
    sync_playwright, exe = _browser()
    path = made[which] / REPORT
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            page, errors, outside = _load(browser, path)
            assert errors == [] and outside == []
            sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, "
                                              "e.getBoundingClientRect().width, e.alt])")
            assert sizes and all(done and natural > 0 and shown > 0 and alt for done, natural, shown, alt in sizes)
            dom = _dom_numbers(page)
            if which == "study":
                assert check_study_numbers(dom, made["study"]) > 0
            elif which == "matrix":
                df = pd.read_csv(made["matrix"] / "metrics.csv")
                for (weights, test), g in df[df.train_set == df.test_set].groupby(["weights", "test_set"]):
                    (cell,) = _cells(dom, weights=weights, dataset=test, metric="srcc", stat="median")
                    _shown(cell, g["srcc"].median())
            else:
                assert check_run_numbers(dom, made[which]) > 0
            shot = _screenshot(page, tmp_path, f"report-{which}")
            assert shot.stat().st_size > 10_000
            phone, errors, _ = _load(browser, path, width=390)  # a phone: the page itself never scrolls sideways
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390 and errors == []
            if which in ("eval", "probe"):
                phone.emulate_media(media="print")  # folded per-split table is printed
                assert phone.is_visible("#split-table")
        finally:
            browser.close()


def test_make_demo_ends_by_printing_the_path_of_its_comparison_report(made, tmp_path, capsys):
    """``make demo`` ends with ``biqabench report BNSTATS_RUN RANDOM_RUN QPT_RUN -o ...``: its last line is the path."""
    from conftest import REPO

    demo = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert demo.rstrip().splitlines()[-1].strip().startswith("$(VENV)/bin/biqabench report ")
    jobs = {j.name.split("__")[1]: j for j in made["matrix"].iterdir() if j.is_dir()}
    out = tmp_path / "results" / "reports" / "linear-tiny-random-vs-qpt.html"
    code, stdout, _ = invoke_cli(capsys, "report", jobs["random"], jobs["qpt"], "-o", out)
    assert code == 0 and stdout.strip().splitlines()[-1] == str(out)
    assert "gain-table" in page(out).ids
    check_offline_and_linked(out)


def test_a_zero_shot_test_run_writes_its_report(tiny_model_run, tmp_path):
    from biqabench.evaluation.zeroshot import test_model

    run = test_model(tiny_model_run, "demo-b", device="cpu", precision="fp32", run_dir=tmp_path / "test-run",
                     progress=False)
    p = page(run / REPORT)
    check_run_numbers(p, run)
    (name,) = [n["data-test-set"] for n in _cells(p, metric="srcc", stat="median")]
    assert name == "demo-b" and len(p.images) == 1  # one scatter; nothing trained
    assert "a trained model scored as it is" in (run / REPORT).read_text()
    check_offline_and_linked(run / REPORT)
