"""Decoding (modes, EXIF), the decoded-image cache, and patch sampling."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from biqabench.data import (
    IMAGENET_MEAN, IMAGENET_STD, ImageCache, IQATable, PatchDataset, image_patches, read_image,
)


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    base = Image.new("RGB", (6, 4), (200, 100, 50))
    img = base.convert(mode) if mode not in ("I;16", "I", "F") else Image.new(mode, (6, 4))
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    path = save(img, tmp_path / f"x.{fmt.lower()}", format=fmt)
    out = read_image(path)
    assert out.mode == "RGB" and out.size == (6, 4)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(arr), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    got = np.asarray(read_image(path))[0, :, 0]
    assert got.tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(img, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(path)
    assert out.size == (20, 40)
    top = np.asarray(out)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the left strip is now at the top


def test_resize_sets_short_side(tmp_path):
    path = save(Image.new("RGB", (300, 200), (1, 2, 3)), tmp_path / "a.jpg")
    assert read_image(path, resize=100).size == (150, 100)
    path = save(Image.new("RGB", (1000, 800), (1, 2, 3)), tmp_path / "big.jpg")
    assert read_image(path, resize=200).size == (250, 200)  # via JPEG draft decoding


# -- cache -----------------------------------------------------------------------------------
def gradient_image(path: Path, w=64, h=48) -> Path:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], axis=-1).astype(np.uint8)
    return save(Image.fromarray(arr), path)


def test_memory_cache_decodes_once(tmp_path):
    path = gradient_image(tmp_path / "a.png")
    cache = ImageCache()
    first = cache.get(path)
    second = cache.get(path)
    assert cache.decodes == 1 and cache.hits == 1
    assert first.dtype == torch.uint8 and first.shape == (3, 48, 64)
    assert torch.equal(first, second)
    first.zero_()  # get() hands out copies: the cached pixels are untouched
    assert cache.get(path).sum() > 0


def test_disk_cache_is_shared_and_keyed_by_mtime_and_resize(tmp_path):
    path = gradient_image(tmp_path / "a.png")
    folder = tmp_path / "decoded"
    a = ImageCache(folder=folder)
    a.get(path)
    b = ImageCache(folder=folder)  # a new process / worker / epoch
    b.get(path)
    assert a.decodes == 1 and b.decodes == 0
    c = ImageCache(resize=24, folder=folder)
    assert c.get(path).shape == (3, 24, 32) and c.decodes == 1
    time.sleep(0.01)
    gradient_image(path, w=80)  # file changed: the old entry must not be used
    d = ImageCache(folder=folder)
    assert d.get(path).shape == (3, 48, 80) and d.decodes == 1


def test_damaged_disk_entry_is_rebuilt(tmp_path):
    path = gradient_image(tmp_path / "a.png")
    folder = tmp_path / "decoded"
    ImageCache(folder=folder).get(path)
    for f in folder.rglob("*.npy"):
        f.write_bytes(b"garbage")
    cache = ImageCache(folder=folder)
    assert cache.get(path).shape == (3, 48, 64) and cache.decodes == 1


def test_memory_budget_evicts_least_recent(tmp_path):
    paths = [gradient_image(tmp_path / f"{i}.png") for i in range(3)]
    one = 3 * 48 * 64
    cache = ImageCache(memory_bytes=2 * one)
    for p in paths:
        cache.get(p)
    cache.get(paths[2])
    assert cache.decodes == 3 and cache.hits == 1
    cache.get(paths[0])  # evicted
    assert cache.decodes == 4


def test_cache_pickles_without_its_pixels(tmp_path):
    path = gradient_image(tmp_path / "a.png")
    cache = ImageCache(resize=0)
    cache.get(path)
    clone = pickle.loads(pickle.dumps(cache))
    assert len(clone._mem) == 0 and clone.resize == 0
    clone.get(path)


def test_warm_reports_bad_files(tmp_path):
    good = gradient_image(tmp_path / "a.png")
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"nope")
    problems = ImageCache().warm([good, bad], progress=False)
    assert list(problems) == [bad] and "not a readable image" in problems[bad]


# -- patches ---------------------------------------------------------------------------------
def make_table(tmp_path: Path, sizes=((64, 48), (40, 80), (20, 10))) -> IQATable:
    paths = [gradient_image(tmp_path / f"{i}.png", w, h) for i, (w, h) in enumerate(sizes)]
    return IQATable("t", tmp_path, paths, [p.name for p in paths], np.array([10.0, 50.0, 90.0][: len(paths)]),
                    (0.0, 100.0))


def test_patch_dataset_items(tmp_path):
    table = make_table(tmp_path)
    ds = PatchDataset(table, [0, 2], patch_size=16, n_patches=4, train=False)
    assert len(ds) == 8
    patch, mos, idx = ds[5]
    assert patch.shape == (3, 16, 16) and patch.dtype == torch.float32
    assert mos.dtype == torch.float32 and float(mos) == pytest.approx(0.9) and idx == 2


def test_normalisation_uses_imagenet_statistics(tmp_path):
    path = save(Image.new("RGB", (8, 8), (255, 0, 128)), tmp_path / "c.png")
    patches = image_patches(ImageCache().get(path), 8, 1, seed=0)
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    np.testing.assert_allclose(patches[0, :, 0, 0].numpy(), expected, rtol=1e-5)


def test_test_crops_are_fixed_per_image_and_match_image_patches(tmp_path):
    table = make_table(tmp_path)
    a = PatchDataset(table, [0, 1], 16, 5, train=False, seed=3)
    b = PatchDataset(table, [1], 16, 5, train=False, seed=3)  # image 1 in another position
    b.set_epoch(7)
    for j in range(5):
        assert torch.equal(a[5 + j][0], b[j][0])
    whole = image_patches(ImageCache().get(table.paths[1]), 16, 5, seed=(3, 1))
    assert torch.equal(torch.stack([a[5 + j][0] for j in range(5)]), whole)
    crops = {tuple(a[j][0][:, 0, 0].tolist()) for j in range(5)}
    assert len(crops) > 1  # different crops, not five copies of one


def test_training_crops_change_with_epoch_and_repeat_with_seed(tmp_path):
    table = make_table(tmp_path)
    ds = PatchDataset(table, [0, 1], 16, 6, train=True, seed=0)
    ds.set_epoch(0)
    e0 = torch.stack([ds[k][0] for k in range(len(ds))])
    ds.set_epoch(1)
    e1 = torch.stack([ds[k][0] for k in range(len(ds))])
    again = PatchDataset(table, [0, 1], 16, 6, train=True, seed=0)
    again.set_epoch(1)
    assert not torch.equal(e0, e1)
    assert torch.equal(e1, torch.stack([again[k][0] for k in range(len(again))]))


def test_small_images_are_upscaled_to_the_patch(tmp_path):
    table = make_table(tmp_path)  # image 2 is 20x10
    ds = PatchDataset(table, [2], 32, 2, train=True)
    assert ds[0][0].shape == (3, 32, 32)
    assert image_patches(ImageCache().get(table.paths[2]), 32, 3, seed=0).shape == (3, 3, 32, 32)


def test_hflip_off_gives_unflipped_training_crops(tmp_path):
    table = make_table(tmp_path, sizes=((16, 16),))
    ds = PatchDataset(table, [0], 16, 8, train=True, hflip=False)
    ref = image_patches(ImageCache().get(table.paths[0]), 16, 1, seed=0)[0]
    for k in range(8):
        assert torch.equal(ds[k][0], ref)


def test_dataloader_workers_with_disk_cache(tmp_path):
    table = make_table(tmp_path)
    cache = ImageCache(folder=tmp_path / "decoded")
    ds = PatchDataset(table, [0, 1, 2], 16, 4, train=False, cache=cache)
    serial = torch.cat([b[0] for b in DataLoader(ds, batch_size=4)])
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork")
    parallel = torch.cat([b[0] for b in loader])
    assert torch.equal(serial, parallel)
    assert len(list((tmp_path / "decoded").rglob("*.npy"))) == 3


def test_persistent_workers_follow_set_epoch(tmp_path):
    table = make_table(tmp_path)
    ds = PatchDataset(table, [0, 1], 16, 3, train=True, cache=ImageCache(folder=tmp_path / "decoded"))
    loader = DataLoader(ds, batch_size=6, num_workers=2, persistent_workers=True, multiprocessing_context="fork")
    seen = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen.append(torch.cat([b[0] for b in loader]))
        expected = torch.stack([ds[k][0] for k in range(len(ds))])  # computed here, in the main process
        assert torch.equal(seen[-1], expected)
    assert not torch.equal(seen[0], seen[1])


def _record_stats(monkeypatch, paths) -> list:
    """Every ``os.stat`` of one of ``paths`` from now on (``Path.stat`` goes through it too)."""
    watched = {os.path.abspath(p) for p in paths}
    calls, real = [], os.stat

    def stat(p, *args, **kw):
        if isinstance(p, (str, os.PathLike)) and os.path.abspath(p) in watched:
            calls.append(os.fspath(p))
        return real(p, *args, **kw)

    monkeypatch.setattr(os, "stat", stat)
    return calls


@pytest.mark.parametrize("memory_bytes", [None, 0])  # 0: every patch is read from the disk layer
def test_images_are_stat_once_per_dataset_load_not_once_per_patch(tmp_path, monkeypatch, memory_bytes):
    """3 images x 5 patches x 3 epochs = 45 patches, 45 stats before the cache remembered its keys;
    now one per image.  A file edited before the next load (run) still gets a fresh decode."""
    table = make_table(tmp_path)
    stats = _record_stats(monkeypatch, table.paths)
    cache = ImageCache(folder=tmp_path / "decoded", memory_bytes=memory_bytes)
    ds = PatchDataset(table, [0, 1, 2], 16, 5, train=True, cache=cache)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for k in range(len(ds)):
            ds[k]
    assert sorted(stats) == sorted(str(p) for p in table.paths) and cache.decodes == 3
    time.sleep(0.01)
    gradient_image(table.paths[0], w=80)  # edited between two runs
    stats.clear()
    again = PatchDataset(table, [0], 16, 5, train=True, cache=ImageCache(folder=tmp_path / "decoded"))
    assert again.cache.get_array(table.paths[0]).shape == (3, 48, 80) and again.cache.decodes == 1
    again.cache.get_array(table.paths[0])
    assert stats == [str(table.paths[0])]


def test_vflip_flips_some_training_patches_vertically_and_never_test_patches(tmp_path):
    """Recipe.vflip (TReS) reaches the data layer: a vertical gradient image shows which patches flipped."""
    import numpy as np
    from PIL import Image

    from biqabench.data import PatchDataset, build_table

    grad = np.repeat(np.linspace(0, 255, 64, dtype=np.float32)[:, None], 64, axis=1).astype(np.uint8)
    Image.fromarray(np.stack([grad] * 3, -1)).save(tmp_path / "g.png")
    table = build_table("t", tmp_path, tmp_path, ["g.png"], [50.0], scale=(0, 100), higher_better=True)

    def directions(ds):
        out = []
        for k in range(len(ds)):
            patch = ds[k][0][0]
            out.append(bool(patch[0].mean() > patch[-1].mean()))  # top brighter than bottom: flipped
        return out

    flipped = directions(PatchDataset(table, [0], 32, 40, train=True, seed=0, hflip=False, vflip=True))
    assert 5 < sum(flipped) < 35
    assert not any(directions(PatchDataset(table, [0], 32, 40, train=True, seed=0, hflip=False, vflip=False)))
    assert not any(directions(PatchDataset(table, [0], 32, 40, train=False, seed=0, vflip=True)))
