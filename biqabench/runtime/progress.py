"""Progress bars that end on their real count.

tqdm redraws a bar at most every ``mininterval`` (0.1 s), and a bar made with ``leave=False``
is wiped on close without a last redraw.  A pass over a small set (a 34-image test part, three
files to score) ends inside the first interval, so the only frame ever written was the first,
``test demo-a: 0/34`` (or ``predict: 0img`` where the total was unknown), and a log read that
as nothing done.  :class:`ProgressBar` draws its final count before closing, so the last frame in
a terminal's scrollback or a CI log is ``34/34``; a bar that is left draws it anyway.
"""

from __future__ import annotations

from tqdm.auto import tqdm as _tqdm


class ProgressBar(_tqdm):
    """``tqdm`` that draws its final count before a ``leave=False`` close wipes the line."""

    def close(self) -> None:
        if not self.disable and not self.leave and self.n != self.last_print_n:
            self.refresh()
        super().close()


__all__ = ["ProgressBar"]
