"""Evidence that QPT's pretext task learns quality: a linear probe on demo-a, QPT against random
weights of the same backbone (benchmarks/probe_qpt.py).  Slow: ~1000 ResNet-18 steps on CPU."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_qpt_features_rank_quality_better_than_random_ones(tmp_path):
    import probe_qpt

    r = probe_qpt.run("resnet18", steps=1000, seed=0, workdir=tmp_path, progress=False)
    for variant in probe_qpt.VARIANTS:
        rnd, qpt = r["random"][variant], r["qpt"][variant]
        assert all(math.isfinite(v) for v in (rnd["srcc"], qpt["srcc"]))
        # ranking the versions of one content (pristine, blur, noise, JPEG, contrast at 3 levels)
        assert qpt["srcc_within_content"] > rnd["srcc_within_content"], (variant, r)
    print({v: (r["random"][v]["srcc"], r["qpt"][v]["srcc"]) for v in probe_qpt.VARIANTS})
