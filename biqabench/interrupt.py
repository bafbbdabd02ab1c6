"""Turn SIGTERM into KeyboardInterrupt, so Ctrl-C and a scheduler's kill take the same path.

Long loops catch ``KeyboardInterrupt`` once, write their checkpoint atomically and exit; with
this installed, ``kill <pid>`` (SLURM's pre-emption, ``timeout``) does the same instead of
dropping the process mid-write.
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
