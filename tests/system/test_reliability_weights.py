"""Bad weights at the command level: every case stops `eval` before training with exit code 2
and one line naming the file and the fix.  (API-level checks: tests/components/test_weights.py.)"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from biqabench.components.backbones import create_backbone
from biqabench.components.weights import WeightsStore
from conftest import invoke_cli

FAST = ["--head", "linear", "--splits", "1", "--device", "cpu", "--precision", "fp32", "--workers", "0",
        "--no-progress"]


def cli(capsys, *args) -> tuple[int, str]:
    """Run ``biqabench ARGS`` in-process: (exit code, the single stderr line, else stdout)."""
    code, out, line = invoke_cli(capsys, *args)
    return code, line or out


def eval_with(capsys, weights, backbone: str = "tiny") -> tuple[int, str]:
    code, line = cli(capsys, "eval", "--weights", weights, "--backbone", backbone, *FAST)
    runs = Path(os.environ["BIQABENCH_RESULTS"]) / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a run started with unusable weights"
    return code, line


@pytest.fixture
def tiny_state() -> dict[str, torch.Tensor]:
    return create_backbone("tiny").state_dict()


def test_weights_of_another_backbone(tmp_path, capsys, tiny_state):
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_state, str(path))
    code, line = eval_with(capsys, path, backbone="resnet18")
    assert code == 2
    assert f"{path} does not fit backbone 'resnet18'" in line and "Was it made for another backbone?" in line


def test_truncated_checkpoints(tmp_path, capsys, tiny_state):
    pth = tmp_path / "cut.pth"
    torch.save(tiny_state, pth)
    pth.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    code, line = eval_with(capsys, pth)
    assert code == 2 and f"cannot read checkpoint {pth}" in line and "truncated or not a torch file?" in line
    st = tmp_path / "cut.safetensors"
    save_file(tiny_state, str(st))
    st.write_bytes(st.read_bytes()[:100])
    code, line = eval_with(capsys, st)
    assert code == 2 and f"cannot read {st} as safetensors" in line


class _RunsCode:
    """Unpickling this would create a file: the test checks it never appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_execute_code_is_refused_not_run(tmp_path, capsys, tiny_state):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:  # a torch zip checkpoint whose pickle calls os.system
        torch.save({"state_dict": tiny_state, "extra": _RunsCode(marker)}, f, pickle_module=pickle)
    code, line = eval_with(capsys, path)
    assert code == 2
    assert f"refused to load {path}" in line and "loading it could run code" in line
    assert "Re-save it as a plain state_dict or safetensors" in line
    assert not marker.exists()


def test_missing_qpt_weights_say_how_to_make_them(capsys, tiny_state):
    code, line = eval_with(capsys, "qpt")
    assert code == 2
    assert "no 'qpt' weights for backbone 'tiny'" in line
    assert "make them with: biqabench pretrain qpt --backbone tiny" in line
    WeightsStore().save(tiny_state, producer="qpt", backbone="resnet18")  # weights exist, for another backbone
    code, line = eval_with(capsys, "qpt")
    assert code == 2 and "(it has qpt weights for: resnet18)" in line


def test_odd_weights_files(tmp_path, capsys):
    code, line = eval_with(capsys, tmp_path / "absent.pth")
    assert code == 2 and f"weights file {tmp_path / 'absent.pth'} does not exist" in line
    notes = tmp_path / "notes.pth"
    torch.save({"epoch": 3, "comment": "no tensors here"}, notes)
    code, line = eval_with(capsys, notes)
    assert code == 2 and "holds no state_dict of tensors (top-level keys: epoch, comment)" in line
    text = tmp_path / "weights.safetensors"
    text.write_text("not weights")
    code, line = eval_with(capsys, text)
    assert code == 2 and "as safetensors" in line


def test_damaged_store_manifest_is_skipped_not_fatal(capsys, tiny_state):
    rec = WeightsStore().save(tiny_state, producer="qpt", backbone="tiny")
    rec.file.with_suffix(".json").write_text("{ not json")
    code, out = cli(capsys, "weights", "list")
    assert code == 0 and "(built in)" in out
    code, line = eval_with(capsys, "qpt")  # the only qpt record is unreadable: as if absent
    assert code == 2 and "no 'qpt' weights for backbone 'tiny'" in line
