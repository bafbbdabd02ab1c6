"""Plugin discovery through real entry points, isolation of broken plugins, name clashes."""

from __future__ import annotations

import importlib

import pytest

from biqabench.base.errors import BiqaError
from biqabench.components.plugins import Harness, get_harness
from biqabench.components.registry import Registry, UnknownComponentError
from conftest import HEAD_PLUGIN, make_fake_distribution

GOOD = HEAD_PLUGIN.replace("NAME", "thirdparty-head")
IMPORT_ERROR = "import not_a_module_anywhere\n"
HOOK_RAISES = """
from biqabench.components.hookspecs import hookimpl
@hookimpl
def register_heads(register):
    register("half-registered", object())
    raise ValueError("boom in hook")
"""
CLASH = """
from biqabench.components.hookspecs import hookimpl
from biqabench.components.heads import HeadSpec
@hookimpl
def register_heads(register):
    register(HeadSpec("dup-head", lambda b, r: None))
"""


def _harness_with(tmp_path, monkeypatch, plugins, env=None, dist="fakedist"):
    root = make_fake_distribution(tmp_path / "site", dist, plugins)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    h = Harness()
    h.load_entry_points(env=env)
    return h


def test_bundled_plugins_come_from_the_biqabench_distribution():
    h = Harness()
    h.load_entry_points(env=None)
    bundled = {n: p for n, p in h.plugins.items() if p.distribution == "biqabench"}
    assert {"torchvision_backbones", "datasets", "qpt", "hyperiqa", "tres", "linear"} <= set(bundled)
    assert not any(p.broken for p in bundled.values()), [p.error for p in bundled.values()]
    assert "resnet50" in h.registry("backbones")


def test_bundled_datasets_come_only_through_the_datasets_entry_point():
    """The core holds the readers, not the list: a bare harness knows no dataset, and the
    ``datasets`` entry point alone brings every bundled one (as a third party's would)."""
    bare = Harness()
    bare.load_entry_points(env="")
    assert len(bare.registry("datasets")) == 0
    only = Harness()
    only.load_entry_points(env="datasets")
    reg = only.registry("datasets")
    assert {"clive", "koniq10k", "csv", "demo-a"} <= set(reg) and {e.plugin for e in reg.entries()} == {"datasets"}


def test_third_party_entry_point_is_discovered(tmp_path, monkeypatch):
    h = _harness_with(tmp_path, monkeypatch, {"good": GOOD})
    info = h.plugins["good"]
    assert info.distribution == "fakedist" and info.version == "1.0" and not info.broken
    assert h.registry("heads").entry("thirdparty-head").plugin == "good"
    assert info.kinds == ["heads"]


def test_broken_plugins_are_reported_and_others_keep_working(tmp_path, monkeypatch):
    h = _harness_with(tmp_path, monkeypatch, {"good": GOOD, "imports": IMPORT_ERROR, "raises": HOOK_RAISES})
    broken = {p.name: p.error for p in h.broken()}
    assert "No module named 'not_a_module_anywhere'" in broken["imports"]
    assert "boom in hook" in broken["raises"] and "register_heads" in broken["raises"]
    heads = h.registry("heads")
    assert "thirdparty-head" in heads and "half-registered" not in heads
    assert "resnet18" in h.registry("backbones")


def test_two_plugins_registering_one_name_is_an_error_naming_both(tmp_path, monkeypatch):
    h = _harness_with(tmp_path, monkeypatch, {"clash1": CLASH, "clash2": CLASH})
    heads = h.registry("heads")
    broken = [p for p in ("clash1", "clash2") if h.plugins[p].broken]
    assert len(broken) == 1  # the second to register is reported
    err = h.plugins[broken[0]].error
    assert "'dup-head'" in err and "'clash1'" in err and "'clash2'" in err
    # using the contested name is an error naming both, never a silent pick
    with pytest.raises(BiqaError) as e:
        heads.get("dup-head")
    assert "'clash1'" in str(e.value) and "'clash2'" in str(e.value)


def test_env_restricts_and_disables(tmp_path, monkeypatch):
    h = _harness_with(tmp_path, monkeypatch, {"good": GOOD}, env="builtin")
    assert "good" not in h.plugins and "qpt" in h.plugins
    h = _harness_with(tmp_path / "b", monkeypatch, {"good2": GOOD.replace("thirdparty-head", "h2")},
                      env="good2,torchvision_backbones", dist="other")
    assert set(h.plugins) == {"good2", "torchvision_backbones"}
    h = Harness()
    h.load_entry_points(env="")
    assert h.plugins == {} and len(h.registry("heads")) == 0


def test_direct_register_and_unregister():
    import types

    mod = types.ModuleType("inline")
    exec(GOOD, mod.__dict__)
    h = Harness()
    h.register(mod, name="inline")
    assert "thirdparty-head" in h.registry("heads")
    h.unregister("inline")
    assert "thirdparty-head" not in h.registry("heads")


def test_unknown_name_suggests_closest():
    reg = Registry("head")
    for n in ("hyperiqa", "tres", "linear"):
        reg.add(n, object())
    with pytest.raises(UnknownComponentError) as e:
        reg.get("hyperiq")
    msg = str(e.value)
    assert "did you mean 'hyperiqa'" in msg and "\n" not in msg and isinstance(e.value, BiqaError)


def test_global_harness_is_loaded_once():
    assert get_harness() is get_harness()
