"""biqabench: a plugin-extensible toolkit for blind image quality assessment research.

The Python API mirrors the CLI::

    from biqabench import create_backbone, create_head, load_weights, pretrain, evaluate
    backbone = create_backbone("resnet50", weights="qpt")
    head = create_head("hyperiqa", backbone)
"""

__version__ = "0.1.0"

from biqabench.errors import BiqaError  # noqa: E402

__all__ = ["BiqaError", "create_backbone", "create_head", "load_weights", "pretrain", "evaluate",
           "get_runtime", "registry", "__version__"]


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
    if name == "get_runtime":
        from biqabench.device import get_runtime
        return get_runtime
    if name == "registry":
        from biqabench.plugins import registry
        return registry
    raise AttributeError(f"module 'biqabench' has no attribute {name!r}")
