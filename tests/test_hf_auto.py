"""transformers conventions: a saved UVLM loads through AutoConfig / AutoModelForCausalLM."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import uvlm  # noqa: F401  (registers model_type "uvlm")
from uvlm.core.errors import CheckpointError
from uvlm.model.decoder import UVLM, UVLMConfig


def _saved(tmp_path, tie=True):
    model = UVLM(UVLMConfig(vocab_size=64, image_token_start=32, d_model=32, n_layers=2, n_heads=2, n_kv_heads=2,
                            tie_embeddings=tie, image_proj_sets=["img"]), seed=1)
    model.save_pretrained(tmp_path / "m")
    return model, tmp_path / "m"


@pytest.mark.parametrize("tie", [False, True])
def test_auto_classes_load_a_saved_checkpoint(tmp_path, monkeypatch, tie):
    from transformers import AutoConfig, AutoModelForCausalLM

    model, path = _saved(tmp_path, tie)
    assert json.loads((path / "config.json").read_text())["model_type"] == "uvlm"
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "uvlm" and config.uvlm_config() == model.config

    # Loading reads safetensors only: any unpickling would fail here.
    def refuse(*a, **k):
        raise AssertionError("a checkpoint was unpickled")
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr("pickle.loads", refuse)
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert isinstance(loaded, UVLM) and loaded.config == model.config
    ids = torch.tensor([[1, 2, 40, 41, 3]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    assert AutoModelForCausalLM.from_pretrained(path, config=config).config == model.config


def test_auto_load_refuses_what_it_cannot_honour(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    _, path = _saved(tmp_path)
    other = AutoConfig.from_pretrained(path)
    other.d_model = 64
    with pytest.raises(ValueError, match="config= differs"):
        AutoModelForCausalLM.from_pretrained(path, config=other)
    with pytest.raises(TypeError, match="device_map"):
        AutoModelForCausalLM.from_pretrained(path, device_map="cpu")


def test_model_type_is_checked_and_older_checkpoints_still_load(tmp_path):
    model, path = _saved(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "model_type"}))
    assert UVLM.from_pretrained(path).config == model.config
    (path / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type"):
        UVLM.from_pretrained(path)


def test_import_uvlm_stays_light_and_registers_when_transformers_loads(tmp_path):
    """`import uvlm` neither imports torch nor transformers (every stage process imports it);
    the Auto classes imported afterwards still know the model."""
    _, path = _saved(tmp_path)
    code = textwrap.dedent(f"""
        import sys
        import uvlm
        assert "torch" not in sys.modules and "transformers" not in sys.modules, "import uvlm got heavy"
        from transformers import AutoModelForCausalLM
        print(type(AutoModelForCausalLM.from_pretrained({str(path)!r})).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "UVLM"
