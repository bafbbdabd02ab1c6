"""``biqabench pretrain moco``: MoCo v2 on the core pretraining loop.

One step: two augmented views of each of the B crops (:mod:`augment`); the query encoder embeds
the first, the momentum key encoder (updated first, ``m``) the second under shuffle-BN; InfoNCE
with the key as the positive and the queue's K keys as the negatives (temperature ``tau``); then
the keys are enqueued.  Only other contents are negatives: MoCo has no notion of degradation.

Follows the reference (facebookresearch/moco, ``moco/builder.py``): momentum update before the
key forward, shuffle-BN, queue-only negatives, MLP head Linear-ReLU-Linear (v2), keys gathered
across processes before enqueueing.  The building blocks are the core's
(:mod:`biqabench.training.contrastive`).  Deviations: the augmentations' (see :mod:`augment`);
the CPU preset uses QPT's CPU settings (LARS, a BatchNorm projector, queue 256, m 0.9: what a few
hundred steps on two cores need, and the same as QPT's so that a comparison isolates the pretext).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from biqabench.plugin_api import (BiqaError, Encoder, KeyQueue, PretrainConfig, Pretrainer, Projector, Views,
                                  info_nce_logits, momentum_update, shuffled_forward, step_generators)
from biqabench_plugins.moco.augment import AugmentConfig, two_views


@dataclass
class MoCoConfig(PretrainConfig):
    """MoCo v2's settings.  The defaults are the CPU preset (presets/cpu.yaml): QPT's CPU settings."""

    embed_dim: int = 128
    hidden_dim: int = 0          # MLP width; 0: the backbone's output channels (v2: 2048 on ResNet-50)
    projector_bn: bool = True    # BatchNorm in the MLP (not in v2; learns sooner in short runs)
    queue_size: int = 256        # paper: 65536
    momentum: float = 0.9        # key encoder EMA; paper: 0.999
    temperature: float = 0.2
    key_bn_splits: int = 2       # shuffle-BN sub-batches in a single process
    augment: AugmentConfig = field(default_factory=AugmentConfig)


class MoCoModel(nn.Module):
    """Query encoder, momentum key encoder and queue.  ``forward`` returns (loss, statistics) and
    updates the key encoder and the queue, as MoCo's forward does: call it once per step."""

    def __init__(self, backbone, cfg: MoCoConfig, generator: torch.Generator | None = None):
        super().__init__()
        hidden = cfg.hidden_dim or backbone.out_channels
        self.encoder_q = Encoder(backbone, Projector(backbone.out_channels, hidden, cfg.embed_dim, cfg.projector_bn))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.queue = KeyQueue(cfg.queue_size, cfg.embed_dim, generator)
        self.momentum, self.temperature, self.key_bn_splits = cfg.momentum, cfg.temperature, cfg.key_bn_splits

    @property
    def backbone(self):
        return self.encoder_q.backbone

    def forward(self, query: torch.Tensor, key: torch.Tensor, generator: torch.Generator | None = None,
                encode_query: nn.Module | None = None):
        q = (encode_query or self.encoder_q)(query).float()
        with torch.no_grad():
            momentum_update(self.encoder_q, self.encoder_k, self.momentum)
            k = nn.functional.normalize(shuffled_forward(self.encoder_k, key, generator, self.key_bn_splits), dim=1)
        logits = info_nce_logits(q, k, self.queue.keys.clone().detach(), self.temperature)
        loss = nn.functional.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        with torch.no_grad():
            stats = {"acc": (logits.argmax(1) == 0).float().mean(), "pos": logits[:, 0].mean() * self.temperature}
        self.queue.enqueue(k)
        return loss, stats


class TwoViews:
    """Batch builder: MoCo v2's query and key views of each crop (picklable, for DataLoader workers)."""

    def __init__(self, size: int, augment: AugmentConfig, seed: int):
        self.size, self.augment, self.seed = size, augment, seed

    def __call__(self, crops: torch.Tensor, *, step: int, rank: int, samples=None, device=None) -> Views:
        rng, _, _ = step_generators(self.seed, step, rank)
        q, k = two_views(crops, self.size, rng, self.augment)
        return Views({"query": q, "key": k}, samples=samples)


class MoCo(Pretrainer):
    """MoCo v2's part of the loop."""

    name = "moco"
    title = "MoCo v2"
    loss_name = "InfoNCE"
    config_type = MoCoConfig
    presets_package = "biqabench_plugins.moco"
    shown = ("acc",)

    @classmethod
    def build_model(cls, cfg: MoCoConfig, backbone, seed: int) -> MoCoModel:
        return MoCoModel(backbone, cfg, generator=torch.Generator().manual_seed(seed + 1))

    @classmethod
    def validate(cls, cfg: MoCoConfig, where: str) -> MoCoConfig:
        if cfg.embed_dim < 1 or cfg.key_bn_splits < 1 or cfg.queue_size < 0 or cfg.hidden_dim < 0:
            raise BiqaError(f"{where}: embed_dim and key_bn_splits must be >= 1, queue_size and hidden_dim >= 0")
        if not 0.0 <= cfg.momentum < 1.0:
            raise BiqaError(f"{where}: momentum must be in [0, 1), got {cfg.momentum}")
        if cfg.temperature <= 0:
            raise BiqaError(f"{where}: temperature must be > 0, got {cfg.temperature}")
        return cfg

    def setup(self, runtime) -> None:
        super().setup(runtime)
        self.encode_query = self.ddp(self.model.encoder_q) if self.world > 1 else None

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.encoder_q.parameters() if p.requires_grad]

    def batch_builder(self) -> TwoViews:
        return TwoViews(self.cfg.patch_size, self.cfg.augment, self.seed)

    def loss(self, batch: Views, step: int):
        shuffle = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, step, 5]).integers(2 ** 62)))
        return self.model(batch["query"], batch["key"], shuffle, encode_query=self.encode_query)
