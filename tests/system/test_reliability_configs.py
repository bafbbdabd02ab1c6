"""Config mistakes stop `eval`, `benchmark` and `pretrain` before any work, with one line naming
the file, the key and what it expects (or the closest existing name)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from conftest import TINY_RECIPE, invoke_cli

FAST = ["--device", "cpu", "--precision", "fp32", "--workers", "0", "--no-progress"]


def cli(capsys, *args) -> tuple[int, str]:
    """Run ``biqabench ARGS`` in-process; return (exit code, the single stderr line)."""
    code, _, line = invoke_cli(capsys, *args)
    return code, line


def yaml_file(tmp_path: Path, data: dict | str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def no_run_started() -> bool:
    runs = Path(os.environ["BIQABENCH_RESULTS"]) / "runs"
    return not runs.exists() or not any(runs.iterdir())


BASE = {"head": "linear", "weights": "random", "backbone": "tiny", "splits": 1, "recipe_overrides": TINY_RECIPE}


@pytest.mark.parametrize("bad, expected", [
    ({"hed": "linear"}, "unknown key 'hed'; did you mean 'head'?"),
    ({"splits": "many"}, "key 'splits' expects an integer, got 'many'"),
    ({"splits": 2.5}, "key 'splits' expects an integer, got 2.5"),
    ({"test": "demo-b"}, "key 'test' expects a list, got 'demo-b'"),
    ({"test": ["demo-b", 3]}, "key 'test[1]' expects a string, got 3"),
    ({"save_model": "yes please"}, "key 'save_model' expects true/false"),
    ({"head": None}, "key 'head' expects a string, got None"),                # missing value
    ({"recipe_overrides": ["lr", 1]}, "key 'recipe_overrides' expects a mapping"),
    ({"dataset_options": {"csv": "0,100"}}, "dataset_options: 'csv' must map to reader options"),
    ({"splits": 0}, "splits must be at least 1 (got 0)"),
    ({"seed": -1}, "seed must be 0 or more (got -1)"),
    ({"protocol": "probe"}, "protocol 'probe' is not one of finetune, linear-probe"),
    ({"test_frac": 1.5}, "test_frac must be in [0, 1) (got 1.5)"),
])
def test_eval_config_mistakes_name_the_key_and_type(tmp_path, capsys, bad, expected):
    path = yaml_file(tmp_path, {**BASE, **bad})
    code, line = cli(capsys, "eval", "--config", path, *FAST)
    assert code == 2
    assert expected in line, line
    assert str(path) in line
    assert no_run_started()


@pytest.mark.parametrize("bad, expected", [
    ({"epoch": 3}, "recipe_overrides: unknown key 'epoch'; did you mean 'epochs'?"),
    ({"lr": "fast"}, "recipe_overrides: key 'lr' expects a number, got 'fast'"),
    ({"lr": 10 ** 400}, "key 'lr' expects a number in float range, got 100000"),
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ({"epochs": 0}, "epochs must be at least 1, got 0"),
    ({"lr": -0.1}, "lr must be a positive number, got -0.1"),
    ({"optimizer": "adamax"}, "optimizer 'adamax' is not one of adam, adamw, sgd"),
])
def test_recipe_mistakes_name_the_key(tmp_path, capsys, bad, expected):
    path = yaml_file(tmp_path, {**BASE, "recipe_overrides": {**TINY_RECIPE, **bad}})
    code, line = cli(capsys, "eval", "--config", path, *FAST)
    assert code == 2
    assert expected in line, line


def test_yaml_that_is_not_a_config(tmp_path, capsys):
    for k, (text, expected) in enumerate([
        ("head: [linear\n", "line 2: not valid YAML"),
        ("- head\n- linear\n", "expected a mapping of key: value at the top, got list"),
        ("head: !!python/object/apply:os.system ['touch pwned']\n", "refused the YAML tag '!!python/object/apply:os.system'"),
        ("lr: " + "1" * 5000 + "\n", "unreadable value"),
    ]):
        code, line = cli(capsys, "eval", "--config", yaml_file(tmp_path, text, f"c{k}.yaml"), *FAST)
        assert code == 2 and expected in line, line
    assert not Path("pwned").exists()
    (tmp_path / "latin1.yaml").write_bytes("head: lin\xe9ar\n".encode("latin-1"))
    code, line = cli(capsys, "eval", "--config", tmp_path / "latin1.yaml", *FAST)
    assert code == 2 and "not UTF-8 text" in line
    code, line = cli(capsys, "eval", "--config", tmp_path / "absent.yaml", *FAST)
    assert code == 2 and "absent.yaml does not exist" in line


@pytest.mark.parametrize("args, expected", [
    (["--head", "hyperiqaa"], "unknown head 'hyperiqaa'; did you mean 'hyperiqa'?"),
    (["--backbone", "resnet5"], "unknown backbone 'resnet5'; did you mean 'resnet50'"),
    (["--train", "koniq"], "unknown dataset 'koniq'; did you mean 'koniq10k'?"),
    (["--test", "demo-a,demo-c"], "unknown dataset 'demo-c'; did you mean 'demo-b', 'demo-a'"),
    (["--weights", "imagenett"], "unknown weights 'imagenett'; did you mean 'imagenet'?"),
    (["--protocol", "linear_probe"], "--protocol 'linear_probe' is not one of finetune, linear-probe"),
    (["--recipe", "cpuu"], "config cpuu does not exist"),
])
def test_unknown_names_on_the_command_line_suggest_the_closest(tmp_path, capsys, args, expected):
    base = {"--head": "linear", "--weights": "random", "--backbone": "tiny", "--splits": "1"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    code, line = cli(capsys, "eval", *flat, *FAST)
    assert code == 2
    assert expected in line, line


def test_unknown_pretrainer_and_backbone_for_pretrain(capsys):
    code, line = cli(capsys, "pretrain", "qtp", "--backbone", "tiny")
    assert code == 2 and "unknown pretrainer 'qtp'; did you mean 'qpt'?" in line
    code, line = cli(capsys, "pretrain", "qpt", "--backbone", "resnet05")
    assert code == 2 and "unknown backbone 'resnet05'; did you mean" in line


def test_pretrain_config_mistakes(tmp_path, capsys):
    for data, expected in [({"batchsize": 4}, "unknown key 'batchsize'; did you mean 'batch_size'?"),
                           ({"optim": {"lr": "high"}}, "key 'lr' expects a number, got 'high'"),
                           ({"optim": {"schedule": "linear"}}, "optim.schedule must be cosine or constant")]:
        path = yaml_file(tmp_path, data)
        code, line = cli(capsys, "pretrain", "qpt", "--backbone", "tiny", "--steps", "1", "--config", path,
                         "--device", "cpu")
        assert code == 2 and expected in line and str(path) in line, line


MATRIX = {"name": "m", "heads": ["linear"], "weights": ["random"], "backbone": "tiny", "train": ["demo-a"],
          "splits": 1, "recipe": "cpu", "recipe_overrides": TINY_RECIPE, "device": "cpu", "precision": "fp32"}


@pytest.mark.parametrize("bad, expected", [
    ({"heads": ["linaer"]}, "unknown head 'linaer'; did you mean 'linear'?"),
    ({"backbone": "resnet51"}, "unknown backbone 'resnet51'; did you mean"),
    ({"train": ["demo_a"]}, "unknown dataset 'demo_a'; did you mean 'demo-a'"),
    ({"weights": ["qtp"]}, "unknown weights 'qtp'; did you mean 'qpt'?"),
    ({"head": "linear"}, "unknown key 'head'; did you mean 'heads'?"),
    ({"splits": "ten"}, "key 'splits' expects an integer, got 'ten'"),
    ({"heads": []}, "'heads' and 'weights' must each list at least one name"),
    ({"recipe_overrides": {"epoch": 1}}, "unknown key 'epoch'; did you mean 'epochs'?"),
])
def test_benchmark_matrix_mistakes_are_caught_before_any_job(tmp_path, capsys, bad, expected):
    path = yaml_file(tmp_path, {**MATRIX, **bad}, "matrix.yaml")
    code, line = cli(capsys, "benchmark", path, "--no-progress")
    assert code == 2
    assert expected in line and str(path) in line, line
    assert not (Path(os.environ["BIQABENCH_RESULTS"]) / "benchmarks").exists()


def test_dataset_reader_options_are_checked(tmp_path, capsys):
    """A missing required reader option (the csv reader's score scale) and an unknown one."""
    (tmp_path / "labels.csv").write_text("image,mos\na.jpg,1\n")
    for options, expected in [({}, "dataset 'csv' needs scale=LO,HI"),
                              ({"scale": "0,100", "scael": 1}, "dataset 'csv': unknown option(s) scael"),
                              ({"scale": "100,0"}, "scale needs LO < HI")]:
        path = yaml_file(tmp_path, {**BASE, "train": "csv", "data_root": str(tmp_path),
                                    "dataset_options": {"csv": options}})
        code, line = cli(capsys, "eval", "--config", path, *FAST)
        assert code == 2 and expected in line, line
