"""The IQATable protocol: native and normalised scores, fingerprints, subsets, registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biqabench.data import DatasetSpec, IQATable, build_table, get_spec
from biqabench.base.errors import BiqaError


def table(mos, scale=(0, 100), higher_better=True, **kw) -> IQATable:
    names = [f"{i}.png" for i in range(len(mos))]
    return IQATable("t", None, [Path("/d") / n for n in names], names, np.asarray(mos, float), scale,
                    higher_better, **kw)


def test_mos_norm_and_back():
    t = table([0.0, 25.0, 100.0])
    np.testing.assert_allclose(t.mos_norm, [0.0, 0.25, 1.0])
    np.testing.assert_allclose(t.to_native(t.mos_norm), t.mos)


def test_lower_is_better_scores_are_flipped_for_training():
    t = table([0.1, 0.9], scale=(0, 1), higher_better=False)  # DMOS: 0.1 is the better image
    np.testing.assert_allclose(t.mos_norm, [0.9, 0.1])
    np.testing.assert_allclose(t.to_native(np.array([0.9, 0.1])), [0.1, 0.9])


def test_fingerprint_tracks_names_and_scores():
    a, b = table([1.0, 2.0]), table([1.0, 2.0])
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    assert table([1.0, 2.5]).fingerprint() != a.fingerprint()


def test_subset_keeps_aligned_columns():
    t = table([10, 20, 30, 40], content=np.array(["a", "a", "b", "c"], dtype=object),
              official_split=np.array(["train", "test", "train", "val"], dtype=object))
    s = t.subset([3, 1])
    assert s.names == ["3.png", "1.png"] and s.mos.tolist() == [40, 20]
    assert s.content.tolist() == ["c", "a"] and s.official_split.tolist() == ["val", "test"]
    assert len(s) == 2 and len(t) == 4


def test_bad_scale_rejected():
    with pytest.raises(ValueError):
        table([1.0], scale=(5, 1))


def test_build_table_records_row_problems_without_raising(tmp_path):
    t = build_table("x", tmp_path, tmp_path, ["a.png", "b.png", "a.png", "../x.png"], ["1", "nan", "3", "4"],
                    scale=(0, 10), higher_better=True)
    kinds = sorted((i.row, i.kind) for i in t.issues)
    assert kinds == [(1, "mos"), (2, "duplicate"), (3, "path")]


def test_builtin_specs_are_registered_with_scales():
    live = get_spec("live")
    assert isinstance(live, DatasetSpec) and not live.higher_better and live.synthetic
    assert get_spec("spaq").default_resize == 512
    with pytest.raises(BiqaError, match="did you mean"):
        get_spec("konig10k")


def test_describe_for_manifests():
    info = table([5.0, 50.0], content=np.array(["r1", "r2"], dtype=object)).describe()
    assert info["images"] == 2 and info["contents"] == 2 and info["mos_min"] == 5.0
    assert info["fingerprint"] and info["scale"] == [0.0, 100.0]


def test_relative_root_gives_absolute_paths(tmp_path, monkeypatch):
    (tmp_path / "set").mkdir()
    monkeypatch.chdir(tmp_path)
    t = build_table("x", Path("set"), Path("set"), ["a.png"], ["1"], scale=(0, 10), higher_better=True)
    assert t.paths[0].is_absolute() and t.paths[0] == tmp_path / "set" / "a.png" and not t.issues


def test_image_folder_outside_the_root_is_allowed_when_chosen(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "pixels").mkdir()
    t = build_table("x", tmp_path / "labels", tmp_path / "pixels", ["a.png", "../labels/b.png"], ["1", "2"],
                    scale=(0, 10), higher_better=True)
    assert [(i.row, i.kind) for i in t.issues] == [(1, "path")]


def test_data_env_pointing_at_the_dataset_itself(tmp_path, monkeypatch):
    from biqabench.data import load_dataset

    (tmp_path / "labels.csv").write_text("image,mos\n")
    monkeypatch.setenv("BIQABENCH_DATA", str(tmp_path))
    with pytest.raises(BiqaError, match="not found under BIQABENCH_DATA"):
        load_dataset("koniq10k")
    (tmp_path / "koniq10k_distributions_sets.csv").write_text("image_name,MOS,set\na.jpg,50,training\n")
    t = load_dataset("koniq10k", check="none", resize=384)
    assert len(t) == 1 and t.options["resize"] == 384 and t.root == tmp_path
