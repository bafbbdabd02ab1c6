"""MoCo machinery for QPT: a momentum (EMA) key encoder, a queue of keys, a projection MLP.

Why MoCo: QC-Loss needs many negatives (other contents, other degradations); a queue of keys
from earlier batches supplies them without a huge batch, and the slowly moving key encoder
keeps those queued keys consistent with each other (He et al., CVPR 2020; v2 adds the MLP).

Everything runs on CPU as well as CUDA, in one process or under DDP:

* under DDP, keys are gathered from every process (``all_gather``) before they are enqueued,
  so all queues stay identical;
* BatchNorm "cheating" is prevented with **shuffle-BN** (MoCo's choice): the key batch is
  permuted before the key encoder and un-permuted after, so a query and its positive key are
  never normalised with the same batch statistics.  Under DDP the permutation is global
  (keys move to other processes, as in MoCo); in one process the shuffled key batch runs in
  ``key_bn_splits`` sub-batches, each with its own statistics.  We chose shuffle-BN over
  SyncBN because it costs no extra synchronisation in the backward pass and is what the
  MoCo v1/v2 recipe QPT builds on uses.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from biqabench.plugin_api import Backbone, distributed
from biqabench_plugins.qpt.loss import qc_logits


@torch.no_grad()
def concat_all_gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every process along dim 0 (no gradient); identity in one process."""
    if not distributed.active():
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, dim=0)


class Projector(nn.Sequential):
    """MoCo v2's head: Linear -> ReLU -> Linear, on the pooled backbone features.

    ``batch_norm=True`` adds BatchNorm after each Linear (MoCo v3 / SimCLR style): it removes the
    common direction that all embeddings of a freshly initialised network share, which makes
    short runs learn much sooner.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False):
        if batch_norm:
            super().__init__(nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                             nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim, bias=False),
                             nn.BatchNorm1d(out_dim, affine=False))
        else:
            super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class Encoder(nn.Module):
    """Backbone + projector: image patches (B, 3, P, P) -> embeddings (B, D)."""

    def __init__(self, backbone: Backbone, projector: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone.pooled(x))


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * online, parameter by parameter (buffers are left alone)."""
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t_params, m)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - m)


class KeyQueue(nn.Module):
    """A ring buffer of K keys (K, D) with a write pointer; starts with random unit vectors (as MoCo)."""

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        keys = torch.randn(size, dim, generator=generator)
        self.register_buffer("keys", nn.functional.normalize(keys, dim=1))
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (gathered from all processes first) at the pointer, wrapping around."""
        keys = concat_all_gather(keys.detach().to(self.keys.dtype))
        k = self.size
        if k == 0:
            return
        if keys.shape[0] >= k:
            keys = keys[-k:]
        n = keys.shape[0]
        ptr = int(self.ptr.item())
        first = min(n, k - ptr)
        self.keys[ptr:ptr + first] = keys[:first]
        if n > first:
            self.keys[:n - first] = keys[first:]
        self.ptr[0] = (ptr + n) % k


@torch.no_grad()
def shuffled_forward(encoder: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None,
                     splits: int = 1) -> torch.Tensor:
    """``encoder(x)`` computed on a shuffled batch (shuffle-BN), returned in the original order."""
    if distributed.active():
        world, rank = dist.get_world_size(), dist.get_rank()
        x_all = concat_all_gather(x)
        perm = torch.randperm(x_all.shape[0], generator=generator).to(x.device)
        dist.broadcast(perm, src=0)  # every process must use rank 0's permutation
        mine = perm.view(world, -1)[rank]
        y_all = concat_all_gather(encoder(x_all[mine]).float())  # y_all[j] = f(x_all[perm[j]])
        inverse = torch.argsort(perm)
        return y_all[inverse.view(world, -1)[rank]]
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator).to(x.device)
    splits = max(1, min(splits, n))
    y = torch.cat([encoder(chunk).float() for chunk in x[perm].chunk(splits)], dim=0)
    return y[torch.argsort(perm)]


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
