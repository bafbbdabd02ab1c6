"""The one namespace a biqabench plugin imports.

A plugin (bundled in ``plugins/`` or installed from elsewhere) takes everything it needs from the
core here, and nothing from the core's subpackages, whose layout may change::

    from biqabench.plugin_api import Backbone, HeadSpec, IQAHead, TrainRecipe, hookimpl

Hooks and specs are the contract (docs/plugins.md); the helpers below are the ones the bundled
plugins use: errors and YAML config, atomic I/O, device and distributed runtime, the training
loop's checkpoints and divergence guard, the pretraining loop (``Pretrainer``, ``PretrainConfig``,
its data and contrastive building blocks), the weights store, and the dataset readers' helpers.
Names are imported on first use, so importing this module costs nothing (a dataset plugin that
only reads tables never imports torch); ``plugin_api.pyi`` beside it lists them for IDEs and type
checkers, which cannot see through ``__getattr__``.  Tests (tests/system/test_code_rules.py) keep the
bundled plugins to this module and the stub equal to the table.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (defining module, attribute there; None: the module itself)
_NAMES: dict[str, tuple[str, str | None]] = {
    # -- hooks and the interfaces plugins implement (docs/plugins.md) ------------------------------
    "hookimpl": ("biqabench.components.hookspecs", "hookimpl"),
    "Backbone": ("biqabench.components.backbones", "Backbone"),
    "TinyBackbone": ("biqabench.components.backbones", "TinyBackbone"),
    "create_backbone": ("biqabench.components.backbones", "create_backbone"),
    "HeadSpec": ("biqabench.components.heads", "HeadSpec"),
    "IQAHead": ("biqabench.components.heads", "IQAHead"),
    "TrainRecipe": ("biqabench.components.heads", "TrainRecipe"),
    "PyiqaCheckpoint": ("biqabench.components.heads", "PyiqaCheckpoint"),
    "presets_in": ("biqabench.components.heads", "presets_in"),
    "load_foreign_state_dict": ("biqabench.components.heads", "load_foreign_state_dict"),
    "PretrainerSpec": ("biqabench.components.pretrain", "PretrainerSpec"),
    "PretrainRequest": ("biqabench.components.pretrain", "PretrainRequest"),
    "DatasetSpec": ("biqabench.data.table", "DatasetSpec"),
    "registry": ("biqabench.components.plugins", "registry"),
    # -- weights --------------------------------------------------------------------------------------
    "WeightsRecord": ("biqabench.components.weights", "WeightsRecord"),
    "WeightsStore": ("biqabench.components.weights", "WeightsStore"),
    "WEIGHTS_PREFIXES": ("biqabench.components.weights", "PREFIXES"),
    "read_state_dict": ("biqabench.components.weights", "read_state_dict"),
    # -- foundation: errors, config, files, plots -----------------------------------------------------
    "BiqaError": ("biqabench.base.errors", "BiqaError"),
    "load_yaml": ("biqabench.base.config", "load_yaml"),
    "override": ("biqabench.base.config", "override"),
    "io": ("biqabench.base.io", None),
    "results_root": ("biqabench.base.paths", "results_root"),
    "loss_curve": ("biqabench.base.plots", "loss_curve"),
    # -- runtime and training loops -------------------------------------------------------------------
    "Runtime": ("biqabench.runtime.device", "Runtime"),
    "get_runtime": ("biqabench.runtime.device", "get_runtime"),
    "choose_threads": ("biqabench.runtime.device", "choose_threads"),
    "threads": ("biqabench.runtime.device", "threads"),
    "distributed": ("biqabench.runtime.distributed", None),
    "Interrupted": ("biqabench.runtime.interrupt", "Interrupted"),
    "StopFlag": ("biqabench.runtime.interrupt", "StopFlag"),
    "build_optimizer": ("biqabench.components.optimizers", "build_optimizer"),
    "check_optimizer": ("biqabench.components.optimizers", "check_optimizer"),
    "checkpoint": ("biqabench.training.checkpoint", None),
    "NanGuard": ("biqabench.training.divergence", "NanGuard"),
    "check_policy": ("biqabench.training.divergence", "check_policy"),
    # -- pretraining: the core loop a Pretrainer runs on (docs/pretraining.md) ------------------------
    "Pretrainer": ("biqabench.training.pretrain_method", "Pretrainer"),
    "PretrainConfig": ("biqabench.training.pretrain_method", "PretrainConfig"),
    "OptimConfig": ("biqabench.training.pretrain_method", "OptimConfig"),
    "FROM_REQUEST": ("biqabench.training.pretrain_method", "FROM_REQUEST"),
    "PRETRAIN_RESUMABLE_CHANGES": ("biqabench.training.pretrain_method", "RESUMABLE_CHANGES"),
    "load_pretrain_config": ("biqabench.training.pretrain_method", "load_config"),
    "fit_crop": ("biqabench.training.pretrain_method", "fit_crop"),
    "request_values": ("biqabench.training.pretrain_method", "request_values"),
    "lr_at": ("biqabench.training.pretrain_method", "lr_at"),
    "PretrainTrainer": ("biqabench.training.pretraining", "PretrainTrainer"),
    "run_pretraining": ("biqabench.training.pretraining", "run_pretraining"),
    "PRETRAIN_CHECKPOINT": ("biqabench.training.pretraining", "CHECKPOINT"),
    **{name: ("biqabench.training.pretrain_data", name) for name in (
        "Views", "CropDataset", "StepBatches", "StepSampler", "StreamSampler", "IMAGE_SUFFIXES", "default_data",
        "image_at", "list_images", "low_priority_worker", "normalise", "random_patches", "step_generators",
        "step_samples")},
    **{name: ("biqabench.training.contrastive", name) for name in (
        "Encoder", "Projector", "KeyQueue", "momentum_update", "shuffled_forward", "concat_all_gather",
        "info_nce_logits", "nt_xent")},
    # -- data: tables, images, the embedded demo sets, reader helpers ---------------------------------
    "IQATable": ("biqabench.data.table", "IQATable"),
    "build_table": ("biqabench.data.table", "build_table"),
    "IMAGENET_MEAN": ("biqabench.data.images", "IMAGENET_MEAN"),
    "IMAGENET_STD": ("biqabench.data.images", "IMAGENET_STD"),
    "decode_array": ("biqabench.data.images", "decode_array"),
    "EMBEDDED_VERSION": ("biqabench.data.embedded", "VERSION"),
    "embedded_root": ("biqabench.data.embedded", "embedded_root"),
    "load_photo": ("biqabench.data.embedded", "load_photo"),
    "pristine_dir": ("biqabench.data.embedded", "pristine_dir"),
    "publish": ("biqabench.data.embedded", "publish"),
    "load_generic": ("biqabench.data.readers", "load_generic"),
    "load_pyiqa": ("biqabench.data.readers", "load_pyiqa"),
    "read_generic_csv": ("biqabench.data.readers.tables", "read_generic_csv"),
    "read_xlsx": ("biqabench.data.readers.xlsx", "read_xlsx"),
    **{name: ("biqabench.data.readers.common", name) for name in (
        "cell", "column", "find_dir", "find_file", "has_files", "need_root", "no_unknown_options", "parse_bool",
        "read_csv", "read_whitespace_table", "split_label")},
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    target = _NAMES.get(name)
    if target is None:
        raise AttributeError(f"module 'biqabench.plugin_api' has no attribute {name!r}")
    module = importlib.import_module(target[0])
    value = module if target[1] is None else getattr(module, target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
