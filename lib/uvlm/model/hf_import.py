"""Start the backbone from a local Hugging Face LlamaForCausalLM directory (never downloaded).

Weights map 1:1: our RoPE uses HF's rotate_half convention, our fused projections are
the concatenations [q; k; v] and [gate; up]. The vocabulary grows by ``codebook_size``
image-code rows appended after the text vocabulary (so ``image_token_start`` = the HF
vocabulary size). New rows, in the embedding and in the LM head, start at the mean of
the text rows plus Gaussian noise of ``noise_scale`` times the text rows' standard
deviation: the codes start as "an average token" (sensible logits, sensible inputs) and
the noise tells them apart.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from uvlm.core.errors import CheckpointError
from .decoder import UVLM, UVLMConfig


def _rope_theta(hf_cfg, path: Path) -> float:
    params = getattr(hf_cfg, "rope_parameters", None) or {}
    scaling = getattr(hf_cfg, "rope_scaling", None) or {}
    rope_type = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type not in (None, "default"):
        raise CheckpointError(f"'{path}': rope type '{rope_type}' is not supported (only default RoPE)")
    theta = params.get("rope_theta", getattr(hf_cfg, "rope_theta", None))
    return float(theta if theta is not None else 10000.0)


def config_from_hf(hf_cfg, path: Path, codebook_size: int, image_proj_sets: Sequence[str] = (),
                   max_seq_len: Optional[int] = None) -> UVLMConfig:
    if getattr(hf_cfg, "model_type", "llama") != "llama":
        raise CheckpointError(f"'{path}' holds a '{hf_cfg.model_type}' model; a LlamaForCausalLM is needed")
    if getattr(hf_cfg, "hidden_act", "silu") != "silu":
        raise CheckpointError(f"'{path}': hidden_act '{hf_cfg.hidden_act}' is not supported (SwiGLU uses silu)")
    if getattr(hf_cfg, "attention_bias", False) or getattr(hf_cfg, "mlp_bias", False):
        raise CheckpointError(f"'{path}': attention_bias / mlp_bias are not supported")
    d, H = hf_cfg.hidden_size, hf_cfg.num_attention_heads
    head_dim = getattr(hf_cfg, "head_dim", None) or d // H
    if head_dim * H != d:
        raise CheckpointError(f"'{path}': head_dim {head_dim} x {H} heads != hidden_size {d} (not supported)")
    return UVLMConfig(
        vocab_size=hf_cfg.vocab_size + codebook_size, image_token_start=hf_cfg.vocab_size, d_model=d,
        n_layers=hf_cfg.num_hidden_layers, n_heads=H,
        n_kv_heads=getattr(hf_cfg, "num_key_value_heads", None) or H, ffn_hidden=hf_cfg.intermediate_size,
        rope_theta=_rope_theta(hf_cfg, path), norm_eps=float(hf_cfg.rms_norm_eps),
        max_seq_len=max_seq_len or int(getattr(hf_cfg, "max_position_embeddings", 2048)),
        tie_embeddings=bool(getattr(hf_cfg, "tie_word_embeddings", False)),
        image_proj_sets=list(image_proj_sets))


def _grow_rows(text_rows: torch.Tensor, n_new: int, noise_scale: float, gen: torch.Generator) -> torch.Tensor:
    text_rows = text_rows.float()
    mean, std = text_rows.mean(0), text_rows.std()
    new = mean + noise_scale * std * torch.randn((n_new, text_rows.shape[1]), generator=gen)
    return torch.cat((text_rows, new), dim=0)


def load_llama_backbone(path, codebook_size: int, image_proj_sets: Sequence[str] = (),
                        max_seq_len: Optional[int] = None, noise_scale: float = 0.1, seed: int = 0) -> UVLM:
    """A UVLM whose text part is the local HF Llama at ``path`` and whose image-code rows are new."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise CheckpointError(f"'{path}' is not a local Hugging Face model directory (no config.json)")
    try:
        from transformers import LlamaForCausalLM
        hf = LlamaForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load a LlamaForCausalLM from '{path}': {e}") from e
    cfg = config_from_hf(hf.config, path, codebook_size, image_proj_sets, max_seq_len)
    sd = hf.state_dict()
    gen = torch.Generator().manual_seed(seed)
    ours = {"tok_emb.weight": _grow_rows(sd["model.embed_tokens.weight"], codebook_size, noise_scale, gen),
            "norm.weight": sd["model.norm.weight"]}
    if not cfg.tie_embeddings:
        ours["lm_head.weight"] = _grow_rows(sd["lm_head.weight"], codebook_size, noise_scale, gen)
    for i in range(cfg.n_layers):
        hp, op = f"model.layers.{i}.", f"layers.{i}."
        qkv = torch.cat([sd[hp + f"self_attn.{n}_proj.weight"] for n in "qkv"], dim=0)
        ours[op + "attn.qkv.weight"] = qkv
        for name in cfg.image_proj_sets:
            ours[op + f"attn.image_qkv.{name}.weight"] = qkv.clone()
        ours[op + "attn.out.weight"] = sd[hp + "self_attn.o_proj.weight"]
        ours[op + "ffn.gate_up.weight"] = torch.cat((sd[hp + "mlp.gate_proj.weight"], sd[hp + "mlp.up_proj.weight"]))
        ours[op + "ffn.down.weight"] = sd[hp + "mlp.down_proj.weight"]
        ours[op + "attn_norm.weight"] = sd[hp + "input_layernorm.weight"]
        ours[op + "ffn_norm.weight"] = sd[hp + "post_attention_layernorm.weight"]
    del hf, sd
    model = UVLM(cfg, seed=seed)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    missing = [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(f"'{path}': weights did not map (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model
