"""Does QPT's pretext task learn quality?  A linear probe, QPT weights against random weights.

Protocol (all offline, CPU):

1. Pretrain a backbone with ``biqabench pretrain qpt`` settings on the embedded pristine photos
   that ``demo-a`` does *not* use (demo-b's sources), so no probed content was seen.
2. Freeze it; extract globally pooled features of every ``demo-a`` image (130 images: 10
   contents x (pristine + 4 distortions x 3 levels), pseudo-MOS labels), three variants
   (:data:`VARIANTS`: last-stage mean, all-stage means, all-stage means and deviations).
3. Ridge regression (``biqabench.evaluation.ridge``, closed form, features standardised on the training fold)
   predicts MOS; leave-one-content-out cross-validation, alpha chosen by an inner
   leave-one-content-out CV (lowest squared error).
4. Report, for the QPT backbone and for the *same* backbone at its random initialisation (QPT
   starts from exactly that initialisation, so the difference is what pretraining added):

   * ``srcc``: SRCC of the pooled out-of-fold predictions (needs scores calibrated *across*
     contents, each predicted by a different fold's model);
   * ``srcc_within_content``: mean SRCC inside each held-out content (= the mean per-fold test
     SRCC of leave-one-content-out: ranking the versions of one photo);
   * ``srcc_splits``: the eval protocol's own figure, on the splits of ``biqabench
     probe`` (same function): 10 seeded content-aware 80/20 splits (2 test contents each),
     ridge fitted on the train part (alpha by inner leave-one-content-out CV), SRCC on the test
     part, median over splits.

Run:  python benchmarks/probe_qpt.py [--backbone resnet18] [--steps 1000] [--seed 0]
      python benchmarks/probe_qpt.py --weights results/weights/qpt/resnet18/<file>.safetensors
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from biqabench.evaluation import ridge  # the closed-form ridge of biqabench probe: one implementation

ALPHAS = ridge.ALPHAS


def ridge_fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, alpha: float) -> np.ndarray:
    """Closed-form ridge on features standardised on the training rows (``biqabench.evaluation.ridge``)."""
    return ridge.fit_path(x_tr, y_tr).predict(x_te, [alpha])[:, 0]


def choose_alpha(x: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas=ALPHAS) -> float:
    """The ridge alpha of the lowest leave-one-group-out error on (x, y)."""
    return ridge.choose_alpha(x, y, groups, alphas, folds=len(np.unique(groups)))


def grouped_cv_predictions(x: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas=ALPHAS) -> tuple[np.ndarray, list]:
    """Leave-one-group-out predictions; alpha per outer fold from an inner leave-one-group-out CV."""
    pred = np.zeros_like(y, dtype=float)
    chosen = []
    for g in np.unique(groups):
        tr, te = groups != g, groups == g
        alpha = choose_alpha(x[tr], y[tr], groups[tr], alphas)
        chosen.append(alpha)
        pred[te] = ridge_fit_predict(x[tr], y[tr], x[te], alpha)
    return pred, chosen


def split_srccs(x: np.ndarray, y: np.ndarray, groups: np.ndarray, splits) -> list[float]:
    """Test SRCC per split (``biqabench.data.make_splits``), ridge fitted on each train part."""
    from scipy.stats import spearmanr

    out = []
    for sp in splits:
        tr = np.concatenate([sp.train, sp.val])
        alpha = choose_alpha(x[tr], y[tr], groups[tr])
        pred = ridge_fit_predict(x[tr], y[tr], x[sp.test], alpha)
        out.append(float(spearmanr(pred, y[sp.test]).correlation))
    return out


#: Feature variants probed, all global poolings of the frozen backbone's stage outputs.
VARIANTS = {
    "mean-last": "global average of the last stage (the usual linear probe)",
    "mean-all": "global averages of all four stages, concatenated",
    "meanstd-all": "global mean and standard deviation of all four stages (IQA's usual pooling)",
}


@torch.no_grad()
def pooled_features(backbone, paths, runtime, batch: int = 16) -> dict[str, np.ndarray]:
    """Each variant of :data:`VARIANTS` for every image, from one forward pass (eval mode)."""
    from biqabench.data import decode_array, normalise

    backbone.eval()
    out: dict[str, list] = {k: [] for k in VARIANTS}
    for i in range(0, len(paths), batch):
        x = torch.stack([normalise(torch.from_numpy(decode_array(p))) for p in paths[i:i + batch]])
        with runtime.autocast():
            maps = [m.float() for m in backbone(runtime.to(x))]
        means = [m.mean(dim=(2, 3)) for m in maps]
        stds = [m.std(dim=(2, 3)) for m in maps]
        out["mean-last"].append(means[-1].cpu().numpy())
        out["mean-all"].append(torch.cat(means, 1).cpu().numpy())
        out["meanstd-all"].append(torch.cat(means + stds, 1).cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def probe(backbone, table, runtime) -> dict:
    """SRCC of leave-one-content-out ridge predictions, per feature variant."""
    from scipy.stats import spearmanr

    from biqabench.data import make_splits

    feats = pooled_features(backbone, table.paths, runtime)
    y = np.asarray(table.mos, dtype=float)
    groups = np.asarray(table.content)
    splits = make_splits(table, n=10, seed=0, test_frac=0.2)
    result = {}
    for name, x in feats.items():
        pred, alphas = grouped_cv_predictions(x, y, groups)
        within = [spearmanr(pred[groups == g], y[groups == g]).correlation for g in np.unique(groups)]
        per_split = split_srccs(x, y, groups, splits)
        result[name] = {"srcc": float(spearmanr(pred, y).correlation),
                        "srcc_within_content": float(np.nanmean(within)),
                        "srcc_splits": float(np.median(per_split)), "srcc_per_split": per_split,
                        "alphas": alphas}
    return result


def pretraining_photos(dest: Path) -> Path:
    """The embedded pristine photos that demo-a's contents do not come from."""
    from biqabench.data.embedded import pristine_dir
    from biqabench_plugins.datasets.demo import CONTENTS

    used = {photo for photo, _, _ in CONTENTS["demo-a"]}
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(pristine_dir().glob("*.png")):
        if f.stem not in used:
            shutil.copy(f, dest / f.name)
    return dest


