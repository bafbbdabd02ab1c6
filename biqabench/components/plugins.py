"""Plugin discovery and the component registries built from it.

Every plugin, bundled or third-party, is a module named by an entry point in the ``biqabench``
group.  They are imported once per process.  A plugin that fails to import, or whose hook
raises, is recorded as *broken* (name, distribution, error) and skipped, so one bad package
never takes the whole tool down.

``BIQABENCH_PLUGINS`` controls what loads:

* unset: every installed plugin;
* a comma list of plugin (entry-point) names, e.g. ``qpt,hyperiqa,torchvision_backbones``;
* the word ``builtin`` (alone or in the list) stands for every plugin of the ``biqabench``
  distribution, so ``BIQABENCH_PLUGINS=builtin`` disables third-party plugins;
* an empty string or ``none`` loads no plugin at all (a bare harness, handy in tests).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import pluggy

from biqabench.components import hookspecs
from biqabench.base.errors import BiqaError
from biqabench.components.registry import DuplicateComponentError, Registry

ENTRY_POINT_GROUP = "biqabench"
ENV_VAR = "BIQABENCH_PLUGINS"
KINDS = ("backbones", "pretrainers", "heads", "datasets")


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    kinds: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def broken(self) -> bool:
        return self.error is not None


class Harness:
    """A plugin manager plus the registries filled from its hooks."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.registries: dict[str, Registry] = {k: Registry(k[:-1]) for k in KINDS}
        self._filled = False
        self._fill_errors: set[str] = set()  # plugins whose error came from a register_<kind> hook

    # -- loading -------------------------------------------------------------------------
    def load_entry_points(self, env: str | None = None) -> None:
        wanted = _parse_selection(os.environ.get(ENV_VAR) if env is None else env)
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "<unknown>"
            version = dist.version if dist is not None else "?"
            if not _selected(ep.name, dist_name, wanted):
                continue
            if ep.name in self.plugins:
                # the same name twice: keep the first, report the clash on the second
                self.plugins[f"{ep.name}@{dist_name}"] = PluginInfo(
                    ep.name, dist_name, version, ep.value,
                    error=f"plugin name {ep.name!r} is already used by distribution "
                    f"{self.plugins[ep.name].distribution!r}",
                )
                continue
            info = PluginInfo(ep.name, dist_name, version, ep.value)
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure makes the plugin broken
                info.error = f"import failed: {type(exc).__name__}: {exc}"
                self.plugins[ep.name] = info
                continue
            self.plugins[ep.name] = info
            self.pm.register(module, name=ep.name)
        self._filled = False

    def register(self, plugin: ModuleType | object, name: str, distribution: str = "<direct>") -> None:
        """Register a plugin object directly (tests and notebooks); registries are rebuilt lazily."""
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(name, distribution, "", getattr(plugin, "__name__", repr(plugin)))
        self._filled = False

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.plugins.pop(name, None)
        self._filled = False

    # -- registries ----------------------------------------------------------------------
    def _fill(self) -> None:
        self.registries = {k: Registry(k[:-1]) for k in KINDS}
        for info in self.plugins.values():
            # forget the errors this method set last time (it recomputes them); keep import and
            # register_commands errors, which are only found once
            info.kinds = []
            if info.name in self._fill_errors:
                info.error = None
        self._fill_errors = set()
        for kind in KINDS:
            hook = getattr(self.pm.hook, f"register_{kind}")
            for impl in reversed(hook.get_hookimpls()):  # registration order
                plugin_name = impl.plugin_name
                reg = self.registries[kind]
                added: list[str] = []
                register = _register_callback(reg, plugin_name, added)
                try:
                    impl.function(register=register)
                except Exception as exc:  # noqa: BLE001 - isolate the plugin
                    for n in added:  # never half-register a broken plugin
                        reg.remove(n)
                    info = self.plugins.setdefault(plugin_name, PluginInfo(plugin_name, "?", "?", "?"))
                    self._fill_errors.add(info.name)
                    info.error = f"hook register_{kind} raised {type(exc).__name__}: {exc}"
                    if isinstance(exc, DuplicateComponentError):
                        info.error = str(exc)
                        reg.mark_contested(exc)
                    continue
                if added and plugin_name in self.plugins and kind not in self.plugins[plugin_name].kinds:
                    self.plugins[plugin_name].kinds.append(kind)
        broken = [p for p in self.plugins.values() if p.broken]
        hint = ("; note: plugins that failed to load (it may be theirs): "
                + "; ".join(f"{p.name} ({p.error})" for p in broken[:3])
                + " -- see: biqabench plugins list") if broken else ""
        for reg in self.registries.values():
            reg.missing_hint = hint
        self.registries["backbones"].resolver = self._resolve_backbone
        self._filled = True

    def _resolve_backbone(self, name: str) -> None:
        """Ask ``resolve_backbone`` hooks, in load order, to register an unknown ``name``."""
        reg = self.registries["backbones"]
        for impl in reversed(self.pm.hook.resolve_backbone.get_hookimpls()):
            added: list[str] = []
            try:
                impl.function(name=name, register=_register_callback(reg, impl.plugin_name, added))
            except BiqaError:
                raise
            except Exception as exc:  # noqa: BLE001 - one line naming the plugin
                raise BiqaError(f"plugin {impl.plugin_name!r} failed to resolve backbone {name!r}: "
                                f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from exc
            if name in reg:
                return

    def search_backbones(self, pattern: str) -> list[tuple[str, str, str]]:
        """(name, plugin, description) of every on-demand backbone matching ``pattern``."""
        out = []
        for impl in reversed(self.pm.hook.search_backbones.get_hookimpls()):
            try:
                found = impl.function(pattern=pattern) or []
            except Exception as exc:  # noqa: BLE001
                raise BiqaError(f"plugin {impl.plugin_name!r} failed to search backbones for {pattern!r}: "
                                f"{type(exc).__name__}: {exc}") from exc
            out.extend((n, impl.plugin_name, d) for n, d in found)
        return out

    def registry(self, kind: str) -> Registry:
        if kind not in KINDS:
            raise BiqaError(f"unknown component kind {kind!r} (one of {', '.join(KINDS)})")
        if not self._filled:
            self._fill()
        return self.registries[kind]

    def add_commands(self, app: Any) -> None:
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            try:
                impl.function(cli=app)
            except Exception as exc:  # noqa: BLE001
                info = self.plugins.get(impl.plugin_name)
                if info is not None:
                    info.error = f"hook register_commands raised {type(exc).__name__}: {exc}"

    def broken(self) -> list[PluginInfo]:
        if not self._filled:
            self._fill()
        return [p for p in self.plugins.values() if p.broken]


def _register_callback(reg: Registry, plugin_name: str, added: list[str]) -> Callable[..., None]:
    """The ``register`` a hook receives: ``register(spec)`` or ``register(name, obj, description=...)``."""
    def register(name_or_spec: Any, obj: Any = None, *, description: str = "", **meta) -> None:
        if obj is None:  # a spec object carrying its own name
            spec = name_or_spec
            reg.add(spec.name, spec, plugin=plugin_name,
                    description=description or getattr(spec, "description", ""), **meta)
            added.append(spec.name)
        else:
            reg.add(name_or_spec, obj, plugin=plugin_name, description=description, **meta)
            added.append(name_or_spec)

    return register


def _parse_selection(value: str | None) -> set[str] | None:
    if value is None:
        return None
    items = {v.strip() for v in value.split(",") if v.strip()}
    return set() if items <= {"none"} else items


def _selected(name: str, dist: str, wanted: set[str] | None) -> bool:
    if wanted is None:
        return True
    return name in wanted or ("builtin" in wanted and dist == "biqabench")


_harness: Harness | None = None
_lock = threading.Lock()


def get_harness() -> Harness:
    """The process-wide harness, loading entry points on first use."""
    global _harness
    with _lock:
        if _harness is None:
            h = Harness()
            h.load_entry_points()
            _harness = h
        return _harness


def reset_harness() -> None:
    """Forget the loaded plugins (tests use this after faking entry points)."""
    global _harness
    with _lock:
        _harness = None


def registry(kind: str) -> Registry:
    return get_harness().registry(kind)

