"""Exact FLOPs of a layer plan, and the paper's closed forms beside them.

``plan_flops`` counts what ``torch.utils.flop_counter.FlopCounterMode`` counts on our
model, per sample, so the two agree (tests check it):

- every matmul (mm/bmm/addmm): 2 * rows * in * out; backward = 2x forward (a gradient
  for the input and one for the weight; every layer's input needs its gradient because
  the token embeddings are trained);
- SDPA: 4 * H * Lq * Lk * hd forward (QK^T and AV over the *full* score matrix; causal
  masking is not discounted), and 2.5x that backward (the kernel recomputes the scores,
  then four matmuls);
- nothing for norms, RoPE, SwiGLU products, softmax, embeddings or the loss.

Rows per layer mode (T text tokens, M image tokens, N = T + M):
- full (with or without image projections): QKV, attention N x N, output, FFN on N rows;
- shallow: QKV, attention T x T, output, FFN on T rows;
- himix: QKV, output, FFN on T rows, image K/V on M rows, attention T x (T + M).
The LM head runs on ``loss_tokens`` rows (what the model does when labels are given).

On CPU the counter does not know torch's CPU flash-attention op; :func:`flop_counter`
registers it with the same formulas torch uses for the GPU kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .plans import LayerMode

ATTN_BACKWARD_FACTOR = 2.5
MATMUL_BACKWARD_FACTOR = 2.0


def layer_flops(cfg, mode: LayerMode, T: int, M: int) -> dict:
    """Forward FLOPs of one layer for one sample: {"proj", "attention", "ffn"}."""
    d, H, Hkv, hd, F = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim
    qkv_out, kv_out = (H + 2 * Hkv) * hd, 2 * Hkv * hd
    N = T + M
    if mode.mode == "full":
        rows, q_len, k_len, image_kv = N, N, N, 0
    elif mode.mode == "shallow":
        rows, q_len, k_len, image_kv = T, T, T, 0
    elif mode.mode == "himix":
        rows, q_len, k_len, image_kv = T, T, N, 2 * M * d * kv_out
    else:
        raise ValueError(f"unknown layer mode {mode.mode!r}")
    return {"proj": 2 * rows * d * qkv_out + image_kv + 2 * rows * H * hd * d,
            "attention": 4 * H * q_len * k_len * hd,
            "ffn": 6 * rows * d * F}


def plan_flops(model_cfg, plan: Optional[list[LayerMode]], T: int, M: int, loss_tokens: float,
               backward: bool = True) -> dict:
    """Exact FLOPs per sample of ``plan`` (None = vanilla) on T text and M image tokens.

    Returns {"total", "forward", "backward", "per_layer" (list, fwd+bwd per layer),
    "attention", "proj", "ffn", "head"}; the parts sum to "total".
    """
    plan = plan if plan is not None else [LayerMode("full")] * model_cfg.n_layers
    mm_f = 1 + (MATMUL_BACKWARD_FACTOR if backward else 0)
    at_f = 1 + (ATTN_BACKWARD_FACTOR if backward else 0)
    out = {"attention": 0.0, "proj": 0.0, "ffn": 0.0, "per_layer": [], "forward": 0.0}
    for mode in plan:
        f = layer_flops(model_cfg, mode, T, M)
        parts = {"proj": f["proj"] * mm_f, "attention": f["attention"] * at_f, "ffn": f["ffn"] * mm_f}
        for k, v in parts.items():
            out[k] += v
        out["per_layer"].append(sum(parts.values()))
        out["forward"] += sum(f.values())
    head_fwd = 2 * loss_tokens * model_cfg.d_model * model_cfg.vocab_size
    out["head"] = head_fwd * mm_f
    out["forward"] += head_fwd
    out["total"] = out["attention"] + out["proj"] + out["ffn"] + out["head"]
    out["backward"] = out["total"] - out["forward"]
    return out


def paper_estimate(model_cfg, plan: Optional[list[LayerMode]], T: int, M: int) -> dict:
    """The paper's per-layer cost model (docs/method.md §1): attention (T+M)^2 d + FFN 8 (T+M) d^2 for
    a full layer, T (T+M) d + 8 T d^2 for HiMix, T^2 d + 8 T d^2 for a shallow layer.

    Returns {"total", "baseline", "relative", "hmgen_ideal" (1 - K/L)}.
    """
    d, L = model_cfg.d_model, model_cfg.n_layers
    plan = plan if plan is not None else [LayerMode("full")] * L
    N = T + M

    def cost(mode):
        if mode.mode == "himix":
            return T * N * d + 8 * T * d * d
        if mode.mode == "shallow":
            return T * T * d + 8 * T * d * d
        return N * N * d + 8 * N * d * d

    total = sum(cost(m) for m in plan)
    base = L * cost(LayerMode("full"))
    k = sum(m.mode == "shallow" for m in plan)
    return {"total": total, "baseline": base, "relative": total / base, "hmgen_ideal": 1 - k / L}


# ---------------------------------------------------------------------------------------------
# Counting on the real model
# ---------------------------------------------------------------------------------------------
def flop_counter(display: bool = False) -> FlopCounterMode:
    """FlopCounterMode that also counts torch's CPU flash-attention kernel (as for CUDA)."""
    aten = torch.ops.aten
    mapping = {}
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None:
        mapping[fwd] = lambda q, k, v, *a, **kw: sdpa_flop_count(q, k, v)
    if bwd is not None:
        mapping[bwd] = lambda g, q, k, v, *a, **kw: sdpa_backward_flop_count(g, q, k, v)
    return FlopCounterMode(display=display, custom_mapping=mapping)


def count_flops(model, input_ids, labels=None, plan=None, backward: bool = True, **forward_kwargs) -> dict:
    """FLOPs counted by torch on one real forward (+ backward of the loss) of the batch.

    Returns {"forward", "backward", "total"} for the whole batch.
    """
    with flop_counter() as fc:
        out = model(input_ids, labels=labels, plan=plan, **forward_kwargs)
        fwd = fc.get_total_flops()
        if backward:
            loss = out.loss if out.loss is not None else out.logits.float().mean()
            loss.sum().backward()
        total = fc.get_total_flops()
    return {"forward": fwd, "backward": total - fwd, "total": total}
