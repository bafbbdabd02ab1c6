"""Ctrl-C and SIGTERM take one path (biqabench.runtime.interrupt)."""

from __future__ import annotations

import signal
import threading

import pytest

from biqabench.runtime.interrupt import Interrupted, StopFlag, sigterm_as_interrupt


def test_sigterm_becomes_a_keyboard_interrupt_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match=f"signal {int(signal.SIGTERM)}"):
        with sigterm_as_interrupt():
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_flag_records_the_signal_and_lets_the_step_finish():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopFlag() as flag:
        assert flag.signal is None
        signal.raise_signal(signal.SIGTERM)  # no exception: the loop looks at the flag between steps
        assert flag.signal == signal.SIGTERM
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_second_ctrl_c_stops_at_once():
    with StopFlag() as flag:
        signal.raise_signal(signal.SIGINT)
        assert flag.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_outside_the_main_thread_nothing_is_installed():
    """signal.signal only works in the main thread: the helpers must then do nothing, not fail."""
    seen = {}

    def worker():
        with sigterm_as_interrupt():
            seen["sigterm"] = signal.getsignal(signal.SIGTERM)
        with StopFlag() as flag:
            seen["flag"] = flag.signal, dict(flag._previous)

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"sigterm": before, "flag": (None, {})}


def test_interrupted_is_a_keyboard_interrupt():
    """The CLI turns every KeyboardInterrupt into exit 130; Interrupted carries where the checkpoint went."""
    assert issubclass(Interrupted, KeyboardInterrupt)
