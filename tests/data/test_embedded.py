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
    assert len(table) == len(demo.CONTENTS["demo-a"]) * (1 + 4 * 4)
    assert table.scale == (0.0, 100.0) and table.higher_better
    assert table.mos.min() >= 0 and table.mos.max() == 100.0
    assert sorted(set(table.content)) == sorted(demo.SET_PHOTOS["demo-a"])  # a content is a photo
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
    ref = demo._crop(photo, *demo.CALIBRATION[0][1:])
    mild = demo.ssim(ref, demo.distort(ref, "blur", demo.DISTORTIONS["blur"][0], np.random.default_rng(0)))
    strong = demo.ssim(ref, demo.distort(ref, "blur", demo.DISTORTIONS["blur"][-1], np.random.default_rng(0)))
    assert mild > strong  # SSIM itself falls with the level on one content
    assert 0 < table[("blur", 4)] < table[("blur", 1)] < 100


def test_pretraining_demo_a_and_demo_b_use_disjoint_photos():
    a, b = load_dataset("demo-a"), load_dataset("demo-b")
    photos_a = {p for p, _, _ in demo.CONTENTS["demo-a"]}
    photos_b = {p for p, _, _ in demo.CONTENTS["demo-b"]}
    assert photos_a == set(demo.SET_PHOTOS["demo-a"]) and photos_b == set(demo.SET_PHOTOS["demo-b"])
    pretrain = set(embedded.PRETRAIN_PHOTOS)
    assert not photos_a & photos_b and not pretrain & (photos_a | photos_b)
    assert {p for p, _, _ in demo.CALIBRATION} <= pretrain  # labels never depend on a labelled image
    assert not set(a.content) & set(b.content)
    assert {f.stem for f in embedded.pristine_dir().glob("*.png")} == pretrain


def test_demo_splits_are_content_aware():
    """Crops of one photo may overlap a little, so a split keeps a whole photo on one side."""
    table = load_dataset("demo-a")
    per_photo = {p: sum(1 for q, _, _ in demo.CONTENTS["demo-a"] if q == p) * 17 for p in demo.SET_PHOTOS["demo-a"]}
    for split in make_splits(table, n=3):
        assert not content_overlap(table, split)
        tested = set(table.content[split.test])
        assert len(tested) == 1 and len(split.test) == per_photo[tested.pop()]


def test_every_content_is_one_on_which_the_levels_mean_their_labels():
    """The rule behind CONTENTS: each crop is within FAITHFUL_WITHIN, and crops of a photo overlap
    by at most MAX_OVERLAP of their area."""
    for name, windows in demo.CONTENTS.items():
        photos = {p: embedded.load_photo(p) for p in demo.SET_PHOTOS[name]}
        for photo, left, top in windows:
            assert demo.faithfulness(demo._crop(photos[photo], left, top)) <= demo.FAITHFUL_WITHIN, (photo, left, top)
        for i, (p1, l1, t1) in enumerate(windows):
            for p2, l2, t2 in windows[i + 1:]:
                if p1 == p2:
                    shared = max(0, demo.SIZE - abs(l1 - l2)) * max(0, demo.SIZE - abs(t1 - t2))
                    assert shared <= demo.MAX_OVERLAP * demo.SIZE ** 2


def test_contents_that_hide_a_distortion_are_not_faithful():
    """Why the pretraining photos include the moon, a sky and grass: graded blur leaves a flat crop
    nearly untouched and grass masks noise, so their labels would not mean what they say."""
    assert demo.faithfulness(demo._crop(embedded.load_photo("moon"), 64, 64)) > 2 * demo.FAITHFUL_WITHIN
    assert demo.faithfulness(demo._crop(embedded.load_photo("rocket"), 64, 0)) > 2 * demo.FAITHFUL_WITHIN
    assert demo.faithfulness(demo._crop(embedded.load_photo("grass"), 64, 64)) > demo.FAITHFUL_WITHIN


@pytest.mark.slow
def test_the_selection_rule_still_picks_the_listed_contents():
    for name, photos in demo.SET_PHOTOS.items():
        assert [w for p in photos for w in demo.select_contents(p)] == demo.CONTENTS[name]
