"""Strict dataclass configs merged from plain dicts (lingua style).

Each library module owns the dataclass for its own section (``WorldConfig`` in
world.py, ``VQConfig`` in vq.py, ...). This file only knows how to build such a
dataclass from a dict *strictly*: unknown keys, wrong types and out-of-range
values raise :class:`~uvlm.core.errors.ConfigError` naming the full dotted key.

Range rules are declared next to the field, so the rule and the default live on
one line::

    @dataclass
    class VQConfig:
        codebook_size: int = field(default=256, metadata=rule(ge=2))
        kind: str = field(default="vq", metadata=rule(choices=("vq", "fsq")))
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from .errors import ConfigError


def rule(*, ge=None, gt=None, le=None, lt=None, choices=None, each_in=None) -> dict:
    """Field metadata describing the allowed values of a config field.

    ``choices`` restricts a scalar; ``each_in`` restricts every element of a list.
    """
    return {"rule": dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, each_in=each_in)}


def _describe(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(key: str, value, tp):
    """Check ``value`` against annotation ``tp``; allow int->float, reject bool->int."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(key, value, " or ".join(_describe(a) for a in args))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, f"a list of {_describe(typing.get_args(tp)[0])}")
        (inner,) = typing.get_args(tp)[:1]
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, "a mapping")
        _, vt = typing.get_args(tp)
        return {k: _coerce(f"{key}.{k}", v, vt) for k, v in value.items()}
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, prefix=key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, value, "a string")
        return value
    return value


def _check_rule(key: str, value, r: dict):
    if value is None:
        return
    if r.get("each_in") is not None:
        for i, v in enumerate(value):
            if v not in r["each_in"]:
                raise ConfigError(f"{key}[{i}]", v, f"one of {list(r['each_in'])}")
    if r.get("choices") is not None and value not in r["choices"]:
        raise ConfigError(key, value, f"one of {list(r['choices'])}")
    for op, bound, text in (("ge", r.get("ge"), ">="), ("gt", r.get("gt"), ">"),
                            ("le", r.get("le"), "<="), ("lt", r.get("lt"), "<")):
        if bound is None:
            continue
        ok = {"ge": value >= bound, "gt": value > bound, "le": value <= bound, "lt": value < bound}[op]
        if not ok:
            raise ConfigError(key, value, f"a value {text} {bound}")


def build(cls, data: dict | None, prefix: str = ""):
    """Build dataclass ``cls`` from ``data``, strictly. Missing keys take defaults."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(prefix or cls.__name__, data, "a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            raise ConfigError(f"{prefix}.{k}" if prefix else k, data[k],
                              f"one of the known keys {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _coerce(key, data[name], hints[name])
        elif dataclasses.is_dataclass(hints[name]):
            value = build(hints[name], {}, prefix=key)
        else:
            continue  # dataclass default
        _check_rule(key, value, f.metadata.get("rule", {}))
        kwargs[name] = value
    obj = cls(**kwargs)
    # Defaults are checked too, so a bad default in a preset is caught early.
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        _check_rule(key, getattr(obj, name), f.metadata.get("rule", {}))
    check = getattr(obj, "validate", None)
    if callable(check):
        check(prefix)
    return obj


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
