"""TReS (Golestaneh et al., WACV 2022) built around any four-stage backbone.

A transformer encoder attends over multi-scale features of every spatial cell; its pooled output
is joined with the pooled last-stage CNN features and regressed to a score.  Training adds a
relative-ranking term and a self-consistency term between an image and its horizontal flip
(:mod:`biqabench_plugins.tres.loss`).

Architecture as in the reference code (isalirezag/TReS) and pyiqa's ``TReS``:

* each stage map is L2-normalised over channels, L2-pooled (square -> 3x3 Hann blur -> sqrt),
  dropped out (p=0.1, training only) and average-pooled to the last stage's grid (7x7 at 224
  px); the four are concatenated: ``d = sum(backbone.channels)`` channels (3840 for ResNet-50);
* plus a fixed 2-D sine position encoding, a pre-norm transformer encoder (2 layers, 16 heads,
  feed-forward 64, dropout 0.5) runs over the grid cells;
* score = FC([FC_d->C4(mean of encoder output), mean of last stage]).

Generalised only where the reference hard-codes ResNet-50 at 224 px: channels come from
``backbone.channels``, pooling to the last stage's grid is adaptive (identical at 224 px), the
position encoding follows the grid, and the head count falls back to the largest divisor of
``d`` not above ``nhead`` (16 divides ResNet-18/34/50's 960 and 3840, so they are unaffected).
Parameter names are pyiqa's, so its checkpoints load by renaming the backbone prefix.

Input: ImageNet-normalised patches (the data layer's job).  Dropout is off in eval mode, so
eval-mode scores are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from biqabench.plugin_api import Backbone, BiqaError, IQAHead, TrainRecipe, override
from biqabench_plugins.tres.loss import parse_loss_terms, tres_loss, tres_loss_features


@dataclass
class TReSOptions:
    """Architecture and loss settings (``TrainRecipe.options`` keys); defaults are the reference code's."""

    nhead: int = 16                  # attention heads (falls back to a divisor of the width)
    num_encoder_layers: int = 2
    dim_feedforward: int = 64
    dropout: float = 0.5             # transformer dropout (attention and feed-forward)
    feature_dropout: float = 0.1     # dropout on the L2-pooled stage maps before the transformer
    consistency_weight: float = 1.0  # self-consistency (image vs flipped image features)
    rank_weight: float = 0.05        # relative-ranking (triplet) term, both views
    rank_consistency_weight: float = 0.5  # ranking terms of the two views agreeing
    flip_back: bool = False          # un-flip the flipped view's maps before comparing (reference: no)


def parse_options(recipe: TrainRecipe) -> TReSOptions:
    opts = override(TReSOptions(), recipe.options, where="tres recipe options")
    for name in ("dropout", "feature_dropout"):
        if not 0.0 <= getattr(opts, name) < 1.0:
            raise BiqaError(f"tres recipe options: {name} must be in [0, 1), got {getattr(opts, name)}")
    if opts.nhead < 1 or opts.num_encoder_layers < 1 or opts.dim_feedforward < 1:
        raise BiqaError("tres recipe options: nhead, num_encoder_layers and dim_feedforward must be >= 1")
    return opts


class L2Pool(nn.Module):
    """L2 pooling (Henaff & Simoncelli): sqrt of a Hann-weighted local mean of squares, stride 1.

    The 3x3 Hann kernel is the inner part of ``np.hanning(5)``, normalised to sum 1, as in the
    reference code.  It is a constant, so it is a non-persistent buffer (not in state dicts).
    """

    def __init__(self, filter_size: int = 5):
        super().__init__()
        a = np.hanning(filter_size)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        self.register_buffer("kernel", (g / g.sum())[None, None], persistent=False)
        self.padding = (filter_size - 2) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.kernel.to(x.dtype).expand(c, 1, -1, -1)
        out = F.conv2d(x * x, w, padding=self.padding, groups=c)
        return (out + 1e-12).sqrt()


def sine_position_encoding(channels: int, h: int, w: int, *, temperature: float = 10000.0,
                           device=None) -> torch.Tensor:
    """DETR's normalised 2-D sine encoding, (1, channels, h, w): first half rows, second columns.

    Positions run 1..h (1..w) scaled to (0, 2*pi]; feature k uses frequency temperature^(2*floor(k/2)/n)
    and alternates sin (even k) / cos (odd k).
    """
    n_y = channels // 2
    n_x = channels - n_y
    scale = 2 * math.pi
    eps = 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + eps) * scale
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + eps) * scale

    def encode(pos: torch.Tensor, n: int) -> torch.Tensor:
        k = torch.arange(n, dtype=torch.float32, device=device)
        freq = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / n)
        angles = pos[:, None] / freq  # (len, n)
        out = torch.empty_like(angles)
        out[:, 0::2] = angles[:, 0::2].sin()
        out[:, 1::2] = angles[:, 1::2].cos()
        return out

    pos_y = encode(y, n_y)[:, None, :].expand(h, w, n_y)
    pos_x = encode(x, n_x)[None, :, :].expand(h, w, n_x)
    return torch.cat([pos_y, pos_x], dim=2).permute(2, 0, 1).unsqueeze(0)


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer; the position encoding is added to queries and keys only."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)  # (L, B, C) tokens
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.norm1(src)
        qk = h + pos
        src = src + self.dropout1(self.self_attn(qk, qk, h, need_weights=False)[0])
        h = self.norm2(src)
        return src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(h)))))