#: Pretraining settings of the probe: the CPU defaults on smaller crops (96 px) and patches (48 px),
#: so that a thousand steps of ResNet-18 fit in a few minutes of one CPU core.
PROBE_CONFIG = {"crop_size": 96, "patch_size": 48}


def run(backbone_name: str = "resnet18", steps: int = 1000, seed: int = 0, precision: str = "auto",
        config: str | None = None, workdir: Path | None = None, progress: bool = True,
        weights: str | None = None) -> dict:
    """Pretrain (or take the QPT ``weights`` file given), probe QPT and random weights; returns
    figures per feature variant.  With ``weights``, ``seed`` must be the seed that run used: the
    random baseline is that run's initialisation."""
    import yaml

    from biqabench.components.backbones import create_backbone
    from biqabench.data import load_dataset
    from biqabench.runtime.device import get_runtime
    from biqabench.components.pretrain import PretrainRequest
    from biqabench.components.weights import WeightsStore, load_weights
    from biqabench_plugins.qpt.pretrainer import run_qpt

    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="qpt_probe_"))
    tmp.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = str(tmp / "probe.yaml")
        Path(config).write_text(yaml.safe_dump(PROBE_CONFIG))
    runtime = get_runtime("cpu", precision)
    table = load_dataset("demo-a")
    t0 = time.time()
    if weights is None:
        weights = str(run_qpt(PretrainRequest(
            backbone=backbone_name, data=str(pretraining_photos(tmp / "photos")), steps=steps, config=config,
            seed=seed, device="cpu", precision=precision, run_dir=tmp / "run", store=WeightsStore(tmp / "weights"),
            progress=progress)).file)
        pretrain_s = round(time.time() - t0, 1)
    else:
        made = _manifest(weights)
        steps, pretrain_s = made.get("steps"), made.get("wall_time_s")
    torch.manual_seed(seed)  # the exact initialisation QPT started from (QPTTrainer.build seeds the same way)
    random_net = runtime.prepare(create_backbone(backbone_name, weights="random"))
    qpt_net = create_backbone(backbone_name, weights="random")
    load_weights(qpt_net, weights, backbone_name=backbone_name)
    qpt_net = runtime.prepare(qpt_net)
    return {
        "backbone": backbone_name, "steps": steps, "seed": seed, "precision": runtime.precision,
        "config": config, "pretrain_seconds": pretrain_s,
        "dataset": f"demo-a ({len(table.paths)} images, {len(set(table.content))} contents)",
        "random": probe(random_net, table, runtime), "qpt": probe(qpt_net, table, runtime),
        "weights": weights,
    }


def _manifest(weights: str) -> dict:
    """The weights store's manifest next to ``weights`` (steps, wall time), or {} for a bare file."""
    path = Path(weights).with_suffix(".json")
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    return {**doc, **doc.get("extra", {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--config", default=None, help="QPT config YAML (default: the CPU defaults on 96/48 px crops/patches)")
    ap.add_argument("--weights", default=None, help="probe this QPT weights file instead of pretraining "
                    "(give the --seed it was trained with: the random baseline is its initialisation)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args(argv)
    r = run(a.backbone, a.steps, a.seed, a.precision, a.config, weights=a.weights)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"linear probe on {r['dataset']}, backbone {r['backbone']}, QPT {r['steps']} steps "
          f"({r['pretrain_seconds']} s), ridge with leave-one-content-out CV")
    print(f"  {'features':12s} {'pooled: random':>14s} {'QPT':>6s}   {'within: random':>14s} {'QPT':>6s}   "
          f"{'splits: random':>14s} {'QPT':>6s}")
    for name in VARIANTS:
        rr, qq = r["random"][name], r["qpt"][name]
        print(f"  {name:12s} {rr['srcc']:14.3f} {qq['srcc']:6.3f}   {rr['srcc_within_content']:14.3f} "
              f"{qq['srcc_within_content']:6.3f}   {rr['srcc_splits']:14.3f} {qq['srcc_splits']:6.3f}")
    print("  pooled: SRCC of all leave-one-content-out predictions together; within: mean SRCC inside each\n"
          "  held-out content; splits: median test SRCC over 10 seeded 80/20 content splits (eval's protocol)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
