r"""QC-Loss, the quality-aware contrastive loss of QPT (Zhao et al., CVPR 2023).

The assumption it encodes: **patches of one degraded image share its quality**, while they
differ in quality from (a) the same content under another degradation and (b) other images.
So for image :math:`x_i` with two different degradations :math:`d_1 \neq d_2`:

* query :math:`q_i` and positive key :math:`k_i^+`: two patches of :math:`d_1(x_i)`;
* degradation-based negatives :math:`k_{i,m}^{d}`: patches of :math:`d_2(x_i)`, same content;
* content-based negatives: patches of the *other* images, from this batch (their positives and
  degradation negatives) and from the queue of earlier keys.

With L2-normalised embeddings and temperature :math:`\tau` the loss is InfoNCE:

.. math::

    \mathcal{L} = -\frac{1}{B}\sum_i \log
      \frac{\exp(q_i\cdot k_i^+/\tau)}
           {\exp(q_i\cdot k_i^+/\tau) + \sum_{n \in N_i} \exp(q_i\cdot n/\tau)},
    \quad
    N_i = \{k_{i,m}^{d}\}_m \cup \{k_j^+, k_{j,m}^{d}\}_{j \neq i} \cup \text{queue}.

The degradation negatives are what makes the loss *quality*-aware: plain MoCo only contrasts
contents, which an encoder can solve while staying blind to blur, noise or compression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def qc_logits(query: torch.Tensor, key_pos: torch.Tensor, key_deg: torch.Tensor | None = None,
              queue: torch.Tensor | None = None, *, temperature: float = 0.2, in_batch: bool = True,
              normalize: bool = True) -> torch.Tensor:
    """Logits (B, 1 + #negatives) with the positive in column 0; masked entries are -inf.

    Shapes: ``query``, ``key_pos`` (B, D); ``key_deg`` (B, M, D) or (B, D) or None;
    ``queue`` (K, D) or None.  ``in_batch`` adds the other images' keys as content negatives.
    """
    if normalize:
        query = F.normalize(query.float(), dim=-1)
        key_pos = F.normalize(key_pos.float(), dim=-1)
        key_deg = F.normalize(key_deg.float(), dim=-1) if key_deg is not None else None
        queue = F.normalize(queue.float(), dim=-1) if queue is not None else None
    if key_deg is not None and key_deg.dim() == 2:
        key_deg = key_deg.unsqueeze(1)
    b = query.shape[0]
    parts = [(query * key_pos).sum(-1, keepdim=True)]  # (B, 1)
    if key_deg is not None:
        parts.append(torch.einsum("bd,bmd->bm", query, key_deg))  # own content, other degradation
    if in_batch and b > 1:
        keys = [key_pos.unsqueeze(1)] + ([key_deg] if key_deg is not None else [])
        bank = torch.cat(keys, dim=1)  # (B, 1 + M, D): every key of image j
        per_image = bank.shape[1]
        sim = query @ bank.reshape(-1, bank.shape[-1]).T  # (B, B * (1 + M))
        owner = torch.arange(b, device=query.device).repeat_interleave(per_image)
        mine = owner.unsqueeze(0) == torch.arange(b, device=query.device).unsqueeze(1)
        parts.append(sim.masked_fill(mine, float("-inf")))  # other images only
    if queue is not None and queue.shape[0] > 0:
        parts.append(query @ queue.T)
    return torch.cat(parts, dim=1) / temperature


def qc_loss(query: torch.Tensor, key_pos: torch.Tensor, key_deg: torch.Tensor | None = None,
            queue: torch.Tensor | None = None, *, temperature: float = 0.2, in_batch: bool = True,
            normalize: bool = True) -> torch.Tensor:
    """QC-Loss (mean over the batch); see the module docstring for the formula.

    Gradients flow into ``query`` only if keys come from a momentum encoder under no_grad, as
    in MoCo; the function itself does not detach anything.
    """
    logits = qc_logits(query, key_pos, key_deg, queue, temperature=temperature, in_batch=in_batch,
                       normalize=normalize)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)
