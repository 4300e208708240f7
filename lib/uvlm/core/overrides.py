"""``KEY=VALUE`` overrides of params.yaml, in the syntax of ``dvc exp run -S``.

    parse_sets(["train.lr=3e-4", "preset=gpu"]) -> {"train": {"lr": 0.0003}, "preset": "gpu"}

The one parser of such settings: ``train_cli --set``, the notebooks' ``overrides`` parameter
(:mod:`uvlm.core.notebook`), sweep jobs, bench and stage timing all read them here, and hand the result
to :func:`uvlm.core.config.load_config`, which merges it over params.yaml. A module of its own so that
a notebook reading settings does not depend on the training code.
"""
from __future__ import annotations

import re

import yaml

from .errors import ConfigError

TOP_LEVEL_KEYS = ("preset", "seed")
EXPONENT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_sets(items, flag: str = "--set") -> dict:
    """["train.lr=3e-4", "preset=gpu"] -> {"train": {"lr": 0.0003}, "preset": "gpu"}."""
    out: dict = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts) or (len(parts) == 1 and parts[0] not in TOP_LEVEL_KEYS):
            raise ConfigError(flag, item, "KEY=VALUE with KEY a dotted params.yaml key (train.lr, model.d_model, "
                                          f"runs.u_base.accel) or one of {list(TOP_LEVEL_KEYS)}")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(flag, item, f"no other --set giving '{p}' a plain value")
        node[parts[-1]] = read_value(text)
    return out


def read_value(text: str):
    """A YAML scalar or list; also '3e-4', which YAML 1.1 (PyYAML) leaves a string."""
    if not text.strip():
        return None
    value = yaml.safe_load(text)
    if isinstance(value, str) and EXPONENT.match(value.strip()):
        return float(value)
    return value
