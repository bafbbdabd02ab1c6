"""QPT: quality-aware pretraining (Zhao et al., CVPR 2023) as a biqabench pretrainer plugin.

Registers the ``qpt`` pretrainer (``biqabench pretrain qpt``) and the ``biqabench qpt`` command
group (``biqabench qpt preview``).  Heavy modules (torch, the training loop) are imported only
when a command runs, so loading the plugin keeps the CLI fast.
"""

from __future__ import annotations

from biqabench.plugin_api import hookimpl

REFERENCE = ("K. Zhao, K. Yuan, M. Sun, M. Li, X. Wen. Quality-aware Pre-trained Models for Blind Image "
             "Quality Assessment. CVPR 2023")


def _run(request):
    from biqabench_plugins.qpt.pretrainer import run_qpt

    return run_qpt(request)


@hookimpl
def register_pretrainers(register):
    from biqabench.plugin_api import PretrainerSpec

    register(PretrainerSpec(
        name="qpt", run=_run, reference=REFERENCE,
        description="MoCo + QC-Loss over a Real-ESRGAN-style degradation space (shuffle, high-order, skip)",
    ))


@hookimpl
def register_commands(cli):
    from biqabench_plugins.qpt.preview import app

    cli.add_typer(app, name="qpt")
