"""Splits: deterministic everywhere, content-aware for synthetic sets, official when asked, saveable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from biqabench.data import IQATable, content_overlap, load_split, make_splits, save_split
from biqabench.base.errors import BiqaError
from split_tables import authentic_table, synthetic_table


def authentic(n=50) -> IQATable:
    return authentic_table(n)


def synthetic(refs=10, per_ref=6) -> IQATable:
    return synthetic_table(refs, per_ref)


def as_names(table, split):
    return {p: [table.names[i] for i in split.part(p)] for p in ("train", "val", "test")}


def test_same_seed_same_split_and_parts_cover_the_table():
    table = authentic()
    a, b = make_splits(table, n=1, seed=4)[0], make_splits(table, n=1, seed=4)[0]
    assert as_names(table, a) == as_names(table, b)
    assert a.sizes() == {"train": 40, "val": 0, "test": 10}
    allidx = np.concatenate([a.train, a.val, a.test])
    assert sorted(allidx.tolist()) == list(range(len(table)))


def test_n_splits_use_consecutive_seeds_and_differ():
    table = authentic()
    splits = make_splits(table, n=3, seed=10)
    assert [s.seed for s in splits] == [10, 11, 12]
    assert as_names(table, splits[1]) == as_names(table, make_splits(table, n=1, seed=11)[0])
    assert len({tuple(s.test.tolist()) for s in splits}) == 3


def test_split_does_not_depend_on_row_order():
    table = authentic()
    perm = np.random.default_rng(0).permutation(len(table))
    shuffled = table.subset(perm)
    a = as_names(table, make_splits(table, n=1, seed=2)[0])
    b = as_names(shuffled, make_splits(shuffled, n=1, seed=2)[0])
    assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}


def test_split_is_identical_in_another_process_with_another_hash_seed():
    table = authentic()
    here = make_splits(table, n=1, seed=7)[0].test.tolist()
    code = ("import numpy as np; from pathlib import Path; from biqabench.data import IQATable, make_splits;"
            "names=[f'img{i:03d}.jpg' for i in range(50)];"
            "t=IQATable('auth', None, [Path('/x')/n for n in names], names, np.linspace(0,100,50), (0,100));"
            "print(make_splits(t, n=1, seed=7)[0].test.tolist())")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(here)


def test_synthetic_sets_split_by_content():
    table = synthetic()
    for split in make_splits(table, n=5, seed=0, val_frac=0.1):
        assert not content_overlap(table, split)
        train = set(table.content[split.train])
        test = set(table.content[split.test])
        val = set(table.content[split.val])
        assert len(test) == 2 and len(val) == 1 and not (train & test) and not (train & val) and not (val & test)
        assert len(split.test) == 12  # all 6 versions of each test content


def test_validation_share():
    split = make_splits(authentic(100), n=1, test_frac=0.2, val_frac=0.1)[0]
    assert split.sizes() == {"train": 72, "val": 8, "test": 20}  # val: 10% of the 80% training part


def test_bad_fractions():
    with pytest.raises(BiqaError, match="0 <= test_frac < 1"):
        make_splits(authentic(), test_frac=1.0, val_frac=0.1)
    with pytest.raises(BiqaError, match="share of the training part"):
        make_splits(authentic(), test_frac=0.2, val_frac=1.0)


def test_official_split_is_respected():
    table = authentic(6)
    table.official_split = np.array(["train", "test", "train", "val", "train", "test"], dtype=object)
    (split,) = make_splits(table, n=10, official=True)
    assert split.train.tolist() == [0, 2, 4] and split.val.tolist() == [3] and split.test.tolist() == [1, 5]


def test_official_split_missing():
    with pytest.raises(BiqaError, match="has no official split"):
        make_splits(authentic(), official=True)


def test_official_split_without_val_gets_one_carved_from_train():
    table = authentic(20)
    table.official_split = np.array(["train"] * 15 + ["test"] * 5, dtype=object)
    (split,) = make_splits(table, official=True, val_frac=0.2)
    assert split.test.tolist() == list(range(15, 20))
    assert len(split.val) == 3 and set(split.val) <= set(range(15))


def test_save_and_load_roundtrip(tmp_path):
    table = synthetic()
    split = make_splits(table, n=1, seed=3, val_frac=0.1)[0]
    path = save_split(split, table, tmp_path / "split.json")
    doc = json.loads(path.read_text())
    assert doc["dataset"] == "syn" and doc["fingerprint"] == table.fingerprint()
    assert doc["test"] == [table.names[i] for i in split.test]
    back = load_split(path, table)
    for part in ("train", "val", "test"):
        assert back.part(part).tolist() == split.part(part).tolist()
    assert back.seed == 3
    # names, not row numbers: the file still applies after the table is reordered
    rev = table.subset(np.arange(len(table))[::-1])
    again = load_split(path, rev)
    assert sorted(rev.names[i] for i in again.test) == sorted(doc["test"])


def test_load_split_with_unknown_names(tmp_path):
    table = authentic()
    (tmp_path / "s.json").write_text(json.dumps({"train": ["img000.jpg", "nope.jpg", "gone.jpg"], "test": []}))
    with pytest.raises(BiqaError, match="2 image name\\(s\\) are not in dataset 'auth' \\(first: nope.jpg, gone.jpg\\)"):
        load_split(tmp_path / "s.json", table)


def test_load_split_with_overlap(tmp_path):
    table = authentic()
    (tmp_path / "s.json").write_text(json.dumps({"train": ["img000.jpg"], "test": ["img000.jpg"]}))
    with pytest.raises(BiqaError, match="appear in two parts"):
        load_split(tmp_path / "s.json", table)
