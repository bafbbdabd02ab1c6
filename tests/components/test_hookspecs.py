"""Every hook must be documented for plugin authors (a new hook without docs fails here)."""

import inspect
from pathlib import Path

from biqabench.components import hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def test_every_hook_is_documented():
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(f, f"{hookspecs.PROJECT}_spec")]  # every @hookspec, whatever its name
    assert len(hooks) == 7 and {"resolve_backbone", "search_backbones"} <= set(hooks)
    text = DOC.read_text()
    missing = [h for h in hooks if f"### `{h}(" not in text]
    assert not missing, f"hooks missing from docs/plugins.md: {missing}"
    for h in hooks:
        assert getattr(hookspecs, h).__doc__, f"{h} has no docstring"
