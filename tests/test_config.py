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
    ("paths:\n  figures: [not, a, path]\n", "paths.figures"),
    ("runs:\n  r: {task: uv, accel: base}\n", "runs.r.task"),
    ("runs:\n  r: {task: u, accel: base, epochs_factor: 0}\n", "runs.r.epochs_factor"),
    # K = round(0.9 x 4 layers) = 4 shallow layers, of at most 1: named on the key that was set.
    ("attention: {run: r}\nruns:\n  r: {task: g, accel: hmgen, hmgen_fraction: 0.9}\n", "runs.r.hmgen_fraction"),
    ("attention: {run: r}\nruns:\n  r: {task: g, accel: hmgen, hmgen_k: 3}\n", "runs.r.hmgen_k"),
])
def test_bad_values_name_the_key_value_and_allowed(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(_params(tmp_path, "preset: tiny\n" + text if not text.startswith("preset") else text))
    assert err.value.key == key
    assert key in str(err.value) and "expected" in str(err.value)


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_config(tmp_path / "nowhere.yaml")


def test_set_edits_one_key_of_one_run_and_keeps_the_grid(tmp_path):
    """``--set runs.X.k=v`` works as ``dvc exp run -S``: one key of one run changes."""
    from uvlm.train.cli import parse_sets
    path = _params(tmp_path, "preset: tiny\nattention: {run: u_base}\nruns:\n  g_k: {task: g, accel: hmgen, hmgen_k: 1}\n"
                             "  u_base: {task: u, accel: base}\n")
    cfg = load_config(path, sets=parse_sets(["runs.g_k.hmgen_k=0", "train.lr=3e-4"]))
    assert sorted(cfg.runs) == ["g_k", "u_base"]
    assert (cfg.runs["g_k"].task, cfg.runs["g_k"].accel, cfg.runs["g_k"].hmgen_k) == ("g", "hmgen", 0)
    assert cfg.train.lr == 3e-4
    assert load_config(path, sets=parse_sets(["runs.new.task=g"])).runs["new"].task == "g"
    with pytest.raises(ConfigError, match="runs.g_k.hmgen_fraction"):
        load_config(path, sets=parse_sets(["runs.g_k.hmgen_fraction=0.9"]))


def test_unreadable_yaml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="params.yaml"):
        load_config(_params(tmp_path, "train: [unclosed\n"))


def test_the_params_stage_names_the_bad_key_and_writes_a_constant_file(tmp_path, capsys):
    """`python -m uvlm.pipeline.params_check`, the pipeline's first stage: its output never changes, so a
    valid edit re-runs only the stages whose keys changed."""
    from uvlm.pipeline import params_check
    out = tmp_path / "checked.txt"
    assert params_check.main([str(_params(tmp_path, "preset: tiny\ntrian: {lr: 1}\n")), str(out)]) == 2
    err = capsys.readouterr().err
    assert "'trian'" in err and "No stage has run" in err and not out.exists()
    for text in ("preset: tiny\n", "preset: tiny\ntrain: {lr: 0.002}\n"):
        assert params_check.main([str(_params(tmp_path, text)), str(out)]) == 0
        assert out.read_text() == params_check.CHECKED


def test_notebook_overrides_edit_one_run_and_keep_the_grid(tmp_path):
    from uvlm.core.notebook import setup
    path = _params(tmp_path, "preset: tiny\nattention: {run: u_base}\nruns:\n"
                             "  g_k: {task: g, accel: hmgen, hmgen_k: 1}\n  u_base: {task: u, accel: base}\n")
    cfg = setup(str(path), ["runs.g_k.hmgen_k=0"], chdir=False)
    assert sorted(cfg.runs) == ["g_k", "u_base"] and cfg.runs["g_k"].task == "g" and cfg.runs["g_k"].hmgen_k == 0


def test_stage_settings_change_exactly_with_what_a_run_computes_from(tmp_path):
    """The per-run settings file the train stages depend on: a HiMix knob moves the HiMix runs'
    files only; a model value (as a preset edit would change it) moves every run's."""
    from conftest import write_tiny_params
    from uvlm.train.setup import stage_settings
    params = write_tiny_params(tmp_path)
    base = load_config(params)
    knob = load_config(params, {"himix": {"start_layer": 1}})
    wider = load_config(params, {"model": {"d_model": 48, "n_heads": 2, "n_kv_heads": 2}})
    moved = {r for r in base.runs if stage_settings(base, r) != stage_settings(knob, r)}
    assert moved == {r for r, s in base.runs.items() if "himix" in s.accel}
    assert all(stage_settings(base, r) != stage_settings(wider, r) for r in base.runs)
    # an HMGen fraction resolves to K before it is recorded: the file holds what the plan uses
    g = stage_settings(base, next(r for r, s in base.runs.items() if s.accel == "hmgen"))
    assert "himix" not in g and isinstance(g["hmgen"]["k"], int)
