"""One-page HTML reports: rendering, and the report of one run.

A report is one self-contained file: styles inline, figures as SVG ``data:`` URIs, no script or
font from anywhere (a Content-Security-Policy in the page forbids every fetch), so it opens
offline and from an e-mail attachment.  It is rendered with Jinja2 from the templates in
``biqabench/results/templates/``; what it shows is gathered into a plain dict first:

* :func:`biqabench.results.report_run.run_context`: an eval, probe or zero-shot test run
  (protocol card, results with CIs, per-split table, scatter plots, training and pretraining
  curves, predictions outside the scale, links to the folder's files);
* :mod:`biqabench.evaluation.report_matrix` (a layer up: it pairs runs with
  :mod:`biqabench.evaluation.compare`): a benchmark matrix or runs compared, with the paper table,
  the paired gain over the baseline, a per-split paired plot, the jobs.

Every finished eval, probe, test and matrix writes ``report.html`` into its folder
(:func:`write_report_quietly`: a report that fails to render logs a warning and never costs the
run); ``biqabench report RUN|MATRIX [RUN...] [-o FILE]`` writes one on demand.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from biqabench.base import io
from biqabench.results.folder import Run, load_run

log = logging.getLogger(__name__)

REPORT = "report.html"


@functools.lru_cache(maxsize=1)
def environment():
    """The Jinja2 environment: templates shipped in the package, HTML autoescaped, and an
    undefined name an error (a template typo must fail the tests, not print nothing)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("biqabench.results", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["full"] = lambda v: "" if v is None else repr(float(v))  # data-value: every digit
    return env


def render(context: dict) -> str:
    """The page for a context (``context["kind"]``: run or matrix)."""
    from biqabench import __version__

    template = environment().get_template(f"{context['kind']}.html.j2")
    return template.render(**context, generator=f"biqabench {__version__}",
                           generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def _write(path: Path, html: str) -> Path:
    return io.write_text(path, html)


def run_report(run: str | os.PathLike | Run, out: str | os.PathLike | None = None,
               root: str | os.PathLike | None = None) -> Path:
    """Write the report of one run (default: ``report.html`` in its folder); returns the path."""
    from biqabench.results.report_run import run_context

    r = load_run(run, root)
    path = Path(out) if out else r.path / REPORT
    return _write(path, render(run_context(r, path.parent)))


def write_report_quietly(write: Callable[..., Path], *args: Any) -> Path | None:
    """``write(*args)``, but a report that cannot be rendered logs a warning instead of failing
    the run it describes (the run's numbers are already on disk)."""
    try:
        return write(*args)
    except Exception as exc:  # noqa: BLE001 - a report must never cost a finished run
        log.warning("could not write the HTML report (%s: %s); the run itself is complete. "
                    "Retry with: biqabench report %s", type(exc).__name__, exc, args[0] if args else "")
        return None


__all__ = ["REPORT", "environment", "render", "run_report", "write_report_quietly"]
