"""HyperIQA (Su et al., CVPR 2020) built around any four-stage backbone.

The idea: a *hyper network* reads the image's content (the last-stage features) and generates
the weights of a small *target network*; the target network maps multi-scale local distortion
features to a quality score.  So the rule "how distortion becomes quality" adapts to content.

Sizes follow the paper and its reference code (SSL92/hyperIQA), except that everything tied to
the backbone is read from ``backbone.channels`` (ResNet-50's 256..2048 are not hard-coded), and
that fixed-size pooling is adaptive, so patches other than 224 px work:

* local distortion aware (LDA) modules: stage 1-3 maps -> 1x1 conv (16/32/64 channels) ->
  average pool to an 8x8 / 4x4 / 2x2 grid -> FC to 16 values; stage 4 -> global pool -> FC to
  ``target_in_size - 3*16`` values.  Together: the 224-d input vector of the target network.
  At 224 px the grids equal the reference's ``AvgPool2d(7, stride=7)``.
* hyper network: stage 4 -> 1x1 convs (C4 -> C4/2 -> C4/4 -> 112) -> pooled to 7x7 (a no-op at
  224 px) -> 3x3 convs generating each target FC layer's weights, FCs on the pooled vector
  generating biases (and the last layer's weights).
* target network: FC 224->112->56->28->14 with sigmoids, then FC 14->1, with per-image weights.

Submodule and parameter names are those of pyiqa's ``HyperNet`` (``lda_modules``,
``fc_w_modules``, ``fc_b_modules``, ``conv1``), so pyiqa checkpoints load by renaming the
backbone prefix only (see :mod:`biqabench_plugins.hyperiqa.pyiqa_compat`).

Input: patches normalised with ImageNet mean/std (the data layer's job), any size that is a
multiple of 32 and at least 32 px.  There is no dropout, so eval-mode scores are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from biqabench.plugin_api import Backbone, BiqaError, IQAHead, TrainRecipe, override

LDA_GRIDS = (8, 4, 2)          # pooled grid of the LDA modules on stages 1-3 (224 px: 56/7, 28/7, 14/7)
LDA_CHANNELS = (16, 32, 64)    # 1x1-conv widths of the LDA modules on stages 1-3 (the paper's)


@dataclass
class HyperIQAOptions:
    """Architecture settings (``TrainRecipe.options`` keys); defaults are the paper's."""

    lda_out_channels: int = 16       # LDA output per stage 1-3
    hyper_in_channels: int = 112     # channels of the hyper network's input map
    target_in_size: int = 224        # length of the target network's input vector
    target_fc: tuple[int, ...] = (112, 56, 28, 14)  # hidden widths of the target network
    feature_size: int = 7            # side of the map the weight-generating convs run on


def parse_options(recipe: TrainRecipe) -> HyperIQAOptions:
    opts = override(HyperIQAOptions(), recipe.options, where="hyperiqa recipe options")
    if len(opts.target_fc) != 4:
        raise BiqaError(f"hyperiqa recipe options: target_fc needs 4 widths, got {list(opts.target_fc)}")
    widths = (opts.target_in_size, *opts.target_fc)
    area = opts.feature_size ** 2
    for a, b in pairwise(widths):
        if (a * b) % area:
            raise BiqaError(f"hyperiqa recipe options: {a}x{b} target weights cannot be generated from a "
                            f"{opts.feature_size}x{opts.feature_size} map ({a * b} is not a multiple of {area}); "
                            f"change target_fc or feature_size")
    if opts.target_in_size <= 3 * opts.lda_out_channels:
        raise BiqaError("hyperiqa recipe options: target_in_size must exceed 3 * lda_out_channels")
    return opts


