"""Each reader against a small stand-in folder in the official format, made inside the test."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from biqabench.data import load_dataset, make_splits, read_raw
from biqabench.data.readers.xlsx import read_xlsx, write_xlsx
from biqabench.base.errors import BiqaError


def tiny_image_bytes(fmt: str = "JPEG", size=(8, 8), color=(120, 80, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def cell_column(names: list[str]) -> np.ndarray:
    """A MATLAB cell column of strings, as in the official CLIVE .mat files."""
    arr = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        arr[i, 0] = np.array([n])
    return arr


# -- CLIVE ------------------------------------------------------------------------------------
def make_clive(root: Path, n_test: int = 6) -> list[float]:
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{100 + i}.{'JPG' if i % 2 else 'bmp'}" for i in range(n_test)]
    mos = [float(5 + 7 * i) for i in range(len(names))]
    (root / "Data").mkdir(parents=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell_column(names)})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.ones((1, len(names)))})
    for n in names:
        folder = root / "Images" / ("trainingImages" if n.startswith("t") else "")
        put(folder / n, tiny_image_bytes("BMP" if n.endswith("bmp") else "JPEG"))
    return mos


def test_clive_drops_training_images_by_default(tmp_path):
    root = tmp_path / "ChallengeDB_release"
    mos = make_clive(root)
    table = load_dataset("clive", root)
    assert len(table) == 6
    assert not any(n.startswith("t") for n in table.names)
    np.testing.assert_allclose(table.mos, mos[7:])
    assert table.scale == (0.0, 100.0) and table.higher_better
    kept = load_dataset("clive", root, drop_training="false")
    assert len(kept) == 13 and kept.paths[0].parent.name == "trainingImages"


def test_clive_found_from_parent_folder_and_env(tmp_path, monkeypatch):
    make_clive(tmp_path / "ChallengeDB_release")
    assert len(load_dataset("clive", tmp_path)) == 6           # parent of the dataset folder
    monkeypatch.setenv("BIQABENCH_DATA", str(tmp_path))
    assert len(load_dataset("clive")) == 6                     # $BIQABENCH_DATA/<usual folder>


def test_missing_root_says_which_option_to_set(monkeypatch):
    monkeypatch.delenv("BIQABENCH_DATA", raising=False)
    with pytest.raises(BiqaError, match="--data-root.*BIQABENCH_DATA"):
        load_dataset("clive")


def test_clive_mismatched_mat_files(tmp_path):
    make_clive(tmp_path)
    savemat(tmp_path / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[1.0, 2.0]])})
    with pytest.raises(BiqaError, match="lists 13 images but AllMOS_release.mat has 2"):
        load_dataset("clive", tmp_path)


# -- KonIQ-10k --------------------------------------------------------------------------------
def test_koniq_official_sets_and_folder(tmp_path):
    sets = ["training", "training", "validation", "test", "training"]
    rows = [[f"{i}.jpg", 0, 0, 0, 1, 0, 100, 40 + i, 0.5, s] for i, s in enumerate(sets)]
    write_csv(tmp_path / "koniq10k_distributions_sets.csv",
              ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"], rows)
    for i in range(5):
        put(tmp_path / "512x384" / f"{i}.jpg", tiny_image_bytes())
    table = load_dataset("koniq10k", tmp_path)
    assert table.options["images"] == "512x384"
    assert list(table.official_split) == ["train", "train", "val", "test", "train"]
    split = make_splits(table, official=True)[0]
    assert split.sizes() == {"train": 3, "val": 1, "test": 1}
    assert table.scale == (0.0, 100.0)


def test_koniq_scores_csv_uses_zscore_and_prefers_1024(tmp_path):
    write_csv(tmp_path / "koniq10k_scores_and_distributions.csv",
              ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"],
              [["a.jpg", 0, 0, 0, 1, 0, 100, 3.5, 0.5, 70.0], ["b.jpg", 0, 0, 1, 0, 0, 100, 2.0, 0.5, 30.0]])
    for folder in ("1024x768", "512x384"):
        for n in ("a.jpg", "b.jpg"):
            put(tmp_path / folder / n, tiny_image_bytes())
    table = load_dataset("koniq10k", tmp_path)
    assert table.options["images"] == "1024x768"
    np.testing.assert_allclose(table.mos, [70.0, 30.0])
    assert table.official_split is None
    small = load_dataset("koniq10k", tmp_path, images="512x384")
    assert small.paths[0].parent.name == "512x384"


# -- SPAQ and BID (Excel score sheets) --------------------------------------------------------
def test_xlsx_roundtrip(tmp_path):
    rows = [["Image name", "MOS"], ["00001.jpg", 42.5], ["a&b<c>.jpg", 7]]
    got = read_xlsx(write_xlsx(tmp_path / "t.xlsx", rows))
    assert got == [["Image name", "MOS"], ["00001.jpg", "42.5"], ["a&b<c>.jpg", "7"]]


def test_spaq_reads_excel_and_defaults_to_512_short_side(tmp_path):
    (tmp_path / "Annotations").mkdir()
    write_xlsx(tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx",
               [["Image name", "MOS", "Brightness"], ["00001.jpg", 51.2, 40], ["00002.jpg", 80, 60]])
    for n in ("00001.jpg", "00002.jpg"):
        put(tmp_path / "TestImage" / n, tiny_image_bytes())
    table = load_dataset("spaq", tmp_path)
    assert table.names == ["00001.jpg", "00002.jpg"]
    np.testing.assert_allclose(table.mos, [51.2, 80.0])
    assert table.options["resize"] == 512
    assert load_dataset("spaq", tmp_path, resize=0).options["resize"] == 0


def test_bid_image_numbers_to_names(tmp_path):
    write_xlsx(tmp_path / "DatabaseGrades.xlsx",
               [["Image Number", "Average Subjective Grade", "std"], [1, 3.5, 0.4], [12, 1.25, 0.3]])
    for n in ("DatabaseImage0001.JPG", "DatabaseImage0012.JPG"):
        put(tmp_path / "ImageDatabase" / n, tiny_image_bytes())
    table = load_dataset("bid", tmp_path)
    assert table.names == ["DatabaseImage0001.JPG", "DatabaseImage0012.JPG"]
    assert table.scale == (0.0, 5.0)


# -- FLIVE ------------------------------------------------------------------------------------
def test_flive_official_split(tmp_path):
    db = tmp_path / "FLIVE_Database" / "database"
    names = ["voc/a.jpg", "voc/b.jpg", "AVA__1.jpg", "blur/c.jpg"]
    write_csv(db / "labels_image.csv", ["name", "mos"], [[n, 50 + i] for i, n in enumerate(names)])
    write_csv(db / "labels>640.csv", ["name_image", "mos_image"], [["blur/c.jpg", 53]])
    write_csv(db / "labels<=640_padded.csv", ["name_image", "mos_image", "is_valid"],
              [["voc/a.jpg", 50, "False"], ["voc/b.jpg", 51, "True"], ["AVA__1.jpg", 52, "False"]])
    for n in names:
        put(db / n, tiny_image_bytes())
    table = load_dataset("flive", tmp_path / "FLIVE_Database")
    assert list(table.official_split) == ["train", "val", "train", "test"]


# -- synthetic sets ---------------------------------------------------------------------------
def test_kadid_content_is_the_reference(tmp_path):
    rows = [[f"I0{r}_0{d}_0{lv}.png", f"I0{r}.png", 4.0 - lv * 0.5, 0.1]
            for r in (1, 2, 3) for d in (1, 2) for lv in (1, 2)]
    write_csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    for r in rows:
        put(tmp_path / "images" / r[0], tiny_image_bytes("PNG"))
    table = load_dataset("kadid10k", tmp_path)
    assert len(table) == 12 and sorted(set(table.content)) == ["I01", "I02", "I03"]
    assert table.scale == (1.0, 5.0) and table.higher_better


def test_tid2013_case_insensitive_names(tmp_path):
    lines = ["5.51429 i01_01_1.bmp", "5.56757 i01_01_2.bmp", "4.94286 i02_01_1.bmp"]
    (tmp_path / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    put(tmp_path / "distorted_images" / "I01_01_1.BMP", tiny_image_bytes("BMP"))  # case differs on disk
    put(tmp_path / "distorted_images" / "i01_01_2.bmp", tiny_image_bytes("BMP"))
    put(tmp_path / "distorted_images" / "i02_01_1.bmp", tiny_image_bytes("BMP"))
    table = load_dataset("tid2013", tmp_path)
    assert list(table.content) == ["I01", "I01", "I02"]
    assert table.paths[0].name == "I01_01_1.BMP"


def test_live_release2_drops_originals(tmp_path):
    from biqabench_plugins.datasets.synthetic import LIVE_FOLDERS

    total = sum(n for _, n in LIVE_FOLDERS)
    orgs = np.zeros((1, total))
    orgs[0, ::5] = 1
    dmos = np.linspace(0, 90, total)[None, :]
    savemat(tmp_path / "dmos.mat", {"dmos": dmos[:, ::-1], "orgs": orgs})  # per-session: another order
    savemat(tmp_path / "dmos_realigned.mat", {"dmos_new": dmos, "orgs": orgs, "dmos_std": dmos * 0})
    refs = np.empty((1, total), dtype=object)
    for i in range(total):
        refs[0, i] = np.array([f"ref{i % 29}.bmp"])
    savemat(tmp_path / "refnames_all.mat", {"refnames_all": refs})
    bmp = tiny_image_bytes("BMP")
    for folder, n in LIVE_FOLDERS:
        for k in range(1, n + 1):
            put(tmp_path / folder / f"img{k}.bmp", bmp)
    table = load_dataset("live", tmp_path)
    assert len(table) == total - int(orgs.sum())
    assert not table.higher_better
    assert table.names[0] == "jp2k/img2.bmp"         # img1 is flagged as an original
    assert len(set(table.content)) == 29
    # lower DMOS = better: the normalised score reverses the order
    assert table.mos_norm[0] > table.mos_norm[-1]
    # realigned DMOS by default, as both references read LIVE; the session DMOS on request
    assert table.options["realigned"] is True and table.mos[0] == pytest.approx(dmos[0, 1])
    original = load_dataset("live", tmp_path, realigned="false")
    assert original.mos[0] == pytest.approx(dmos[0, ::-1][1])


def test_csiq_finds_images_in_distortion_folders(tmp_path):
    lines = ["1600.AWGN.1.png 0.061989", "1600.BLUR.2.png 0.3", "aerial_city.JPEG.1.png 0.1"]
    (tmp_path / "csiq_label.txt").write_text("\n".join(lines))
    put(tmp_path / "dst_imgs" / "awgn" / "1600.AWGN.1.png", tiny_image_bytes("PNG"))
    put(tmp_path / "dst_imgs" / "blur" / "1600.BLUR.2.png", tiny_image_bytes("PNG"))
    put(tmp_path / "dst_imgs" / "jpeg" / "aerial_city.JPEG.1.png", tiny_image_bytes("PNG"))
    table = load_dataset("csiq", tmp_path)
    assert table.names == ["1600.AWGN.1.png", "1600.BLUR.2.png", "aerial_city.JPEG.1.png"]
    assert table.paths[1] == tmp_path / "dst_imgs" / "blur" / "1600.BLUR.2.png"
    assert list(table.content) == ["1600", "1600", "aerial_city"]
    assert table.scale == (0.0, 1.0) and not table.higher_better


# -- pyiqa meta-info and generic CSV ----------------------------------------------------------
def test_pyiqa_nr_with_split(tmp_path):
    meta = write_csv(tmp_path / "meta_info_KonIQ10kDataset.csv", ["img_name", "mos", "std", "split"],
                     [["a.jpg", 70, 1, "train"], ["b.jpg", 30, 1, "test"], ["c.jpg", 50, 1, "val"]])
    for n in "abc":
        put(tmp_path / "imgs" / f"{n}.jpg", tiny_image_bytes())
    table = load_dataset("pyiqa", tmp_path / "imgs", meta=str(meta))
    assert table.name == "pyiqa-koniq10k" and list(table.official_split) == ["train", "test", "val"]


def test_pyiqa_fr_gives_content_and_known_direction(tmp_path):
    meta = write_csv(tmp_path / "meta_info_CSIQDataset.csv", ["ref_name", "dist_name", "dmos"],
                     [["1600.png", "1600.AWGN.1.png", 0.06], ["1600.png", "1600.AWGN.2.png", 0.2]])
    table = read_raw("pyiqa", tmp_path, meta=str(meta))
    assert list(table.content) == ["1600", "1600"] and not table.higher_better


def test_pyiqa_unknown_dataset_needs_scale(tmp_path):
    meta = write_csv(tmp_path / "meta_info_MineDataset.csv", ["img_name", "mos"], [["a.jpg", 1]])
    with pytest.raises(BiqaError, match="scale=LO,HI"):
        read_raw("pyiqa", tmp_path, meta=str(meta))
    assert read_raw("pyiqa", tmp_path, meta=str(meta), scale="1,5").scale == (1.0, 5.0)


def test_generic_csv_bom_semicolon_and_ref(tmp_path):
    text = "\ufeffimage;mos;ref;split\nimgs/a.png;10,5;r1;train\nimgs/b.png;90;r2;test\n"
    text = text.replace("10,5", "10.5")
    (tmp_path / "labels.csv").write_text(text, encoding="utf-8")
    for n in ("a.png", "b.png"):
        put(tmp_path / "imgs" / n, tiny_image_bytes("PNG"))
    table = load_dataset("csv", tmp_path, scale="0,100", higher_better="false")
    assert table.names == ["imgs/a.png", "imgs/b.png"]
    np.testing.assert_allclose(table.mos, [10.5, 90.0])
    assert list(table.content) == ["r1", "r2"] and list(table.official_split) == ["train", "test"]
    np.testing.assert_allclose(table.mos_norm, [0.895, 0.1])


def test_generic_csv_requires_scale(tmp_path):
    write_csv(tmp_path / "labels.csv", ["image", "mos"], [["a.png", 1]])
    with pytest.raises(BiqaError, match="needs scale=LO,HI"):
        load_dataset("csv", tmp_path)


def test_unknown_reader_option_is_named(tmp_path):
    make_clive(tmp_path)
    with pytest.raises(BiqaError, match="unknown option.*colour"):
        load_dataset("clive", tmp_path, colour="red")
