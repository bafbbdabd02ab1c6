"""``biqabench probe``: the linear probe of frozen backbone features, the standard way to judge
a pretrained backbone for IQA (CONTRIQUE, Re-IQA, ARNIQA), and fast.

What it does, following CONTRIQUE's protocol (Madhusudana et al., TIP 2022) where it says one:

1. Every image is fed *whole* (shorter side resized to ``size``, aspect kept; 0 keeps the native
   size) and as a half-scale copy; each stage's feature map is pooled into its per-channel mean
   and standard deviation, and the poolings of all stages and both scales are concatenated.
2. Those features are computed **once per image** and kept in a disk cache keyed on the weights'
   sha256, the backbone, the image file and the sizes (``$BIQABENCH_CACHE/features``), so a second
   probe of the same weights (other splits, other test sets, another alpha grid) extracts nothing.
3. Ridge regression (:mod:`biqabench.evaluation.ridge`, closed form) predicts the normalised MOS; alpha is
   chosen by a grouped k-fold CV *on the training part of each split only*.
4. The splits are ``eval``'s, planned by the same code (:func:`biqabench.evaluation.protocol.plan_splits`):
   seeded content-aware splits, the official one, or another run's files (``--splits-from``),
   written as ``splits/split_<k>.csv`` exactly as ``eval`` writes them (the validation part is
   drawn as eval's is, so the files are equal; the ridge trains on train + validation, the test
   part does not depend on it).  It tests on the test part and in full on every ``--test`` set.
   The run folder is ``eval``'s too (metrics.csv, predictions.csv, summary.md with medians and
   bootstrap CIs, manifest), so ``biqabench results list/show/compare`` read probes, and compare
   pairs a probe with another probe or an eval split by split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from biqabench.base import io
from biqabench.evaluation import ridge
from biqabench.base.errors import BiqaError
from biqabench.evaluation.eval_config import ProbeConfig
from biqabench.base.metrics import metrics_rows
from biqabench.base.paths import cache_root

log = logging.getLogger(__name__)

#: Bump when the pooling changes: cached features of another version are not reused.
FEATURE_VERSION = "meanstd-v1"


def load_probe_config(path: str | Path | None = None, **overrides: Any) -> ProbeConfig:
    """A :class:`ProbeConfig` from an optional YAML file plus keyword overrides (None ignored)."""
    from biqabench.base.config import load_yaml, override

    cfg = override(ProbeConfig(), load_yaml(path) if path else {}, where=f"config {path}")
    cfg = override(cfg, {k: v for k, v in overrides.items() if v is not None}, where="options")
    if cfg.splits < 1:
        raise BiqaError(f"--splits must be at least 1 (got {cfg.splits})")
    if cfg.size < 0 or (0 < cfg.size < 32):
        raise BiqaError(f"--size must be 0 (native) or at least 32 pixels (got {cfg.size})")
    if cfg.folds < 2:
        raise BiqaError(f"--folds must be at least 2 (got {cfg.folds})")
    if not cfg.alphas or any(not a > 0 for a in cfg.alphas):
        raise BiqaError(f"alphas must be a non-empty list of positive numbers (got {cfg.alphas})")
    if not 0.0 < cfg.test_frac < 1.0:
        raise BiqaError(f"test_frac must be in (0, 1) (got {cfg.test_frac})")
    if not 0.0 <= cfg.val_frac < 1.0:
        raise BiqaError(f"val_frac must be in [0, 1) (got {cfg.val_frac})")
    return cfg


# -- the frozen backbone and its features --------------------------------------------------------
def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and values (what the cache is keyed on)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def frozen_backbone(weights: str, backbone: str, seed: int = 0):
    """(backbone in eval mode, the resolved weights, sha256 of the backbone's state).

    ``random`` is seeded with ``seed`` (as QPT seeds its starting point), so the state digest,
    and with it the feature cache, is the same for ``random`` and QPT's step-0 weights.
    """
    from biqabench.components.backbones import create_backbone
    from biqabench.components.weights import resolve_weights

    resolved = resolve_weights(weights, backbone)
    torch.manual_seed(seed)
    net = create_backbone(backbone, weights="random")
    resolved.load_into(net)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, resolved, state_digest(net.state_dict())


def pool_stages(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, sum 2C) per-channel mean and std of every stage map (B, C, H, W)."""
    parts = []
    for m in maps:
        m = m.float().flatten(2)
        parts += [m.mean(-1), m.std(-1, unbiased=False)]
    return torch.cat(parts, 1)


class FeatureCache:
    """Pooled features per (weights sha256, backbone, image file, sizes) as .npy files.

    The image is identified like the decoded-image cache does (absolute path, byte size,
    modification time): an edited image is a new key.
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder else cache_root() / "features"

    def key(self, digest: str, backbone: str, image: Path, size: int, half: bool) -> str:
        st = image.stat()
        raw = (f"{FEATURE_VERSION}\0{digest}\0{backbone}\0{os.path.abspath(image)}\0{st.st_size}\0"
               f"{st.st_mtime_ns}\0{size}\0{int(half)}")
        return hashlib.sha256(raw.encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError):  # a torn or foreign file: recompute it
            return None

    def save(self, key: str, features: np.ndarray) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(p) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, features.astype(np.float32), allow_pickle=False)


@dataclass
class FeatureStats:
    extracted: int = 0
    cached: int = 0
    seconds: float = 0.0


@torch.no_grad()
def image_features(net, image: torch.Tensor, runtime, half_scale: bool = True) -> np.ndarray:
    """Features of one normalised image (3, H, W): full scale, then (optionally) half scale."""
    x = runtime.to(image[None])
    with runtime.autocast():
        feats = [pool_stages(net(x))]
        if half_scale:
            h, w = x.shape[-2:]
            small = F.interpolate(x, size=(max(1, h // 2), max(1, w // 2)), mode="bilinear",
                                  antialias=True, align_corners=False)
            feats.append(pool_stages(net(small)))
    return torch.cat(feats, 1)[0].float().cpu().numpy()


def extract_features(net, paths: Sequence[str | os.PathLike], runtime, *, digest: str, backbone: str,
                     size: int = 384, half_scale: bool = True, cache: FeatureCache | None = None,
                     progress: bool = True, desc: str = "features") -> tuple[np.ndarray, FeatureStats]:
    """Feature matrix (n, d) of ``paths``; computes only what the cache does not hold."""
    from tqdm import tqdm

    from biqabench.data import decode_array, normalise

    cache = cache or FeatureCache()
    stats, rows, t0 = FeatureStats(), [], time.time()
    for p in tqdm([Path(p) for p in paths], desc=desc, unit="img", disable=not progress, dynamic_ncols=True):
        key = cache.key(digest, backbone, p, size, half_scale)
        f = cache.load(key)
        if f is None:
            f = image_features(net, normalise(decode_array(p, resize=size)), runtime, half_scale)
            cache.save(key, f)
            stats.extracted += 1
        else:
            stats.cached += 1
        rows.append(f)
    stats.seconds = round(time.time() - t0, 2)
    if len({len(r) for r in rows}) > 1:
        raise BiqaError("cached features of different lengths for one backbone; clear "
                        f"{cache.folder} and rerun")
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32), stats


# -- the protocol --------------------------------------------------------------------------------
def split_fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, train: np.ndarray, cfg: ProbeConfig,
              seed: int) -> tuple[ridge.RidgePath, float]:
    """Ridge on the ``train`` rows, alpha by inner CV on those rows alone."""
    alpha = ridge.choose_alpha(x[train], y[train], groups[train], cfg.alphas, cfg.folds, seed)
    return ridge.fit_path(x[train], y[train]), alpha


def _groups(table) -> np.ndarray:
    return np.asarray([str(c) for c in (table.content if table.content is not None else table.names)])


def _split_results(k: int, split, cfg: ProbeConfig, tables: dict, feats: dict, train_name: str):
    """Fit split ``k``; its prediction rows, metric rows and chosen alpha."""
    table, x = tables[train_name], feats[train_name]
    train = np.union1d(split.train, split.val)  # validation is only for SGD epochs: ridge trains on it
    path, alpha = split_fit(x, table.mos_norm, _groups(table), train, cfg, cfg.seed + k)
    preds, rows = [], []
    sets = [(train_name, "intra", split.test)] + [(n, "cross", np.arange(len(t))) for n, t in tables.items()
                                                   if n != train_name]
    for name, kind, idx in sets:
        if len(idx) == 0:
            continue
        pred_norm = path.predict(feats[name][idx], [alpha])[:, 0]
        p, r = metrics_rows(k, train_name, name, kind, tables[name], idx, pred_norm)
        preds += p
        rows.append({**r, "alpha": alpha})
    return preds, rows, alpha


def run_probe(config: ProbeConfig | str | Path | None = None, *, run_dir: str | Path | None = None,
              progress: bool = True, cache: FeatureCache | None = None, **overrides: Any) -> Path:
    """Extract (or read cached) features, fit ridge per split, write the run folder; return its path."""
    from biqabench.data import load_dataset
    from biqabench.data.splitfiles import write_split_files
    from biqabench.runtime.device import get_runtime
    from biqabench.evaluation.protocol import outside_scale_counts, plan_splits
    from biqabench.results import RunFolder
    from biqabench.results.report import run_report, write_report_quietly

    started = time.time()
    cfg = config if isinstance(config, ProbeConfig) else load_probe_config(config, **overrides)
    runtime = get_runtime(cfg.device, cfg.precision)
    net, weights, digest = frozen_backbone(cfg.weights, cfg.backbone, cfg.seed)
    net = runtime.prepare(net)
    train_name, test_names = cfg.datasets()
    root = cfg.data_root or None
    tables = {n: load_dataset(n, root, skip_bad=cfg.skip_bad, **cfg.dataset_options.get(n, {}))
              for n in [train_name, *test_names]}
    split_list, source = plan_splits(cfg, tables[train_name], None)  # eval's planning, eval's files
    label = f"ridge-{weights.label}-{cfg.backbone}"
    folder = RunFolder(run_dir).ensure() if run_dir else RunFolder.create("probe", label)
    folder.write_config(dataclasses.asdict(cfg))
    records = write_split_files(folder.path, tables[train_name], split_list)
    manifest = _manifest(cfg, weights, digest, runtime, tables, train_name, test_names)
    manifest.update(_split_manifest(cfg, split_list, source, records))
    folder.write_manifest(**manifest)
    try:
        feats, fstats = {}, {}
        for name, table in tables.items():
            feats[name], fstats[name] = extract_features(
                net, table.paths, runtime, digest=digest, backbone=cfg.backbone, size=cfg.size,
                half_scale=cfg.half_scale, cache=cache, progress=progress, desc=f"features {name}")
        t_fit = time.time()
        alphas = []
        for k, split in enumerate(split_list):
            preds, rows, alpha = _split_results(k, split, cfg, tables, feats, train_name)
            alphas.append(alpha)
            folder.write_predictions(pd.DataFrame(preds), split=k)
            folder.write_metrics(pd.DataFrame(rows), split=k)
        manifest.update(alphas=alphas, feature_dim=int(next(iter(feats.values())).shape[1]),
                        features={n: dataclasses.asdict(s) for n, s in fstats.items()},
                        fit_seconds=round(time.time() - t_fit, 2))
    except BaseException as exc:
        error = str(exc) if isinstance(exc, BiqaError) else f"{type(exc).__name__}: {exc}"
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        folder.write_manifest(**{**manifest, "status": status, "error": error,
                                 "wall_seconds": round(time.time() - started, 1)})
        raise
    metrics, predictions = folder.read_metrics(), folder.read_predictions()
    folder.write_metrics(metrics)
    folder.write_predictions(predictions)
    manifest["outside_scale"] = outside_scale_counts(predictions, manifest)  # a ridge is not bounded either
    folder.write_summary(metrics, manifest)
    folder.write_plots(predictions, pd.DataFrame())
    folder.write_manifest(**{**manifest, "status": "finished", "wall_seconds": round(time.time() - started, 1)})
    write_report_quietly(run_report, folder.path)
    return folder.path


def _split_manifest(cfg: ProbeConfig, splits: list, source: str, records: list) -> dict:
    """The manifest's split fields, as eval records them (``results compare`` pairs on these)."""
    from biqabench.evaluation.protocol import split_fields

    return {"splits": len(splits), "seeds": [int(s.seed) for s in splits], **split_fields(cfg, source, records),
            "model_selection": "none: no epochs; the ridge trains on train + val, alpha by grouped "
                               f"{cfg.folds}-fold CV on those rows"}


def _manifest(cfg: ProbeConfig, weights, digest: str, runtime, tables: dict, train_name: str,
              test_names: list[str]) -> dict:
    return {
        "kind": "probe", "head": "ridge", **weights.describe(), "backbone_state_sha256": digest,
        "backbone": cfg.backbone, "protocol": "linear-probe",
        "train": train_name, "test": test_names, "device": str(runtime.device),
        "precision": runtime.precision,
        "probe": {"size": cfg.size, "half_scale": cfg.half_scale, "pooling": "per-stage mean + std",
                  "feature_version": FEATURE_VERSION, "folds": cfg.folds, "alpha_grid": list(cfg.alphas),
                  "alpha_by": "grouped k-fold CV (MSE) on each split's training part"},
        "datasets": {t.name: {"fingerprint": t.fingerprint(), "images": len(t), "options": t.options,
                              "root": str(t.root), "scale": list(t.scale), "higher_better": t.higher_better}
                     for t in tables.values()},
        "status": "running", "error": None,
    }


__all__ = ["ProbeConfig", "load_probe_config", "FeatureCache", "extract_features", "frozen_backbone",
           "pool_stages", "state_digest", "run_probe"]
