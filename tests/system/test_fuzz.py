"""Property tests: the table readers and the config loader, fed arbitrary input, either succeed or
raise BiqaError (a one-line message) -- never another exception.

Kept fast for the default suite (a few hundred examples each, no deadline); raise the counts with
``HYPOTHESIS_PROFILE=thorough`` for a longer hunt.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st
from PIL import Image

from biqabench.base.config import load_yaml, override
from biqabench.data.readers.tables import load_pyiqa, read_generic_csv
from biqabench.data.table import IQATable
from biqabench.data.validate import validate_table
from biqabench.base.errors import BiqaError
from biqabench.components.heads import TrainRecipe, validate_recipe
from biqabench.evaluation.runner import EvalConfig, load_eval_config

settings.register_profile("default", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def only_biqa_errors(fn, *args, **kwargs):
    """Call ``fn``; a BiqaError is an accepted outcome (and must be one line), anything else fails."""
    try:
        return fn(*args, **kwargs)
    except BiqaError as exc:
        assert "\n" not in str(exc), str(exc)
        return None


# -- table readers --------------------------------------------------------------------------------
COLUMNS = ["image", "img_name", "mos", "dmos", "score", "ref", "split", "set", "dist_name", "ref_name", "std",
           "name", "MOS", "Image", ""]
cell_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
cells = st.one_of(
    cell_text,
    st.sampled_from(["a.png", "b.png", "sub/c.png", "../../etc/passwd", "/etc/hosts", ".", "..", "a.png ",
                     "A.PNG", "nan", "inf", "-1e308", "1e999", "", " ", "train", "test", "val", "\x00", "é.png"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
)


@st.composite
def tables(draw) -> bytes:
    """A label file as bytes: a header of real and odd column names, rows of odd cells, any of the
    delimiters and encodings seen in the wild (BOM, ';', tabs, CRLF, Latin-1)."""
    header = draw(st.lists(st.sampled_from(COLUMNS) | cell_text, min_size=0, max_size=6))
    rows = draw(st.lists(st.lists(cells, max_size=7), max_size=12))
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    text = buf.getvalue()
    if draw(st.booleans()):
        text = "\ufeff" + text
    encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
    return text.encode(encoding, errors="replace")


label_bytes = st.one_of(tables(), st.binary(max_size=600), st.text(max_size=300).map(lambda t: t.encode("utf-8")))


def _folder_with_images(d: Path) -> Path:
    """A dataset folder holding a.png, b.png and sub/c.png, so some rows point at real images."""
    (d / "sub").mkdir()
    for rel in ("a.png", "b.png", "sub/c.png"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(d / rel)
    return d


def _check_table(table: IQATable | None) -> None:
    if table is None:
        return
    assert len(table.paths) == len(table.names) == len(table.mos)
    root = os.path.abspath(table.root)
    for path in table.paths:  # no path leaves the data root
        assert os.path.normpath(os.path.abspath(path)).startswith(root)
    for check in ("exists", "header"):
        checked = only_biqa_errors(validate_table, table, check=check, skip_bad=True, progress=False)
        if checked is not None:
            assert len(checked) >= 1 and np.isfinite(checked.mos).all()


@given(data=label_bytes, scale=st.sampled_from(["0,100", "1:5", "0 1"]),
       higher_better=st.sampled_from([True, "false", "yes"]))
@example(data=b"image,mos\n\x00\\0\n", scale="0,100", higher_better=True)  # a NUL in a folder name (found by
# this test on 2026-12-07: os.listdir raised ValueError)
def test_generic_csv_reader_never_crashes(data, scale, higher_better):
    with tempfile.TemporaryDirectory() as d:
        root = _folder_with_images(Path(d))
        (root / "labels.csv").write_bytes(data)
        table = only_biqa_errors(read_generic_csv, root, "labels.csv", scale=scale, higher_better=higher_better)
        _check_table(table)


@given(data=label_bytes, meta_name=st.sampled_from(["meta_info_KonIQ10kDataset.csv", "meta_info_CSIQDataset.csv",
                                                   "meta_info_LIVEChallengeDataset.csv", "meta_info_Mine.csv"]),
       scale=st.sampled_from([None, "0,1"]))
def test_pyiqa_meta_reader_never_crashes(data, meta_name, scale):
    with tempfile.TemporaryDirectory() as d:
        root = _folder_with_images(Path(d))
        (root / meta_name).write_bytes(data)
        table = only_biqa_errors(load_pyiqa, root, meta=str(root / meta_name), scale=scale)
        _check_table(table)


# -- config loader --------------------------------------------------------------------------------
EVAL_KEYS = [f.name for f in EvalConfig.__dataclass_fields__.values()]
RECIPE_KEYS = [f.name for f in TrainRecipe.__dataclass_fields__.values()]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["1e-4", "nan", "-inf", "yes", "0x10", "demo-a", "csv", "linear", "1e999"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(RECIPE_KEYS + ["scale", "csv", "demo-a"]), inner, max_size=4), max_leaves=12)


def mappings(keys: list[str]):
    key = st.sampled_from(keys) | st.text(max_size=12) | st.integers(-5, 5) | st.booleans()
    return st.dictionaries(key, values, max_size=6)


def _yaml_file(d: Path, data) -> Path:
    path = d / "config.yaml"
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except (ValueError, yaml.YAMLError):  # e.g. an integer too long for Python to print
        assume(False)
    path.write_text(text, encoding="utf-8")
    return path


@given(data=mappings(EVAL_KEYS))
def test_eval_config_loader_never_crashes(data):
    only_biqa_errors(override, EvalConfig(), data, where="fuzz")
    with tempfile.TemporaryDirectory() as d:
        cfg = only_biqa_errors(load_eval_config, _yaml_file(Path(d), data))
    if cfg is not None:
        assert isinstance(cfg, EvalConfig) and cfg.splits >= 1 and cfg.seed >= 0
        only_biqa_errors(override, TrainRecipe(), cfg.recipe_overrides, where="recipe_overrides")


@given(data=mappings(RECIPE_KEYS))
def test_recipe_overrides_never_crash(data):
    recipe = only_biqa_errors(override, TrainRecipe(), data, where="recipe_overrides")
    if recipe is not None:
        assert isinstance(recipe, TrainRecipe)
        checked = only_biqa_errors(validate_recipe, recipe)
        if checked is not None:
            assert checked.epochs >= 1 and checked.batch_size >= 1 and checked.lr > 0


@given(raw=st.binary(max_size=400) | st.text(max_size=400).map(lambda t: t.encode("utf-8")))
def test_yaml_loader_never_crashes_on_any_file(raw):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_bytes(raw)
        data = only_biqa_errors(load_yaml, path)
        if data is not None:
            assert isinstance(data, dict)
            only_biqa_errors(load_eval_config, path)