def _pooled_linear(c_in: int, c_out: int) -> nn.Sequential:
    """Global average pool -> FC: generates a bias (or the last layer's weights) from content."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, c_out))


class HyperIQAHead(IQAHead):
    """Hyper network + content-adaptive target network on a multi-scale backbone."""

    standardizes_features = True  # recipe standardize_features: the stage maps, at the top of ``score``

    def __init__(self, backbone: Backbone, recipe: TrainRecipe | None = None):
        recipe = recipe or TrainRecipe()
        super().__init__(backbone, recipe)  # the loss (l1, the paper's, or mse) is the base class's
        o = parse_options(recipe)
        self.options = o
        chans = tuple(backbone.channels)
        if len(chans) != 4:
            raise BiqaError(f"hyperiqa needs a backbone with 4 stages; {backbone.name!r} has channels {chans}")
        c4 = chans[3]
        self.hyper_fc_channels = [*o.target_fc, 1]

        lda = [nn.Sequential(
            nn.Conv2d(c, width, kernel_size=1, bias=False),
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
            nn.Linear(width * grid * grid, o.lda_out_channels),
        ) for c, width, grid in zip(chans[:3], LDA_CHANNELS, LDA_GRIDS)]
        lda.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(c4, o.target_in_size - 3 * o.lda_out_channels)))
        self.lda_modules = nn.ModuleList(lda)

        # content features for the hyper network
        self.conv1 = nn.Sequential(
            nn.Conv2d(c4, max(c4 // 2, 1), 1), nn.ReLU(inplace=True),
            nn.Conv2d(max(c4 // 2, 1), max(c4 // 4, 1), 1), nn.ReLU(inplace=True),
            nn.Conv2d(max(c4 // 4, 1), o.hyper_in_channels, 1), nn.ReLU(inplace=True),
        )
        self.hyper_pool = nn.AdaptiveAvgPool2d(o.feature_size)
        widths = (o.target_in_size, *o.target_fc)
        area = o.feature_size ** 2
        w_gen: list[nn.Module] = [nn.Conv2d(o.hyper_in_channels, a * b // area, 3, padding=1)
                                  for a, b in pairwise(widths)]
        w_gen.append(_pooled_linear(o.hyper_in_channels, o.target_fc[-1]))  # last layer: 14 -> 1
        self.fc_w_modules = nn.ModuleList(w_gen)
        self.fc_b_modules = nn.ModuleList(_pooled_linear(o.hyper_in_channels, n) for n in self.hyper_fc_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """The reference code's init: Kaiming-normal weights for LDA and generator layers."""
        for m in self.lda_modules.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
        for group in (self.fc_w_modules, self.fc_b_modules):
            for m in group.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight)

    def param_groups(self, recipe: TrainRecipe) -> list[dict]:
        """As the reference solver: the LDA modules live in its backbone module (``res``), so they
        learn at the backbone's rate; only the hyper network learns ``head_lr_mult`` times faster.
        A frozen backbone (linear probe) still trains the LDA modules, at the backbone's rate."""
        lda = list(self.lda_modules.parameters())
        lda_ids = {id(p) for p in lda}
        hyper = [p for p in self.head_parameters() if id(p) not in lda_ids]
        groups = [{"params": hyper, "lr": recipe.lr * recipe.head_lr_mult, "name": "head"},
                  {"params": lda, "lr": recipe.lr, "name": "lda"}]
        if not recipe.freeze_backbone:
            groups.append({"params": list(self.backbone.parameters()), "lr": recipe.lr, "name": "backbone"})
        return groups

    def target_input(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The target network's input: concatenated LDA vectors, (B, target_in_size)."""
        return torch.cat([lda(f) for f, lda in zip(feats, self.lda_modules)], dim=1)

    def target_params(self, last: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-image (weight (B, out, in), bias (B, out)) of each target layer, from content."""
        hyper_in = self.hyper_pool(self.conv1(last))
        b = hyper_in.shape[0]
        return [(gen_w(hyper_in).reshape(b, n_out, -1), gen_b(hyper_in))
                for gen_w, gen_b, n_out in zip(self.fc_w_modules, self.fc_b_modules, self.hyper_fc_channels)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.backbone(x))

    def score(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Scores (B,) from the backbone's four maps: the target network run with generated weights.

        With ``standardize_features`` the maps are standardised per channel first; that commutes with
        the average pooling of :meth:`cache_features`, so full and cached maps score alike."""
        feats = self.standardize(list(feats))
        q = self.target_input(feats).unsqueeze(1)  # (B, 1, in): a row vector per image
        params = self.target_params(feats[-1])
        for i, (w, bias) in enumerate(params):
            q = torch.baddbmm(bias.unsqueeze(1), q, w.transpose(1, 2))
            if i < len(params) - 1:
                q = torch.sigmoid(q)
        return q.reshape(-1)

    def cache_features(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Stage 1-3 maps average-pooled to their LDA grids, stage 4 as it is.  Exact: an LDA
        module's bias-free 1x1 conv commutes with average pooling, so pooling first changes
        nothing but the size (ResNet-50 at 128 px: 60 k values per crop instead of 180 k)."""
        return [F.adaptive_avg_pool2d(m, g) for m, g in zip(maps[:3], LDA_GRIDS)] + [maps[3]]

    def score_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.score(feats)
