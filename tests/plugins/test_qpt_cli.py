"""The command line: ``biqabench qpt preview`` and ``biqabench pretrain qpt`` end to end (tiny backbone)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from biqabench.cli import app


def photo(path, size=(80, 60)):
    rng = np.random.default_rng(0)
    base = rng.random((size[1] // 10, size[0] // 10, 3))
    arr = np.kron(base, np.ones((10, 10, 1))) * 255
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def test_preview_draws_a_grid_with_recipes(tmp_path):
    img = photo(tmp_path / "in.png")
    out = tmp_path / "grid.png"
    res = CliRunner().invoke(app, ["qpt", "preview", str(img), "-o", str(out), "-n", "3", "--seed", "2", "--size", "64"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "wrote" in res.output
    with Image.open(out) as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_preview_rejects_a_bad_config(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("skip_prob: 2\n")
    res = CliRunner().invoke(app, ["qpt", "preview", str(photo(tmp_path / "in.png")), "-o", str(tmp_path / "g.png"),
                                   "--config", str(cfg)])
    assert res.exit_code != 0 and "skip_prob" in str(res.exception)


def test_pretrain_command_fills_the_weights_store(tmp_path):
    data = tmp_path / "images" / "class_a"
    data.mkdir(parents=True)
    for i in range(3):
        photo(data / f"{i}.png")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("crop_size: 32\nqueue_size: 16\nembed_dim: 8\n")
    res = CliRunner().invoke(app, ["pretrain", "qpt", "--backbone", "tiny", "--data", str(tmp_path / "images"),
                                   "--steps", "2", "--batch-size", "3", "--patch-size", "16", "--config", str(cfg),
                                   "--device", "cpu", "--precision", "fp32", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "saved qpt weights for tiny" in res.output
    listing = CliRunner().invoke(app, ["weights", "list"])
    assert listing.exit_code == 0
    assert any(line.split("|")[1].strip() == "qpt" and "tiny" in line for line in listing.output.splitlines()
               if line.count("|") > 2)
