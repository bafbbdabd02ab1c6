import os
import sys

# `python -m` puts the current folder first on sys.path; a `biqabench_plugins` package or a
# plugin's .dist-info lying there must not be imported (plugins come from installed entry points).
# biqabench itself is already imported at this point, so nothing of ours is lost.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from biqabench.cli import main  # noqa: E402

main()
