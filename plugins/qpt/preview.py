"""``biqabench qpt preview``: one image under N sampled degradations, each with its recipe.

So a person can see what QPT trains on (and sanity-check a YAML degradation space before
spending hours on it): the grid shows the pristine crop, then each degraded version titled
with its recipe, operators in the order they ran.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="QPT (quality-aware pretraining): look at its degradation space.", no_args_is_help=True)


def _default_image() -> Path:
    from biqabench.plugin_api import pristine_dir

    return pristine_dir() / "motorcycle_left.png"  # a pretraining photo (no demo set uses it)


def load_crop(path: Path | None, size: int):
    """The image as a float tensor (3, size, size): shorter side scaled to ``size``, centre crop."""
    import torch
    import torch.nn.functional as F

    from biqabench.plugin_api import decode_array

    arr = decode_array(path or _default_image())
    x = torch.from_numpy(arr).float().unsqueeze(0) / 255.0
    _, _, h, w = x.shape
    scale = size / min(h, w)
    if abs(scale - 1) > 1e-6:
        x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="area"
                          if scale < 1 else "bicubic", **({} if scale < 1 else {"align_corners": False}))
    _, _, h, w = x.shape
    top, left = (h - size) // 2, (w - size) // 2
    return x[0, :, top:top + size, left:left + size].clamp(0, 1)


def make_preview(image: Path | None, out: Path, n: int = 8, seed: int = 0, config: Path | None = None,
                 size: int = 256) -> Path:
    """Draw the grid and write it atomically to ``out`` (PNG); returns the path."""
    import numpy as np
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from biqabench.plugin_api import io
    from biqabench_plugins.qpt.degradations import degrade_batch, load_degradation_config, sample_recipe

    cfg = load_degradation_config(str(config) if config else None)
    x = load_crop(image, size)
    rng = np.random.default_rng(seed)
    recipes = [sample_recipe(cfg, rng) for _ in range(n)]
    y = degrade_batch(x.expand(n, -1, -1, -1), recipes, torch.Generator().manual_seed(seed))
    tiles = [(x, "pristine")] + [(y[i], f"#{i + 1} (order {r.order}): " + r.describe()) for i, r in enumerate(recipes)]
    cols = min(4, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    fig = Figure(figsize=(3.3 * cols, 4.1 * rows))
    FigureCanvasAgg(fig)
    for k, (img, title) in enumerate(tiles):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("\n".join(textwrap.wrap(title.replace(" > ", " > "), 46)) or title, fontsize=6.5,
                     loc="left", family="monospace")
    fig.suptitle(f"QPT degradations (seed {seed}): operators in the order applied", fontsize=10)
    fig.tight_layout()
    with io.atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out


@app.command("preview")
def preview(
    image: Optional[Path] = typer.Argument(None, help="Image to degrade (default: an embedded sample photo)."),
    out: Path = typer.Option(Path("qpt_preview.png"), "--out", "-o", help="PNG to write."),
    n: int = typer.Option(8, "--n", "-n", min=1, max=64, help="How many degradations to sample."),
    seed: int = typer.Option(0, help="Seed of the sampled degradations."),
    config: Optional[Path] = typer.Option(None, help="YAML with a degradation space (or a QPT config with a "
                                                      "degradation: section)."),
    size: int = typer.Option(256, min=32, max=1024, help="Side of the centre crop shown, in pixels."),
) -> None:
    """Draw IMAGE under N sampled QPT degradations, each titled with its recipe."""
    path = make_preview(image, out, n=n, seed=seed, config=config, size=size)
    typer.echo(f"wrote {path}")
