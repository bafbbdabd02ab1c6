"""``biqabench heads list`` and ``biqabench pretrainers list``: what the plugins registered."""

from __future__ import annotations

import typer

from biqabench.cli.common import list_command


def head_recipe(entry) -> dict:
    r = entry.obj.recipe
    return {"recipe": f"patch {r.patch_size}, {r.train_patches}/{r.test_patches} patches, "
                      f"{r.optimizer} lr {r.lr:g} (x{r.head_lr_mult:g} head), wd {r.weight_decay:g}, "
                      f"batch {r.batch_size}, {r.epochs} ep"
                      + (f" (lr x{r.lr_gamma:g} every {r.lr_step})" if r.lr_step else "") + f", loss {r.loss}"}


def register(app: typer.Typer) -> None:
    for kind, extra in (("heads", head_recipe), ("pretrainers", None)):
        sub = typer.Typer(help=f"Registered {kind}.", no_args_is_help=True)
        sub.command("list")(list_command(kind, extra))
        app.add_typer(sub, name=kind)
