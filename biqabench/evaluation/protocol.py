"""The protocol's decisions, each said in words for the manifest and the summary.

Which splits a run uses (fresh seeded ones, the official one, another run's files, or, on resume,
its own files), which epoch it keeps (best validation SRCC, or the schedule's final epoch when
there is no validation part) and what each dataset's images look like before cropping (the
folder they come from and the resize).  ``docs/protocol.md`` explains every one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from biqabench.base.errors import BiqaError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from biqabench.data.splits import Split
    from biqabench.data.table import IQATable
    from biqabench.components.heads import TrainRecipe as Recipe
    from biqabench.evaluation.eval_config import EvalConfig, ProbeConfig

#: A validation part smaller than this cannot rank epochs; the final epoch is kept instead.
MIN_VAL_IMAGES = 3


def plan_splits(cfg: "EvalConfig | ProbeConfig", table: "IQATable", run_path: Path | None
                ) -> tuple[list["Split"], str]:
    """(splits, where they came from): ``own files`` when resuming a run that recorded them, the
    source run's id with ``splits_from``, else ``official`` or ``seeds <first>..<last>``.

    ``eval`` and ``probe`` both plan here (``cfg`` needs splits, seed, test_frac, val_frac,
    official_split, splits_from), so a probe and an eval of the same settings write the same files."""
    from biqabench import results
    from biqabench.data import make_splits
    from biqabench.data.splitfiles import load_run_splits, run_split_files

    if run_path is not None and run_split_files(run_path):
        seeds = results.RunFolder(run_path).read_manifest().get("seeds")
        return load_run_splits(run_path, table, seeds), "own files"
    if cfg.splits_from:
        try:
            source = results.load_run(cfg.splits_from)
        except BiqaError as exc:
            raise BiqaError(f"--splits-from: {exc}") from None
        trained_on = source.get("train")
        if trained_on and trained_on != table.name:
            raise BiqaError(f"--splits-from {source.id}: that run split {trained_on!r}, this one trains on "
                            f"{table.name!r}; give a run on the same training set")
        try:
            return load_run_splits(source.path, table, source.get("seeds")), source.id
        except BiqaError as exc:  # e.g. its files name images this dataset lacks
            raise BiqaError(f"--splits-from {source.id}: {exc}") from None
    splits = make_splits(table, n=cfg.splits, seed=cfg.seed, test_frac=cfg.test_frac, val_frac=cfg.val_frac,
                         official=cfg.official_split)
    if cfg.official_split:
        return splits, "official"
    return splits, f"seeds {splits[0].seed}..{splits[-1].seed}"


def model_selection(splits: list["Split"], val_frac: float) -> str:
    """How the epoch whose weights are tested is chosen, in words."""
    if splits and all(len(s.val) >= MIN_VAL_IMAGES for s in splits):
        share = f"{val_frac:.0%} of the training part" if val_frac > 0 else "the split's own validation part"
        return f"epoch with the best validation SRCC (validation: {share}; never the test part)"
    if val_frac > 0:
        return (f"final epoch of the fixed schedule (validation part under {MIN_VAL_IMAGES} images in some "
                "split, too small to rank epochs)")
    return "final epoch of the fixed schedule (val_frac 0: no validation part, all training images train)"


#: How the reference loaders (SSL92/hyperIQA, isalirezag/TReS data_loader.py) size each dataset's
#: images before cropping; the ``paper`` preset reads datasets this way unless ``dataset_options``
#: say otherwise.  KonIQ-10k: the official 512x384 folder (the references resize 1024x768 to
#: (512, 384), which torchvision reads as height 512 x width 384: a transposed aspect, not copied);
#: BID and FLIVE: 512x512 (HyperIQA's BID loader, TReS's FLIVE loader); SPAQ: short side 512.
REFERENCE_INPUT = {
    "koniq10k": {"images": "512x384"},
    "bid": {"resize": "512x512"},
    "flive": {"resize": "512x512"},
    "spaq": {"resize": 512},
}


def dataset_options(name: str, given: dict, preset: str) -> dict:
    """Reader options for dataset ``name``: the reference input size under the ``paper`` preset,
    then whatever the run's ``dataset_options`` give (they win)."""
    base = dict(REFERENCE_INPUT.get(name, {})) if preset == "paper" else {}
    return {**base, **(given or {})}


def effective_resize(table: "IQATable", recipe: "Recipe"):
    """What images are resized to before cropping: the dataset's option wins over the recipe's."""
    return table.options.get("resize") or recipe.resize or 0


def input_size(table: "IQATable", recipe: "Recipe") -> str:
    """E.g. ``512x384 folder, as stored`` or ``short side 512 px`` or ``resized to 512x512``."""
    from biqabench.data.images import describe_resize

    folder = table.options.get("images")
    size = describe_resize(effective_resize(table, recipe))
    return f"{folder} folder, {size}" if folder else size


def split_fields(cfg: "EvalConfig | ProbeConfig", source: str, split_records: list | None) -> dict:
    """What the manifest says about a run's splits (eval's and probe's alike): the files it wrote,
    where the splits came from, and the fractions they were drawn with."""
    return {"split_files": split_records, "splits_from": source, "test_frac": cfg.test_frac,
            "val_frac": cfg.val_frac}


def protocol_fields(cfg: "EvalConfig", recipe: "Recipe", splits: list["Split"], source: str,
                    split_records: list | None, tables: list["IQATable"]) -> dict:
    """What the manifest (and so the summary) says about the protocol; ``tables[0]`` trains."""
    from biqabench.components.targets import describe

    return {**split_fields(cfg, source, split_records), "plcc_fit": cfg.plcc_fit,
            "training_target": describe(tables[0], recipe.target),
            "model_selection": model_selection(splits, cfg.val_frac),
            "input_size": {t.name: input_size(t, recipe) for t in tables}}



def outside_scale_counts(predictions: "pd.DataFrame", manifest: dict) -> dict:
    """Per test set: how many predictions (all splits) fall outside the dataset's native scale.
    A fine-tuned head (or a ridge) is not bounded, so a 0..100 set can get a 103; that is counted,
    not clipped (eval, probe and test manifests record it as ``outside_scale``; the report shows it)."""
    from biqabench.model.scoring import outside_scale

    out = {}
    for name, group in predictions.groupby("test_set") if len(predictions) else ():
        scale = manifest["datasets"].get(name, {}).get("scale")
        if scale:
            out[str(name)] = {"outside": outside_scale(group["pred"].to_numpy(), tuple(scale)),
                              "predictions": int(len(group)), "scale": list(scale)}
    return out


__all__ = ["MIN_VAL_IMAGES", "REFERENCE_INPUT", "dataset_options", "effective_resize", "input_size",
           "model_selection", "outside_scale_counts", "plan_splits", "protocol_fields", "split_fields"]
