"""Bundled plugin: the dataset readers for official IQA distributions and the embedded demo sets.

Registered exactly as a third-party dataset plugin would: one ``DatasetSpec`` per dataset.
"""

from __future__ import annotations

from biqabench.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from biqabench.data.readers import builtin_specs

    for spec in builtin_specs():
        register(spec)
