"""The ``biqabench`` command line: a thin typer layer over the Python API.

Every command either does its job or stops with a one-line ``error: ...`` naming what is wrong
and how to fix it (exit code 2); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from tabulate import tabulate

from biqabench.errors import BiqaError
from biqabench.plugins import get_harness, registry
from biqabench.pretrain import PretrainRequest  # the pretrain options' defaults are its fields

app = typer.Typer(
    name="biqabench",
    help="Blind image quality assessment benchmarking: pretrain backbones (QPT), swap their weights "
    "into IQA heads (HyperIQA, TReS, linear) and evaluate them intra- and cross-dataset.\n\n"
    "Quick start:  biqabench pretrain qpt --backbone resnet50   then   biqabench eval --head hyperiqa --weights qpt",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details (INFO level)."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _table(rows: list[dict], fmt: str = "github") -> None:
    if not rows:
        typer.echo("(none)")
        return
    typer.echo(tabulate(rows, headers="keys", tablefmt=fmt))


# -- plugins and registries ---------------------------------------------------------------------
plugins_app = typer.Typer(help="Installed plugins (bundled and third-party).", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")


@plugins_app.command("list")
def plugins_list() -> None:
    """Show each plugin: name, what it registers, distribution and version, and errors of broken ones."""
    h = get_harness()
    for kind in ("backbones", "pretrainers", "heads", "datasets"):
        h.registry(kind)
    rows = []
    for info in sorted(h.plugins.values(), key=lambda p: (p.distribution != "biqabench", p.name)):
        rows.append({
            "plugin": info.name,
            "registers": ", ".join(info.kinds) or "-",
            "distribution": info.distribution,
            "version": info.version,
            "status": f"BROKEN: {info.error}" if info.broken else "ok",
        })
    _table(rows)


def _list_command(kind: str, extra=None):
    def command(fmt: str = typer.Option("github", "--format", help="Table format (github, plain, latex, ...).")) -> None:
        rows = []
        for entry in registry(kind).entries():
            row = {"name": entry.name, "plugin": entry.plugin, "description": entry.description}
            if extra is not None:
                row.update(extra(entry))
            rows.append(row)
        _table(rows, fmt)

    command.__doc__ = f"List registered {kind} (name, providing plugin, description)."
    return command


def _head_recipe(entry) -> dict:
    r = entry.obj.recipe
    return {"recipe": f"patch {r.patch_size}, {r.train_patches}/{r.test_patches} patches, "
                      f"{r.optimizer} lr {r.lr:g} (x{r.head_lr_mult:g} head), wd {r.weight_decay:g}, "
                      f"batch {r.batch_size}, {r.epochs} ep"
                      + (f" (lr x{r.lr_gamma:g} every {r.lr_step})" if r.lr_step else "") + f", loss {r.loss}"}


from biqabench import cli_backbones  # noqa: E402 - backbones list --filter (on-demand model zoos)

cli_backbones.register(app, _table)

for _kind, _extra in (("heads", _head_recipe), ("pretrainers", None)):
    _sub = typer.Typer(help=f"Registered {_kind}.", no_args_is_help=True)
    _sub.command("list")(_list_command(_kind, _extra))
    app.add_typer(_sub, name=_kind)

datasets_app = typer.Typer(help="Labelled IQA datasets: readers for official layouts.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
datasets_app.command("list")(_list_command("datasets", lambda e: {"layout": getattr(e.obj, "layout", "")}))

weights_app = typer.Typer(help="The weights store: what --weights NAME can resolve to.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list(
    store: Optional[Path] = typer.Option(None, help="Weights store folder (default: results/weights or $BIQABENCH_WEIGHTS)."),
) -> None:
    """List usable weights: built-in names (random, imagenet) and every pretrainer output in the store."""
    from biqabench.weights import WeightsStore, describe_store

    _table(describe_store(WeightsStore(store) if store else None))


# -- pretraining ---------------------------------------------------------------------------------
@app.command()
def pretrain(
    name: str = typer.Argument(..., help="Pretraining strategy, e.g. qpt (see: biqabench pretrainers list)."),
    backbone: str = typer.Option(PretrainRequest.backbone, help="Backbone to pretrain (see: biqabench backbones list)."),
    data: Optional[str] = typer.Option(None, help="Folder of unlabelled images (any depth, ImageNet layout too). Default: the embedded demo images."),
    steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
    epochs: Optional[int] = typer.Option(None, help="Stop after this many passes over --data."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step (default: the config's)."),
    patch_size: Optional[int] = typer.Option(None, help="Patch side in pixels (default: the config's)."),
    config: Optional[Path] = typer.Option(None, help="YAML overriding the strategy's defaults, e.g. configs/qpt_pretrain_paper.yaml."),
    resume: bool = typer.Option(PretrainRequest.resume, help="Continue the interrupted run from its last checkpoint."),
    device: str = typer.Option(PretrainRequest.device, help="auto | cpu | cuda | cuda:N | mps."),
    precision: str = typer.Option(PretrainRequest.precision, help="auto | fp32 | bf16 | fp16 (auto: bf16 where the hardware runs it natively)."),
    seed: int = typer.Option(PretrainRequest.seed, help="Seed for degradations, patches and initialisation."),
    workers: Optional[int] = typer.Option(None, help="DataLoader worker processes (default: the config's)."),
    run_dir: Optional[Path] = typer.Option(None, help="Folder for checkpoints and logs (default: results/pretrain/NAME-BACKBONE)."),
    nan_policy: str = typer.Option(PretrainRequest.nan_policy, help="A NaN/Inf loss: stop (one line naming the step and the last good checkpoint) | skip the step (counted in the weights manifest)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs, CI)."),
    compile: bool = typer.Option(PretrainRequest.compile, "--compile", help="Run the training step through torch.compile (first steps pay the compilation)."),
) -> None:
    """Pretrain a backbone and save its weights in the store (then: --weights NAME)."""
    from biqabench.pretrain import pretrain as run_pretrain

    registry("backbones").get(backbone)  # fail fast on a typo
    rec = run_pretrain(name, backbone=backbone, data=data, steps=steps, epochs=epochs, batch_size=batch_size,
                       patch_size=patch_size, config=str(config) if config else None, resume=resume,
                       device=device, precision=precision, seed=seed, workers=workers, run_dir=run_dir,
                       progress=not no_progress, nan_policy=nan_policy, compile=compile)
    typer.echo(f"saved {rec.name} weights for {rec.backbone}: {rec.file}")


def _register_more_commands() -> None:
    """eval / benchmark / results (biqabench.cli_runner), score / predict / export / test
    (biqabench.cli_model) and the datasets commands."""
    from biqabench import cli_runner
    from biqabench.data import cli as data_cli

    from biqabench import cli_model  # score / predict / export / test
    from biqabench import cli_report  # report

    cli_runner.register(app)
    cli_model.register(app)
    cli_report.register(app)
    data_cli.register(datasets_app)


_register_more_commands()
get_harness().add_commands(app)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="biqabench")
    except BiqaError as exc:
        if debug:
            raise
        typer.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        why = _one_line(exc)  # e.g. where the checkpoint went and how to resume
        typer.echo(f"interrupted{': ' + why if why and not why.startswith('signal') else ''}", err=True)
        sys.exit(130)
    except OSError as exc:  # a file operation no module turned into a BiqaError
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or _one_line(exc)} (rerun with --debug for details)", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the promise: one line unless --debug
        if debug:
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {_one_line(exc, 300)} -- a bug in biqabench or a plugin; "
                   "rerun with --debug for the traceback and report it", err=True)
        sys.exit(1)


def _one_line(exc: BaseException, limit: int = 0) -> str:
    text = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
    return text[: limit - 3] + "..." if limit and len(text) > limit else text
