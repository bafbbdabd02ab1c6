"""The embedded demo sets build offline (the network guard of conftest is active) and are well formed."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from biqabench.data import content_overlap, load_dataset, make_splits
from biqabench.data import embedded


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache root, as on a clean install."""
    monkeypatch.setenv("BIQABENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_pristine_dir_is_a_folder_of_pngs(fresh_cache):
    folder = embedded.pristine_dir()
    assert folder.is_relative_to(fresh_cache)
    files = sorted(folder.glob("*.png"))
    assert len(files) == len(embedded.PHOTOS)
    with Image.open(files[0]) as im:
        assert im.mode == "RGB" and min(im.size) >= 256
    assert embedded.pristine_dir() == folder  # built once


def test_demo_set_builds_from_a_clean_cache(tmp_path, monkeypatch):
    shared = load_dataset("demo-a")  # the tests' shared cache (built once, then reused)
    fresh = tmp_path / "cache"
    monkeypatch.setenv("BIQABENCH_CACHE", str(fresh))  # as on a clean install
    table = load_dataset("demo-a")
    assert (fresh / "embedded" / embedded.VERSION / "demo-a" / "labels.csv").is_file()
    assert table.fingerprint() == shared.fingerprint()  # deterministic build
    assert len(table) == 10 * (1 + 4 * 3)
    assert table.scale == (0.0, 100.0) and table.higher_better
    assert table.mos.min() >= 0 and table.mos.max() == 100.0
    assert len(set(table.content)) == 10
    with Image.open(table.paths[0]) as im:
        assert im.size == (embedded.SIZE, embedded.SIZE)
    assert table.options["embedded_version"] == embedded.VERSION


def test_pseudo_mos_falls_with_distortion_level():
    table = load_dataset("demo-b")
    rows = list(csv.DictReader(open(table.paths[0].parents[1] / "labels.csv", encoding="utf-8")))
    by_level = defaultdict(list)
    for r in rows:
        by_level[(r["distortion"], int(r["level"]))].append(float(r["mos"]))
    for kind in embedded.DISTORTIONS:
        means = [np.mean(by_level[(kind, lv)]) for lv in (1, 2, 3)]
        assert means[0] > means[1] > means[2], (kind, means)
    assert np.std(table.mos) > 10  # a usable spread of labels


def test_the_two_sets_share_no_content():
    a, b = load_dataset("demo-a"), load_dataset("demo-b")
    photos_a = {p for p, _, _ in embedded.CONTENTS["demo-a"]}
    photos_b = {p for p, _, _ in embedded.CONTENTS["demo-b"]}
    assert not photos_a & photos_b
    assert not set(a.content) & set(b.content)


def test_demo_splits_are_content_aware():
    table = load_dataset("demo-a")
    for split in make_splits(table, n=3):
        assert not content_overlap(table, split)
        assert len(split.test) == 2 * 13
