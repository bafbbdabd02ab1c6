"""What defines an evaluation: :class:`EvalConfig` (fine-tuning, ``biqabench eval``) with its checks,
and :class:`ProbeConfig` (the linear probe, ``biqabench probe``); each is saved as a run's ``config.yaml``.

One declaration for every way in: ``biqabench eval`` options and ``--config`` YAML
(:func:`load_eval_config`), a benchmark matrix's base settings (:mod:`biqabench.evaluation.benchmark`), a
resumed run's ``config.yaml``; the CLI's help takes its defaults from these fields.  It sits below
the runner so that the protocol's decisions (:mod:`biqabench.evaluation.protocol`) and the command line can
read it without the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from biqabench.base.config import load_yaml, override
from biqabench.data.embedded import EMBEDDED_TEST, EMBEDDED_TRAIN
from biqabench.training.divergence import check_policy
from biqabench.base.errors import BiqaError
from biqabench.evaluation.ridge import ALPHAS


def run_datasets(train: str, test: list[str]) -> tuple[str, list[str]]:
    """(training set, cross-dataset test sets): the embedded demo sets when none are named; a
    test set named twice, or the training set itself, is tested once (intra-dataset)."""
    train_name = train or EMBEDDED_TRAIN
    tests = list(test) if (test or train) else list(EMBEDDED_TEST)
    return train_name, [t for t in dict.fromkeys(tests) if t and t != train_name]


PROTOCOLS = ("finetune", "linear-probe")


@dataclass
class EvalConfig:
    """Everything that defines an evaluation; saved as the run's ``config.yaml``."""

    head: str = "hyperiqa"
    weights: str = "imagenet"
    backbone: str = "resnet50"
    train: str = ""                    # "" -> the embedded default (demo-a)
    test: list[str] = field(default_factory=list)  # cross-dataset sets ("" train -> demo-b)
    splits: int = 10
    seed: int = 0
    protocol: str = "finetune"         # finetune | linear-probe (ridge on frozen features: biqabench.evaluation.probe)
    test_frac: float = 0.2             # share of contents (or images) in each split's test part
    val_frac: float = 0.1              # share of the *training* part held out for model selection
                                       # (0: no validation; the final epoch of the schedule is kept)
    official_split: bool = False
    splits_from: str = ""              # a run (id or folder) whose split files to reuse exactly
    plcc_fit: str = "logistic4"        # mapping before PLCC/RMSE (logistic): logistic4 | logistic5 (VQEG)
    deterministic: bool = False        # torch deterministic algorithms (ops without one are listed)
    recipe: str = "auto"               # auto (cpu on CPU, paper elsewhere) | paper | cpu | a YAML path
    recipe_overrides: dict = field(default_factory=dict)
    data_root: str = ""                # folder holding the datasets (else $BIQABENCH_DATA)
    dataset_options: dict = field(default_factory=dict)  # per dataset name: {resize: 512, ...}
    skip_bad: bool = False             # drop (and log) bad dataset entries instead of stopping
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False              # torch.compile the fine-tuning step (see biqabench.runtime.device)
    workers: int = -1                  # DataLoader workers; -1: automatic
    save_model: bool = True            # keep split 0's fine-tuned head for `biqabench predict`
    save_all_models: bool = False      # keep every split's head (splits/<k>/model.safetensors) for export --split
    nan_policy: str = "stop"           # a NaN/Inf loss: stop (one line) | skip the batch (counted)

    def datasets(self) -> tuple[str, list[str]]:
        return run_datasets(self.train, self.test)


def load_eval_config(path: str | Path | None = None, **overrides: Any) -> EvalConfig:
    """An :class:`EvalConfig` from an optional YAML file plus keyword overrides (None values ignored)."""
    cfg = EvalConfig()
    from_file = load_yaml(path) if path else {}
    cfg = override(cfg, from_file, where=f"config {path}")
    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = override(cfg, given, where="options")

    def key(name: str) -> str:  # where the offending value came from
        if name in given:
            return f"--{name.replace('_', '-')}"
        return f"config {path}: {name}" if name in from_file else name

    return check_eval_config(cfg, key)


def check_eval_config(cfg: EvalConfig, key: Callable[[str], str] = str) -> EvalConfig:
    """Values no evaluation can use, caught before any work; ``key(field)`` names where a value
    came from (``--splits``, ``config x.yaml: splits``, ``matrix m.yaml: splits``)."""
    if cfg.protocol not in PROTOCOLS:
        raise BiqaError(f"{key('protocol')} {cfg.protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if cfg.splits < 1:
        raise BiqaError(f"{key('splits')} must be at least 1 (got {cfg.splits})")
    if cfg.seed < 0:
        raise BiqaError(f"{key('seed')} must be 0 or more (got {cfg.seed})")
    for frac in ("test_frac", "val_frac"):
        if not 0.0 <= getattr(cfg, frac) < 1.0:
            raise BiqaError(f"{key(frac)} must be in [0, 1) (got {getattr(cfg, frac)})")
    check_policy(cfg.nan_policy, key("nan_policy"))
    from biqabench.base.metrics import PLCC_FITS

    if cfg.plcc_fit not in PLCC_FITS:
        raise BiqaError(f"{key('plcc_fit')} {cfg.plcc_fit!r} is not one of {', '.join(PLCC_FITS)}")
    for name, options in cfg.dataset_options.items():
        if not isinstance(options, dict):
            raise BiqaError(f"{key('dataset_options')}: {name!r} must map to reader options, e.g. "
                            f"{{{name}: {{scale: '0,100'}}}}; got {options!r:.60}")
    return cfg


@dataclass
class ProbeConfig:
    """Everything that defines a probe; saved as the run's ``config.yaml``."""

    weights: str = "random"
    backbone: str = "resnet50"
    train: str = ""                    # "" -> the embedded default (demo-a)
    test: list[str] = field(default_factory=list)
    splits: int = 10
    seed: int = 0                      # first split's seed; also seeds the random initialisation
    test_frac: float = 0.2
    val_frac: float = 0.1              # as eval's default, only so the split files equal eval's:
                                       # the ridge trains on train + val (no epochs to select)
    official_split: bool = False
    splits_from: str = ""              # a run (eval or probe; id or folder) whose split files to reuse
    size: int = 384                    # shorter side of the full-scale input; 0: native size
    half_scale: bool = True            # add the half-scale copy's features (CONTRIQUE)
    alphas: list[float] = field(default_factory=lambda: list(ALPHAS))
    folds: int = 5                     # inner CV folds on the training part
    data_root: str = ""
    dataset_options: dict = field(default_factory=dict)
    skip_bad: bool = False
    device: str = "auto"
    precision: str = "fp32"            # features for a paper table: fp32 unless asked

    def datasets(self) -> tuple[str, list[str]]:
        return run_datasets(self.train, self.test)
