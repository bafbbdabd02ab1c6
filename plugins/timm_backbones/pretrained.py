"""``--weights imagenet`` for timm models: the file named by timm's pretrained config, offline first.

Where the file is looked for, in order:

1. a plain file in torch hub's checkpoint folder, named after the Hugging Face repository
   (``$TORCH_HOME/hub/checkpoints/<repo name>.safetensors``, e.g. ``convnext_atto.d2_in1k``):
   the easy place to put a file copied from a connected machine, next to torchvision's;
2. the Hugging Face cache, where timm itself keeps them (``$HF_HOME/hub/models--timm--...``);
3. online only: downloaded into the Hugging Face cache (or, for configs with a URL only, into
   torch hub's checkpoint folder).

Offline and not found, it fails with one line naming the file and where to place it.  The file
found is then read by :func:`biqabench.components.weights.read_state_dict` like any ``--weights FILE``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from biqabench.plugin_api import BiqaError

HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


def hf_cache_dir() -> str | None:
    """The Hugging Face hub cache, read from the environment at call time (tests move it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def imagenet_file(model_name: str) -> Path:
    """Path of the pretrained weights timm's config names for ``model_name`` (``name`` or ``name.tag``)."""
    from biqabench_plugins.timm_backbones.backbone import import_timm

    cfg = import_timm().models.get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise BiqaError(f"--weights imagenet: timm has no pretrained weights for {model_name!r}; "
                        "use --weights random or a file")
    if cfg.file:
        return Path(cfg.file)
    if cfg.hf_hub_id:
        return _hf_file(model_name, cfg.hf_hub_id, cfg.hf_hub_filename)
    return _url_file(model_name, cfg.url)


def plain_location(repo_id: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{repo_id.rsplit('/', 1)[-1]}.safetensors"


def _hf_file(model_name: str, repo_id: str, filename: str | None) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    plain = plain_location(repo_id)
    if plain.is_file():
        return plain
    cache = hf_cache_dir()
    names = (filename,) if filename else HF_FILENAMES
    for name in names:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=cache)
        if isinstance(hit, str):
            return Path(hit)
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would break the one-line error offline
    try:
        return Path(hf_hub_download(repo_id, names[0], cache_dir=cache))
    except Exception as exc:  # noqa: BLE001 - offline, proxy, missing file...
        raise BiqaError(
            f"--weights imagenet: timm model {model_name!r} needs {names[0]} from huggingface.co/{repo_id}, "
            f"not cached and not downloadable here ({type(exc).__name__}); offline, place that file at {plain} "
            f"(or in the Hugging Face cache {cache or '~/.cache/huggingface/hub'}, e.g. "
            f"`huggingface-cli download {repo_id} {names[0]}`), or pass --weights /path/to/{names[0]}"
        ) from None
    finally:
        hub_log.setLevel(level)


def _url_file(model_name: str, url: str) -> Path:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), progress=True)
    except Exception as exc:  # noqa: BLE001
        raise BiqaError(f"--weights imagenet: could not download {url} for timm model {model_name!r} "
                        f"({type(exc).__name__}); offline, place that file at {cached}") from None
    return cached
