"""params.yaml resolution and strict validation: every bad value names its key."""
from __future__ import annotations

import pytest
import yaml

from uvlm.core.config import load_config
from uvlm.core.errors import ConfigError


def _params(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_nulls_take_the_preset_and_values_override(tmp_path):
    cfg = load_config(_params(tmp_path, "preset: gpu\nmodel:\n  d_model: null\ntrain:\n  lr: 0.0005\n"))
    assert cfg.model.d_model == 384  # gpu preset value
    assert cfg.train.lr == 0.0005    # params.yaml wins over the preset
    assert load_config(_params(tmp_path, "preset: cpu\n"), {"train": {"lr": 0.1}}).train.lr == 0.1


def test_paths_resolve_from_the_params_folder(tmp_path):
    cfg = load_config(_params(tmp_path, "preset: tiny\n"))
    assert cfg.paths.data == (tmp_path / "data").resolve()


def test_repo_params_file_is_valid_under_every_preset(tmp_path):
    from pathlib import Path
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    for preset in ("cpu", "gpu", "tiny"):
        raw["preset"] = preset
        cfg = load_config(_params(tmp_path, yaml.safe_dump(raw)))
        assert cfg.preset == preset and cfg.runs


@pytest.mark.parametrize("text, key", [
    ("preset: laptop\n", "preset"),
    ("wrold:\n  image_size: 32\n", "wrold"),
    ("world:\n  colour: [red]\n", "world.colour"),
    ("world:\n  image_size: -32\n", "world.image_size"),
    ("world:\n  image_size: thirty-two\n", "world.image_size"),
    ("world:\n  shapes: [square, hexagon]\n", "world.shapes[1]"),
    ("tokenizer:\n  codebook_size: 1\n", "tokenizer.codebook_size"),
    ("model:\n  d_model: 0\n", "model.d_model"),
    ("train:\n  loss_on: everything\n", "train.loss_on"),
    ("train:\n  seeds: []\n", "train.seeds"),
    ("seed: -1\n", "seed"),
    ("runs:\n  r: {task: uv, accel: base}\n", "runs.r.task"),
    ("runs:\n  r: {task: u, accel: base, epochs_factor: 0}\n", "runs.r.epochs_factor"),
])
def test_bad_values_name_the_key_value_and_allowed(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(_params(tmp_path, "preset: tiny\n" + text if not text.startswith("preset") else text))
    assert err.value.key == key
    assert key in str(err.value) and "expected" in str(err.value)


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_config(tmp_path / "nowhere.yaml")
