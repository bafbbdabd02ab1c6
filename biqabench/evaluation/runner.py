"""The evaluation protocol: seeded splits, fine-tune, select on validation, test intra and cross.

``evaluate`` is what ``biqabench eval`` runs.  For each of N seeded, content-aware splits of the
training dataset it builds a fresh head around a fresh backbone carrying the requested weights,
fine-tunes on the train part, keeps the epoch with the best SRCC on a validation part of the
*train* split, then scores the test part (intra-dataset) and every other named dataset in full
(cross-dataset).  Every finished split is written to disk at once; ``resume`` skips them and
continues an interrupted split from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from biqabench.runtime import distributed

from biqabench.base import io
from biqabench.components.backbones import create_backbone
from biqabench.base.config import load_yaml, override
from biqabench.data.patches import test_crop_seed
from biqabench.runtime.device import Runtime, get_runtime
from biqabench.training.engine import default_workers, load_trained_state, predict_images, train_head
from biqabench.base.errors import BiqaError
from biqabench.evaluation.eval_config import EvalConfig, load_eval_config
from biqabench.components.heads import HeadSpec, IQAHead, TrainRecipe, create_head, head_spec, validate_recipe
from biqabench.base.metrics import metrics_rows
from biqabench.evaluation.protocol import (dataset_options, effective_resize, outside_scale_counts, plan_splits,
                                          protocol_fields)
from biqabench.evaluation.pinning import determinism, run_weights
from biqabench.results.folder import RunFolder
from biqabench.results.report import run_report, write_report_quietly
from biqabench.runtime.launch import placement
from biqabench.components.targets import to_normalised, training_targets
from biqabench.components.weights import ResolvedWeights

log = logging.getLogger(__name__)

def resolve_recipe(cfg: EvalConfig, spec: HeadSpec, runtime: Runtime) -> tuple[TrainRecipe, str, str]:
    """The head's recipe for this run, a label saying where it came from, and the preset name.

    ``cfg.recipe`` is ``auto`` (the head's ``cpu`` preset on a CPU, ``paper`` elsewhere), a preset
    the head ships (:attr:`HeadSpec.presets`), or a YAML file of overrides (preset ``file``).  A
    head without the preset asked for trains with its built-in (paper-scale) recipe, with a warning.
    """
    preset = cfg.recipe
    if preset == "auto":
        preset = "cpu" if runtime.device.type == "cpu" else "paper"
    if preset in spec.presets:
        recipe, source = spec.preset(preset), f"{spec.name} preset {preset} ({spec.presets[preset]})"
    elif preset in ("paper", "cpu"):
        if preset == "cpu":
            log.warning("head %s ships no cpu preset; training with its built-in (paper-scale) recipe", spec.name)
        recipe, source = spec.recipe, f"{spec.name} defaults (no {preset} preset shipped)"
    else:
        path = Path(preset)
        if not path.is_file():
            shipped = ", ".join(sorted({*spec.presets, "auto", "cpu", "paper"}))
            raise BiqaError(f"config {path} does not exist; --recipe takes a YAML file or a preset of head "
                            f"{spec.name!r} ({shipped})")
        recipe, source, preset = override(spec.recipe, load_yaml(path), where=f"recipe {path}"), str(path), "file"
    if cfg.recipe_overrides:
        recipe = override(recipe, cfg.recipe_overrides, where="recipe_overrides")
        source += " + overrides"
    return validate_recipe(recipe, where=f"recipe ({source})"), source, preset


def _image_patch_stream(table, indices, cache, recipe: TrainRecipe, seed: int) -> Iterator[torch.Tensor]:
    from biqabench.data import image_patches

    for i in indices:
        img = cache.get(table.paths[i])
        yield image_patches(img, recipe.patch_size, recipe.test_patches, seed=test_crop_seed(table.names[i], seed))


def score_table(model: IQAHead, table, indices, cache, recipe: TrainRecipe, runtime: Runtime, *, seed: int = 0,
                progress: bool = True, desc: str = "test") -> np.ndarray:
    """Normalised scores (0..1, higher better) for ``table``'s images at ``indices``."""
    indices = np.asarray(indices, dtype=int)
    return predict_images(model, _image_patch_stream(table, indices, cache, recipe, seed), runtime,
                          progress=progress, desc=desc, total=len(indices))


def dataset_cache(table, recipe: TrainRecipe, workers: int):
    """Decoded-image cache for one dataset: its resize option (e.g. SPAQ's 512 px short side) wins
    over the recipe's; with DataLoader workers the decoded pixels go to a shared disk folder so each
    worker and each epoch reuse one decode."""
    from biqabench.data import ImageCache, default_cache_folder

    return ImageCache(resize=effective_resize(table, recipe), folder=default_cache_folder() if workers > 0 else None)


def build_model(cfg: EvalConfig, spec: HeadSpec, recipe: TrainRecipe, weights: ResolvedWeights | None,
                backbone=None) -> IQAHead:
    """A fresh head around a fresh backbone carrying ``weights`` (None: random initialisation), or
    around ``backbone`` (a frozen one already built: it never changes, so splits share it instead of
    each initialising and loading a ResNet-50 again, ~1 s a split on a CPU).

    A frozen backbone is initialised from the run seed, not the split's, so that every split
    holds the same one and cached features (``recipe.cache_features``) serve them all; the head
    still starts from the split's random stream."""
    if backbone is not None:
        return create_head(spec.name, backbone, recipe=recipe)
    if recipe.freeze_backbone:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            backbone = create_backbone(cfg.backbone)
    else:
        backbone = create_backbone(cfg.backbone)
    if weights is not None:
        weights.load_into(backbone)
    return create_head(spec.name, backbone, recipe=recipe)


def evaluate(config: EvalConfig | str | Path | None = None, *, run_dir: str | Path | None = None,
             resume: str | Path | None = None, progress: bool = True, **overrides: Any) -> Path:
    """Run the protocol; return the run folder (``results/runs/<id>``)."""
    from biqabench.results import open_run

    started = time.time()
    folder: RunFolder | None = None
    if resume is not None:
        folder = open_run(resume)
        cfg = load_eval_config(folder.config_path)
        started -= float(folder.read_manifest().get("wall_seconds") or 0.0)  # time already spent
    else:
        cfg = config if isinstance(config, EvalConfig) else load_eval_config(config, **overrides)
    if cfg.protocol == "linear-probe":  # frozen features + ridge: biqabench.evaluation.probe (no SGD epochs)
        return _linear_probe(cfg, folder.path if folder is not None else run_dir, progress)
    with distributed.process_group(get_runtime(cfg.device, cfg.precision, compile=cfg.compile)) as runtime:
        return _evaluate(cfg, runtime, folder, run_dir, started, progress and distributed.is_main()).path


def _linear_probe(cfg: EvalConfig, run_dir: str | Path | None, progress: bool) -> Path:
    """``eval --protocol linear-probe`` is ``biqabench probe`` with eval's datasets and splits
    (seeds, fractions, ``--official-split``, ``--splits-from``: the same split files); the head and
    its recipe do not apply (a ridge on pooled frozen features replaces the SGD epochs)."""
    from biqabench.evaluation.probe import ProbeConfig, run_probe

    if cfg.head != EvalConfig.head:
        log.warning("--protocol linear-probe fits a ridge on frozen features; --head %s is not used", cfg.head)
    probe_cfg = ProbeConfig(weights=cfg.weights, backbone=cfg.backbone, train=cfg.train, test=list(cfg.test),
                            splits=cfg.splits, seed=cfg.seed, test_frac=cfg.test_frac, val_frac=cfg.val_frac,
                            official_split=cfg.official_split, splits_from=cfg.splits_from, data_root=cfg.data_root,
                            dataset_options=dict(cfg.dataset_options), skip_bad=cfg.skip_bad, device=cfg.device,
                            precision="fp32" if cfg.precision == "auto" else cfg.precision)
    return run_probe(probe_cfg, run_dir=run_dir, progress=progress)


@dataclass
class _Plan:
    """Everything resolved before the first split trains: mistakes surface in seconds."""

    cfg: EvalConfig
    runtime: Runtime
    spec: HeadSpec
    recipe: TrainRecipe
    recipe_source: str
    recipe_preset: str
    weights: ResolvedWeights
    train_table: Any
    test_tables: dict
    splits: list
    workers: int
    caches: dict
    scorer: Any = None  # _Scorer: from cached features for a frozen backbone, else the model on crops
    splits_source: str = ""  # plan_splits: own files (resume), a run id (--splits-from), official, seeds
    nondeterministic_ops: list = field(default_factory=list)  # filled while training under --deterministic
    frozen_backbone: Any = None  # a frozen backbone, built once and shared by every split's head

    def as_norm(self, pred):
        """A head trained on native MOS (TReS) scores on the *training* set's scale: normalise it."""
        t = self.train_table
        return to_normalised(t.scale, t.higher_better, pred, self.recipe.target)

    @property
    def train_name(self) -> str:
        return self.train_table.name


def _plan(cfg: EvalConfig, runtime: Runtime, folder: RunFolder | None = None) -> _Plan:
    from biqabench.data import load_dataset

    spec = head_spec(cfg.head)
    recipe, recipe_source, recipe_preset = resolve_recipe(cfg, spec, runtime)
    weights = run_weights(cfg, folder)  # a resumed run: the file it pinned, checked by sha256
    build_model(cfg, spec, recipe, weights)  # the weights fit and the head builds, before any folder exists
    train_name, test_names = cfg.datasets()
    root = cfg.data_root or None
    opts = lambda name: {"skip_bad": cfg.skip_bad,  # noqa: E731 - the paper preset reads the references' sizes
                         **dataset_options(name, cfg.dataset_options.get(name, {}), recipe_preset)}
    train_table = load_dataset(train_name, root, **opts(train_name))
    test_tables = {n: load_dataset(n, root, **opts(n)) for n in test_names}
    split_list, splits_source = plan_splits(cfg, train_table, folder.path if folder is not None else None)
    workers = default_workers() if cfg.workers < 0 else cfg.workers
    caches = {t.name: dataset_cache(t, recipe, workers) for t in [train_table, *test_tables.values()]}
    return _Plan(cfg, runtime, spec, recipe, recipe_source, recipe_preset, weights, train_table, test_tables,
                 split_list, workers, caches, splits_source=splits_source)


def _with_scorer(plan: _Plan, progress: bool) -> _Plan:
    return dataclasses.replace(plan, scorer=_Scorer(plan.recipe, plan.runtime, plan.caches, progress, plan.cfg.seed))


def _manifest(plan: _Plan, split_records: list | None) -> dict:
    cfg, runtime = plan.cfg, plan.runtime
    tables = [plan.train_table, *plan.test_tables.values()]
    return {
        "kind": "eval", "head": cfg.head, **plan.weights.describe(),
        "backbone": cfg.backbone, "protocol": cfg.protocol, "train": plan.train_name,
        "test": list(plan.test_tables), "splits": len(plan.splits), "seeds": [int(s.seed) for s in plan.splits],
        "device": str(runtime.device), "precision": runtime.precision, "recipe": dataclasses.asdict(plan.recipe),
        "recipe_source": plan.recipe_source, "recipe_preset": plan.recipe_preset,
        "datasets": {t.name: {"fingerprint": t.fingerprint(), "images": len(t), "options": t.options,
                              "root": str(t.root), "scale": list(t.scale), "higher_better": t.higher_better}
                     for t in [plan.train_table, *plan.test_tables.values()]},
        "world_size": distributed.world_size(), "launcher": placement(),  # local GPU, SLURM job and restarts
        **protocol_fields(cfg, plan.recipe, plan.splits, plan.splits_source, split_records, tables),
        "deterministic": cfg.deterministic, "nondeterministic_ops": plan.nondeterministic_ops,
        "status": "running", "error": None,  # a resumed run clears the error of a failed attempt
    }


def _evaluate(cfg: EvalConfig, runtime: Runtime, folder: RunFolder | None, run_dir: str | Path | None,
              started: float, progress: bool) -> RunFolder:
    """The protocol for a resolved config (``folder`` set: resume that run).

    Under ``torchrun`` every process fine-tunes (DDP, a shard of each epoch's patches each);
    rank 0 alone writes the run folder and scores the test sets while the others wait.
    """
    from biqabench.runtime.interrupt import sigterm_as_interrupt

    plan = _with_scorer(_plan(cfg, runtime, folder), progress)
    if folder is None:
        folder = _new_folder(plan, run_dir)
    folder = RunFolder(distributed.broadcast(folder.path if folder is not None else None))
    manifest = _manifest(plan, _split_records(plan, folder))
    _record(folder, manifest)
    with sigterm_as_interrupt(), determinism(cfg.deterministic, plan.nondeterministic_ops):
        try:
            _run_splits(plan, folder, progress)
        except KeyboardInterrupt:
            io.remove_temporaries(folder.path)
            _record(folder, manifest, status="interrupted", wall_seconds=time.time() - started)
            raise BiqaError(f"interrupted; finished splits are kept. Continue with: biqabench eval --resume "
                            f"{folder.path}") from None
        except Exception as exc:  # a diverging loss, a full disk, a plugin's bug: say so in the manifest
            error = str(exc) if isinstance(exc, BiqaError) else f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(BiqaError):  # the disk may be what failed
                _record(folder, manifest, status="failed", error=error, wall_seconds=time.time() - started)
            raise
    finalize_run(folder, manifest, started)
    distributed.barrier()
    return folder


@distributed.rank_zero_only
def _new_folder(plan: _Plan, run_dir: str | Path | None) -> RunFolder:
    """A fresh run folder holding the run's ``config.yaml`` (the other processes get its path)."""
    cfg = plan.cfg
    label = f"{cfg.head}-{plan.weights.label}-{cfg.backbone}"
    folder = RunFolder(run_dir).ensure() if run_dir else RunFolder.create("eval", label)
    folder.write_config(dataclasses.asdict(cfg))
    return folder


@distributed.rank_zero_only
def _split_records(plan: _Plan, folder: RunFolder) -> list | None:
    """The split files' records for the manifest; a resumed run keeps the files it started with."""
    from biqabench.data.splitfiles import write_split_files

    if plan.splits_source == "own files":
        return folder.read_manifest().get("split_files")
    return write_split_files(folder.path, plan.train_table, plan.splits)


@distributed.rank_zero_only
def _record(folder: RunFolder, manifest: dict, **changes: Any) -> None:
    """The run's manifest, with ``changes`` (status, error, wall time) on top."""
    folder.write_manifest(**{**manifest, **changes})


def _run_splits(plan: _Plan, folder: RunFolder, progress: bool) -> None:
    """Train, score and write every split not yet finished (rank 0 scores and writes)."""
    done = set(folder.completed_splits())
    for k, split in enumerate(plan.splits):
        if str(k) in done:
            log.info("split %d already finished, skipping", k)
            folder.remove_checkpoint(k)  # if stopped before its cleanup
            continue
        if distributed.is_main():
            folder.ensure_split(k)
        model, result = _train_split(plan, k, split, folder, progress)
        _test_split(plan, folder, k, split, model, result, progress)
        distributed.barrier()


@distributed.rank_zero_only
def _test_split(plan: _Plan, folder: RunFolder, k: int, split, model: IQAHead, result, progress: bool) -> None:
    """Split ``k``'s best weights scored on its test part and the cross-dataset sets, then written."""
    load_trained_state(model, result.best_state)
    preds, rows = _score_split(plan, k, split, model, progress)
    _write_split(plan, folder, k, model, result, preds, rows)


def _train_split(plan: _Plan, k: int, split, folder: RunFolder, progress: bool):
    """Fine-tune a fresh model on split ``k``'s training part, selecting on its validation part."""
    from biqabench.data import PatchDataset
    from biqabench.base.metrics import srcc

    cfg, recipe, table = plan.cfg, plan.recipe, plan.train_table
    cache = plan.caches[plan.train_name]
    seed = int(split.seed)
    torch.manual_seed(seed)
    model = build_model(cfg, plan.spec, recipe, plan.weights, backbone=plan.frozen_backbone)
    if recipe.freeze_backbone:
        plan.frozen_backbone = model.backbone
    scorer = plan.scorer
    if scorer.store is not None:  # frozen backbone: its features of fixed crops, computed once
        train_ds = scorer.store.train_set(model, table, split.train, cache, recipe, seed=cfg.seed)
        if model.feature_norm is not None:  # recipe standardize_features: this split's training statistics
            model.feature_norm.fit(train_ds.feats)
    else:
        train_ds = PatchDataset(table, split.train, recipe.patch_size, recipe.train_patches, train=True, seed=seed,
                                cache=cache, hflip=recipe.hflip, vflip=recipe.vflip, as_uint8=True,
                                targets=training_targets(table, recipe.target))
    validate = None
    if len(split.val) >= 3:
        val_mos = table.mos_norm[split.val]

        def validate(m, _idx=split.val, _mos=val_mos, _seed=seed):
            return srcc(plan.as_norm(scorer(m, table, _idx, seed=_seed, desc="val", progress=False)), _mos)

    result = train_head(model, train_ds, recipe, plan.runtime, validate=validate, seed=seed,
                        checkpoint=folder.checkpoint_path(k), workers=plan.workers, progress=progress,
                        desc=f"split {k + 1}/{len(plan.splits)}", nan_policy=cfg.nan_policy)
    return model, result


def _score_split(plan: _Plan, k: int, split, model: IQAHead, progress: bool) -> tuple[list, list]:
    """Split ``k``'s intra-dataset test part and every cross-dataset set in full."""
    preds, rows = [], []
    sets = [(plan.train_name, "intra", plan.train_table, split.test)]
    sets += [(n, "cross", t, np.arange(len(t))) for n, t in plan.test_tables.items()]
    for name, kind, table, idx in sets:
        if len(idx) == 0:
            continue
        pred_norm = plan.as_norm(plan.scorer(model, table, idx, seed=plan.cfg.seed, desc=f"split {k + 1} test {name}"))
        p, r = metrics_rows(k, plan.train_name, name, kind, table, idx, pred_norm, plan.cfg.plcc_fit)
        preds += p
        rows.append(r)
    return preds, rows


def _write_split(plan: _Plan, folder: RunFolder, k: int, model: IQAHead, result, preds: list, rows: list) -> None:
    history = pd.DataFrame(result.history).assign(split=k, best_epoch=result.best_epoch, **result.skipped)
    folder.write_history(history, split=k)
    folder.write_predictions(pd.DataFrame(preds), split=k)
    if plan.cfg.save_all_models or (k == 0 and plan.cfg.save_model):
        folder.save_model(model.state_dict(), split=k)
    folder.write_metrics(pd.DataFrame(rows), split=k)  # last: marks the split done
    folder.remove_checkpoint(k)




class _Scorer:
    """Normalised scores of a table's images: from cached features when the recipe caches them
    (``recipe.cache_features``: the same crops as :func:`score_table`, run once per run), else by
    running the model on the crops."""

    def __init__(self, recipe: TrainRecipe, runtime: Runtime, caches: dict, progress: bool, seed: int):
        from biqabench.training.features import FeatureStore

        self.recipe, self.runtime, self.caches, self.progress, self.seed = recipe, runtime, caches, progress, seed
        self.store = FeatureStore(runtime, progress=progress) if recipe.cache_features else None

    def __call__(self, model: IQAHead, table, idx, *, seed: int, desc: str, progress: bool | None = None):
        show = self.progress if progress is None else progress
        if self.store is not None:  # the run seed's crops, so every split reads the same cached ones
            return self.store.score(model, table, idx, self.caches[table.name], self.recipe, seed=self.seed, desc=desc)
        return score_table(model, table, idx, self.caches[table.name], self.recipe, self.runtime, seed=seed,
                           progress=show, desc=desc)


@distributed.rank_zero_only
def finalize_run(folder: RunFolder, manifest: dict, started: float) -> None:
    """Write the merged history, the summary, the plots and the final manifest (rank 0 only)."""
    history = folder.merge_history()
    # rebuild the merged tables from the per-split files (the source of truth): an interrupt
    # between writing a split's file and the merged one must not leave a stale merged table
    metrics = folder.read_metrics()
    folder.write_metrics(metrics)
    predictions = folder.read_predictions()
    folder.write_predictions(predictions)
    manifest = {**manifest, "outside_scale": outside_scale_counts(predictions, manifest)}
    folder.write_summary(metrics, manifest)
    folder.write_plots(predictions, history)
    skipped = {k: int(history.groupby("split")[k].first().sum()) for k in ("nan_skipped", "scaler_skipped")
               if k in history}  # batches --nan-policy skip dropped; fp16 steps the grad scaler skipped
    folder.write_manifest(**{**manifest, **skipped, "status": "finished", "wall_seconds": time.time() - started})
    write_report_quietly(run_report, folder.path)
