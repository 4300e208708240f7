"""The attribute probe: trains above chance quickly, round-trips, and scores images."""
import json

import numpy as np
import pytest

from uvlm.core.errors import MissingInputError
from uvlm.probe.model import (ProbeConfig, attribute_agreement, load_probe, prompt_attribute_accuracy,
                        prompt_attribute_report, save_probe, train_probe)
from uvlm.world.language import generation_prompt
from uvlm.world.scenes import World, WorldConfig, render_scenes, stream

CFG = WorldConfig(image_size=16, grid=2, max_objects=3)


@pytest.fixture(scope="module")
def trained():
    return train_probe(CFG, ProbeConfig(steps=400, n_train=800, n_eval=200), seed=0, progress=False)


@pytest.fixture(scope="module")
def heldout():
    world, rng = World(CFG, 11), stream(11, "probe_test")
    scenes = [world.sample_scene(rng) for _ in range(60)]
    prompts = [generation_prompt(s, CFG, rng) for s in scenes]
    return scenes, prompts, render_scenes(scenes, CFG)


def test_probe_learns_well_above_chance(trained):
    _, m = trained
    assert m["occupancy"] > 0.95 and m["colour"] > 0.9 and m["size"] > 0.8
    assert m["shape"] > 0.5  # chance is 0.25; the cpu preset reaches ~0.99
    assert m["feature_dim"] == 16 * 4


def test_features_and_predictions(trained, heldout):
    probe, _ = trained
    scenes, _, images = heldout
    f = probe.features(images)
    assert f.shape == (60, 64) and np.isfinite(f).all()
    assert np.array_equal(f, probe.features(images))
    readings = probe.predict_scene(images)
    assert len(readings) == 60
    (cell, shape, colour, size) = readings[0][0]
    assert cell in {(r, c) for r in range(2) for c in range(2)}
    assert shape in CFG.shapes and colour in CFG.colours and size in CFG.sizes
    counts = np.mean([len(r) == len(s["objects"]) for r, s in zip(readings, scenes)])
    assert counts > 0.9
    with pytest.raises(ValueError, match="16, 16, 3"):
        probe.features(np.zeros((2, 32, 32, 3), np.uint8))


def test_save_load_round_trip(trained, heldout, tmp_path):
    probe, metrics = trained
    images = heldout[2]
    save_probe(probe, tmp_path / "probe.safetensors")
    again = load_probe(tmp_path / "probe.safetensors")
    assert np.allclose(again.features(images), probe.features(images))
    assert again.meta == probe.meta and again.metrics["shape"] == metrics["shape"]
    with pytest.raises(MissingInputError) as e:
        load_probe(tmp_path / "absent.safetensors")
    assert e.value.stage == "probe"


def test_scores_separate_right_from_wrong_images(trained, heldout):
    probe, _ = trained
    scenes, prompts, images = heldout
    assert attribute_agreement(probe, images, images) == 1.0
    shuffled = images[np.roll(np.arange(len(images)), 1)]
    assert attribute_agreement(probe, images, shuffled) < 0.5
    right = prompt_attribute_accuracy(probe, images, prompts)
    wrong = prompt_attribute_accuracy(probe, shuffled, prompts)
    assert right > 0.6 and wrong < 0.4 and right > wrong + 0.3
    records = [{"prompt": p} for p in prompts]
    assert prompt_attribute_accuracy(probe, images, records) == right
    report = prompt_attribute_report(probe, images, [{"scene": s} for s in scenes])
    assert report["n_images"] == 60 and report["n_objects"] == sum(len(s["objects"]) for s in scenes)
    blank = np.full_like(images, 100)
    assert prompt_attribute_accuracy(probe, blank, prompts) < 0.1


def test_probe_on_a_gpu_without_one_is_a_clear_error():
    import torch

    from uvlm.core.errors import ConfigError
    from uvlm.probe.model import train_probe
    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    with pytest.raises(ConfigError, match="probe.device"):
        train_probe(WorldConfig(image_size=16), ProbeConfig(steps=1, n_train=8, n_eval=8, device="cuda"), 0)


def test_probe_to_a_device_keeps_numpy_results_on_the_host(tiny_world):
    from uvlm.core.config import load_config
    from uvlm.core.io import load_npz
    from uvlm.probe.build import probe_path
    cfg = load_config(tiny_world)
    world_dir = cfg.paths.data / "world"
    probe = load_probe(probe_path(cfg))
    images = load_npz(world_dir / "g_test.npz")["images"][:4]
    before = probe.features(images)
    assert probe.to("cpu") is probe
    after = probe.features(images)
    assert isinstance(after, np.ndarray) and np.array_equal(before, after)
    cells = probe.predict_cells(images)
    assert all(isinstance(v, np.ndarray) for v in cells.values())


def test_build_probe_writes_weights_and_summary(tmp_path):
    from uvlm.probe.build import accuracy_table, build_probe
    summary = build_probe(WorldConfig(image_size=16), ProbeConfig(steps=20, n_train=64, n_eval=32), 7, tmp_path,
                          progress=False)
    seconds = summary.pop("seconds")  # returned, never written into data/probe
    assert json.loads((tmp_path / "probe.json").read_text()) == json.loads(json.dumps(summary))
    probe = load_probe(tmp_path / "probe.safetensors")
    assert probe.metrics == summary["metrics"] and summary["seed"] == 7 and seconds >= 0
    table = accuracy_table(summary["metrics"])
    assert list(table["attribute"]) == ["occupancy", "shape", "colour", "size", "scene_exact"]
    assert table["held-out accuracy"].between(0, 1).all()

