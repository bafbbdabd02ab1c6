"""What defines a pretraining study: the YAML ``biqabench study`` reads, checked before any work.

A study is a matrix with a pretraining axis: strategies x pretraining seeds, each pretrained on
the same unlabelled photos with the same budget, its backbone saved at the snapshot steps, and
every snapshot evaluated by every protocol on the same splits of one labelled set::

    name: study-cpu
    backbone: resnet18
    photos: ../shared/data/imagenet-sample   # unlabelled pretraining photos ("": the embedded demo's)
    seeds: [0, 1, 2]                          # pretraining seeds
    steps: 300                                # every strategy's budget (a strategy may say its own)
    snapshots: [150, 300]                     # steps evaluated (the last one always is)
    pretraining: {batch_size: 16}             # set in every strategy's config: same data, same sizes
    pretrainers:
      qpt: {config: photos}                   # a preset of the strategy or a YAML file
      moco: {config: cpu, options: {momentum: 0.99}}   # options: this strategy's own settings
      random: {}                              # no pretraining: the seeded random initialisation
    baseline: random
    protocols:
      probe: {size: 384}                      # biqabench probe settings
      hyperiqa: {kind: eval, head: hyperiqa, recipe: cpu}   # biqabench eval settings
    train: clive-dev                          # the labelled set, split `splits` times
    test: []                                  # sets scored in full by each split's model
    splits: 10

Splits are seeded by ``split_seed`` alone, so every cell of a study tests on the same splits and
each (seed, split) pair can be compared across strategies.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biqabench.base.config import load_yaml
from biqabench.base.errors import BiqaError
from biqabench.evaluation.eval_config import EvalConfig, ProbeConfig, check_eval_config

#: The strategy that is not a pretrainer: the backbone's seeded random initialisation, at step 0.
RANDOM = "random"
#: Settings of a protocol that the study fixes for every cell (it sets them itself).
STUDY_OWNED = ("weights", "backbone", "train", "test", "splits", "seed", "data_root", "splits_from", "device")


@dataclass
class Strategy:
    name: str
    config: str | None = None      # preset name or YAML file (None: the strategy's defaults)
    options: dict = field(default_factory=dict)
    steps: int = 0                 # 0: the study's

    @property
    def pretrains(self) -> bool:
        return self.name != RANDOM


@dataclass
class Protocol:
    name: str
    kind: str                      # probe | eval
    settings: dict = field(default_factory=dict)


@dataclass
class Study:
    name: str = "study"
    backbone: str = "resnet18"
    photos: str = ""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 200
    snapshots: list[int] = field(default_factory=list)
    pretraining: dict = field(default_factory=dict)
    pretrainers: list[Strategy] = field(default_factory=list)
    baseline: str = RANDOM
    protocols: list[Protocol] = field(default_factory=list)
    train: str = ""
    test: list[str] = field(default_factory=list)
    splits: int = 10
    split_seed: int = 0
    data_root: str = ""
    device: str = "auto"
    precision: str = "auto"        # pretraining's; evaluations are fp32 unless a protocol says otherwise
    source: str = ""               # the YAML it came from

    def strategy(self, name: str) -> Strategy:
        return next(s for s in self.pretrainers if s.name == name)

    def steps_of(self, strategy: Strategy) -> int:
        return 0 if not strategy.pretrains else (strategy.steps or self.steps)

    def snapshot_steps(self, strategy: Strategy) -> list[int]:
        """The steps of ``strategy`` that are evaluated: the study's snapshots it reaches, and its last."""
        last = self.steps_of(strategy)
        return sorted({s for s in self.snapshots if s <= last} | {last})


FIELDS = {f.name for f in dataclasses.fields(Study)} - {"source"}


def _unknown(key: str, known, where: str) -> BiqaError:
    close = difflib.get_close_matches(str(key), sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(known))})"
    return BiqaError(f"{where}: unknown key {key!r}{hint}")


def load_study(path: str | Path) -> Study:
    """Read and check a study YAML: one line naming the file and key for anything wrong."""
    where = f"study {path}"
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise BiqaError(f"{where}: expected a mapping of settings (name, backbone, pretrainers, protocols...)")
    for key in raw:
        if key not in FIELDS:
            raise _unknown(key, FIELDS, where)
    plain = {k: v for k, v in raw.items() if k not in ("pretrainers", "protocols")}
    study = Study(source=str(path), **plain)
    study.pretrainers = _strategies(raw.get("pretrainers"), where)
    study.protocols = _protocols(raw.get("protocols"), where)
    return check_study(study, where)


def with_baseline(study: Study, baseline: str) -> Study:
    """``study`` compared with ``baseline`` (``study --baseline``): a tabulation choice, so the
    cells (and their folders) stay the same; the name must be one of the study's strategies."""
    names = [s.name for s in study.pretrainers]
    if baseline not in names:
        raise BiqaError(f"--baseline {baseline!r}: not among the strategies of {study.source or study.name} "
                        f"({', '.join(names)})")
    return dataclasses.replace(study, baseline=baseline)


