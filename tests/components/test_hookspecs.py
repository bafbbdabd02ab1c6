"""Every hook, and every member of the head contract, is documented for plugin authors."""

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


def test_every_member_of_the_head_contract_is_documented():
    """docs/plugins.md, "The head contract", names every member IQAHead adds to nn.Module."""
    import torch

    from biqabench.components.heads import IQAHead

    members = {n for n in vars(IQAHead) if not n.startswith("_") and n not in vars(torch.nn.Module)}
    assert {"cache_features", "score_features", "scores_features", "loss_features", "feature_channels",
            "standardizes_features"} <= members
    text = DOC.read_text().split("## The head contract", 1)[1].split("\n## ", 1)[0]
    missing = sorted(m for m in members if f"`{m}" not in text)
    assert not missing, f"IQAHead members missing from docs/plugins.md's head contract: {missing}"
