"""The ``biqabench`` command line: a thin typer layer over the Python API.

One module per command group, each with a ``register(app)``; :func:`biqabench.cli.root.build_app`
attaches them all, in ``--help`` order, and then the commands of plugins.  Importing this package
loads no plugin: the app is built on first use (:func:`main`, or reading ``biqabench.cli.app``).

Every command either does its job or stops with a one-line ``error: ...`` naming what is wrong
and how to fix it (exit code 2); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Run ``biqabench ARGV`` (default: the process's arguments); the console script's entry point."""
    from biqabench.cli.root import main as run

    run(argv)


def __getattr__(name: str):
    if name == "app":  # the typer app, built (plugins loaded) on first use
        from biqabench.cli.root import get_app

        return get_app()
    raise AttributeError(f"module 'biqabench.cli' has no attribute {name!r}")
