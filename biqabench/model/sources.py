"""Where a trained model's head comes from: a finished eval run's folder, or a file from
``biqabench export`` (:mod:`biqabench.model.export`).

Both give (head with its fine-tuned weights, :class:`biqabench.model.parts.ModelInfo`); an exported
file holds everything needed in its safetensors header (:data:`HEADER_KEY`), so
:func:`head_from_file` rebuilds the head without the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from biqabench.base.errors import BiqaError
from biqabench.model.parts import ModelInfo

HEADER_KEY = "biqabench_model"
FORMAT_VERSION = 1


def looks_like_model_file(path: Path) -> bool:
    return path.suffix == ".safetensors"


def build_head(info: ModelInfo, state: dict | None = None, where: str = "model"):
    """Our head for ``info`` (random backbone init, then ``state`` loaded strictly)."""
    from biqabench.components.backbones import create_backbone
    from biqabench.base.config import override
    from biqabench.components.heads import TrainRecipe, create_head

    recipe = override(TrainRecipe(), info.recipe, where=f"{where} recipe")
    head = create_head(info.head, create_backbone(info.backbone, weights="random"), recipe=recipe)
    if state is not None:
        try:
            head.load_state_dict(state)
        except RuntimeError as exc:
            first = " ".join(str(exc).split())[:240]
            raise BiqaError(f"{where}: weights do not fit head {info.head!r} on {info.backbone!r}: {first}") from None
    return head.eval()


def _run_model_file(folder, split: int) -> Path:
    """The file holding split ``split``'s head; a one-line error naming the splits whose model the
    run kept (eval keeps split 0's; ``save_all_models: true`` keeps every finished split's)."""
    if split < 0:
        raise BiqaError(f"--split {split}: splits are numbered from 0")
    path = folder.split_model_path(split)
    if path.is_file():
        return path
    kept = folder.kept_models()
    finished = folder.completed_splits()
    if str(split) not in finished:
        why = f"it finished split(s) {', '.join(finished)} only" if finished else "it finished no split"
    else:
        why = "eval keeps split 0's unless run with --save-all-models"
    have = (f"models kept: split(s) {', '.join(map(str, kept))}, e.g. --split {kept[0]}" if kept else
            "it kept no model at all (run with save_model: false, or its first split did not finish)")
    raise BiqaError(f"run {folder.path} kept no model for split {split} ({why}); {have}")


def info_from_run(folder, split: int = 0) -> ModelInfo:
    """The :class:`ModelInfo` of a finished eval run's model (a :class:`RunFolder`), from its
    manifest and config."""
    from biqabench.base.config import load_yaml

    manifest = folder.read_manifest()
    if manifest.get("kind") not in (None, "eval") or "recipe" not in manifest:
        raise BiqaError(f"run {folder.path} is a {manifest.get('kind')!r} run without a trained model; "
                        "name an eval run, an exported file or pyiqa:NAME")
    seed = int(load_yaml(folder.config_path).get("seed", 0))  # the run's EvalConfig.seed (default 0)
    train = manifest["datasets"][manifest["train"]]
    recipe = dict(manifest["recipe"])
    lo, hi = (float(v) for v in train["scale"])
    higher = bool(train["higher_better"])
    return ModelInfo(
        head=manifest["head"], backbone=manifest["backbone"], recipe=recipe,
        patch_size=int(recipe.get("patch_size", 224)), test_patches=int(recipe.get("test_patches", 25)),
        # new images are scored the way the training images were seen (SPAQ-trained models at 512 px)
        resize=(train.get("options") or {}).get("resize") or recipe.get("resize") or 0,  # N or "WxH"
        seed=seed, scale=(lo, hi), higher_better=higher,
        # a head trained on native MOS (biqabench.components.targets: TReS) already outputs the native scale
        **({"offset": 0.0, "gain": 1.0} if recipe.get("target") == "native" else
           {"offset": lo if higher else hi, "gain": (hi - lo) if higher else -(hi - lo)}),
        train_set=manifest["train"], weights=str(manifest.get("weights", "")), source=str(folder.path),
        extra={"run": folder.id, "split": split, "train_fingerprint": train.get("fingerprint"),
               "protocol": manifest.get("protocol"), "weights_sha256": manifest.get("weights_sha256")},
    )


def head_from_run(run: str | Path, split: int = 0):
    """(head with the run's fine-tuned weights, its ModelInfo) for a run id, prefix or folder."""
    from biqabench.results import open_run
    from biqabench.components.weights import read_state_dict

    folder = open_run(run)
    info = info_from_run(folder, split)
    model_file = _run_model_file(folder, split)
    return build_head(info, read_state_dict(model_file), where=str(model_file)), info


def head_from_file(path: str | Path):
    """(head, ModelInfo) from a file written by :func:`biqabench.model.export.export_model` (no run folder needed)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BiqaError(f"cannot read {path} as safetensors: {' '.join(str(exc).split())[:160]} "
                        "(truncated, or not a model file?)") from None
    if HEADER_KEY not in meta:
        raise BiqaError(f"{path} has no biqabench header: it holds weights, not a model "
                        "(for backbone weights use --weights; models come from `biqabench export`)")
    try:
        header = json.loads(meta[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise BiqaError(f"{path}: damaged biqabench header ({exc})") from None
    if int(header.get("format_version", 0)) > FORMAT_VERSION:
        raise BiqaError(f"{path} was written by a newer biqabench (format {header['format_version']}); upgrade")
    info = ModelInfo.from_json(header["model"], where=f"{path} header")
    info.source = str(path)
    return build_head(info, state, where=str(path)), info
