import pytest
import torch

from biqabench.runtime.device import get_runtime, resolve_precision
from biqabench.base.errors import BiqaError


def test_cpu_fp32_runtime_is_exact():
    rt = get_runtime("cpu", "fp32")
    assert rt.device.type == "cpu" and rt.amp_dtype is None
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with rt.autocast():
        assert lin(x).dtype == torch.float32


def test_cpu_bf16_autocast_computes_in_bf16():
    rt = get_runtime("cpu", "bf16")
    with rt.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16


def test_auto_precision_on_cpu_follows_the_hardware(monkeypatch):
    import biqabench.runtime.device as d

    monkeypatch.setattr(d, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(d, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("dev,prec,needle", [("gpu", "auto", "--device"), ("cpu", "fp8", "--precision"),
                                             ("cpu", "fp16", "not supported on CPU")])
def test_bad_device_or_precision_is_one_line(dev, prec, needle):
    with pytest.raises(BiqaError, match=needle):
        get_runtime(dev, prec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_absent_message():
    with pytest.raises(BiqaError, match="CUDA is not available"):
        get_runtime("cuda")


def test_runtime_optimizer_uses_fused_kernels_and_matches_the_default_update():
    from biqabench.runtime.device import _fused_supported

    rt = get_runtime("cpu", "fp32")
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    for cls, kw in ((torch.optim.Adam, {"weight_decay": 5e-4}), (torch.optim.SGD, {"momentum": 0.9})):
        ours = rt.optimizer(cls, a, lr=1e-2, **kw)
        plain = cls(b, lr=1e-2, **kw)
        assert ours.defaults.get("fused") is (True if _fused_supported(cls, "cpu") else None)
        for _ in range(5):
            grads = [torch.randn_like(p) for p in a]
            for p, q, g in zip(a, b, grads):
                p.grad, q.grad = g.clone(), g.clone()
            ours.step()
            plain.step()
        for p, q in zip(a, b):
            assert torch.allclose(p, q, atol=1e-5), (cls, (p - q).abs().max())


def test_threads_sets_the_count_for_the_block_and_restores_it_even_on_error():
    from biqabench.runtime.device import threads

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), threads(other):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with threads(None):
        assert torch.get_num_threads() == before


def test_choose_threads_takes_the_request_else_backs_off_on_a_busy_cpu(monkeypatch):
    import biqabench.runtime.device as d

    assert d.choose_threads(3) == 3
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(d.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(d.os, "getloadavg", lambda: (4.5, 4.0, 4.0))
    assert d.choose_threads(0) == 1
    monkeypatch.setattr(d.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert d.choose_threads(0) == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(d.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert d.choose_threads(0) == torch.get_num_threads()  # torchrun's (or the user's) setting wins
