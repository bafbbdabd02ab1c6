"""Bad and odd input at the command level: images and label tables, through `datasets check`,
`eval` and `predict` on a generic CSV dataset.  docs/reliability.md lists each case with the
message observed here.  (API-level checks of the same readers live in tests/test_data_*.py.)
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy.io import savemat

from conftest import TINY_RECIPE, run_cli

RUN_OPTS = ["--device", "cpu", "--precision", "fp32", "--workers", "0", "--no-progress"]
cli = run_cli  # (exit code, stdout, stderr)


def one_line_error(err: str) -> str:
    """The promise: a single 'error: ...' line on stderr, no traceback.  Progress bars redraw
    their line with carriage returns; what stays on screen is the text after the last one."""
    lines = [ln.split("\r")[-1] for ln in err.split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- images --------------------------------------------------------------------------------------
def noisy(size=(48, 40), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming 10^10 pixels (no pixel data): what a decompression bomb looks
    like to a reader that checks sizes before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def odd_but_valid(root: Path) -> dict[str, float]:
    """Images every reader must accept: odd modes and depths, tiny sizes.  name -> MOS."""
    rng = np.random.default_rng(1)
    noisy(seed=2).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (40, 48)).astype(np.uint16)).save(root / "grey16.png")
    noisy(seed=3).convert("RGBA").save(root / "rgba.png")
    noisy(seed=4).convert("P").save(root / "palette.png")
    noisy(seed=5).convert("L").save(root / "grey.png")
    noisy((1, 1), seed=6).save(root / "one_pixel.png")
    noisy((10, 7), seed=7).save(root / "smaller_than_patch.png")
    return {"cmyk.jpg": 30, "grey16.png": 40, "rgba.png": 50, "palette.png": 55, "grey.png": 60,
            "one_pixel.png": 20, "smaller_than_patch.png": 25}


def broken(root: Path) -> dict[str, float]:
    """Images no reader can use.  name -> MOS."""
    good = jpeg_bytes(noisy((64, 64), seed=9))
    (root / "zero.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "text.png").write_text("this is not an image\n")
    (root / "bomb.png").write_bytes(bomb_png())
    return {"zero.jpg": 10, "truncated.jpg": 20, "text.png": 30, "bomb.png": 40}


def csv_dataset(root: Path, extra: dict[str, float], n_good: int = 12) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = {}
    for i in range(n_good):
        noisy(seed=100 + i).save(root / f"ok{i}.jpg")
        rows[f"ok{i}.jpg"] = 10 + 5 * i
    rows.update(extra)
    (root / "labels.csv").write_text("image,mos\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    return root


def eval_config(tmp_path: Path, root: Path, **extra) -> Path:
    cfg = {"head": "linear", "weights": "random", "backbone": "tiny", "splits": 1, "train": "csv",
           "data_root": str(root), "dataset_options": {"csv": {"scale": "0,100"}},
           "recipe_overrides": TINY_RECIPE, **extra}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def check_fields(out: str) -> dict[str, str]:
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition("  ")
        fields[key.strip()] = value.strip()
    return fields


def test_odd_images_pass_check_train_and_predict(tmp_path, capsys):
    """CMYK, 16-bit, RGBA, palette, greyscale, 1x1 and smaller-than-patch images all work."""
    root = csv_dataset(tmp_path / "data", {})
    odd = odd_but_valid(root)
    with open(root / "labels.csv", "a") as f:
        f.writelines(f"{k},{v}\n" for k, v in odd.items())
    code, out, err = cli(capsys, "datasets", "check", "csv", "--root", root, "-o", "scale=0,100", "--decode")
    assert code == 0, out + err
    fields = check_fields(out)
    assert fields["entries"] == fields["usable"] == str(12 + len(odd))
    code, out, err = cli(capsys, "eval", "--config", eval_config(tmp_path, root), *RUN_OPTS)
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].removeprefix("run folder: "))
    # predict on exactly the odd images: each gets a finite score (small ones are upscaled to the patch)
    code, out, err = cli(capsys, "predict", *[root / n for n in odd], "--run", run, "--device", "cpu",
                         "--precision", "fp32")
    assert code == 0, err
    scores = pd.read_csv(io.StringIO(out))
    assert sorted(Path(p).name for p in scores.image) == sorted(odd)
    assert np.isfinite(scores.pred).all()


def test_broken_images_are_all_named_before_training(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    csv_dataset(root, broken(root))
    code, out, err = cli(capsys, "datasets", "check", "csv", "--root", root, "-o", "scale=0,100")
    assert code == 1
    problems = check_fields(out)["problems"]
    assert "4 unreadable images" in problems
    assert "'zero.jpg': is empty (0 bytes: an interrupted copy?)" in problems
    assert "'truncated.jpg': truncated JPEG (no end-of-image marker)" in problems
    assert "'text.png': is not a readable image (unknown or corrupt format)" in problems
    assert "'bomb.png': is too large to decode safely" in problems or "'bomb.png': is 100000x100000" in problems
    assert "--skip-bad" in err
    # eval stops before any training with one line naming the first offenders and the way out
    code, out, err = cli(capsys, "eval", "--config", eval_config(tmp_path, root), *RUN_OPTS)
    assert code == 2
    line = one_line_error(err)
    assert "4 bad entries: 4 unreadable images ('zero.jpg': is empty" in line and "1 more" in line
    assert "--skip-bad" in line
    runs = Path(os.environ["BIQABENCH_RESULTS"]) / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "no run may start on a broken table"


def test_skip_bad_drops_broken_images_and_records_it(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    csv_dataset(root, broken(root))
    code, out, err = cli(capsys, "eval", "--config", eval_config(tmp_path, root), "--skip-bad", *RUN_OPTS)
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].removeprefix("run folder: "))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["datasets"]["csv"]["images"] == 12
    assert manifest["datasets"]["csv"]["options"]["skipped_bad"] == 4


def test_predict_on_a_broken_image_is_one_line(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    broken(root)
    code, out, err = cli(capsys, "eval", "--config", eval_config(tmp_path, csv_dataset(tmp_path / "good", {})),
                         *RUN_OPTS)
    assert code == 0, err
    run = out.strip().splitlines()[-1].removeprefix("run folder: ")
    for name, expected in [("zero.jpg", "is empty (0 bytes"), ("text.png", "is not a readable image"),
                           ("bomb.png", "too large"), ("truncated.jpg", "truncated")]:
        code, out, err = cli(capsys, "predict", root / name, "--run", run, "--device", "cpu", "--precision", "fp32")
        assert code == 2, (name, err)
        line = one_line_error(err)
        assert name in line and expected in line, line
    # the run's own model file, damaged: predict stops in one line too
    model = Path(run) / "model.safetensors"
    model.write_bytes(model.read_bytes()[:64])
    code, out, err = cli(capsys, "predict", root.parent / "good" / "ok0.jpg", "--run", run, "--device", "cpu")
    assert code == 2 and f"cannot read {model} as safetensors" in one_line_error(err)


# -- tables -------------------------------------------------------------------------------------
def labelled(root: Path, text: str | bytes, images=("a.jpg", "b.jpg", "c.jpg")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in images:
        noisy((16, 16)).save(root / n)
    target = root / "labels.csv"
    target.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return root


def check(capsys, root: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "datasets", "check", "csv", "--root", root, "-o", "scale=0,100", *extra)


def test_missing_columns_name_what_was_found_and_expected(tmp_path, capsys):
    root = labelled(tmp_path, "image,rating\na.jpg,10\n")
    code, _, err = check(capsys, root)
    assert code == 2
    line = one_line_error(err)
    assert "labels.csv has no column 'mos'" in line and "(found: image, rating)" in line
    assert "expected image,mos[,ref][,split]" in line


@pytest.mark.parametrize("value", ["NaN", "good", "", "inf"])
def test_nan_or_text_mos_names_the_row(tmp_path, capsys, value):
    root = labelled(tmp_path, f"image,mos\na.jpg,10\nb.jpg,{value}\nc.jpg,30\n")
    code, out, _ = check(capsys, root)
    assert code == 1
    fields = check_fields(out)
    assert fields["bad mos"] == "1" and fields["usable"] == "2"
    assert f"row 2 'b.jpg': MOS {value!r} is not a finite number" in fields["problems"]


def test_duplicate_names_point_at_the_first_row(tmp_path, capsys):
    root = labelled(tmp_path, "image,mos\na.jpg,10\nb.jpg,20\na.jpg,30\n")
    code, out, _ = check(capsys, root)
    assert code == 1
    assert "1 duplicate image names (row 3 'a.jpg': also on row 1)" in check_fields(out)["problems"]


@pytest.mark.parametrize("raw", [
    "\ufeffimage,mos\na.jpg,10\nb.jpg,20\nc.jpg,30\n",        # UTF-8 BOM (Excel)
    "image;mos\na.jpg;10\nb.jpg;20\nc.jpg;30\n",               # ';' (European locales)
    "\ufeffimage;mos\r\na.jpg;10\r\nb.jpg;20\r\nc.jpg;30\r\n",  # both, with CRLF
])
def test_bom_and_semicolon_tables_are_read(tmp_path, capsys, raw):
    root = labelled(tmp_path, raw)
    code, out, err = check(capsys, root)
    assert code == 0, out + err
    fields = check_fields(out)
    assert fields["usable"] == "3" and fields["mos min"] == "10" and fields["mos max"] == "30"


def test_path_escaping_the_data_root_is_refused_not_read(tmp_path, capsys):
    outside = tmp_path / "secret.jpg"
    noisy((16, 16)).save(outside)
    root = labelled(tmp_path / "data", "image,mos\na.jpg,10\n../secret.jpg,20\n../../etc/passwd,30\n/etc/hosts,40\n")
    code, out, _ = check(capsys, root)
    assert code == 1
    fields = check_fields(out)
    assert fields["bad paths"] == "3" and fields["usable"] == "1"
    assert "3 paths outside the data root (row 2 '../secret.jpg': escapes the data root" in fields["problems"]
    # eval refuses the same table in one line
    cfg = eval_config(tmp_path, root)
    code, _, err = cli(capsys, "eval", "--config", cfg, *RUN_OPTS)
    assert code == 2 and "3 paths outside the data root" in one_line_error(err)


def test_empty_and_headerless_tables(tmp_path, capsys):
    cases = [("", "is empty"), (",,\n,\n", "has no header row"),
             ("image,mos\n" + "x" * 200_000 + ",1\n", "line 2 is not valid CSV (field larger than field limit")]
    for k, (text, expected) in enumerate(cases):
        root = labelled(tmp_path / str(k), text)
        code, _, err = check(capsys, root)
        assert code == 2, (text, err)
        assert expected in one_line_error(err)


def test_header_without_rows(tmp_path, capsys):
    root = labelled(tmp_path / "data", "image,mos\n")
    code, out, _ = check(capsys, root)
    assert code == 1 and check_fields(out)["problems"] == "no entries: is it the right label file?"
    code, _, err = cli(capsys, "eval", "--config", eval_config(tmp_path, root), *RUN_OPTS)
    assert code == 2
    assert one_line_error(err) == (f"error: dataset 'csv' ({root / 'labels.csv'}) has no entries: "
                                   "is it the right label file?")


def test_pyiqa_meta_csv_with_missing_columns(tmp_path, capsys):
    root = labelled(tmp_path, "image,mos\n")
    meta = tmp_path / "meta_info_KonIQ10kDataset.csv"
    meta.write_text("picture,quality\na.jpg,50\n")
    code, _, err = cli(capsys, "datasets", "check", "pyiqa", "--root", root, "-o", f"meta={meta}")
    assert code == 2
    line = one_line_error(err)
    assert "meta_info_KonIQ10kDataset.csv has no column 'img_name'" in line and "found: picture, quality" in line


def cell_column(names: list[str]) -> np.ndarray:
    arr = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        arr[i, 0] = np.array([n])
    return arr


def test_mat_files_with_unexpected_variables(tmp_path, capsys):
    """CLIVE's .mat files re-saved with other variable names, or not .mat at all."""
    data = tmp_path / "ChallengeDB_release" / "Data"
    data.mkdir(parents=True)
    savemat(data / "AllImages_release.mat", {"names": cell_column(["1.bmp", "2.bmp"])})
    savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.array([[50.0, 60.0]])})
    code, _, err = cli(capsys, "datasets", "check", "clive", "--root", tmp_path)
    assert code == 2
    line = one_line_error(err)
    assert "AllImages_release.mat has no variable 'AllImages_release' (found: names)" in line
    (data / "AllImages_release.mat").write_bytes(b"MATLAB 5.0 MAT-file, but cut short")
    code, _, err = cli(capsys, "datasets", "check", "clive", "--root", tmp_path)
    assert code == 2
    assert "cannot read" in one_line_error(err) and "AllImages_release.mat" in err
