"""Project-wide code rules checked on the source itself."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("biqabench", "plugins", "benchmarks", "examples") for p in (REPO / d).rglob("*.py")]


def test_every_torch_load_passes_weights_only_true():
    offenders = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                base = node.func.value
                if isinstance(base, ast.Name) and base.id == "torch":
                    ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                             for k in node.keywords)
                    if not ok:
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert SOURCES and not offenders, f"torch.load without weights_only=True: {offenders}"
