"""Generic table readers: ``load(root, **options) -> IQATable`` for any data in a known table form.

``csv`` (a custom ``image,mos[,ref][,split]`` file) and ``pyiqa`` (pyiqa's ``meta_info_*.csv``),
plus the helpers a dataset reader is built from (:mod:`.common`: finding files, parsing cells;
:mod:`.xlsx`: Excel sheets without openpyxl).  The readers for the official distributions of
named datasets (CLIVE, KonIQ-10k, KADID-10k...) and the list of which datasets exist live in the
bundled ``datasets`` plugin (``biqabench_plugins.datasets``), loaded through its entry point as a
third party's would be.
"""

from __future__ import annotations

from biqabench.data.readers.tables import load_generic, load_pyiqa, read_generic_csv


__all__ = ["load_pyiqa", "load_generic", "read_generic_csv"]
