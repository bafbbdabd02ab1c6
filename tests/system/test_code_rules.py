"""Project-wide code rules checked on the source itself."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
def _sources(*folders: str) -> list[Path]:
    """The .py files under ``folders``, without the ``build/`` copies a pip install of an example leaves."""
    return [p for d in folders for p in sorted((REPO / d).rglob("*.py")) if "build" not in p.relative_to(REPO).parts]


SOURCES = _sources("biqabench", "plugins", "benchmarks", "examples")


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


# -- size rules (docs/architecture.md) ---------------------------------------------------------------
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
#: The degradation operators are long by nature (one small function per operator, plus tables).
LONG_MODULES_ALLOWED = {"plugins/qpt/degradations.py", "plugins/qpt/operators.py"}
#: Functions that are data tables (one entry per dataset reader), not logic.
DATA_TABLES = {("plugins/datasets/__init__.py", "dataset_specs")}
PACKAGE_SOURCES = _sources("biqabench", "plugins")


def _module_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_is_over_500_lines():
    long = [f"{p.relative_to(REPO)} ({_module_lines(p)})" for p in PACKAGE_SOURCES
            if _module_lines(p) > MAX_MODULE_LINES and str(p.relative_to(REPO)) not in LONG_MODULES_ALLOWED]
    assert PACKAGE_SOURCES and not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


def test_no_function_is_over_60_lines():
    long = []
    for path in PACKAGE_SOURCES:
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (rel, node.name) not in DATA_TABLES:
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - first + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name} ({node.end_lineno - first + 1})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them along their steps): {long}"


def test_a_plugin_never_imports_another_plugin():
    offenders = []
    for path in (REPO / "plugins").rglob("*.py"):
        own = path.relative_to(REPO / "plugins").parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "biqabench_plugins" and len(parts) > 1 and parts[1] != own:
                    offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert not offenders, f"plugins importing other plugins (move the shared code into the core): {offenders}"


def _names_imported(node: ast.AST) -> list[str]:
    """Modules an ``import``, ``from ... import`` or ``import_module("...")`` node names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    if isinstance(node, ast.Call):
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if func == "import_module":
            return [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return []


def test_the_core_never_imports_a_plugin():
    """biqabench/ reaches plugins only through entry points and hooks (docs/architecture.md), so a
    bundled plugin is loaded like a third party's and can be left out."""
    offenders = [f"{path.relative_to(REPO)}:{node.lineno} {name}"
                 for path in (REPO / "biqabench").rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                 for name in _names_imported(node) if name.split(".")[0] == "biqabench_plugins"]
    assert not offenders, f"core modules importing plugins (declare a hook or a spec field instead): {offenders}"


# -- no import circles (docs/architecture.md: imports point one way) ---------------------------------
def _module_file(dotted: str) -> Path | None:
    """The source file of ``biqabench.x.y`` / ``biqabench_plugins.x.y``, or None outside the project."""
    parts = dotted.split(".")
    if parts[0] == "biqabench_plugins":
        parts = ["plugins", *parts[1:]]
    elif parts[0] != "biqabench":
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    """Project files ``path`` imports anywhere (module level, in functions, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from pkg import sub`` imports the submodule when there is one, else pkg itself
            targets = [f"{node.module}.{a.name}" if _module_file(f"{node.module}.{a.name}") else node.module
                       for a in node.names]
        else:
            continue
        found |= {f for f in map(_module_file, targets) if f is not None and f != path}
    return found


def _circles(graph: dict[Path, set[Path]]) -> list[list[str]]:
    """Strongly connected groups of more than one file (Tarjan), as sorted repository paths."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(str(w.relative_to(REPO)))
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    # biqabench/__init__.py is the package's lazy face (its __getattr__ imports the jobs on demand):
    # it is not a layer, so arrows into it do not close a circle
    face = REPO / "biqabench" / "__init__.py"
    graph = {p: {q for q in _imports(p) if q != face} for p in PACKAGE_SOURCES if p != face}
    circles = _circles(graph)
    assert graph and not circles, ("modules importing each other (move the shared name to the module that owns "
                                   f"it, below both): {circles}")


# -- layers (docs/architecture.md): plugins see one namespace; subpackages import downward only -------
#: The core's subpackages, lowest first.  A module may import its own subpackage and those before it.
LAYERS = ("base", "runtime", "components", "data", "training", "results", "model", "evaluation", "cli")
PLUGIN_API = "biqabench.plugin_api"


def _core_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every biqabench module ``path`` imports (``from pkg import sub`` as
    ``pkg.sub``), anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "biqabench":
                found += [(node.lineno, f"{node.module}.{a.name}" if _module_file(f"{node.module}.{a.name}")
                           else node.module) for a in node.names]
        else:
            found += [(getattr(node, "lineno", 0), n) for n in _names_imported(node) if n.split(".")[0] == "biqabench"]
    return found


def test_plugins_import_the_core_only_through_the_plugin_api():
    sources = _sources("plugins", "examples")
    offenders = [f"{p.relative_to(REPO)}:{line} {name}" for p in sources for line, name in _core_imports(p)
                 if name != PLUGIN_API]
    assert sources and not offenders, f"plugins importing the core past {PLUGIN_API} (add the name there): {offenders}"


def test_the_core_never_imports_the_plugin_api():
    offenders = [f"{p.relative_to(REPO)}:{line}" for p in (REPO / "biqabench").rglob("*.py")
                 if p.name != "plugin_api.py" for line, name in _core_imports(p) if name == PLUGIN_API]
    assert not offenders, f"the plugin API is the plugins' face, not a layer: {offenders}"


def _layer(dotted: str) -> int | None:
    parts = dotted.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_core_module_lives_in_a_layer():
    top = {p.name for p in (REPO / "biqabench").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert top == {"__init__.py", "__main__.py", "plugin_api.py", *LAYERS}, sorted(top)


def test_subpackages_import_downward_only():
    """base < runtime < components < data < training < results < model < evaluation < cli: a module
    imports its own subpackage and the ones below, never one above (nor the package's face, except
    for ``__version__``)."""
    offenders = []
    for path in (REPO / "biqabench").rglob("*.py"):
        rel = path.relative_to(REPO)
        if len(rel.parts) < 3:  # the faces: __init__, __main__, plugin_api
            continue
        own = LAYERS.index(rel.parts[1])
        tree = ast.parse(path.read_text())
        version_only = {n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "biqabench"
                        and [a.name for a in n.names] == ["__version__"]}
        for line, name in _core_imports(path):
            layer = _layer(name)
            if (layer is None and line not in version_only and name != PLUGIN_API) or (layer or 0) > own:
                offenders.append(f"{rel}:{line} {name}")
    assert not offenders, f"imports against the layers (move the shared name down): {offenders}"


def test_every_plugin_api_name_resolves_and_is_documented():
    """Each name of the plugin API's table imports, and docs/architecture.md's table lists it."""
    import biqabench.plugin_api as api

    doc = (REPO / "docs" / "architecture.md").read_text()
    undocumented = [n for n in api.__all__ if f"`{n}`" not in doc]
    assert not undocumented, f"plugin API names missing from docs/architecture.md's table: {undocumented}"
    for name in api.__all__:
        getattr(api, name)


def plugin_api_stub() -> str:
    """``biqabench/plugin_api.pyi`` as the lazy table says it must read: the names for IDEs and type
    checkers, which cannot see through the module's ``__getattr__``."""
    from collections import defaultdict

    import biqabench.plugin_api as api

    by_module = defaultdict(list)
    for name, (module, attr) in sorted(api._NAMES.items()):
        by_module[module].append((name, attr))
    lines = ['"""Type stub of biqabench.plugin_api: the names its lazy table serves, for IDEs and type checkers.',
             "", "Generated from the table (tests/system/test_code_rules.py::plugin_api_stub); a test keeps them equal.",
             '"""', "", "from __future__ import annotations", ""]
    for module in sorted(by_module):
        lines += [f"import {module} as {name}" for name, attr in by_module[module] if attr is None]
        lines += [f"from {module} import {attr} as {name}" for name, attr in by_module[module] if attr is not None]
    lines += ["", f"__all__ = {sorted(api._NAMES)!r}"]
    return "\n".join(lines) + "\n"


def test_the_plugin_api_stub_lists_the_lazy_table():
    stub = REPO / "biqabench" / "plugin_api.pyi"
    expected = plugin_api_stub()
    assert stub.is_file() and stub.read_text() == expected, (
        "biqabench/plugin_api.pyi differs from the plugin API's name table; rewrite it with: python -c "
        "\"import sys; sys.path[:0] = ['tests', 'tests/system']; from test_code_rules import plugin_api_stub; "
        "open('biqabench/plugin_api.pyi', 'w').write(plugin_api_stub())\"")
