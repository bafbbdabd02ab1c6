"""biqabench: a plugin-extensible toolkit for blind image quality assessment research.

The Python API mirrors the CLI::

    from biqabench import create_backbone, create_head, load_weights, pretrain, evaluate
    backbone = create_backbone("resnet50", weights="qpt")
    head = create_head("hyperiqa", backbone)
    m = load_model("RUN_ID")          # or an exported file, or "pyiqa:NAME[:FILE]"
    m("photo.jpg")                    # score on the model's native scale
"""

__version__ = "0.1.0"

import sys as _sys  # noqa: E402
import types as _types  # noqa: E402

from biqabench.errors import BiqaError  # noqa: E402

# API functions that share their name with a submodule (biqabench.pretrain, biqabench.predict):
# importing the submodule must not replace the function on the package (Python's import system
# sets ``biqabench.<submodule>`` to the module), so `from biqabench import predict` is always the
# function; the modules stay importable as ``from biqabench.predict import ...``.
_SHADOWED = ("pretrain", "predict")


class _Package(_types.ModuleType):
    def __setattr__(self, name, value):
        if name in _SHADOWED and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

__all__ = ["BiqaError", "create_backbone", "create_head", "load_weights", "pretrain", "evaluate",
           "load_model", "predict", "test_model", "export_run", "get_runtime", "registry", "__version__"]


def __getattr__(name):  # lazy: importing biqabench stays cheap (no torch until needed)
    if name == "create_backbone":
        from biqabench.backbones import create_backbone
        return create_backbone
    if name == "create_head":
        from biqabench.heads import create_head
        return create_head
    if name == "load_weights":
        from biqabench.weights import load_weights
        return load_weights
    if name == "pretrain":
        from biqabench.pretrain import pretrain
        return pretrain
    if name == "evaluate":
        from biqabench.runner import evaluate
        return evaluate
    if name == "load_model":
        from biqabench.model import load_model
        return load_model
    if name == "predict":
        from biqabench.predict import predict
        return predict
    if name == "test_model":
        from biqabench.zeroshot import test_model
        return test_model
    if name == "export_run":
        from biqabench.export import export_run
        return export_run
    if name == "get_runtime":
        from biqabench.device import get_runtime
        return get_runtime
    if name == "registry":
        from biqabench.plugins import registry
        return registry
    raise AttributeError(f"module 'biqabench' has no attribute {name!r}")
