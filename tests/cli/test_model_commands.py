"""`biqabench score / predict / export / test` and images as users have them (docs/reliability.md,
section "Scoring images as users have them")."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import invoke_cli

RUN = ["--device", "cpu", "--precision", "fp32", "--no-progress"]


def noisy(w=48, h=40, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def scores_of(out: str, text: bool = False) -> pd.DataFrame:
    """The CSV ``score`` printed (``text``: every cell a string, empty where there is no value)."""
    if text:
        return pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    return pd.read_csv(io.StringIO(out))


def test_score_takes_files_folders_and_globs(tiny_model_run, tmp_path, capsys):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for k, where in enumerate(["a/x.jpg", "a/deep/y.png", "b.jpg"]):
        noisy(seed=k).save(tmp_path / where)
    (tmp_path / "a" / "notes.txt").write_text("not an image, not picked up from a folder")
    code, out, err = invoke_cli(capsys, "score", tmp_path / "a", f"{tmp_path}/*.jpg", "--model", tiny_model_run, *RUN)
    assert code == 0, err
    df = scores_of(out)
    assert [Path(p).name for p in df.image] == ["y.png", "x.jpg", "b.jpg"]
    assert np.isfinite(df.pred).all() and set(df.scale) == {"0-100 (higher is better)"}
    assert "scored 3 of 3 images" in err
    code, out, err = invoke_cli(capsys, "score", tmp_path / "b.jpg", "--model", tiny_model_run, "-o",
                                tmp_path / "s.csv", *RUN)
    assert code == 0 and len(pd.read_csv(tmp_path / "s.csv")) == 1
    code, _, err = invoke_cli(capsys, "score", f"{tmp_path}/*.gif", "--model", tiny_model_run, *RUN)
    assert code == 2 and "matches no files" in err


def user_images(root: Path) -> dict[str, str]:
    """Files as users have them -> what should happen ('' = a plain score)."""
    root.mkdir(parents=True, exist_ok=True)
    base = noisy(60, 44)
    base.convert("L").save(root / "grey.png")
    base.convert("RGBA").save(root / "rgba.png")
    base.convert("P").save(root / "palette.png")
    Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257)).save(root / "sixteen.png")
    base.convert("CMYK").save(root / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(root / "rotated.jpg", exif=exif.tobytes())
    frames = [noisy(50, 40, seed=s) for s in (1, 2)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    noisy(12, 9).save(root / "small.png")
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.png").write_text("this is not a picture")
    return {"grey.png": "", "rgba.png": "", "palette.png": "", "sixteen.png": "", "cmyk.jpg": "",
            "rotated.jpg": "", "animated.gif": "", "small.png": "upscaled: 12x9",
            "zero.jpg": "is empty (0 bytes", "text.png": "is not a readable image"}


def test_images_as_users_have_them_with_skip_bad(tiny_model_run, tmp_path, capsys):
    expected = user_images(tmp_path / "in")
    code, out, err = invoke_cli(capsys, "score", tmp_path / "in", "--model", tiny_model_run, "--skip-bad", *RUN)
    assert code == 0, err
    df = scores_of(out, text=True)
    assert sorted(Path(p).name for p in df.image) == sorted(expected)
    for _, row in df.iterrows():
        want = expected[Path(row.image).name]
        if want.startswith("upscaled"):
            assert row.note.startswith(want) and "32 px test crop" in row.note and row.pred != ""
        elif want:
            assert row.pred == "" and want in row.error and Path(row.image).name in row.error
        else:
            assert np.isfinite(float(row.pred)) and row.error == "", row
    assert "scored 8 of 10 images" in err and "2 skipped as unreadable" in err and "1 smaller than" in err


def test_a_bad_file_without_skip_bad_is_one_line(tiny_model_run, tmp_path, capsys):
    user_images(tmp_path / "in")
    code, _, line = invoke_cli(capsys, "score", tmp_path / "in" / "grey.png", tmp_path / "in" / "zero.jpg",
                               "--model", tiny_model_run, *RUN)
    assert code == 2 and "zero.jpg is empty" in line and "--skip-bad" in line


def test_huge_images_are_refused_by_the_pixel_limit(tiny_model_run, tmp_path, capsys, monkeypatch):
    noisy(60, 50).save(tmp_path / "big.png")
    noisy(20, 20).save(tmp_path / "ok.png")
    monkeypatch.setenv("BIQABENCH_MAX_PIXELS", "1000")
    code, out, err = invoke_cli(capsys, "score", tmp_path, "--model", tiny_model_run, "--skip-bad", *RUN)
    assert code == 0
    df = scores_of(out, text=True)
    big = df[df.image.str.endswith("big.png")].iloc[0]
    assert "over the limit of 1,000" in big.error and "BIQABENCH_MAX_PIXELS" in big.error
    assert np.isfinite(float(df[df.image.str.endswith("ok.png")].iloc[0].pred))


def test_animated_gif_scores_its_first_frame():
    from biqabench.data.images import decode_array

    buf = io.BytesIO()
    first, second = noisy(30, 20, seed=3), noisy(30, 20, seed=4)
    first.save(buf, format="GIF", save_all=True, append_images=[second])
    buf.seek(0)
    with Image.open(buf) as im:
        expected = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    buf.seek(0)
    path = Path(__import__("tempfile").mkdtemp()) / "anim.gif"
    path.write_bytes(buf.getvalue())
    assert np.array_equal(decode_array(path), expected)


def test_out_of_scale_predictions_are_counted():
    from types import SimpleNamespace

    from biqabench.model.load import ModelInfo
    from biqabench.model.scoring import outside_scale, report

    assert outside_scale(np.array([-1.0, 0.0, 50.0, 100.0, 101.0, np.nan]), (0.0, 100.0)) == 2
    assert outside_scale(np.array([-5.0, 1e9]), (0.0, float("nan"))) == 1  # unknown top checks nothing
    info = ModelInfo(head="linear", backbone="tiny", scale=(0.0, 100.0), train_set="demo-a", patch_size=32)
    df = pd.DataFrame({"image": ["a", "b", "c"], "pred": [50.0, 104.0, np.nan], "note": ["", "", ""],
                       "error": ["", "", "image c is empty"]})
    text = report(df, SimpleNamespace(info=info))
    assert "scored 2 of 3" in text and "1 of 2 predictions fall outside the scale 0-100" in text


def test_predict_is_an_alias_of_score(tiny_model_run, tmp_path, capsys):
    noisy().save(tmp_path / "a.png")
    _, by_score, _ = invoke_cli(capsys, "score", tmp_path / "a.png", "--model", tiny_model_run, *RUN)
    _, by_run, _ = invoke_cli(capsys, "predict", tmp_path / "a.png", "--run", tiny_model_run, *RUN)
    _, by_model, _ = invoke_cli(capsys, "predict", tmp_path / "a.png", "--model", tiny_model_run, *RUN)
    assert by_score == by_run == by_model
    code, _, line = invoke_cli(capsys, "predict", tmp_path / "a.png")
    assert code == 2 and "--model" in line


def test_export_command_and_scoring_with_the_file(tiny_model_run, tmp_path, capsys):
    noisy().save(tmp_path / "a.png")
    code, out, err = invoke_cli(capsys, "export", tiny_model_run, "-o", tmp_path / "m.safetensors")
    assert code == 0 and "linear on tiny, trained on demo-a" in out, err
    _, from_file, _ = invoke_cli(capsys, "score", tmp_path / "a.png", "--model", tmp_path / "m.safetensors", *RUN)
    _, from_run, _ = invoke_cli(capsys, "score", tmp_path / "a.png", "--model", tiny_model_run, *RUN)
    assert from_file == from_run
    code, _, line = invoke_cli(capsys, "export", tiny_model_run, "-o", tmp_path / "m.pt")
    assert code == 2 and ".safetensors" in line


def test_test_command_writes_a_run_folder_results_can_read(tiny_model_run, tmp_path, capsys):
    """Zero-shot: a run's model reproduces its eval cross-dataset SRCC; pyiqa:piqe sits beside it
    in `results compare`."""
    from biqabench.results import load_run

    code, out, err = invoke_cli(capsys, "test", "--model", tiny_model_run, "--test", "demo-b", *RUN,
                                "--run-dir", tmp_path / "runs" / "ours")
    assert code == 0, err
    ours = load_run(tmp_path / "runs" / "ours")
    for name in ("config.yaml", "manifest.json", "predictions.csv", "metrics.csv", "summary.md", "plots/scatter-demo-b.png"):
        assert (ours.path / name).is_file(), name
    assert ours.manifest["kind"] == "test" and ours.manifest["status"] == "finished"
    assert ours.manifest["train"] == "demo-a" and ours.manifest["model"]["head"] == "linear"
    evaluated = pd.read_csv(tiny_model_run / "metrics.csv")
    same = evaluated[(evaluated.split == 0) & (evaluated.test_set == "demo-b")].srcc.iloc[0]
    assert ours.metrics.srcc.iloc[0] == pytest.approx(same, abs=1e-6)
    code, out, err = invoke_cli(capsys, "test", "--model", "pyiqa:piqe", "--test", "demo-b", *RUN,
                                "--run-dir", tmp_path / "runs" / "piqe")
    assert code == 0, err
    piqe = load_run(tmp_path / "runs" / "piqe")
    assert np.isfinite(piqe.metrics.srcc).all()
    preds = piqe.predictions()
    assert {"score", "pred", "mos"} <= set(preds.columns)
    code, out, err = invoke_cli(capsys, "results", "compare", piqe.path, ours.path)
    assert code == 0, err
    row = next(ln for ln in out.splitlines() if "demo-b" in ln and "srcc" in ln)
    assert row.count("-") < 6, out  # both runs have a value on the same row (no missing cells)
    code, out, err = invoke_cli(capsys, "results", "show", piqe.path)
    assert code == 0 and "zero-shot" in out
    assert json.loads((piqe.path / "manifest.json").read_text())["weights"] == "pyiqa"
    code, _, line = invoke_cli(capsys, "test", "--model", "pyiqa:piqe", "--test", "nosuchset", *RUN)
    assert code == 2 and "nosuchset" in line


@pytest.fixture(scope="module")
def all_models_run(tmp_path_factory):
    """A two-split eval that keeps every split's head (--save-all-models)."""
    from biqabench.evaluation.runner import EvalConfig, evaluate

    recipe = dict(patch_size=32, train_patches=2, test_patches=2, batch_size=32, epochs=1, lr=1e-3, lr_step=0)
    cfg = EvalConfig(head="linear", weights="random", backbone="tiny", splits=2, recipe="cpu", recipe_overrides=recipe,
                     device="cpu", precision="fp32", workers=0, save_all_models=True)
    return evaluate(cfg, run_dir=tmp_path_factory.mktemp("all_models") / "run", progress=False)


