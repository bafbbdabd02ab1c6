"""The embedded demo sets build offline (the network guard of conftest is active) and are well formed."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from biqabench.data import content_overlap, load_dataset, make_splits
from biqabench.data import embedded
from biqabench_plugins.datasets import demo


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache root, as on a clean install."""
    monkeypatch.setenv("BIQABENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_pristine_dir_is_a_folder_of_pngs(fresh_cache):
    folder = embedded.pristine_dir()
    assert folder.is_relative_to(fresh_cache)
    files = sorted(folder.glob("*.png"))
    assert [f.stem for f in files] == sorted(embedded.PRETRAIN_PHOTOS)
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
    assert len(table) == 10 * (1 + 4 * 4)
    assert table.scale == (0.0, 100.0) and table.higher_better
    assert table.mos.min() >= 0 and table.mos.max() == 100.0
    assert len(set(table.content)) == 10
    with Image.open(table.paths[0]) as im:
        assert im.size == (demo.SIZE, demo.SIZE)
    assert table.options["embedded_version"] == embedded.VERSION


def _rows(name):
    table = load_dataset(name)
    return list(csv.DictReader(open(table.paths[0].parents[1] / "labels.csv", encoding="utf-8")))


def test_pseudo_mos_is_one_number_per_level_on_every_content():
    """Comparable across contents (and across the two sets): a level means one quality."""
    by_level = defaultdict(set)
    for name in ("demo-a", "demo-b"):
        for r in _rows(name):
            by_level[(r["distortion"], int(r["level"]))].add(float(r["mos"]))
    assert all(len(v) == 1 for v in by_level.values()), {k: v for k, v in by_level.items() if len(v) > 1}
    assert by_level[("pristine", 0)] == {100.0}
    mos = {k: v.pop() for k, v in by_level.items()}
    for kind, levels in demo.DISTORTIONS.items():
        curve = [mos[(kind, lv)] for lv in range(1, len(levels) + 1)]
        assert 100.0 > curve[0] and all(a > b for a, b in zip(curve, curve[1:])), (kind, curve)
    assert np.std(list(mos.values())) > 10  # a usable spread of labels


def test_pseudo_mos_comes_from_ssim_on_the_calibration_contents():
    table = demo.pseudo_mos_table()
    photo = embedded.load_photo(demo.CALIBRATION[0][0])
    ref = photo.crop((0, 0, demo.SIZE, demo.SIZE))
    mild = demo.ssim(ref, demo.distort(ref, "blur", demo.DISTORTIONS["blur"][0], np.random.default_rng(0)))
    strong = demo.ssim(ref, demo.distort(ref, "blur", demo.DISTORTIONS["blur"][-1], np.random.default_rng(0)))
    assert mild > strong  # SSIM itself falls with the level on one content
    assert 0 < table[("blur", 4)] < table[("blur", 1)] < 100


def test_pretraining_demo_a_and_demo_b_use_disjoint_photos():
    a, b = load_dataset("demo-a"), load_dataset("demo-b")
    photos_a = {p for p, _, _ in demo.CONTENTS["demo-a"]}
    photos_b = {p for p, _, _ in demo.CONTENTS["demo-b"]}
    pretrain = set(embedded.PRETRAIN_PHOTOS)
    assert not photos_a & photos_b and not pretrain & (photos_a | photos_b)
    assert {p for p, _, _ in demo.CALIBRATION} <= pretrain  # labels never depend on a labelled image
    assert not set(a.content) & set(b.content)
    assert {f.stem for f in embedded.pristine_dir().glob("*.png")} == pretrain


def test_demo_splits_are_content_aware():
    table = load_dataset("demo-a")
    for split in make_splits(table, n=3):
        assert not content_overlap(table, split)
        assert len(split.test) == 2 * 17
