"""The command line quotes its defaults from the config dataclasses that own them, so the help
cannot drift from what a run does when an option is left out."""

import dataclasses
import inspect
import re

import pytest

from biqabench.cli.pretrain import pretrain_command as pretrain
from biqabench.cli.evaluation import eval_command, probe_command
from biqabench.data.embedded import EMBEDDED_TEST, EMBEDDED_TRAIN
from biqabench.evaluation.eval_config import EvalConfig, ProbeConfig
from biqabench.components.pretrain import PretrainRequest

QUOTED = re.compile(r"[Dd]efault:? (?:the embedded |with no --train: )?([\w.\-]+)")


def _expected(cfg, name: str) -> str:
    value = getattr(cfg(), name)
    if name == "train" and not value:
        return EMBEDDED_TRAIN
    if name == "test" and not value:
        return EMBEDDED_TEST[0]
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


@pytest.mark.parametrize("command,cfg", [(eval_command, EvalConfig), (probe_command, ProbeConfig)])
def test_every_default_in_the_help_is_the_config_field(command, cfg):
    names = {f.name for f in dataclasses.fields(cfg)}
    checked = 0
    for name, param in inspect.signature(command).parameters.items():
        found = QUOTED.search(param.default.help or "")
        if found and name in names:
            assert found.group(1).rstrip(".") == _expected(cfg, name), f"--{name}: {param.default.help}"
            checked += 1
    assert checked >= 6  # head/weights/backbone/splits/seed...: the help does quote them


def test_pretrain_options_default_to_the_request_fields():
    fields = {f.name: f.default for f in dataclasses.fields(PretrainRequest)}
    shared = 0
    for name, param in inspect.signature(pretrain).parameters.items():
        if name in fields and param.default.default is not None:
            assert param.default.default == fields[name], name
            shared += 1
    assert shared >= 6
