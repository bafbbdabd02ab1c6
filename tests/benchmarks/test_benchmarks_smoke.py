"""The speed benchmarks run end to end on tiny sizes and return sane rows.

Nothing here asserts a speed: timings on a shared machine are noise.  What is checked is that
each benchmark's measuring function runs, that both sides did the same work (same losses,
agreeing predictions), and that run_all renders a table into the README between its markers.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """One torch thread, as run_all uses (get_runtime keeps it because OMP_NUM_THREADS is set);
    restored afterwards so other tests are unaffected."""
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sane(r: common.Result) -> None:
    assert r.ours > 0 and r.reference > 0 and math.isfinite(r.ours) and math.isfinite(r.reference)
    assert math.isfinite(r.ratio) and r.ratio > 0
    assert isinstance(r.passed, bool) and r.name and r.unit


def test_paired_best_alternates_and_keeps_the_fastest():
    calls = []
    best = common.paired_best({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert set(best) == {"a", "b"} and all(0 <= v < 1 for v in best.values())


def test_ratio_result_direction_and_extra_condition():
    faster = common.ratio_result("t", 30.0, 10.0, "img/s", 2.0)
    assert faster.ratio == pytest.approx(3.0) and faster.passed and faster.target_text == ">= 2x"
    times = common.ratio_result("t", 1.0, 4.0, "s", 3.0, higher_is_better=False)
    assert times.ratio == pytest.approx(4.0) and times.passed
    assert not common.ratio_result("t", 30.0, 10.0, "img/s", 2.0, extra_ok=False).passed
    assert not common.ratio_result("t", 15.0, 10.0, "img/s", 2.0).passed


def test_machine_description_names_cpu_torch_and_date():
    m = common.machine()
    assert m["cpu"] and m["torch"] == torch.__version__ and int(m["cores"]) >= 1 and m["date"][:2] == "20"


def test_finetune_step_both_sides_compute_the_same_loss():
    import bench_finetune

    r = bench_finetune.measure(batch=2, steps=1, backbone="tiny", patch=64, progress=False)
    _sane(r)
    assert r.extra["loss_ours"] == pytest.approx(r.extra["loss_ref"], rel=0.05)


def test_qpt_step_and_pipeline_on_tiny_backbone():
    import bench_qpt

    step = bench_qpt.measure_step("tiny", batch=4, steps=1, patch=32, progress=False)
    _sane(step)
    assert step.extra["loss_ours"] == pytest.approx(step.extra["loss_ref"], rel=0.05)
    pipe = bench_qpt.measure_pipeline("tiny", batch=4, steps=2, workers=0, progress=False)
    e = pipe.extra
    assert e["step_s"] > 0 and e["make_batch_s"] > 0 and e["wait_s"] >= 0
    assert pipe.ours == pytest.approx(100 * (e["wait_s"] + e["make_batch_s"]) /
                                      (e["wait_s"] + e["make_batch_s"] + e["step_s"]))


def test_degradations_benchmark_on_a_few_small_images():
    import bench_degradations

    _sane(bench_degradations.measure(batch=4, size=32, repeats=1, threads=1))


def test_data_epochs_on_tiny_jpegs(tmp_path):
    import bench_data

    from biqabench.data import IQATable

    (tmp_path / "img").mkdir()
    paths = bench_data.make_jpegs(tmp_path / "img", 4, 96, 64)
    table = IQATable("bench", tmp_path, paths, [p.name for p in paths], np.linspace(0, 100, 4), (0, 100))
    t = bench_data.measure(table, 32, 2, 4, 0, tmp_path / "decoded")
    assert set(t) >= {"epoch1", "epoch2", "disk", "every"} and all(v > 0 for v in t.values())


def test_roofline_counts_resnet50_flops():
    import bench_roofline

    r = bench_roofline.measure(batch=1, size=64, matmul=128, rounds=1, progress=False)
    _sane(r)
    # ResNet-50 is ~4.1 G multiply-adds at 224 px, i.e. ~8.2 GFLOP; at 64 px (64/224)^2 of that
    assert r.extra["flops_per_image"] == pytest.approx(8.2e9 * (64 / 224) ** 2, rel=0.1)


def test_peak_rss_is_read_in_mib():
    """In a fresh process (this one's peak is long past): touching 128 MiB raises the peak by ~128."""
    import subprocess

    code = ("import sys; sys.path.insert(0, sys.argv[1]); import bench_memory as m; a = m.peak_rss_mb(); "
            "b = bytearray(128 << 20); print(m.peak_rss_mb() - a)")
    out = subprocess.run([sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, check=True)
    assert 100 < float(out.stdout) < 200


def test_run_all_writes_the_table_between_the_readme_markers(tmp_path, monkeypatch):
    import run_all

    readme = tmp_path / "README.md"
    readme.write_text(f"# Bench\n\nkept text\n\n{run_all.START}\nold table\n{run_all.END}\n\ntail text\n")
    monkeypatch.setattr(run_all, "README", readme)
    monkeypatch.setattr(run_all, "BENCHMARKS", {"fake": lambda quick: [
        common.ratio_result("1. fake", 6.0, 2.0, "img/s", 2.0, notes="n1"),
        common.Result("7. roof", 50.0, 100.0, "GFLOP/s", 0.5, 0.0, True, target_text="report")]})
    assert run_all.main(["--quick", "--threads", "0"]) == 0  # 0: leave this process's threads alone
    text = readme.read_text()
    assert "kept text" in text and "tail text" in text and "old table" not in text
    assert "| 1. fake" in text and "3.00x" in text and "pass" in text and "50%" in text and "info" in text
    assert common.cpu_model() in text and torch.__version__ in text


@pytest.mark.slow
def test_scoring_benchmark_agrees_and_builds_pyiqa_offline():
    import timm

    import bench_scoring

    real_create = timm.create_model
    r = bench_scoring.measure(n_images=2, batch_images=2, progress=False)
    assert timm.create_model is real_create  # the offline stubs were undone
    _sane(r)
    assert r.extra["srcc_bf16_fp32"] > 0.99 and r.extra["mean_abs_diff"] < 0.05


@pytest.mark.slow
def test_score_command_benchmark_runs_offline_on_files():
    import bench_score_command

    r = bench_score_command.measure(n_images=2, chunk=2, precision="fp32", progress=False, fit_with=8)
    _sane(r)
    assert r.extra["images"] == 2 and r.extra["srcc_vs_fp32"] == pytest.approx(1.0)


@pytest.mark.slow
def test_memory_benchmark_in_fresh_processes():
    import bench_memory

    r = bench_memory.measure_scoring(5, 10, progress=False)
    _sane(r)
    assert r.extra["large"]["images"] == 10
    r = bench_memory.measure_qpt_steps(2, 4, n_images=8, progress=False)
    _sane(r)


def test_scoring_folds_batchnorm_exactly_and_leaves_the_model_alone():
    """The fast path the scoring benchmark measures (engine.inference_model): BatchNorm folded
    into the convolutions gives the same scores in fp32, and the caller's model is untouched."""
    import copy

    from biqabench.runtime.device import get_runtime
    from biqabench.training.engine import fold_batchnorms, inference_model, predict_images
    from biqabench.components.heads import create_head

    torch.manual_seed(0)
    model = create_head("hyperiqa", "tiny", weights="random").eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics that matter
            m.running_mean.normal_(0, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(4, 3, 64, 64)

    folded = copy.deepcopy(model)
    assert fold_batchnorms(folded) == n_bn > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)

    fp32, bf16 = get_runtime("cpu", "fp32"), get_runtime("cpu", "bf16")
    assert inference_model(model, fp32) is model  # the exact path runs the model as it is
    fast = inference_model(model, bf16)
    assert fast is not model and sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn
    exact = predict_images(model, [x[:2], x[2:]], fp32, progress=False)
    approx = predict_images(model, [x[:2], x[2:]], bf16, progress=False)
    np.testing.assert_allclose(approx, exact, atol=0.05)
