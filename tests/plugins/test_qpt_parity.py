"""QPT on the core pretraining loop gives the numbers it gave on its own loop.

``tests/plugins/qpt_losses_50.json`` holds the first 50 fp32 losses of QPT at a fixed seed on a tiny
setup (embedded photos, 32 px crops, 16 px patches), recorded with QPT's own loop *before* the loop
moved into ``biqabench.training.pretraining`` (issue 23).  The refactored loop must reproduce them
within 1e-6.  Regenerate only on purpose: ``python tests/plugins/test_qpt_parity.py --record``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

FIXTURE = Path(__file__).parent / "qpt_losses_50.json"
STEPS = 50
SEED = 7
#: the tiny setup: small crops and patches, a small queue, no worker processes
TINY = {"batch_size": 4, "crop_size": 32, "patch_size": 16, "embed_dim": 16, "queue_size": 32, "workers": 0,
        "checkpoint_every": 1000, "log_recipes_every": 0, "optim": {"warmup_steps": 2}}


def qpt_losses(backbone: str, tmp: Path) -> list[float]:
    from biqabench.components.pretrain import PretrainRequest
    from biqabench.components.weights import WeightsStore
    from biqabench_plugins.qpt.pretrainer import run_qpt

    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run_qpt(PretrainRequest(backbone=backbone, steps=STEPS, config=str(cfg), device="cpu", precision="fp32",
                            seed=SEED, run_dir=tmp / "run", store=WeightsStore(tmp / "store"), progress=False))
    return json.loads((tmp / "run" / "losses.json").read_text())["losses"]


@pytest.mark.parametrize("backbone", ["tiny", "resnet18"])
def test_qpt_reproduces_its_first_50_losses(tmp_path, backbone):
    want = json.loads(FIXTURE.read_text())[backbone]
    got = qpt_losses(backbone, tmp_path)
    assert len(got) == len(want) == STEPS
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = {"setup": {"steps": STEPS, "seed": SEED, "data": "embedded photos", "precision": "fp32",
                         "config": TINY}}
        out.update({b: qpt_losses(b, Path(d) / b) for b in ("tiny", "resnet18")})
    FIXTURE.write_text(json.dumps(out, indent=1) + "\n")
    print(out)
