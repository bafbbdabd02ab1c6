"""ARNIQA (Agnolucci et al., WACV 2024) as a biqabench pretrainer: a distortion manifold learnt
with NT-Xent, where two *different* photos degraded with the *same* composition of distortions
are a positive pair.  Our own code; the reference (miccunifi/ARNIQA, CC BY-NC) was read for facts
only, and where we follow and where we deviate is written in ``pretrainer.py``,
``distortions.py`` and docs/pretraining.md.
"""

from __future__ import annotations

from biqabench.plugin_api import hookimpl

REFERENCE = ("L. Agnolucci, L. Galteri, M. Bertini, A. Del Bimbo. ARNIQA: Learning Distortion Manifold for "
             "Image Quality Assessment. WACV 2024")


@hookimpl
def register_pretrainers(register):
    from biqabench.plugin_api import PretrainerSpec

    register(PretrainerSpec(
        name="arniqa", method="biqabench_plugins.arniqa.pretrainer:Arniqa", reference=REFERENCE,
        description="NT-Xent: same distortion composition on two different photos is a positive (half-scale views too)",
    ))
