"""MoCo v2 (He et al., CVPR 2020; Chen et al., arXiv 2003.04297) as a biqabench pretrainer.

Instance discrimination with content-based negatives only: two augmented views of one crop are a
positive pair, the keys of earlier batches (a queue, encoded by a momentum encoder) are the
negatives.  It is the QPT paper's own baseline: ``qpt`` against ``moco`` on the same photos, steps
and seed measures what the quality-aware pretext adds.
"""

from __future__ import annotations

from biqabench.plugin_api import hookimpl

REFERENCE = ("K. He, H. Fan, Y. Wu, S. Xie, R. Girshick. Momentum Contrast for Unsupervised Visual "
             "Representation Learning. CVPR 2020; X. Chen, H. Fan, R. Girshick, K. He. Improved Baselines "
             "with Momentum Contrastive Learning. arXiv:2003.04297, 2020")


@hookimpl
def register_pretrainers(register):
    from biqabench.plugin_api import PretrainerSpec

    register(PretrainerSpec(
        name="moco", method="biqabench_plugins.moco.pretrainer:MoCo", reference=REFERENCE,
        description="MoCo v2: momentum encoder + queue, InfoNCE over content negatives, standard augmentations",
    ))
