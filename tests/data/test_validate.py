"""Bad input is found before training, in one message naming the first offenders and the count."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biqabench.data import load_dataset, read_image
from biqabench.base.errors import BiqaError


def jpeg_bytes(size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def make_set(root: Path, rows: list[tuple[str, str]], files: dict[str, bytes] | None = None,
             header: str = "image,mos") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows), encoding="utf-8")
    if files is None:
        files = {name: jpeg_bytes() for name, _ in rows}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def load(root: Path, **kw):
    return load_dataset("csv", root, scale="0,100", **kw)


def test_missing_files_first_offenders_and_count(tmp_path):
    rows = [(f"{i}.jpg", "50") for i in range(6)]
    make_set(tmp_path, rows, files={"0.jpg": jpeg_bytes()})
    with pytest.raises(BiqaError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert "5 bad entries" in msg and "5 missing files" in msg
    assert "'1.jpg'" in msg and "'3.jpg'" in msg and "2 more" in msg and "'5.jpg'" not in msg
    assert "skip_bad=True" in msg and "--skip-bad" in msg


def noisy_jpeg() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_truncated_jpeg_is_reported_before_training(tmp_path):
    good = noisy_jpeg()
    make_set(tmp_path, [("a.jpg", "10"), ("b.jpg", "20"), ("c.jpg", "30")],
             files={"a.jpg": good, "b.jpg": good[: len(good) // 2], "c.jpg": good[:100]})
    with pytest.raises(BiqaError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert "2 unreadable images" in msg
    assert "'b.jpg': truncated JPEG (no end-of-image marker)" in msg   # cut in the image data
    assert "'c.jpg': cannot be opened" in msg and "truncated or corrupt" in msg  # cut in the header


def test_truncated_bmp_and_png(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="BMP")
    bmp = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="PNG")
    png = buf.getvalue()
    make_set(tmp_path, [("a.bmp", "1"), ("b.png", "2")], files={"a.bmp": bmp[:-100], "b.png": png[:-20]})
    with pytest.raises(BiqaError) as err:
        load(tmp_path)
    assert "truncated BMP" in str(err.value) and "truncated PNG" in str(err.value)


def test_not_an_image(tmp_path):
    make_set(tmp_path, [("a.jpg", "1")], files={"a.jpg": b"this is a text file, not a JPEG"})
    with pytest.raises(BiqaError, match="not a readable image"):
        load(tmp_path)


def test_decode_check_catches_what_headers_miss(tmp_path):
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)  # damaged compressed data; the file still ends with IEND
    make_set(tmp_path, [("a.png", "1"), ("b.png", "2")], files={"a.png": jpeg_bytes(), "b.png": bytes(data)})
    assert len(load(tmp_path)) == 2  # the header check cannot see it
    with pytest.raises(BiqaError, match=r"unreadable images \('b.png': cannot be decoded"):
        load(tmp_path, check="decode")


@pytest.mark.parametrize("value", ["abc", "nan", "", "inf"])
def test_non_numeric_or_nan_mos(tmp_path, value):
    make_set(tmp_path, [("a.jpg", "10"), ("b.jpg", value)])
    with pytest.raises(BiqaError, match=r"1 bad MOS values \(row 2 'b.jpg': MOS .* is not a finite number"):
        load(tmp_path)


def test_duplicate_names(tmp_path):
    make_set(tmp_path, [("a.jpg", "10"), ("b.jpg", "20"), ("a.jpg", "30")])
    with pytest.raises(BiqaError, match=r"1 duplicate image names \(row 3 'a.jpg': also on row 1"):
        load(tmp_path)


def test_wrong_columns(tmp_path):
    make_set(tmp_path, [("a.jpg", "10")], header="image,rating")
    with pytest.raises(BiqaError, match=r"labels.csv has no column 'mos' .*\(found: image, rating\); expected image,mos"):
        load(tmp_path)
    make_set(tmp_path, [("a.jpg", "10")], header="file_name,mos")
    with pytest.raises(BiqaError, match=r"labels.csv has no column 'image' .*\(found: file_name, mos\)"):
        load(tmp_path)


def test_paths_escaping_the_data_root(tmp_path):
    root = tmp_path / "data"
    make_set(root, [("a.jpg", "10"), ("../../etc/passwd", "20"), ("/etc/hosts", "30")], files={"a.jpg": jpeg_bytes()})
    with pytest.raises(BiqaError, match=r"2 paths outside the data root \(row 2 '../../etc/passwd'"):
        load(root)
    table = load(root, skip_bad=True)
    assert table.names == ["a.jpg"]


def test_skip_bad_drops_and_logs_every_bad_entry(tmp_path, caplog):
    good = jpeg_bytes()
    make_set(tmp_path, [("a.jpg", "10"), ("b.jpg", "x"), ("c.jpg", "30"), ("d.jpg", "40"), ("a.jpg", "50")],
             files={"a.jpg": good, "b.jpg": good, "d.jpg": good[:40]})
    with caplog.at_level(logging.INFO, logger="biqabench.data.validate"):
        table = load(tmp_path, skip_bad=True)
    assert table.names == ["a.jpg"]
    assert table.options["skipped_bad"] == 4
    text = caplog.text
    for name in ("b.jpg", "c.jpg", "d.jpg"):
        assert name in text
    assert "skipping 4 bad entries" in text


def test_utf8_bom_and_semicolons(tmp_path):
    make_set(tmp_path, [], files={"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes()})
    (tmp_path / "labels.csv").write_bytes("\ufeffimage;mos\na.jpg;12.5\nb.jpg;80\n".encode("utf-8"))
    table = load(tmp_path)
    np.testing.assert_allclose(table.mos, [12.5, 80.0])


def test_size_limit_refuses_huge_images(tmp_path, monkeypatch):
    make_set(tmp_path, [("a.jpg", "1")], files={"a.jpg": jpeg_bytes((40, 30))})
    monkeypatch.setenv("BIQABENCH_MAX_PIXELS", "1000")
    with pytest.raises(BiqaError, match=r"40x30 = 1,200 pixels, over the limit of 1,000"):
        load(tmp_path)
    with pytest.raises(BiqaError, match="refusing it rather than exhausting memory"):
        read_image(tmp_path / "a.jpg")


def test_pil_decompression_bomb_becomes_biqa_error(tmp_path, monkeypatch):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 30)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL itself raises above twice this
    with pytest.raises(BiqaError, match="too large to decode safely"):
        read_image(tmp_path / "a.jpg")


def test_errors_are_found_before_any_loader_runs(tmp_path):
    """load_dataset fails, so no DataLoader / training loop is ever built on a broken table."""
    make_set(tmp_path, [("a.jpg", "10")], files={})
    with pytest.raises(BiqaError):
        load(tmp_path)
