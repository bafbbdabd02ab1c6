"""The root of the ``biqabench`` command: its app, the one place command groups are attached, and
:func:`main`, which turns every failure into one line (``--debug``: the traceback)."""

from __future__ import annotations

import logging
import sys

import typer

from biqabench.base.errors import BiqaError

HELP = ("Blind image quality assessment benchmarking: pretrain backbones (QPT), swap their weights "
        "into IQA heads (HyperIQA, TReS, linear) and evaluate them intra- and cross-dataset.\n\n"
        "Quick start:  biqabench pretrain qpt --backbone resnet50   then   biqabench eval --head hyperiqa --weights qpt")
_state = {"debug": False}
_app: typer.Typer | None = None


def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details (INFO level)."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def build_app() -> typer.Typer:
    """A new app with every command group attached (each module's ``register(app)``), in the order
    ``biqabench --help`` lists them (commands first, then groups), then the plugins' commands."""
    from biqabench.cli import (backbones, datasets, evaluation, model, plugins, pretrain, registries, report,
                               results, study, weights)
    from biqabench.components.plugins import get_harness

    app = typer.Typer(name="biqabench", help=HELP, no_args_is_help=True, pretty_exceptions_enable=False,
                      add_completion=False, rich_markup_mode=None)
    app.callback()(_root)
    for group in (pretrain, evaluation, study, model, report, plugins, backbones, registries, datasets, weights, results):
        group.register(app)
    get_harness().add_commands(app)
    return app


def get_app() -> typer.Typer:
    """The process's app, built on first use."""
    global _app
    if _app is None:
        _app = build_app()
    return _app


def main(argv: list[str] | None = None) -> None:
    from biqabench.runtime.launch import stop_with_parent

    stop_with_parent()  # a cell of a study or matrix ends with it, even when it is SIGKILLed
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        get_app()(args=args, prog_name="biqabench")
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