class Encoder(nn.Module):
    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, nhead, dim_feedforward, dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return self.norm(src)


class GridTransformer(nn.Module):
    """A transformer encoder over the cells of a (B, C, H, W) map; returns a map of the same shape."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.encoder = Encoder(d_model, nhead, num_layers, dim_feedforward, dropout)
        for p in self.parameters():  # the reference's init
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        b, c, h, w = grid.shape
        pos = sine_position_encoding(c, h, w, device=grid.device).to(grid.dtype)
        # contiguous (HW, B, C): a strided token layout makes every projection a batched matmul
        # over copies of its (d x 3d) weight, ~50x slower on CPU for d = 3840
        tokens = grid.flatten(2).permute(2, 0, 1).contiguous()
        pos = pos.flatten(2).permute(2, 0, 1).contiguous()  # (HW, 1, C), broadcast over the batch
        out = self.encoder(tokens, pos)
        return out.permute(1, 2, 0).reshape(b, c, h, w)


def _heads_for(d_model: int, wanted: int) -> int:
    return max(n for n in range(1, min(wanted, d_model) + 1) if d_model % n == 0)


class TReSOutputs(NamedTuple):
    """One view's pass: scores (B,), encoder output map and the last backbone stage."""

    score: torch.Tensor
    encoded: torch.Tensor
    last: torch.Tensor


class TReSHead(IQAHead):
    """Transformer over multi-scale L2-pooled features + pooled CNN features -> score."""

    def __init__(self, backbone: Backbone, recipe: TrainRecipe | None = None):
        recipe = recipe or TrainRecipe()
        super().__init__(backbone, recipe)
        o = parse_options(recipe)
        self.options = o
        self.loss_terms = parse_loss_terms(recipe.loss)
        chans = tuple(backbone.channels)
        if len(chans) != 4:
            raise BiqaError(f"tres needs a backbone with 4 stages; {backbone.name!r} has channels {chans}")
        if recipe.cache_features and "consistency" in self.loss_terms:
            raise BiqaError(f"tres recipe: loss {recipe.loss!r} with cache_features: the flip self-consistency term "
                            "compares a crop's backbone pass with its flip's, which cached features do not pair; "
                            "use loss: l1+rank (with hflip the mirrored crops are training crops of their own)")
        d_model = sum(chans)
        self.d_model = d_model
        self.pool = L2Pool()
        self.drop2d = nn.Dropout(o.feature_dropout)
        self.transformer = GridTransformer(d_model, _heads_for(d_model, o.nhead), o.num_encoder_layers,
                                           o.dim_feedforward, o.dropout)
        self.fc2 = nn.Linear(d_model, chans[3])
        self.fc = nn.Linear(chans[3] * 2, 1)

    def tokens(self, feats: list[torch.Tensor], dropout: bool = True) -> torch.Tensor:
        """Stage maps -> normalised, L2-pooled, pooled to the last grid, concatenated (B, d, h, w)."""
        grid = feats[-1].shape[-2:]
        maps = []
        for f in feats:
            t = self.pool(F.normalize(f, dim=1, p=2))
            if dropout:
                t = self.drop2d(t)
            maps.append(F.adaptive_avg_pool2d(t, grid) if t.shape[-2:] != grid else t)
        return torch.cat(maps, dim=1)

    def view(self, x: torch.Tensor, dropout: bool = True) -> TReSOutputs:
        """Score one view of a batch, keeping the maps the self-consistency term compares."""
        feats = self.backbone(x)
        encoded = self.transformer(self.tokens(feats, dropout))
        last = feats[-1]
        joint = torch.cat([self.fc2(encoded.mean(dim=(2, 3))), last.mean(dim=(2, 3))], dim=1)
        return TReSOutputs(self.fc(joint).reshape(-1), encoded, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.view(x).score

    def loss(self, x: torch.Tensor, mos: torch.Tensor) -> torch.Tensor:
        """L1 + relative ranking + flip self-consistency; runs the flipped batch itself."""
        return tres_loss(self, x, mos)

    # -- a frozen backbone's cached features (recipe cache_features) ------------------------------
    def cache_features(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per stage the L2-normalised, L2-pooled map average-pooled to the last stage's grid (what
        :meth:`tokens` concatenates), and the last stage's channel means.  Exact: the feature dropout
        (whole channels) commutes with the average pooling, so it is applied to the cached maps."""
        grid = maps[-1].shape[-2:]
        stages = [self.pool(F.normalize(f, dim=1, p=2)) for f in maps]
        stages = [F.adaptive_avg_pool2d(t, grid) if t.shape[-2:] != grid else t for t in stages]
        return [*stages, maps[-1].mean(dim=(2, 3))]

    def score_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        *stages, last_mean = feats
        encoded = self.transformer(torch.cat([self.drop2d(t) for t in stages], dim=1))
        joint = torch.cat([self.fc2(encoded.mean(dim=(2, 3))), last_mean], dim=1)
        return self.fc(joint).reshape(-1)

    def loss_features(self, feats: list[torch.Tensor], mos: torch.Tensor) -> torch.Tensor:
        """Regression (+ ranking) on the cached crops: :func:`tres_loss_features`."""
        return tres_loss_features(self, feats, mos)
