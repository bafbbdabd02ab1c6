"""``biqabench pretrain qpt``: QPT (MoCo + QC-Loss over the degradation space) on the core loop.

One step: take B pristine crops, degrade each with d1 and d2 (d1 != d2; optionally more
others), cut a query and a positive patch from d1(x) and the degradation-based negatives from
d2(x) (``patches_per_negative`` each), run the query encoder and the momentum key encoder, and
minimise QC-Loss against those keys, the batch's other images and the queue.  The query encoder's
backbone is what goes into the weights store.

The loop itself (runtime, workers, optimiser and schedule, checkpoints and exact resume, NaN
policy, DDP, progress, loss curve, weights store) is the core's
(:mod:`biqabench.training.pretraining`); :class:`QPT` is what is particular to QPT.
:class:`QPTTrainer` and :func:`run_qpt` keep the names benchmarks and tests use.
"""

from __future__ import annotations

import numpy as np
import torch

from biqabench.plugin_api import (  # noqa: F401 - default_data, lr_at, CHECKPOINT, Interrupted: this module's API
    PRETRAIN_CHECKPOINT as CHECKPOINT, Interrupted, PretrainTrainer, Pretrainer, WeightsRecord, default_data, lr_at,
    run_pretraining, step_generators,
)
from biqabench_plugins.qpt.config import (DEGRADE_ON, RESUMABLE_CHANGES, OptimConfig, QPTConfig,  # noqa: F401
                                          config_for_request, load_config, validate_config)
from biqabench_plugins.qpt.data import QPTBatch, QPTViews, ViewSpec, make_views
from biqabench_plugins.qpt.degradations import space_figures
from biqabench_plugins.qpt.moco import QPTModel


class QPT(Pretrainer):
    """QPT's part of the loop: the MoCo model with QC-Loss, degraded views, recipes.jsonl."""

    name = "qpt"
    title = "QPT"
    loss_name = "QC-Loss"
    config_type = QPTConfig
    presets_package = "biqabench_plugins.qpt"  # presets/cpu.yaml (= the defaults), paper.yaml, photos.yaml
    resumable_changes = RESUMABLE_CHANGES
    shown = ("acc",)

    @classmethod
    def build_model(cls, cfg: QPTConfig, backbone, seed: int) -> QPTModel:
        return QPTModel(backbone, embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim, queue_size=cfg.queue_size,
                        momentum=cfg.momentum, temperature=cfg.temperature,
                        in_batch_negatives=cfg.in_batch_negatives, key_bn_splits=cfg.key_bn_splits,
                        projector_bn=cfg.projector_bn, generator=torch.Generator().manual_seed(seed + 1))

    @classmethod
    def validate(cls, cfg: QPTConfig, where: str) -> QPTConfig:
        return validate_config(cfg, where)

    def setup(self, runtime) -> None:
        super().setup(runtime)
        self.forward = runtime.compiled(self.model)  # --compile: the same parameters, a compiled step
        # under torchrun the query encoder's gradients are all-reduced; the key encoder follows by EMA
        self.encode_query = self.ddp(self.model.encoder_q) if self.world > 1 else None

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.encoder_q.parameters() if p.requires_grad]

    def view_spec(self) -> ViewSpec:
        c = self.cfg
        return ViewSpec(c.degradation, c.patch_size, c.negative_degradations, c.patches_per_negative)

    def batch_builder(self) -> QPTViews:
        return QPTViews(self.view_spec(), self.seed)

    def builds_in_workers(self) -> bool:
        """Whole batches built in the DataLoader (CPU), or degraded on the device (CUDA)."""
        if self.cfg.degrade_on == "auto":
            return self.runtime.device.type == "cpu"
        return self.cfg.degrade_on == "workers"

    def generators(self, step: int) -> tuple[np.random.Generator, torch.Generator, torch.Generator]:
        """(numpy rng for recipes and patches, device generator for noise, CPU generator for shuffle-BN)."""
        rng, dev_gen, _ = step_generators(self.seed, step, self.rank, self.runtime.device)
        cpu_gen = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, step, 5]).integers(2 ** 62)))
        return rng, dev_gen, cpu_gen

    def loss(self, batch: QPTBatch, step: int):
        _, _, cpu_gen = self.generators(step)
        return self.forward(batch.query, batch.key_pos, batch.key_deg, cpu_gen, encode_query=self.encode_query)

    def manifest(self) -> dict:
        return {**space_figures(self.cfg.degradation), "recipes_log": getattr(self, "_recipes_log", None)}

    def batch_logger(self, run):
        from biqabench_plugins.qpt.recipe_log import FILE, RecipeLog

        cfg = self.cfg
        self._recipes_log = str(run.run_dir / FILE) if cfg.log_recipes_every else None
        log = RecipeLog(run.run_dir, cfg.log_recipes_every, self.seed, run.paths, run.data_root, run.start,
                        enabled=run.rank == 0)
        return lambda step, batch: log.write(step, batch, run.rank)


class QPTTrainer(PretrainTrainer):
    """QPT's model, optimiser and runtime; ``make_batch`` + ``step`` is one training step.

    >>> from biqabench.runtime.device import get_runtime
    >>> trainer = QPTTrainer.build("tiny", QPTConfig(batch_size=4, crop_size=32, patch_size=16),
    ...                            get_runtime("cpu", "fp32"), total_steps=10)
    >>> crops = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> stats = trainer.step(trainer.make_batch(crops, step=0))   # {'loss': ..., 'acc': ..., ...}
    """

    def __init__(self, model: QPTModel, cfg: QPTConfig, runtime, total_steps: int, seed: int = 0, rank: int = 0,
                 world: int = 1):
        super().__init__(QPT(cfg, model, seed=seed, rank=rank, world=world), runtime, total_steps)

    @classmethod
    def build(cls, backbone: str, cfg: QPTConfig, runtime, total_steps: int, seed: int = 0, rank: int = 0,
              world: int = 1) -> "QPTTrainer":
        return cls(QPT.create(cfg, backbone, seed=seed, rank=rank, world=world).model, cfg, runtime, total_steps,
                   seed, rank, world)

    @property
    def forward(self):
        return self.method.forward

    def generators(self, step: int):
        return self.method.generators(step)

    def view_spec(self) -> ViewSpec:
        return self.method.view_spec()

    def views_in_workers(self) -> bool:
        return self.method.builds_in_workers()

    def make_views(self, crops: torch.Tensor, step: int) -> QPTBatch:
        """Pristine uint8 crops (B, 3, S, S) -> uint8 views degraded on the training device."""
        return self.method.batch_builder()(crops, step=step, rank=self.rank, device=self.runtime.device)

    def make_batch(self, crops: torch.Tensor, step: int) -> QPTBatch:
        """Pristine uint8 crops (B, 3, S, S) -> degraded, normalised patches on the device."""
        return self.make_views(crops, step).to(self.runtime)


def run_qpt(request, *, on_step=None) -> WeightsRecord:
    """Pretrain ``request.backbone`` with QPT and save its weights in ``request.store`` as ``qpt``.

    ``on_step(step, stats)`` is called after every step (tests use it to interrupt a run).
    """
    return run_pretraining(QPT, request, on_step=on_step)


__all__ = ["QPT", "QPTTrainer", "run_qpt", "make_views", "Interrupted", "QPTConfig", "load_config"]
