"""Readers for the official distributions of IQA datasets: ``load(root, **options) -> IQATable``.

Generic functions only; which datasets exist (their :class:`~biqabench.data.DatasetSpec`: names,
layouts, scales, folders) is declared by the bundled ``datasets`` plugin
(``biqabench_plugins.datasets``), loaded through its entry point as a third party's would be.
"""

from __future__ import annotations

from biqabench.data.readers.authentic import KONIQ_LABELS, SPAQ_LABELS, load_bid, load_clive, load_flive, load_koniq, load_spaq
from biqabench.data.readers.synthetic import CSIQ_LABELS, load_csiq, load_kadid, load_live, load_tid2013
from biqabench.data.readers.tables import load_generic, load_pyiqa, read_generic_csv


__all__ = ["load_clive", "load_koniq", "load_spaq", "load_bid", "load_flive",
           "load_kadid", "load_tid2013", "load_live", "load_csiq", "load_pyiqa", "load_generic", "read_generic_csv"]
