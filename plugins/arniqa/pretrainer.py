"""``biqabench pretrain arniqa``: ARNIQA (Agnolucci et al., WACV 2024) on the core pretraining loop.

ARNIQA learns a *distortion manifold*: two different photos degraded with the same composition of
distortions should embed close together, whatever their content.  One step, with B photos:

* the photos are paired, the first half with the second (pair i: photos i and B/2 + i, two
  different samples of the run's stream, so two different photos unless the folder has fewer
  photos than a step needs);
* for each pair a composition of distortions is drawn (:mod:`distortions`: 1-4 of 24 types in 7
  groups, 5 levels, 5% pristine);
* each photo gives two views: a ``patch_size`` patch of its crop, and a ``patch_size`` patch of
  the crop downscaled by 2 (the "half-scale" view); all four views of the pair get the pair's
  composition;
* NT-Xent (temperature 0.1) over the embeddings of ``[A; A_half]`` and ``[B; B_half]``: A_i's
  positive is B_i (same distortion, other content) and A_half_i's is B_half_i; every other view is
  a negative, the same photo at the other scale included (a scale change is a quality change).

Follows the reference code (miccunifi/ARNIQA, ``models/simclr.py``, ``data/dataset_kadis700.py``,
``train.py``; CC BY-NC, read for facts only): the encoder L2-normalises the pooled features before
a Linear-ReLU-Linear head (width = the feature width, 128 out); the NT-Xent form; the pairing and
half-scale views; SGD lr 1e-3, momentum 0.9, weight decay 1e-4, batch 16 pairs, 224 px (paper
preset).  Deviations:

* our own distortion operators and several level values (:mod:`distortions`);
* the half-scale view is a patch of the *crop* downscaled by 2, not of the whole photo, and the
  views are cut from a ``crop_size`` crop of the photo;
* the photos of a pair are two samples of the step's stream (the reference draws B at random);
* one encoder forward over all views (the reference runs the A and B sets separately: BatchNorm
  statistics then differ), which DDP needs; under DDP the negatives are the process's own views;
* the reference fine-tunes an ImageNet ResNet-50 with a warm-restart cosine schedule; here every
  pretrainer starts from random weights at the same seed (the comparison is about the pretext),
  with the core's warm-up + cosine schedule; the CPU preset uses QPT's CPU settings (LARS, a
  BatchNorm head), the paper preset the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from biqabench.plugin_api import (BiqaError, Encoder, PretrainConfig, Pretrainer, Projector, Views, fit_crop, nt_xent,
                                  random_patches, request_values, step_generators)
from biqabench_plugins.arniqa.distortions import distort, sample_composition


@dataclass
class ArniqaConfig(PretrainConfig):
    """ARNIQA's settings; the defaults are the CPU preset (presets/cpu.yaml)."""

    embed_dim: int = 128
    hidden_dim: int = 0          # head width; 0: the backbone's output channels (the reference's)
    projector_bn: bool = True    # BatchNorm in the head (not the reference's; as QPT's CPU preset)
    temperature: float = 0.1
    max_distortions: int = 4     # 1..max groups composed
    num_levels: int = 5          # levels 0..num_levels-1 of each type
    pristine_prob: float = 0.05  # a pair left undistorted


class PairViews:
    """Batch builder: the step's pairs, their compositions, full- and half-scale distorted views."""

    def __init__(self, cfg: ArniqaConfig, seed: int):
        self.size, self.seed = cfg.patch_size, seed
        self.draw = (cfg.max_distortions, cfg.num_levels, cfg.pristine_prob)

    def _views(self, crops: torch.Tensor, rng) -> tuple[torch.Tensor, torch.Tensor]:
        full = random_patches(crops, self.size, rng)
        half = F.interpolate(crops.float(), scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
        return full.float() / 255, random_patches(half.round().clamp(0, 255), self.size, rng) / 255

    def __call__(self, crops: torch.Tensor, *, step: int, rank: int, samples=None, device=None) -> Views:
        rng, _, _ = step_generators(self.seed, step, rank)
        n = crops.shape[0] // 2
        comps = [sample_composition(rng, *self.draw) for _ in range(n)]
        a, a_half = self._views(crops[:n], rng)
        b, b_half = self._views(crops[n:2 * n], rng)
        out = {}
        for name, views in (("a", torch.cat([a, a_half])), ("b", torch.cat([b, b_half]))):
            done = [distort(v, comps[i % n], rng) for i, v in enumerate(views)]
            out[name] = (torch.stack(done) * 255).round().to(torch.uint8)
        pairs = [(samples[i], samples[n + i]) for i in range(n)] if samples else None
        return Views(out, info={"compositions": comps, "pairs": pairs}, samples=samples)


class Arniqa(Pretrainer):
    """ARNIQA's part of the loop."""

    name = "arniqa"
    title = "ARNIQA"
    loss_name = "NT-Xent"
    config_type = ArniqaConfig
    presets_package = "biqabench_plugins.arniqa"
    shown = ("acc",)

    @classmethod
    def build_model(cls, cfg: ArniqaConfig, backbone, seed: int) -> nn.Module:
        hidden = cfg.hidden_dim or backbone.out_channels
        return Encoder(backbone, Projector(backbone.out_channels, hidden, cfg.embed_dim, cfg.projector_bn),
                       normalise_features=True)

    @classmethod
    def validate(cls, cfg: ArniqaConfig, where: str) -> ArniqaConfig:
        if cfg.batch_size < 2 or cfg.batch_size % 2:
            raise BiqaError(f"{where}: batch_size must be even (photos in pairs), got {cfg.batch_size}")
        if not 1 <= cfg.num_levels <= 5 or not 0 <= cfg.max_distortions <= 7:
            raise BiqaError(f"{where}: num_levels must be in 1..5 and max_distortions in 0..7")
        if cfg.temperature <= 0 or cfg.embed_dim < 1 or cfg.hidden_dim < 0:
            raise BiqaError(f"{where}: temperature and embed_dim must be > 0, hidden_dim >= 0")
        return cfg

    @classmethod
    def config_for_request(cls, request) -> ArniqaConfig:
        """As the core's, with crops at least twice the views (the half-scale view needs it)."""
        cfg = fit_crop(cls.load_config(request.config, request_values(request)))
        if cfg.crop_size < 2 * cfg.patch_size:
            cfg.crop_size = 2 * cfg.patch_size
        return cfg

    def setup(self, runtime) -> None:
        super().setup(runtime)
        self.encode = self.ddp(self.model)

    def batch_builder(self) -> PairViews:
        return PairViews(self.cfg, self.seed)

    def loss(self, batch: Views, step: int):
        a, b = batch["a"], batch["b"]
        z = self.encode(torch.cat([a, b])).float()
        za, zb = z[:a.shape[0]], z[a.shape[0]:]
        loss = nt_xent(za, zb, self.cfg.temperature)
        with torch.no_grad():
            zn = F.normalize(z, dim=1)
            sim = (zn @ zn.T).fill_diagonal_(-2.0)
            m = za.shape[0]
            target = torch.cat([torch.arange(m, 2 * m), torch.arange(0, m)]).to(z.device)
            acc = (sim.argmax(1) == target).float().mean()
        return loss, {"acc": acc}
