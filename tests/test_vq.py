"""VQ tokenizer: shapes, determinism, learning, checkpoints, config errors, the stage."""
import json

import numpy as np
import pytest
import torch

from uvlm.core.errors import CheckpointError, ConfigError, MissingInputError
from uvlm.core.io import load_npz, write_json
from uvlm.core.schema import build
from uvlm.tokens.sequences import CODES_META
from uvlm.tokens.vq import VQConfig, evaluate_vq, init_model, load_vq, save_vq, train_vq
from uvlm.tokens.vq_build import build_tokenizer, save_tokenizer_figure

SIZE = 16
TINY = dict(codebook_size=16, downsample=4, hidden_channels=16, res_blocks=1, code_dim=8,
            steps=8, batch_size=16, lr=3e-3, device="cpu", threads=1)


def squares(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Light backgrounds with one saturated square each."""
    rng = np.random.default_rng(seed)
    colours = np.array([[220, 30, 30], [30, 160, 40], [30, 60, 220], [240, 200, 20]], np.uint8)
    imgs = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        imgs[i] = rng.integers(200, 250, 3)
        s = int(rng.integers(3, size // 2))
        y, x = rng.integers(0, size - s, 2)
        imgs[i, y:y + s, x:x + s] = colours[rng.integers(len(colours))]
    return imgs


def tiny_cfg(**over) -> VQConfig:
    return build(VQConfig, {**TINY, **over}, prefix="tokenizer")


@pytest.fixture(scope="module")
def trained():
    return train_vq(tiny_cfg(), squares(64), seed=0, progress=False)


def test_encode_decode_shapes(trained):
    model, _ = trained
    imgs = squares(5, seed=1)
    codes = model.encode(imgs)
    assert codes.shape == (5, SIZE // 4, SIZE // 4)
    assert np.issubdtype(codes.dtype, np.integer)
    assert codes.min() >= 0 and codes.max() < TINY["codebook_size"]
    recon = model.decode(codes)
    assert recon.shape == imgs.shape and recon.dtype == np.uint8


def test_bad_inputs_are_named(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="uint8"):
        model.encode(np.zeros((2, SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match="codes must lie"):
        model.decode(np.full((1, 4, 4), TINY["codebook_size"]))
    with pytest.raises(ConfigError, match="tokenizer.downsample"):
        model.encode(np.zeros((1, 18, 18, 3), np.uint8))


def test_same_seed_same_weights():
    imgs = squares(32)
    a, _ = train_vq(tiny_cfg(steps=3), imgs, seed=7, progress=False)
    b, _ = train_vq(tiny_cfg(steps=3), imgs, seed=7, progress=False)
    c = init_model(tiny_cfg(), seed=8)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name
    assert not torch.equal(a.encoder[0].weight, c.encoder[0].weight)


def test_training_reduces_reconstruction_error():
    imgs, held = squares(128), squares(32, seed=5)
    cfg = tiny_cfg(steps=40)
    before = evaluate_vq(init_model(cfg, seed=0), held)["mse"]
    model, metrics = train_vq(cfg, imgs, seed=0, val_images=held, progress=False)
    assert metrics["mse"] < 0.5 * before
    assert metrics["train_mse_final"] < metrics["train_mse_first"]
    assert 0 < metrics["codebook_usage"] <= 1 and metrics["perplexity"] >= 1


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "vq.safetensors"
    save_vq(model, path)
    loaded = load_vq(path)
    assert loaded.cfg == model.cfg
    imgs = squares(6, seed=3)
    np.testing.assert_array_equal(loaded.encode(imgs), model.encode(imgs))
    np.testing.assert_array_equal(loaded.reconstruct(imgs), model.reconstruct(imgs))


def test_missing_checkpoint_names_stage(tmp_path):
    with pytest.raises(MissingInputError) as err:
        load_vq(tmp_path / "nope.safetensors")
    assert err.value.stage == "tokenizer"


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "vq.safetensors"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError):
        load_vq(path)


def test_codebook_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match="tokenizer.codebook_size"):
        build(VQConfig, {"codebook_size": 1}, prefix="tokenizer")
    with pytest.raises(ConfigError, match="tokenizer.downsample"):
        build(VQConfig, {"downsample": 3}, prefix="tokenizer")
    with pytest.raises(ConfigError, match="tokenizer.dead_code_threshold"):
        train_vq(tiny_cfg(dead_code_threshold=100.0), squares(4), seed=0, progress=False)


def fake_world(root, with_meta=True):
    splits = {"u_train": squares(40, seed=1), "g_train": squares(40, seed=2),
              "u_val": squares(10, seed=3), "test": squares(7, seed=4)}
    root.mkdir(parents=True, exist_ok=True)
    if with_meta:
        write_json(root / "world.json", {"splits": {k: {"n": len(v)} for k, v in splits.items()}})
    for name, imgs in splits.items():
        np.savez(root / f"{name}.npz", images=imgs)
    return splits


def test_build_tokenizer_writes_outputs(tmp_path):
    splits = fake_world(tmp_path / "world")
    out = tmp_path / "tokenizer"
    metrics = build_tokenizer(tiny_cfg(steps=5), 0, tmp_path / "world", out, progress=False)
    assert {"vq.safetensors", "metrics.json", "codes.npz"} <= {p.name for p in out.iterdir()}
    codes = load_npz(out / "codes.npz")
    assert set(codes) == set(splits) | {CODES_META}  # and what the codes were made from
    for name, imgs in splits.items():
        assert codes[name].dtype == np.int16 and codes[name].shape == (len(imgs), 4, 4)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["train_splits"] == ["u_train", "g_train"] and on_disk["eval_splits"] == ["u_val"]
    assert on_disk["train_images"] == 80 and metrics["tokens_per_image"] == 16
    np.testing.assert_array_equal(load_vq(out / "vq.safetensors").encode(splits["test"]),
                                  codes["test"])
    fig = save_tokenizer_figure(tmp_path / "world", out, tmp_path / "fig" / "recon.png", n=4)
    assert fig.exists() and fig.stat().st_size > 0


def test_build_tokenizer_with_probe(tmp_path, monkeypatch):
    import sys
    import types

    calls = []
    fake_probe = types.ModuleType("uvlm.probe.model")
    fake_probe.attribute_agreement = lambda probe, a, b: calls.append(a.shape) or 0.75
    monkeypatch.setitem(sys.modules, "uvlm.probe.model", fake_probe)
    fake_world(tmp_path / "world")
    metrics = build_tokenizer(tiny_cfg(steps=2), 0, tmp_path / "world", tmp_path / "tok",
                              probe=object(), progress=False)
    assert metrics["probe_agreement"] == 0.75 and calls == [(10, SIZE, SIZE, 3)]


def test_build_tokenizer_missing_world(tmp_path):
    with pytest.raises(MissingInputError) as err:
        build_tokenizer(tiny_cfg(), 0, tmp_path / "absent", tmp_path / "tok", progress=False)
    assert err.value.stage == "data"
    fake_world(tmp_path / "w")
    (tmp_path / "w" / "u_val.npz").unlink()
    with pytest.raises(MissingInputError, match="u_val.npz"):
        build_tokenizer(tiny_cfg(), 0, tmp_path / "w", tmp_path / "tok", progress=False)
