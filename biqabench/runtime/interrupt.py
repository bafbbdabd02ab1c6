"""Stopping long loops cleanly: Ctrl-C and a scheduler's SIGTERM take the same path.

Two styles, one module, for the two training loops:

* :func:`sigterm_as_interrupt` (fine-tuning): SIGTERM raises ``KeyboardInterrupt`` like Ctrl-C;
  the loop catches it once, keeps its last epoch checkpoint and exits, so ``kill <pid>``
  (SLURM's pre-emption, ``timeout``) never drops the process mid-write;
* :class:`StopFlag` (pretraining, where a step is short and every process must agree): the
  signal only sets a flag, the current step finishes, a checkpoint is written, then
  :class:`Interrupted` is raised; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopFlag:
    """SIGINT/SIGTERM set a flag instead of killing the step; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)


class Interrupted(KeyboardInterrupt):
    """Raised after the checkpoint of an interrupted run is safely written."""
