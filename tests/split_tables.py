"""Small IQA tables for split tests: one MOS per image, and a synthetic set with reference contents."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biqabench.data import IQATable


def authentic_table(n: int) -> IQATable:
    """``n`` images, each its own content (an authentic-distortion set such as CLIVE)."""
    names = [f"img{i:03d}.jpg" for i in range(n)]
    return IQATable("auth", None, [Path("/x") / n_ for n_ in names], names, np.linspace(0, 100, n), (0, 100))


def synthetic_table(refs: int, per_ref: int) -> IQATable:
    """``refs`` reference contents with ``per_ref`` distorted versions each (KADID/TID-style)."""
    names = [f"r{r:02d}_d{d}.png" for r in range(refs) for d in range(per_ref)]
    content = [f"r{r:02d}" for r in range(refs) for _ in range(per_ref)]
    return IQATable("syn", None, [Path("/x") / n for n in names], names, np.arange(len(names), dtype=float),
                    (0, 100), content=np.array(content, dtype=object))
