"""Speed of ``biqabench probe``: ResNet-50 on CLIVE (581 images), 10 splits, target <= 3 min on 2 cores.

Two parts, timed separately because they scale differently:

* **features**: one frozen forward per image at 384 px (shorter side) and one at half scale,
  fp32, per-stage mean + std (``biqabench.evaluation.probe.extract_features``), on ``--images`` of the set;
  the figure for the whole set is extrapolated linearly (each image costs the same: CLIVE is
  500x500).  This is done once per weights file: the cache makes every later probe free.
* **ridge**: 10 splits, alpha from 21 values by 5-fold inner CV on each training part, on a
  581 x d matrix (d = ResNet-50's 2 x 2 x 3840 = 15,360 features).  Ours: one SVD per fold gives
  every alpha (``biqabench.evaluation.ridge``); reference: the straightforward dual solve per alpha and fold
  (``np.linalg.solve`` of the n x n Gram system), as ``benchmarks/probe_qpt.py`` did before.  Same
  folds, same standardisation; the benchmark checks that both choose the same alphas.  Both are
  dominated by the Gram matrix (n^2 d), so expect a ratio near 1 for 21 alphas: the closed form
  matters for wide alpha grids, and either way the ridge is small next to the feature pass.

Run:  python benchmarks/bench_probe.py [--images 40] [--threads 2] [--root ../shared/data/clive-dev]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("BIQABENCH_SHARED_DATA", HERE.parents[1] / "shared" / "data"))


def reference_cv_errors(x, y, groups, alphas, folds=5, seed=0):
    """Inner-CV errors the plain way: standardise per fold, then one dual solve per alpha."""
    from biqabench.evaluation.ridge import fold_ids

    ids = fold_ids(groups, folds, seed)
    pred = np.zeros((len(y), len(alphas)))
    for f in np.unique(ids):
        tr, te = ids != f, ids == f
        mu, sd = x[tr].mean(0), x[tr].std(0)
        sd[~(sd > 1e-12)] = 1.0
        a, b = (x[tr] - mu) / sd, (x[te] - mu) / sd
        ym = y[tr].mean()
        gram = a @ a.T
        for j, alpha in enumerate(alphas):
            coef = np.linalg.solve(gram + alpha * np.eye(len(a)), y[tr] - ym)
            pred[te, j] = b @ (a.T @ coef) + ym
    return ((pred - y[:, None]) ** 2).mean(0)


def time_features(root: Path, n_images: int, threads: int) -> dict:
    from biqabench.data import load_dataset
    from biqabench.runtime.device import get_runtime
    from biqabench.evaluation.probe import FeatureCache, extract_features, frozen_backbone

    import tempfile

    torch.set_num_threads(threads)
    table = load_dataset("clive", root)
    net, _, digest = frozen_backbone("random", "resnet50", 0)
    runtime = get_runtime("cpu", "fp32")
    net = runtime.prepare(net)
    paths = table.paths[:n_images]
    with tempfile.TemporaryDirectory() as tmp:  # an empty cache: every image is extracted
        extract_features(net, paths[:2], runtime, digest=digest, backbone="resnet50", cache=FeatureCache(tmp),
                         progress=False)  # warm-up (allocator, first-call overheads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        feats, _ = extract_features(net, paths, runtime, digest=digest, backbone="resnet50",
                                    cache=FeatureCache(tmp), progress=True)
        dt = time.perf_counter() - t0
    return {"images": len(paths), "seconds": dt, "per_image": dt / len(paths), "dim": feats.shape[1],
            "set_size": len(table)}


def time_ridge(n: int, d: int, splits: int = 10) -> dict:
    from biqabench.evaluation import ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float64) * rng.uniform(0.1, 3, d)
    y = x[:, :50] @ rng.normal(size=50) + rng.normal(size=n) * 5
    groups = np.arange(n)
    n_train = int(round(0.8 * n))
    t0 = time.perf_counter()
    chosen = []
    for k in range(splits):
        tr = np.sort(np.random.default_rng(k).permutation(n)[:n_train])
        alpha = ridge.choose_alpha(x[tr], y[tr], groups[tr], seed=k)
        ridge.fit_path(x[tr], y[tr]).predict(x, [alpha])
        chosen.append(alpha)
    ours = (time.perf_counter() - t0) / splits
    tr = np.sort(np.random.default_rng(0).permutation(n)[:n_train])
    t0 = time.perf_counter()
    err_ref = reference_cv_errors(x[tr], y[tr], groups[tr], ridge.ALPHAS, seed=0)
    ref = time.perf_counter() - t0
    t0 = time.perf_counter()  # the same work on our side: the inner CV of one split
    err = ridge.cv_errors(x[tr], y[tr], groups[tr], ridge.ALPHAS, seed=0)
    ours_cv = time.perf_counter() - t0
    return {"ours_per_split": ours, "ours_cv": ours_cv, "reference_cv": ref, "ratio": ref / ours_cv,
            "same_alpha": int(np.argmin(err)) == int(np.argmin(err_ref)),
            "max_rel_diff": float(np.max(np.abs(err - err_ref) / err_ref))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=40, help="images timed (the rest is extrapolated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", default=str(SHARED / "clive-dev"))
    a = ap.parse_args(argv)
    f = time_features(Path(a.root), a.images, a.threads)
    r = time_ridge(f["set_size"], f["dim"])
    feats_all = f["per_image"] * f["set_size"]
    total = feats_all + 10 * r["ours_per_split"]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
          f"torch threads {a.threads}; fp32")
    print(f"features: resnet50, 384 px + half scale, {f['images']} images in {f['seconds']:.1f} s "
          f"({f['per_image']:.2f} s/image, d = {f['dim']}) -> {f['set_size']} images ~ {feats_all:.0f} s")
    print(f"ridge: {r['ours_per_split']:.2f} s per split (inner CV of 21 alphas x 5 folds + the fit, n = "
          f"{f['set_size']}); inner CV alone {r['ours_cv']:.2f} s against {r['reference_cv']:.2f} s for the "
          f"per-alpha dual solve: {r['ratio']:.2f}x; same alpha: "
          f"{r['same_alpha']} (max relative difference of CV errors {r['max_rel_diff']:.1e})")
    print(f"probe total (first run, empty cache): ~{total:.0f} s for {f['set_size']} images and 10 splits "
          f"(target <= 180 s on 2 cores); a second probe of the same weights: ~{10 * r['ours_per_split']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
