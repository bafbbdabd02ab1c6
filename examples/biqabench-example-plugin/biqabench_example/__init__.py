"""Example biqabench plugin: a head with attention pooling, a toy backbone and a CLI command."""

import torch
import typer
from torch import nn

from biqabench.plugin_api import Backbone, HeadSpec, IQAHead, TrainRecipe, hookimpl


class ToyNet(Backbone):
    """Four strided convolutions; enough to show that any Backbone works with any head."""

    strides = (2, 4, 8, 16)

    def __init__(self, width: int = 8):
        super().__init__()
        self.channels = (width, 2 * width, 4 * width, 8 * width)
        chans = (3,) + self.channels
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, 2, 1), nn.ReLU()) for i in range(4)
        )

    def forward(self, x):
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out


class AttnPoolHead(IQAHead):
    """Scores each location of the last feature map and averages them with learned attention."""

    def __init__(self, backbone, recipe):
        super().__init__(backbone)
        c = backbone.out_channels
        self.score = nn.Conv2d(c, 1, 1)
        self.attn = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        f = self.backbone(x)[-1]
        w = torch.softmax(self.attn(f).flatten(1), dim=1)
        return (self.score(f).flatten(1) * w).sum(1)


@hookimpl
def register_backbones(register):
    register("toynet", ToyNet, description="example plugin: 4 strided convs")


@hookimpl
def register_heads(register):
    register(HeadSpec("attnpool", AttnPoolHead, TrainRecipe(patch_size=64, train_patches=4, test_patches=4, epochs=2),
                      description="example plugin: attention-pooled local scores"))


@hookimpl
def register_commands(cli):
    example = typer.Typer(help="Commands of the example plugin.")

    @example.command()
    def hello(name: str = "world"):
        """Say hello (proves plugins can add commands)."""
        typer.echo(f"hello {name} from biqabench-example-plugin")

    cli.add_typer(example, name="example")