def _strategies(raw: Any, where: str) -> list[Strategy]:
    if not isinstance(raw, dict) or not raw:
        raise BiqaError(f"{where}: 'pretrainers' must map each strategy to its settings, e.g. "
                        "{qpt: {config: cpu}, random: {}}")
    out = []
    for name, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise BiqaError(f"{where}: pretrainers.{name} must be a mapping (config, options, steps), got {spec!r:.60}")
        for key in spec:
            if key not in ("config", "options", "steps"):
                raise _unknown(key, ("config", "options", "steps"), f"{where}: pretrainers.{name}")
        out.append(Strategy(str(name), spec.get("config"), dict(spec.get("options") or {}), int(spec.get("steps") or 0)))
    return out


def _protocols(raw: Any, where: str) -> list[Protocol]:
    if not isinstance(raw, dict) or not raw:
        raise BiqaError(f"{where}: 'protocols' must name at least one, e.g. {{probe: {{size: 384}}}} or "
                        "{hyperiqa: {kind: eval, head: hyperiqa, recipe: cpu}}")
    out = []
    for name, settings in raw.items():
        settings = dict(settings or {})
        kind = settings.pop("kind", "probe" if name == "probe" else "eval")
        if kind not in ("probe", "eval"):
            raise BiqaError(f"{where}: protocols.{name}: kind {kind!r} is not probe or eval")
        owned = [k for k in settings if k in STUDY_OWNED]
        if owned:
            raise BiqaError(f"{where}: protocols.{name}: {owned[0]!r} is the study's to set (top level), "
                            "the same for every protocol")
        out.append(Protocol(str(name), kind, settings))
    return out


def check_study(study: Study, where: str) -> Study:
    from biqabench.components.plugins import registry

    if not study.seeds or len(set(study.seeds)) != len(study.seeds):
        raise BiqaError(f"{where}: 'seeds' must list distinct pretraining seeds, e.g. [0, 1, 2] (got {study.seeds})")
    if study.steps < 1 or any(s.steps < 0 for s in study.pretrainers):
        raise BiqaError(f"{where}: 'steps' must be at least 1 (got {study.steps})")
    if any(int(s) < 0 for s in study.snapshots):
        raise BiqaError(f"{where}: 'snapshots' are pretraining steps, 0 or more (got {study.snapshots})")
    names = [s.name for s in study.pretrainers]
    if study.baseline not in names:
        raise BiqaError(f"{where}: baseline {study.baseline!r} is not among the pretrainers ({', '.join(names)})")
    try:
        registry("backbones").get(study.backbone)
        for d in [study.train, *study.test]:
            if d:
                registry("datasets").get(d)
        for s in study.pretrainers:
            if s.pretrains:
                _check_strategy(study, s, registry("pretrainers").get(s.name))
    except BiqaError as exc:
        raise BiqaError(f"{where}: {exc}") from None
    for p in study.protocols:
        eval_config(study, p, weights="random")  # a typo in a protocol's settings stops here
    return study


def _check_strategy(study: Study, strategy: Strategy, spec) -> None:
    cls = spec.method_class()
    if cls is None:
        raise BiqaError(f"pretrainer {strategy.name!r} runs its own loop (no snapshots): a study needs one on the "
                        "core loop (PretrainerSpec(method=...))")
    cls.load_config(strategy.config, {**study.pretraining, **strategy.options})


def eval_config(study: Study, protocol: Protocol, weights: str) -> EvalConfig | ProbeConfig:
    """The config one cell of ``protocol`` runs with ``weights`` (a snapshot file)."""
    from biqabench.base.config import override

    owned = dict(weights=weights, backbone=study.backbone, train=study.train, test=list(study.test),
                 splits=study.splits, seed=study.split_seed, data_root=study.data_root,
                 device="cpu" if study.device == "cpu" else "auto")
    where = f"study {study.source}: protocols.{protocol.name}"
    if protocol.kind == "probe":
        cfg = override(ProbeConfig(), {**{"precision": "fp32"}, **protocol.settings}, where=where)
        return dataclasses.replace(cfg, **owned)
    cfg = override(EvalConfig(), {**{"precision": "fp32"}, **protocol.settings}, where=where)
    return check_eval_config(dataclasses.replace(cfg, **owned), key=lambda n: f"{where}: {n}")


def settings(study: Study) -> dict:
    """The study as its YAML reads (``study.yaml`` in the study's folder)."""
    d = dataclasses.asdict(study)
    d["pretrainers"] = {s.name: {k: v for k, v in dataclasses.asdict(s).items() if k != "name"}
                        for s in study.pretrainers}
    d["protocols"] = {p.name: {"kind": p.kind, **p.settings} for p in study.protocols}
    return d
