"""What every speed benchmark shares: a result row, paired timing, and the machine's description.

Why paired timing: this project's machines are small and shared, so an absolute time says more
about the neighbours than about the code.  Each benchmark times its own path and a reference
path *alternately* in the same process (ours, reference, ours, reference...), so both see the
same load, and reports their ratio.  The best time of each side is used: on a busy CPU,
interference only ever adds time, so the fastest repetition is the closest to the true cost.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:  # sibling scripts import each other as plain modules
    sys.path.insert(0, str(REPO / "benchmarks"))


@dataclass
class Result:
    """One row of the table: ``ours`` and ``reference`` in ``unit``; ``ratio`` = how many times
    better ours is (for throughputs ours/reference, for times reference/ours)."""

    name: str
    ours: float
    reference: float
    unit: str
    ratio: float
    target: float                 # the ratio must be >= target (or <= for "lower is better" rows)
    passed: bool
    target_text: str = ""         # e.g. ">= 3x"; default built from ``target``
    ours_label: str = ""          # what "ours" is, for the README
    reference_label: str = ""
    notes: str = ""               # extra figures (agreement, waiting time...)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.target_text:
            self.target_text = f">= {self.target:g}x"

    def as_dict(self) -> dict:
        return asdict(self)


def ratio_result(name: str, ours: float, reference: float, unit: str, target: float, *,
                 higher_is_better: bool = True, extra_ok: bool = True, **kw) -> Result:
    """A row whose figure is a speed-up: ours/reference for throughputs, reference/ours for times.
    ``extra_ok`` ANDs another condition into pass/fail (e.g. predictions agree)."""
    ratio = ours / reference if higher_is_better else reference / ours
    return Result(name, ours, reference, unit, ratio, target, bool(ratio >= target and extra_ok), **kw)


def paired_best(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Best wall time of each callable over ``rounds`` alternating repetitions (after warm-up)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, with its family/model numbers (a VM often shows
    only a generic name such as "AMD EPYC")."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu family", "model") and key not in info:
                    info[key] = value.strip()
                if not line.strip() and info:
                    break
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    return name


def cpu_features() -> str:
    """The matrix-unit flags that decide bf16 speed (AMX, AVX-512 BF16/VNNI)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ""
    wanted = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")
    return " ".join(f for f in wanted if f in flags)


def machine() -> dict[str, str]:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "cpu_features": cpu_features(),
        "torch_threads": str(torch.get_num_threads()),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": " ".join(f"{v:.1f}" for v in load),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def fmt(v: float) -> str:
    if v != v:  # nan
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def set_threads(n: int) -> None:
    """Use ``n`` torch threads here and in child processes (0: leave the default).

    ``OMP_NUM_THREADS`` is set too, because :func:`biqabench.runtime.device.get_runtime` otherwise
    resets torch to one thread per core.
    """
    if n and n > 0:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(n)
        torch.set_num_threads(n)
