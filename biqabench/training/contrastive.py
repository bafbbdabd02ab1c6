r"""Contrastive building blocks shared by pretrainers: momentum encoders, key queues, shuffle-BN,
projection heads, and the two losses (InfoNCE with a queue, NT-Xent).

They were QPT's (``biqabench_plugins.qpt.moco``) until MoCo v2 and ARNIQA needed them too; a
plugin never imports another plugin, so what two strategies share lives here.

Everything runs on CPU as well as CUDA, in one process or under DDP:

* under DDP, keys are gathered from every process (``all_gather``) before they are enqueued,
  so all queues stay identical;
* BatchNorm "cheating" is prevented with **shuffle-BN** (MoCo's choice): the key batch is
  permuted before the key encoder and un-permuted after, so a query and its positive key are
  never normalised with the same batch statistics.  Under DDP the permutation is global
  (keys move to other processes, as in MoCo); in one process the shuffled key batch runs in
  ``splits`` sub-batches, each with its own statistics.

The losses, with L2-normalised embeddings and temperature :math:`\tau`:

* InfoNCE with a queue (MoCo, He et al. 2020): for query :math:`q_i`, positive key :math:`k_i`
  and queued keys :math:`u_1..u_K`,
  :math:`\ell_i = -\log \frac{e^{q_i\cdot k_i/\tau}}{e^{q_i\cdot k_i/\tau} + \sum_j e^{q_i\cdot u_j/\tau}}`;
* NT-Xent (SimCLR, Chen et al. 2020): 2N embeddings :math:`z` where :math:`z_i` and
  :math:`z_{p(i)}` are a positive pair,
  :math:`\ell_i = -\log \frac{e^{z_i\cdot z_{p(i)}/\tau}}{\sum_{j \neq i} e^{z_i\cdot z_j/\tau}}`,
  averaged over all 2N anchors.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from biqabench.components.backbones import Backbone
from biqabench.runtime import distributed


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
    """Backbone + projector: images (B, 3, P, P) -> embeddings (B, D).  ``normalise_features``
    L2-normalises the pooled features before the projector (ARNIQA's encoder does)."""

    def __init__(self, backbone: Backbone, projector: nn.Module, normalise_features: bool = False):
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.normalise_features = normalise_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone.pooled(x)
        if self.normalise_features:
            f = F.normalize(f.float(), dim=1).to(f.dtype)
        return self.projector(f)


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


def info_nce_logits(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor | None,
                    temperature: float) -> torch.Tensor:
    """MoCo's logits (B, 1 + K): the positive ``q_i . k_i`` in column 0, then ``q_i . u_j`` for each
    queued key; all divided by ``temperature``.  Inputs are L2-normalised here (in fp32)."""
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(key.float(), dim=1)
    parts = [(q * k).sum(1, keepdim=True)]
    if queue is not None and queue.shape[0] > 0:
        parts.append(q @ F.normalize(queue.float(), dim=1).T)
    return torch.cat(parts, dim=1) / temperature


def info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor | None,
             temperature: float) -> torch.Tensor:
    """InfoNCE with a queue of negatives (mean over the batch); see the module docstring."""
    logits = info_nce_logits(query, key, queue, temperature)
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over the 2N embeddings ``[a; b]`` where ``a_i`` and ``b_i`` are a positive pair and
    every other embedding is a negative (SimCLR); mean over the 2N anchors."""
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    n = a.shape[0]
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)