def test_export_any_kept_split_and_score_as_that_split_did(all_models_run, tmp_path, capsys):
    from biqabench import load_model
    from biqabench.data import load_dataset

    code, out, err = invoke_cli(capsys, "export", all_models_run, "--split", "1", "-o", tmp_path / "m1.safetensors")
    assert code == 0, err
    m = load_model(tmp_path / "m1.safetensors", device="cpu", precision="fp32")
    assert m.info.extra["split"] == 1
    table = load_dataset("demo-b")
    preds = pd.read_csv(all_models_run / "predictions.csv").query("test_set == 'demo-b'")
    rows = {k: preds[preds.split == k].head(6) for k in (0, 1)}
    files = [table.paths[table.names.index(n)] for n in rows[1].image]
    assert np.allclose(m(files), rows[1].pred.to_numpy(), atol=1e-4)  # split 1's head, not split 0's
    assert not np.allclose(rows[0].pred.to_numpy(), rows[1].pred.to_numpy(), atol=1e-4)
    code, _, line = invoke_cli(capsys, "export", all_models_run, "--split", "2", "-o", tmp_path / "m2.safetensors")
    assert code != 0 and "split 2" in line and "finished split(s) 0, 1 only" in line and "split(s) 0, 1" in line


def test_export_of_a_split_whose_model_was_not_kept_names_the_kept_ones(tiny_model_run, tmp_path, capsys):
    code, _, line = invoke_cli(capsys, "export", tiny_model_run, "--split", "1", "-o", tmp_path / "m.safetensors")
    assert code != 0 and "kept no model for split 1" in line and "models kept: split(s) 0" in line
