"""bnstats: the null pretrainer, the fair baseline for frozen features (issue 23).

No gradient step: the backbone keeps its random initialisation (the one every other pretrainer
starts from at the same seed) and only its BatchNorm running statistics are measured, on the same
photos at the same patch size as the CPU presets of the other pretrainers, as a cumulative average
(``momentum=None``).  ``--weights bnstats`` is then "same data, no learning": a random ResNet in
eval mode with *identity* BatchNorm (mean 0, variance 1) is not a fair baseline, since every
trained network comes with statistics measured on photos.
"""

from __future__ import annotations

from biqabench.plugin_api import hookimpl


@hookimpl
def register_pretrainers(register):
    from biqabench.plugin_api import PretrainerSpec

    register(PretrainerSpec(
        name="bnstats", method="biqabench_plugins.bnstats.pretrainer:BNStats",
        reference="the null pretrainer: random weights, BatchNorm statistics measured on the photos",
        description="no learning: BatchNorm running statistics averaged over the photos (the fair baseline)",
    ))
