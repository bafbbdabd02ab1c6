"""YAML configs mapped onto dataclasses, with errors that name the key and the expected type.

Recipes (head training settings, QPT's degradation space...) are dataclasses; a YAML file or a
dict overrides their fields.  Unknown keys and wrong types are caught here, before any work
starts, with the file and key in the message.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from biqabench.base.errors import BiqaError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BiqaError(f"config {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BiqaError(f"config {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise BiqaError(f"config {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:  # a tag safe_load does not build: refuse, never run it
        tag = str(getattr(exc, "problem", "")).split("tag ")[-1].strip("'\"").replace("tag:yaml.org,2002:", "!!")
        raise BiqaError(f"config {path}: refused the YAML tag {tag!r} (configs hold plain values only; "
                        "nothing was run)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        detail = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise BiqaError(f"config {path}{where}: not valid YAML ({detail})") from None
    except RecursionError:
        raise BiqaError(f"config {path}: nested too deeply to be a config") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise BiqaError(f"config {path}: unreadable value ({str(exc).split(':')[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BiqaError(f"config {path}: expected a mapping of key: value at the top, got {type(data).__name__}")
    return data


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to one short line (error messages quote user values)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else "<unprintable value>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except BiqaError as e:
                errors.append(e)
        raise BiqaError(f"{where}: key {key!r} expects {_type_name(tp)}, got {_short(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise BiqaError(f"{where}: key {key!r} expects a list, got {_short(value)}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise BiqaError(f"{where}: key {key!r} expects a mapping, got {_short(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise BiqaError(f"{where}: key {key!r} expects a mapping, got {_short(value)}")
        return override(tp(), value, where=f"{where} [{key}]")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise BiqaError(f"{where}: key {key!r} expects true/false, got {_short(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond float range
                raise BiqaError(f"{where}: key {key!r} expects a number in float range, got {_short(value)}") from None
        if isinstance(value, str):  # YAML reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise BiqaError(f"{where}: key {key!r} expects a number, got {_short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BiqaError(f"{where}: key {key!r} expects an integer, got {_short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise BiqaError(f"{where}: key {key!r} expects a string, got {_short(value)}")
    return value


def override(obj: T, values: dict | None, where: str = "config") -> T:
    """A copy of dataclass ``obj`` with ``values`` applied; unknown keys and bad types raise."""
    if not values:
        return obj
    if not isinstance(values, dict):
        raise BiqaError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1) if isinstance(key, str) else []
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(fields))})"
            raise BiqaError(f"{where}: unknown key {_short(key)}{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = override(current, value, where=f"{where} [{key}]")
        else:
            changes[key] = _coerce(value, hints[key], key, where)
    return dataclasses.replace(obj, **changes)

