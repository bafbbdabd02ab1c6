"""Device and precision: chosen once, here, and passed around as a :class:`Runtime`.

``--device auto`` picks CUDA, then MPS, then CPU.  ``--precision auto`` picks bf16 autocast where
the hardware runs it natively (CUDA with bf16 support; CPUs with AMX or AVX-512-BF16, where it
measured ~2.5x training and ~5x inference on ResNet-50 against fp32) and fp32 elsewhere.  fp32
is always available as the exact reference path.  Models run in channels_last, which is what
oneDNN and cuDNN tensor-core kernels prefer.  ``--compile`` runs the training steps through
``torch.compile`` (inductor fuses BatchNorm, ReLU and residual adds); the eager path stays the
default and the exact reference.  CPU intra-op threads are decided here too (:func:`choose_threads`,
:func:`threads`), for fine-tuning, pretraining and the degradation kernels alike.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from biqabench.base.errors import BiqaError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 (bf16 matmuls run natively)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    spec = str(spec).strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise BiqaError(f"--device {spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BiqaError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BiqaError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type == "mps" and not (torch.backends.mps.is_available()):
        raise BiqaError(f"--device {spec}: MPS is not available; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise BiqaError(f"--device {spec!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev


def resolve_precision(spec: str, device: torch.device) -> str:
    spec = str(spec).strip().lower()
    if spec not in PRECISIONS:
        raise BiqaError(f"--precision {spec!r} is not one of {', '.join(PRECISIONS)}")
    if spec != "auto":
        if spec == "fp16" and device.type == "cpu":
            raise BiqaError("--precision fp16 is not supported on CPU; use bf16 or fp32")
        return spec
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed. Build with :func:`get_runtime`."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    compile: bool = False  # run training steps through torch.compile

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return _DTYPES[self.precision]

    def autocast(self):
        """Autocast context for forward passes (a no-op for fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self):
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        enabled = self.precision == "fp16" and self.device.type == "cuda"
        return torch.amp.GradScaler(self.device.type, enabled=enabled)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device in channels_last (weights stay fp32; autocast handles bf16)."""
        return module.to(self.device, memory_format=torch.channels_last)

    def to(self, x: torch.Tensor) -> torch.Tensor:
        """Move an image batch to the device in channels_last."""
        x = x.to(self.device, non_blocking=self.device.type == "cuda")
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    def optimizer(self, cls: type, params, **options) -> torch.optim.Optimizer:
        """``cls(params, **options)`` with torch's fused kernels where it has them for this device.

        Why: the per-tensor (foreach) update is memory-bound; fused, one Adam step over TReS's
        150 M parameters took 0.12 s instead of 0.87 s on 2 CPU cores (SGD: 5x).  Same update
        up to float rounding; older torch versions or other devices fall back to the default.
        """
        if _fused_supported(cls, self.device.type):
            options = {**options, "fused": True}
        return cls(params, **options)

    def compiled(self, module):
        """``torch.compile(module)`` under ``--compile``, else ``module`` itself (the eager path).

        The compiled module shares the original's parameters; save and load state through the
        original (a compiled wrapper prefixes its keys).  The first calls pay the compilation
        (minutes for a ResNet-50 step on a small CPU; kernels are cached across runs).
        """
        if not self.compile:
            return module
        return torch.compile(module)

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        return f"{self.device} ({name}), {self.precision}"


@functools.lru_cache(maxsize=None)
def _fused_supported(cls: type, device_type: str) -> bool:
    """Whether ``cls(..., fused=True)`` runs a step on ``device_type`` (tried once on one scalar)."""
    if device_type not in ("cpu", "cuda"):
        return False
    try:
        p = torch.zeros(1, device=device_type, requires_grad=True)
        p.grad = torch.zeros_like(p)
        cls([p], lr=0.1, fused=True).step()
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def get_runtime(device: str = "auto", precision: str = "auto", compile: bool = False) -> Runtime:
    """The single place device, precision and compilation are decided.

    On a CPU without ``OMP_NUM_THREADS`` it uses every core (torch's own default can be fewer)."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    if dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    return Runtime(dev, prec, bool(compile))


def choose_threads(requested: int = 0) -> int:
    """Intra-op threads for a CPU run: ``requested`` if > 0, else torch's count, or 1 on a busy CPU.

    Why: OpenMP threads wait for each other at every op; when other processes already keep the
    cores busy (1-minute load average >= cores), a waiting thread spins while the one it waits
    for is descheduled.  Measured here (ResNet-50 step, 2 cores, load ~4): 1 thread ran a steady
    ~1.0 s per step, 2 threads 1.5-1.9 s with stalls of over 20 s.  ``OMP_NUM_THREADS`` (which
    torchrun sets) is respected.
    """
    if requested > 0:
        return requested
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] >= cores
    except (OSError, AttributeError):
        busy = False
    return 1 if busy else torch.get_num_threads()


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None: unchanged); the count before is restored.

    Small kernels suffer most from spinning threads: the QPT degradations ran 20x slower with
    several threads on a busy CPU (measured here: 0.6 s vs 12.6 s for the same ten batches), so
    they run single-threaded on CPU, and a pretraining run uses :func:`choose_threads`'s count.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
