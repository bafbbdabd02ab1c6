"""One process is the degenerate case of torchrun's group (biqabench.runtime.distributed); a real
two-process group runs in tests/evaluation/test_runner_ddp.py and tests/plugins/test_qpt_ddp.py."""

from __future__ import annotations

import torch

from biqabench.runtime import distributed
from biqabench.runtime.device import get_runtime


def test_without_torchrun_the_process_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.is_main()
    runtime = get_runtime("cpu", "fp32")
    with distributed.process_group(runtime) as rt:
        assert rt is runtime and not torch.distributed.is_initialized()


def test_collectives_are_identities_in_one_process():
    assert distributed.broadcast({"path": "x"}) == {"path": "x"}
    distributed.barrier()  # returns at once
    assert distributed.any_rank(True, torch.device("cpu")) is True
    assert distributed.any_rank(False, torch.device("cpu")) is False
    module = torch.nn.Linear(2, 1)
    assert distributed.wrap_ddp(module, get_runtime("cpu", "fp32")) is module


def test_rank_zero_only_runs_the_function_and_keeps_its_result():
    calls = []

    @distributed.rank_zero_only
    def write(x):
        calls.append(x)
        return x * 2

    assert write(3) == 6 and calls == [3]


def test_rank_zero_only_returns_none_in_the_other_processes(monkeypatch):
    calls = []
    write = distributed.rank_zero_only(calls.append)
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    assert write("x") is None and calls == []
