import pytest
import torch

from biqabench.device import get_runtime, resolve_precision
from biqabench.errors import BiqaError


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
    import biqabench.device as d

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
