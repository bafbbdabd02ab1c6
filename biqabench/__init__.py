"""biqabench: a plugin-extensible toolkit for blind image quality assessment research.

The Python API mirrors the CLI::

    from biqabench import create_backbone, create_head, load_weights, pretrain, evaluate
    backbone = create_backbone("resnet50", weights="qpt")
    head = create_head("hyperiqa", backbone)
    m = load_model("RUN_ID")          # or an exported file, or "pyiqa:NAME[:FILE]"
    m("photo.jpg")                    # score on the model's native scale

The package's folders are its layers (docs/architecture.md); plugins import
:mod:`biqabench.plugin_api`.  No subpackage shares its name with a function below.
"""

__version__ = "0.1.0"

from biqabench.base.errors import BiqaError  # noqa: E402

# name -> (module, attribute): imported on first use, so importing biqabench stays cheap (no torch)
_API = {
    "create_backbone": ("biqabench.components.backbones", "create_backbone"),
    "create_head": ("biqabench.components.heads", "create_head"),
    "load_weights": ("biqabench.components.weights", "load_weights"),
    "pretrain": ("biqabench.components.pretrain", "pretrain"),
    "evaluate": ("biqabench.evaluation.runner", "evaluate"),
    "load_model": ("biqabench.model.load", "load_model"),
    "predict": ("biqabench.model.predict", "predict"),
    "test_model": ("biqabench.evaluation.zeroshot", "test_model"),
    "export_run": ("biqabench.model.export", "export_run"),
    "get_runtime": ("biqabench.runtime.device", "get_runtime"),
    "registry": ("biqabench.components.plugins", "registry"),
}

__all__ = ["BiqaError", *_API, "__version__"]


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'biqabench' has no attribute {name!r}")
    import importlib

    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)
