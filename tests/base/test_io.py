"""The one file wrapper under ``checkpoint.save``: what it counts and hashes,
and that a failed write surfaces as its own OSError (ENOSPC), not as torch's ``unexpected pos``."""

from __future__ import annotations

import errno
import hashlib
import io as pyio
import os

import pytest
import torch

from biqabench.training import checkpoint as ckpt
from biqabench.base import io as bio
from biqabench.base.errors import BiqaError

STATE = {"w": torch.arange(5000, dtype=torch.float32), "step": 3}


class _FullDisk:
    """A binary file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.buf = pyio.BytesIO()
        self.room = room

    def write(self, data) -> int:
        if self.buf.tell() + memoryview(data).nbytes > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.buf.write(data)

    def flush(self) -> None:
        pass

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc) -> None:
        pass


@pytest.mark.parametrize("hashing", [True, False])
def test_recorder_counts_and_hashes_exactly_the_bytes_written(hashing):
    f = pyio.BytesIO()
    out = bio.WriteRecorder(f, hashing=hashing)
    bio.torch_save_into(STATE, out)
    written = f.getvalue()
    assert out.size == len(written) > 5000 * 4 and out.error is None
    if hashing:
        assert out.sha.hexdigest() == hashlib.sha256(written).hexdigest()
    else:
        assert out.sha is None
    f.seek(0)
    assert torch.equal(torch.load(f, weights_only=True)["w"], STATE["w"])


def test_a_full_disk_raises_its_own_oserror_not_torchs_runtime_error():
    out = bio.WriteRecorder(_FullDisk(room=1000), hashing=True)
    with pytest.raises(OSError) as err:
        bio.torch_save_into(STATE, out)
    assert err.value.errno == errno.ENOSPC and out.error is err.value
    assert 0 < out.size <= 1000  # only what reached the file was counted


def test_a_checkpoint_on_a_full_disk_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "w.pt"
    ckpt.save(target, {"old": torch.zeros(2)})
    monkeypatch.setattr(ckpt, "open", lambda *a, **k: _FullDisk(room=500), raising=False)
    with pytest.raises(BiqaError) as err:
        ckpt.save(target, STATE)
    assert str(err.value) == f"cannot write {target}: No space left on device (nothing was half-written)"
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]
    assert set(ckpt.load(target).state) == {"old"}


def test_checkpoint_trailer_records_the_hash_and_size_of_the_torch_archive(tmp_path):
    path = ckpt.save(tmp_path / "c.pt", STATE, {"seed": 1})
    trailer = ckpt.read_trailer(path)
    archive = path.read_bytes()[: trailer["size"]]
    assert trailer["sha256"] == hashlib.sha256(archive).hexdigest()
    assert torch.load(pyio.BytesIO(archive), weights_only=True)["step"] == 3


def test_injected_enospc_fails_the_nth_checkpoint_write_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    monkeypatch.setattr(ckpt, "_writes", 0)
    monkeypatch.setenv("BIQABENCH_FAULT", "enospc-checkpoint:2")
    ckpt.save(path, {"step": 1})
    with pytest.raises(BiqaError, match=r"No space left on device \(nothing was half-written\)$"):
        ckpt.save(path, {"step": 2})
    ckpt.save(path, {"step": 3})  # the third write has room again
    assert ckpt.load(path).state["step"] == 3 and ckpt.load(ckpt.previous_path(path)).state["step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_injected_pause_happens_once_mid_write_and_the_file_stays_whole(tmp_path, monkeypatch):
    pauses = []
    monkeypatch.setattr(ckpt.time, "sleep", pauses.append)
    monkeypatch.setenv("BIQABENCH_FAULT", "slow-checkpoint:0.25")
    path = ckpt.save(tmp_path / "c.pt", STATE)
    assert pauses == [0.25]
    assert torch.equal(ckpt.load(path).state["w"], STATE["w"])


# -- Ctrl-C at the edges of an atomic write -----------------------------------------------------------
def test_ctrl_c_right_after_the_temporary_is_made_leaves_nothing(tmp_path, monkeypatch):
    """A SIGINT that arrives the instant mkstemp returns (before the cleanup's try) is held and
    delivered inside it: the KeyboardInterrupt still happens, the temporary does not outlive it."""
    import signal
    import tempfile
    import threading

    real = tempfile.mkstemp

    def mkstemp_then_ctrl_c(*a, **kw):
        made = real(*a, **kw)
        # to this thread: a process-wide kill may land on another thread (torch's, xdist's), whose
        # mask is not held; that case is the run folder sweep's (io.remove_temporaries)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        return made

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_ctrl_c)
    # Python's own Ctrl-C handler, also when the test process inherited SIGINT ignored (a background job)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            bio.write_text(tmp_path / "metrics.csv", "a,b\n")
            for _ in range(1000):  # unguarded, the interrupt would surface here, after a leak
                pass
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_remove_temporaries_deletes_only_atomic_write_leftovers(tmp_path):
    (tmp_path / "splits/0").mkdir(parents=True)
    stray = [tmp_path / ".metrics.csv.x1y2.tmp", tmp_path / "splits/0/.predictions.csv.abc.tmp"]
    kept = [tmp_path / "metrics.csv", tmp_path / "splits/0/notes.tmp", tmp_path / ".hidden"]
    for p in stray + kept:
        p.write_text("x")
    assert sorted(bio.remove_temporaries(tmp_path)) == sorted(stray)
    assert all(p.is_file() for p in kept) and not any(p.exists() for p in stray)
