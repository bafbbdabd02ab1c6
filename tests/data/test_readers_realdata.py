"""Readers against the real files in ../shared/data (skipped where that folder is absent)."""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from biqabench.data import load_dataset, make_splits, read_raw
from biqabench.data.readers.tables import pyiqa_name

pytestmark = pytest.mark.realdata


def test_clive_dev_loads_581_images_that_all_decode(shared_data):
    table = load_dataset("clive", shared_data / "clive-dev", check="decode")
    assert len(table) == 581
    assert not any(n.lower().startswith("t") and n.lower().endswith(".bmp") for n in table.names)
    assert 0.0 <= table.mos.min() and table.mos.max() <= 100.0
    assert table.scale == (0.0, 100.0) and table.higher_better
    split = make_splits(table, n=1, seed=0)[0]
    assert split.sizes() == {"train": 465, "val": 0, "test": 116}


def _csv_rows(path) -> int:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return sum(1 for row in csv.reader(f) if any(c.strip() for c in row)) - 1


def test_koniq_official_csv_with_stand_in_images(shared_data, tmp_path):
    src = shared_data / "metadata" / "koniq10k_distributions_sets.csv"
    shutil.copy(src, tmp_path / src.name)
    (tmp_path / "1024x768").mkdir()
    table = load_dataset("koniq10k", tmp_path, check="none")  # the label file alone
    assert len(table) == 10_073 and table.options["images"] == "1024x768"
    split = make_splits(table, official=True)[0]
    assert split.sizes() == {"train": 7058, "val": 1000, "test": 2015}
    assert 0.0 <= table.mos.min() and table.mos.max() <= 100.0
    # stand-in 8x8 JPEGs under every 40th official name: those rows validate, the rest are missing
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(buf, format="JPEG")
    present = set(table.names[::40])
    for n in present:
        (tmp_path / "1024x768" / n).write_bytes(buf.getvalue())
    checked = load_dataset("koniq10k", tmp_path, skip_bad=True)
    assert set(checked.names) == present
    assert checked.options["skipped_bad"] == 10_073 - len(present)


def test_every_pyiqa_meta_info_csv_parses(shared_data, tmp_path):
    metas = sorted((shared_data / "metadata" / "pyiqa_meta_info").glob("meta_info_*.csv"))
    assert len(metas) >= 8
    for meta in metas:
        table = read_raw("pyiqa", tmp_path, meta=str(meta))
        rows = _csv_rows(meta)
        dropped = 7 if pyiqa_name(meta) == "livechallenge" else 0
        assert len(table) == rows - dropped, meta.name
        assert not [i for i in table.issues if i.kind in ("mos", "path")], meta.name
        assert np.isfinite(table.mos).all()
        if "dist_name" in open(meta, encoding="utf-8").readline():
            assert table.content is not None and len(set(table.content)) < len(table)
    konIQ = read_raw("pyiqa", tmp_path, meta=str(shared_data / "metadata/pyiqa_meta_info/meta_info_KonIQ10kDataset.csv"))
    assert make_splits(konIQ, official=True)[0].sizes() == {"train": 7058, "val": 1000, "test": 2015}


def test_pyiqa_live_challenge_meta_against_clive_images(shared_data):
    meta = shared_data / "metadata" / "pyiqa_meta_info" / "meta_info_LIVEChallengeDataset.csv"
    table = load_dataset("pyiqa", shared_data / "clive-dev" / "Images", meta=str(meta), skip_bad=True)
    assert len(table) == 581  # the images this partial copy holds
    clive = load_dataset("clive", shared_data / "clive-dev")
    mos = dict(zip(clive.names, clive.mos))
    np.testing.assert_allclose([mos[n] for n in table.names], table.mos)


def test_csiq_hyperiqa_label_file(shared_data, tmp_path):
    shutil.copy(shared_data / "metadata" / "csiq_label_hyperiqa.txt", tmp_path / "csiq_label_hyperiqa.txt")
    table = read_raw("csiq", tmp_path)
    assert len(table) == 866 and len(set(table.content)) == 30
    assert not table.issues and not table.higher_better
    assert 0.0 <= table.mos.min() and table.mos.max() <= 1.0
