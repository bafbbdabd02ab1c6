"""Apply a fine-tuned model: score new images with the head saved by ``biqabench eval``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from biqabench.config import override
from biqabench.device import get_runtime
from biqabench.errors import BiqaError
from biqabench.heads import Recipe, head_spec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images, in a stable order."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise BiqaError(f"{p} is neither an image file nor a folder")
    if not out:
        raise BiqaError(f"no images found in {', '.join(map(str, inputs))}")
    return out


def predict(run: str | Path, inputs: list[str | Path], *, device: str = "auto", precision: str = "auto",
            progress: bool = True) -> pd.DataFrame:
    """Scores for ``inputs`` (files or folders) on the native MOS scale of the run's training set."""
    from biqabench.data import ImageCache
    from biqabench.engine import predict_images
    from biqabench.results import open_run
    from biqabench.runner import EvalConfig, build_model, load_eval_config, _test_seed

    folder = open_run(run)
    state = folder.load_model_state()  # missing or damaged: a one-line error
    manifest = folder.read_manifest()  # a damaged manifest is a one-line error
    cfg: EvalConfig = load_eval_config(folder.config_path)
    spec = head_spec(cfg.head)
    recipe = override(Recipe(), manifest["recipe"], where=f"{folder.manifest_path} recipe")
    model = build_model(cfg, spec, recipe, None)
    model.load_state_dict(state)
    runtime = get_runtime(device, precision)
    model = runtime.prepare(model)
    files = collect_images(inputs)
    train = manifest["datasets"][manifest["train"]]
    # score new images the way the training images were seen (e.g. SPAQ-trained models at 512 px);
    # each file is decoded once, so keeping decoded pixels in memory would only grow with the inputs
    cache = ImageCache(resize=int((train.get("options") or {}).get("resize") or 0) or recipe.resize, memory_bytes=0)

    from biqabench.data import image_patches

    stream = (image_patches(cache.get(f), recipe.patch_size, recipe.test_patches, seed=_test_seed(f.name, cfg.seed))
              for f in files)
    norm = predict_images(model, stream, runtime, progress=progress)
    lo, hi = train["scale"]
    native = lo + norm * (hi - lo) if train["higher_better"] else hi - norm * (hi - lo)
    return pd.DataFrame({"image": [str(f) for f in files], "pred": native, "pred_norm": norm,
                         "scale": f"{lo:g}-{hi:g} ({'higher' if train['higher_better'] else 'lower'} is better)"})


