"""Same numbers before and after a refactor: run the embedded eval and probe at a fixed seed with
tiny settings (seconds on a CPU) through the command line, and keep their ``metrics.csv``.

    python benchmarks/check_same_outputs.py OUT_DIR            # write OUT_DIR/{eval,probe}/metrics.csv
    python benchmarks/check_same_outputs.py OUT_DIR --against BEFORE_DIR   # and compare byte for byte

Run it on the tree before a change and after it; ``--against`` exits 1 when any file differs.
Besides ``metrics.csv`` it keeps ``predictions.csv`` and the split files, compared the same way.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: The smallest fine-tuning recipe that still trains (tests/conftest.py's TINY_RECIPE, with an lr).
TINY_RECIPE = {"patch_size": 32, "train_patches": 2, "test_patches": 2, "batch_size": 32, "epochs": 1,
               "lr": 1e-3, "lr_step": 0}
EVAL_YAML = f"""head: linear
weights: random
backbone: tiny
splits: 2
seed: 3
recipe: cpu
recipe_overrides: {TINY_RECIPE}
device: cpu
precision: fp32
workers: 0
"""
PROBE = ["--weights", "random", "--backbone", "tiny", "--splits", "2", "--seed", "3", "--size", "64",
         "--device", "cpu", "--precision", "fp32"]
KEPT = ("metrics.csv", "predictions.csv")


def _biqabench(*args: str, env: dict) -> None:
    cmd = [sys.executable, "-m", "biqabench", *args, "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")


def run_all(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "BIQABENCH_RESULTS": str(tmp / "results"), "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        (tmp / "eval.yaml").write_text(EVAL_YAML)
        runs = {"eval": ["eval", "--config", str(tmp / "eval.yaml"), "--run-dir", str(tmp / "eval")],
                "probe": ["probe", *PROBE, "--run-dir", str(tmp / "probe")]}
        for name, args in runs.items():
            _biqabench(*args, env=env)
            target = out / name
            target.mkdir(parents=True, exist_ok=True)
            for f in KEPT:
                shutil.copyfile(tmp / name / f, target / f)
            for f in sorted((tmp / name / "splits").glob("split_*.csv")):
                shutil.copyfile(f, target / f.name)


def compare(out: Path, before: Path) -> list[str]:
    names = sorted({p.relative_to(before) for p in before.rglob("*") if p.is_file()}
                   | {p.relative_to(out) for p in out.rglob("*") if p.is_file()})
    return [f"{n}: {'differs' if (before / n).is_file() and (out / n).is_file() else 'missing on one side'}"
            for n in names if not ((before / n).is_file() and (out / n).is_file()
                                   and filecmp.cmp(before / n, out / n, shallow=False))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--against", type=Path, help="a folder written by an earlier run of this script")
    args = parser.parse_args()
    run_all(args.out)
    if args.against is None:
        print(f"wrote {', '.join(str(p) for p in sorted(args.out.rglob('*.csv')))}")
        return 0
    diffs = compare(args.out, args.against)
    n = sum(1 for p in args.against.rglob("*") if p.is_file())
    same = f"byte-identical: {n} files ({', '.join(KEPT)}, split files) of eval and probe"
    print("\n".join(diffs) if diffs else same)
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
