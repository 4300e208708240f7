"""The unified decoder: one LLaMA-style transformer over text and image-code tokens.

    model = UVLM(UVLMConfig(vocab_size=..., image_token_start=...), seed=0)
    out = model(input_ids, labels=labels, plan=build_plan("u", "himix", cfg.n_layers))
    out.loss.backward()

Image tokens are recognised by id (``input_ids >= image_token_start``); the model needs no
segment ids. Labels are aligned with ``input_ids`` (-100 = ignore); the model shifts them
(HF style: the row at position t predicts token t + 1).

Under HiMix the image rows leave the stream, so predictions *from* image positions do not
exist: logits and losses cover text rows only (``ModelOutput.logits_index`` says which).
With the loss on OUTPUT tokens only, no U target is lost (the answer is text).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from uvlm.core import schema
from uvlm.core.errors import CheckpointError, ConfigError
from uvlm.core.io import load_tensors, save_tensors, write_json
from uvlm.core.schema import rule
from .attention import AttnCallback, himix_kernel, rope_inv_freq
from .kv_cache import KVCache
from .layers import DecoderLayer, LayerContext, RMSNorm, rms_normalize
from .layout import PREFIX_UNKNOWN, TokenLayout, image_block_prefix, image_block_stats
from .plans import LayerMode, is_vanilla, plan_proj_sets, validate_plan
from .row_ops import gather_rows

# config.json's model_type: what transformers' Auto classes know this decoder by (hf_auto.py).
MODEL_TYPE = "uvlm"

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
LOSS_REDUCTIONS = ("mean", "sum_per_sample", "none")
LOGITS_MODES = ("auto", "all", "last", "none")


@dataclass
class UVLMConfig:
    """params.yaml section ``model``. Defaults are the cpu preset."""

    vocab_size: int = field(default=512, metadata=rule(ge=8))
    image_token_start: int = field(default=256, metadata=rule(ge=6))  # ids >= this are image codes
    d_model: int = field(default=128, metadata=rule(ge=8))
    n_layers: int = field(default=6, metadata=rule(ge=1))
    n_heads: int = field(default=4, metadata=rule(ge=1))
    n_kv_heads: int = field(default=4, metadata=rule(ge=1))
    ffn_hidden: Optional[int] = field(default=None, metadata=rule(ge=1))  # None: 8d/3 rounded up to 16
    rope_theta: float = field(default=10000.0, metadata=rule(gt=0))
    max_seq_len: int = field(default=256, metadata=rule(ge=2))
    norm_eps: float = field(default=1e-5, metadata=rule(gt=0))
    tie_embeddings: bool = False
    init_std: float = field(default=0.02, metadata=rule(gt=0))
    image_proj_sets: list[str] = field(default_factory=list)

    def validate(self, prefix: str = "model") -> None:
        p = f"{prefix}." if prefix else ""
        if self.d_model % self.n_heads:
            raise ConfigError(f"{p}n_heads", self.n_heads, f"a divisor of d_model={self.d_model}")
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError(f"{p}n_heads", self.n_heads, "a value giving an even head dim (RoPE)")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"{p}n_kv_heads", self.n_kv_heads, f"a divisor of n_heads={self.n_heads}")
        if self.image_token_start >= self.vocab_size:
            raise ConfigError(f"{p}image_token_start", self.image_token_start,
                              f"a value < vocab_size={self.vocab_size} (image codes need ids)")
        for i, name in enumerate(self.image_proj_sets):
            if not name.isidentifier():
                raise ConfigError(f"{p}image_proj_sets[{i}]", name, "a plain identifier like 'img'")
        if len(set(self.image_proj_sets)) != len(self.image_proj_sets):
            raise ConfigError(f"{p}image_proj_sets", self.image_proj_sets, "distinct names")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return 16 * math.ceil(8 * self.d_model / 3 / 16)

    @property
    def codebook_size(self) -> int:
        return self.vocab_size - self.image_token_start


def checked_config(cfg: UVLMConfig, prefix: str = "model") -> UVLMConfig:
    """Re-run every field rule and cross-field check (a dataclass built directly skips them)."""
    return schema.build(UVLMConfig, dataclasses.asdict(cfg), prefix=prefix)


@dataclass
class ModelOutput:
    loss: Optional[torch.Tensor] = None  # scalar | (B,) | (B, L), see loss_reduction
    logits: Optional[torch.Tensor] = None  # (B, R, V): rows at logits_index (all rows if None)
    logits_index: Optional[torch.Tensor] = None  # (B, R) sequence positions of the logit rows
    n_targets: Optional[torch.Tensor] = None  # number of target tokens the loss covers
    kv_cache: Optional[KVCache] = None


class UVLM(nn.Module):
    def __init__(self, config: UVLMConfig, seed: int = 0):
        super().__init__()
        self.config = checked_config(config)
        cfg = self.config
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.register_buffer("rope_inv_freq", rope_inv_freq(cfg.head_dim, cfg.rope_theta), persistent=False)
        self._init_weights(seed)

    # -- construction ------------------------------------------------------------------------
    @torch.no_grad()
    def _init_weights(self, seed: int) -> None:
        cfg, gen = self.config, torch.Generator().manual_seed(seed)
        # Residual-branch outputs get std / sqrt(2 L) (GPT-2), so depth does not inflate the stream.
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif ".image_qkv." in name:
                continue  # copied from the text projections below
            else:
                std = out_std if name.endswith(("attn.out.weight", "ffn.down.weight")) else cfg.init_std
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        for layer in self.layers:
            for lin in layer.attn.image_qkv.values():
                lin.weight.copy_(layer.attn.qkv.weight)

    @torch.no_grad()
    def add_image_projections(self, name: str, copy_from: Optional[str] = None) -> None:
        """Add image projection set ``name`` to every layer, initialised as a copy of the text
        Q/K/V (or of set ``copy_from``): with copies, a plan using it computes exactly what
        the model computed before (inference-time HMGen on a baseline checkpoint)."""
        if name in self.config.image_proj_sets:
            return
        checked_config(dataclasses.replace(self.config, image_proj_sets=[*self.config.image_proj_sets, name]))
        for layer in self.layers:
            src = layer.attn.qkv if copy_from is None else layer.attn.image_qkv[copy_from]
            lin = nn.Linear(src.in_features, src.out_features, bias=False).to(src.weight)
            lin.weight.copy_(src.weight)
            layer.attn.image_qkv[name] = lin
        self.config.image_proj_sets.append(name)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- forward -------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, labels: Optional[torch.Tensor] = None,
                plan: Optional[list[LayerMode]] = None, attention_mask: Optional[torch.Tensor] = None,
                loss_reduction: str = "mean", attn_callback: Optional[AttnCallback] = None,
                kv_cache: Optional[KVCache] = None, compute_logits: str = "auto",
                host_sizes: Optional[tuple] = None) -> ModelOutput:
        """input_ids (B, L) -> ModelOutput.

        labels: (B, L) aligned with input_ids, -100 = ignored; shifted inside.
        plan: one LayerMode per layer (plans.build_plan); None = vanilla.
        attention_mask: (B, L) 1 = token, 0 = padding (left padding for batched generation).
        loss_reduction: "mean" over all targets; "sum_per_sample" (B,); "none" (B, L) where
            entry [b, t] is -log p(token t | tokens < t) (0 where ignored or not predicted).
        attn_callback: called per layer with attention probabilities (eager attention).
        kv_cache: a KVCache for incremental decoding (inference only).
        compute_logits: "all" rows, "last" row, or "none"; "auto" (default) is "none" when
            labels are given (the LM head then runs on target rows only, which is what
            flops.plan_flops counts with loss_tokens) and "all" otherwise.
        host_sizes: :meth:`host_sizes` of these ids, labels and plan, computed by the caller
            from the batch's CPU copy; then this call never waits for the GPU, and a training
            loop can queue the next step while the device still runs this one.
        """
        cfg = self.config
        if compute_logits == "auto":
            compute_logits = "none" if labels is not None else "all"
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction must be one of {LOSS_REDUCTIONS}, got {loss_reduction!r}")
        if compute_logits not in LOGITS_MODES:
            raise ValueError(f"compute_logits must be one of {LOGITS_MODES}, got {compute_logits!r}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
        seen = kv_cache.seen if kv_cache is not None else 0
        if seen + input_ids.shape[1] > cfg.max_seq_len:
            raise ValueError(f"sequence length {seen + input_ids.shape[1]} exceeds model.max_seq_len="
                             f"{cfg.max_seq_len}")
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}")
        plan = self.vanilla_plan() if plan is None else list(plan)
        validate_plan(plan, cfg.n_layers, cfg.image_proj_sets)
        has_himix = any(m.mode == "himix" for m in plan)
        if kv_cache is not None:
            if has_himix:
                raise NotImplementedError("HiMix plans are scored teacher-forced; they take no KV cache")
            kv_cache.bind_plan(plan)
        counts, n_targets, prefix = host_sizes or self.host_sizes(input_ids, labels, plan)
        layout = TokenLayout(input_ids, cfg.image_token_start, self.rope_inv_freq, attention_mask, kv_cache,
                             text_keys=any(m.mode == "shallow" for m in plan), image_counts=counts,
                             himix_prefix=prefix)
        ctx = LayerContext(layout, kv_cache, attn_callback)

        h = embeddings = self.tok_emb(input_ids)
        for i, (layer, mode) in enumerate(zip(self.layers, plan)):
            if mode.mode == "himix" and ctx.image_inputs is None:
                # HiMix starts: from here the stream holds text rows only, and image K/V come
                # from the layer-0 embeddings of the image tokens.
                ctx.image_inputs = rms_normalize(layout.image(embeddings), cfg.norm_eps)
                h = layout.text(h)
            h = layer(h, mode, i, ctx)
        h = self.norm(h)

        text_only = ctx.image_inputs is not None and layout.M > 0
        out = ModelOutput(kv_cache=kv_cache)
        if text_only:
            out.logits_index = layout.text(layout.seq_idx)
        if compute_logits == "all":
            out.logits = self.lm_head(h)
        elif compute_logits == "last":
            out.logits = self.lm_head(h[:, -1:])
            if out.logits_index is not None:
                out.logits_index = out.logits_index[:, -1:]
        if labels is not None:
            self._loss(out, h, labels, layout, text_only, loss_reduction, compute_logits, n_targets)
        return out

    def host_sizes(self, input_ids, labels, plan):
        """The sizes that shape a forward call's tensors: the image-token count of every row
        (to gather text rows), the number of loss targets (to run the LM head on them only)
        and, for HiMix's split and rows kernels, where the image block starts. On GPU tensors this is
        ONE host sync, before any work of the call is queued; on CPU tensors (a batch before
        its copy to the device) it costs no sync at all.

        -> (counts or None, n_targets or None, himix prefix: PREFIX_UNKNOWN when not fetched)
        """
        is_image = input_ids >= self.config.image_token_start
        B = input_ids.shape[0]
        has_himix = any(m.mode == "himix" for m in plan)
        parts = []
        if not is_vanilla(plan):
            parts.append(is_image.sum(1))
        needs_prefix = has_himix and himix_kernel() in ("split", "rows")
        if needs_prefix:
            parts.append(image_block_stats(is_image))
        if labels is not None:
            targets = labels[:, 1:] != -100
            if has_himix:  # predictions from image rows do not exist
                targets = targets & ~is_image[:, :-1]
            parts.append(targets.sum()[None])
        if not parts:
            return None, None, PREFIX_UNKNOWN
        values = torch.cat(parts).tolist()
        counts = values[:B] if not is_vanilla(plan) else None
        prefix = image_block_prefix(values[B:B + 3]) if needs_prefix else PREFIX_UNKNOWN
        return counts, (values[-1] if labels is not None else None), prefix

    def vanilla_plan(self) -> list[LayerMode]:
        return [LayerMode("full") for _ in range(self.config.n_layers)]

    def _loss(self, out, h, labels, layout, text_only, reduction, compute_logits, n_targets):
        B, L = labels.shape
        # Row-aligned targets: the row at position p predicts token p + 1.
        targets = torch.cat((labels[:, 1:], labels.new_full((B, 1), -100)), dim=1)
        row_pos = torch.arange(B * L, device=labels.device)  # flat original position of each row of h
        if text_only:
            targets, row_pos = layout.text(targets), layout.text_flat
        targets = targets.reshape(-1)
        # Target rows first, in order (a stable sort needs no host sync; n_targets is known).
        keep = torch.argsort((targets == -100).to(torch.int8), stable=True)[:n_targets]
        if compute_logits == "all":
            logits = gather_rows(out.logits.reshape(-1, out.logits.shape[-1]), keep)
        else:
            logits = self.lm_head(gather_rows(h.reshape(-1, h.shape[-1]), keep))
        nll = F.cross_entropy(logits.float(), targets.index_select(0, keep), reduction="none")
        out.n_targets = torch.tensor(keep.numel(), device=labels.device)
        if reduction == "mean":
            out.loss = nll.sum() / max(keep.numel(), 1)
            return
        per_row = nll.new_zeros(B * L).index_copy(0, row_pos.index_select(0, keep), nll).view(B, L)
        if reduction == "sum_per_sample":
            out.loss = per_row.sum(1)
        else:  # target-aligned: the prediction made at row p scores token p + 1
            out.loss = torch.cat((per_row.new_zeros(B, 1), per_row[:, :-1]), dim=1)

    # -- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, directory) -> None:
        """Write config.json and model.safetensors (atomically; no pickle)."""
        directory = Path(directory)
        state = {k: v for k, v in self.state_dict().items()}
        if self.config.tie_embeddings:
            state.pop("lm_head.weight")  # shared with tok_emb.weight; safetensors stores it once
        cfg = dataclasses.asdict(self.config)
        save_tensors(directory / WEIGHTS_FILE, state, metadata={"format": "uvlm", "config": cfg})
        write_json(directory / CONFIG_FILE, {"model_type": MODEL_TYPE, **cfg})

    @classmethod
    def from_pretrained(cls, directory, plan: Optional[list[LayerMode]] = None,
                        image_proj_sets=(), device="cpu") -> "UVLM":
        """Load a checkpoint written by save_pretrained. Projection sets used by ``plan`` or
        named in ``image_proj_sets`` that the checkpoint lacks are added as copies of the
        text projections (e.g. HMGen at inference on a baseline checkpoint)."""
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        if not cfg_path.exists():
            raise CheckpointError(f"checkpoint config '{cfg_path}' does not exist")
        try:
            raw = json.loads(cfg_path.read_text())
            kind = raw.pop("model_type", MODEL_TYPE)  # checkpoints written before it was recorded have none
            if kind != MODEL_TYPE:
                raise ConfigError("model_type", kind, f"'{MODEL_TYPE}' (a checkpoint of uvlm.model.decoder.UVLM)")
            cfg = schema.build(UVLMConfig, raw, prefix="model")
        except (json.JSONDecodeError, ConfigError) as e:
            raise CheckpointError(f"checkpoint config '{cfg_path}' is invalid: {e}") from e
        tensors, _ = load_tensors(w_path, device="cpu")
        model = cls(cfg)
        expected = model.state_dict()
        if cfg.tie_embeddings:
            expected.pop("lm_head.weight")
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"checkpoint '{w_path}' does not match {cfg_path}: missing "
                                  f"{missing[:5]}, unexpected {unexpected[:5]}")
        for k, v in tensors.items():
            if v.shape != expected[k].shape:
                raise CheckpointError(f"checkpoint '{w_path}': tensor '{k}' has shape {tuple(v.shape)}, "
                                      f"the config expects {tuple(expected[k].shape)}")
        model.load_state_dict(tensors, strict=False)
        for name in [*image_proj_sets, *plan_proj_sets(plan or [])]:
            model.add_image_projections(name)
        return model.to(device)
