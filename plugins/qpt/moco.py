"""MoCo machinery for QPT: a momentum (EMA) key encoder, a queue of keys, a projection MLP.

Why MoCo: QC-Loss needs many negatives (other contents, other degradations); a queue of keys
from earlier batches supplies them without a huge batch, and the slowly moving key encoder
keeps those queued keys consistent with each other (He et al., CVPR 2020; v2 adds the MLP).

The building blocks (queue, momentum update, shuffle-BN, projector) are the core's
(:mod:`biqabench.training.contrastive`, shared with the ``moco`` and ``arniqa`` pretrainers) and
re-exported here; :class:`QPTModel` puts them together around QC-Loss.  We chose shuffle-BN over
SyncBN because it costs no extra synchronisation in the backward pass and is what the MoCo v1/v2
recipe QPT builds on uses.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from biqabench.plugin_api import (Backbone, Encoder, KeyQueue, Projector, concat_all_gather,  # noqa: F401
                                  momentum_update, shuffled_forward)
from biqabench_plugins.qpt.loss import qc_logits


class QPTModel(nn.Module):
    """Query encoder, momentum key encoder and queue, trained with QC-Loss.

    ``forward(query, key_pos, key_deg)`` returns the loss and a few statistics; it also updates
    the key encoder and the queue (like MoCo's forward), so call it once per training step.
    Patches: ``query``/``key_pos`` (B, 3, P, P) from d1(x), ``key_deg`` (B, M, 3, P, P) from d2(x).
    """

    def __init__(self, backbone: Backbone, *, embed_dim: int = 128, hidden_dim: int = 0,
                 queue_size: int = 4096, momentum: float = 0.999, temperature: float = 0.2,
                 in_batch_negatives: bool = True, key_bn_splits: int = 2, projector_bn: bool = False,
                 generator: torch.Generator | None = None):
        super().__init__()
        hidden = hidden_dim or backbone.out_channels
        self.encoder_q = Encoder(backbone, Projector(backbone.out_channels, hidden, embed_dim, projector_bn))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.queue = KeyQueue(queue_size, embed_dim, generator)
        self.momentum = momentum
        self.temperature = temperature
        self.in_batch_negatives = in_batch_negatives
        self.key_bn_splits = key_bn_splits

    @property
    def backbone(self) -> Backbone:
        """The query encoder's backbone: what QPT hands on to IQA heads."""
        return self.encoder_q.backbone

    def forward(self, query: torch.Tensor, key_pos: torch.Tensor, key_deg: torch.Tensor,
                generator: torch.Generator | None = None,
                encode_query: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``encode_query``: the query encoder wrapped for DDP (defaults to ``self.encoder_q``)."""
        b = query.shape[0]
        m = key_deg.shape[1]
        q = (encode_query or self.encoder_q)(query).float()
        with torch.no_grad():
            momentum_update(self.encoder_q, self.encoder_k, self.momentum)
            keys_in = torch.cat([key_pos, key_deg.flatten(0, 1)], dim=0)
            keys = nn.functional.normalize(
                shuffled_forward(self.encoder_k, keys_in, generator, self.key_bn_splits), dim=1)
        k_pos, k_deg = keys[:b], keys[b:].view(b, m, -1)
        queue = self.queue.keys.clone().detach()
        logits = qc_logits(q, k_pos, k_deg, queue, temperature=self.temperature,
                           in_batch=self.in_batch_negatives)
        target = torch.zeros(b, dtype=torch.long, device=logits.device)
        loss = nn.functional.cross_entropy(logits, target)
        with torch.no_grad():
            stats = {
                "acc": (logits.argmax(1) == 0).float().mean(),
                "pos": logits[:, 0].mean() * self.temperature,
                "deg": logits[:, 1:1 + m].mean() * self.temperature,
            }
        self.queue.enqueue(keys)  # positives and degradation negatives: other contents for later batches
        return loss, stats
