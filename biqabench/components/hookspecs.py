"""The hooks a biqabench plugin may implement.

A plugin is any importable module (usually shipped as a pip package) that declares an entry
point in the ``biqabench`` group and implements some of these hooks with ``@hookimpl``.  Each
``register_*`` hook receives a ``register`` callback; calling it adds one component to the
matching registry.  Hooks are called once per process, when the registries are first needed.

Every hook here must be documented in ``docs/plugins.md`` (a test enforces it).
"""

from __future__ import annotations

import pluggy

PROJECT = "biqabench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_backbones(register):
    """Add backbones: ``register(name, factory, description="")``.

    ``factory(**kwargs)`` returns a :class:`biqabench.components.backbones.Backbone` with random weights;
    weights are loaded afterwards by :func:`biqabench.components.weights.load_weights`, so a backbone never
    downloads anything itself.
    """


@hookspec
def resolve_backbone(name, register):
    """Add, on demand, a backbone ``name`` that no ``register_backbones`` hook registered.

    Called only when a name is unknown (e.g. ``--backbone convnext_atto`` from a model zoo of
    thousands): call ``register(name, factory, description="")`` as in ``register_backbones``
    if this plugin can build ``name``, else do nothing.  Plugins are asked in load order; the
    first that registers the name wins.  Keeps start-up fast: nothing is imported or listed
    until a name is asked for.
    """


@hookspec
def search_backbones(pattern):
    """Names this plugin's ``resolve_backbone`` accepts that match the glob ``pattern``.

    Return ``[(name, description), ...]`` (may be long); ``biqabench backbones list --filter``
    shows them next to the registered ones.
    """


@hookspec
def register_pretrainers(register):
    """Add pretraining strategies: ``register(spec)`` with a :class:`biqabench.components.pretrain.PretrainerSpec`.

    A pretrainer turns unlabelled images plus a backbone into backbone weights, saved in the
    weights store under the pretrainer's name (``--weights NAME`` then finds them).
    """


@hookspec
def register_heads(register):
    """Add IQA heads: ``register(spec)`` with a :class:`biqabench.components.heads.HeadSpec`.

    A head is built *around* a given backbone and declares its training recipe as data.
    """


@hookspec
def register_datasets(register):
    """Add labelled IQA datasets: ``register(spec)`` with a :class:`biqabench.data.DatasetSpec`."""


@hookspec
def register_commands(cli):
    """Add CLI subcommands to the typer app ``cli`` (e.g. ``@cli.command()`` or ``cli.add_typer``)."""
