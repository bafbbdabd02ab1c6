"""A trained model as one file: weights plus a JSON header saying how to rebuild and use it.

``biqabench export RUN -o model.safetensors`` writes the head's state dict as safetensors (which
holds tensors only: loading it can never run code, the ``weights_only`` promise) and, in the
safetensors metadata under ``biqabench_model``, a :class:`biqabench.model.parts.ModelInfo`: head,
backbone, the full recipe (head options included), test crops, resize, scale and direction,
training set and its fingerprint, source run and split, and the biqabench version.
:func:`biqabench.model.sources.head_from_file` rebuilds the head from that alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from biqabench.base import io
from biqabench.model.parts import ModelInfo
from biqabench.model.sources import FORMAT_VERSION, HEADER_KEY, head_from_run


def export_model(head, info: ModelInfo, output: str | Path) -> Path:
    """Write ``head``'s weights and ``info`` as one safetensors file."""
    from biqabench import __version__

    header = {"format": "biqabench-model", "format_version": FORMAT_VERSION, "biqabench_version": __version__,
              "model": {**info.to_json(), "source": ""},
              "exported_from": info.extra.get("run") or Path(info.source).name}
    state = {k: v for k, v in head.state_dict().items()}
    return io.save_safetensors(state, output, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})


def export_run(run: str | Path, output: str | Path, split: int = 0) -> tuple[Path, ModelInfo]:
    """``biqabench export``: a run's model (split ``split``) as one file."""
    head, info = head_from_run(run, split)
    info = dataclasses.replace(info)
    return export_model(head, info, output), info
