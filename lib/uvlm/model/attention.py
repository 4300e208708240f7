"""The low-level pieces of attention: RoPE, causal masks by sequence index, and the kernel call.

Masks are expressed through *sequence indices* (where a token sits in the original
sequence), never through the order of rows in a tensor. That is what lets a layer
gather text rows, put image keys first, or read keys from a cache, and still attend
causally exactly as the full sequence would.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

# attn_callback(layer_idx, probs (B, H, Lq, Lk), q_pos (B, Lq), k_pos (B, Lk))
AttnCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


# ---------------------------------------------------------------------------------------------
# Rotary position embedding, in the HF Llama convention (rotate_half over two halves), so that
# q/k projection weights of a HF checkpoint map 1:1 without any permutation.
# ---------------------------------------------------------------------------------------------
def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor):
    """positions (B|1, N) -> cos, sin (B|1, N, head_dim), in float32."""
    freqs = positions.float()[..., None] * inv_freq.to(positions.device)[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated, so that rotate_half(x) * sin == roll(x) * signed_sin."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """HF's x * cos + rotate_half(x) * sin, as three kernels: rotate_half(x) = [-x2, x1] is
    roll(x, hd/2) = [x2, x1] times the sign folded into ``sin_signed`` (see signed_sin).

    x (B, H, N, hd); cos, sin_signed (B|1, 1, N, hd) in x's dtype (TokenLayout.rope).
    """
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin_signed)


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------
@dataclass
class AttnSpec:
    """Who may attend to whom in one kind of layer, for one forward call.

    mask: bool (B, 1, Lq, Lk), True = may attend; None means plain causal attention over
    equally long query and key sequences in original order (lets SDPA use its causal kernel).
    q_idx, k_idx: sequence index of every query row / key row (B, Lq), (B, Lk).
    """

    mask: Optional[torch.Tensor]
    q_idx: torch.Tensor
    k_idx: torch.Tensor
    _bias: Optional[dict] = None
    # HiMix "split" kernel (see HIMIX_KERNELS): keys in sequence order, the first ``prefix``
    # query rows precede the image; set only with mask None.
    prefix: Optional[int] = None
    # HiMix "flex" kernel: the mask is computed inside the kernel from q_idx, k_idx and k_valid
    # (bool (B, Lk) or None), never materialised; set only with mask None.
    flex: bool = False
    k_valid: Optional[torch.Tensor] = None
    # HiMix "rows" kernel: the first ``query_split`` query rows (the text before the image) attend
    # causally to the first text keys, the rest through ``mask``'s rows; set only with a mask.
    query_split: Optional[int] = None

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The mask as an additive float tensor, made once per forward call and dtype.

        CUDA's masked SDPA kernels take a float bias with a 16-aligned row stride; given a
        bool mask they would convert (and pad) it again in every layer.
        """
        if self._bias is None:
            self._bias = {}
        if dtype not in self._bias:
            B, _, Lq, Lk = self.mask.shape
            padded = torch.full((B, 1, Lq, -(-Lk // 16) * 16), float("-inf"), dtype=dtype,
                                device=self.mask.device)
            padded[..., :Lk].masked_fill_(self.mask, 0.0)
            self._bias[dtype] = padded[..., :Lk]
        return self._bias[dtype]

    def kernel_mask(self, q: torch.Tensor) -> torch.Tensor:
        """The mask as the masked kernels take it for ``q``: the float bias on CUDA, else the bool mask."""
        return self.bias(q.dtype) if q.is_cuda else self.mask


# How HiMix layers attend (text queries over image + text keys):
#   mask:  keys as [image; text], one SDPA call with a materialised causal mask (a float bias on
#          CUDA), which rules out the flash kernel;
#   rows:  keys as in mask, the query rows split at the image: the text before the image attends
#          causally to the text keys before it (a mask-free call over a few keys), the text after
#          it through the mask's rows. Same keys read, fewer query tiles: a kernel pads a query
#          block to whole tiles, and e.g. 69 text rows (21 before the image) fill two 64-row tiles
#          where 48 fill one;
#   split: keys in sequence order and two mask-free calls: the text before the image attends
#          causally to itself, the text after it attends to every earlier key, a lower-right
#          causal pattern that SDPA's fused kernels take without a mask tensor;
#   flex:  keys as [image; text], one FlexAttention call that computes the causal rule from the
#          rows' sequence indices inside the kernel (no mask tensor to read). Under torch.compile
#          it is a fused Triton kernel; eager, FlexAttention runs an unfused reference.
# All compute the same attention (tests/test_accelerators.py); split and rows need every row's
# image block to start at the same index, and fall back to mask otherwise. ``mask`` is the
# default: compiled at 207M on an H200 the split kernel's HiMix step took 1.14x the masked
# one's (records/bench/nvidia-h200-himix-kernels.md; python -m uvlm.perf.bench --compare himix)
# and the flex kernel's 3.9x at batch 256 (nvidia-h200-himix256-flex.md: the per-score index
# lookups make its attention 19x slower; scripts/gpu/attention_probe.py); on an H100 the rows
# kernel's attention took as long as the masked one's and its step 1.02-1.03x
# (nvidia-h100-80gb-hbm3-himix{2048,1024}-rows.md).
HIMIX_KERNELS = ("mask", "rows", "split", "flex")
_himix_kernel = ["mask"]


def himix_kernel() -> str:
    return _himix_kernel[0]


@contextlib.contextmanager
def use_himix_kernel(kind: str):
    """Run HiMix layers with attention ``kind`` (one of HIMIX_KERNELS) inside the block."""
    if kind not in HIMIX_KERNELS:
        from uvlm.core.errors import ConfigError
        raise ConfigError("himix kernel", kind, f"one of {list(HIMIX_KERNELS)}")
    before, _himix_kernel[0] = _himix_kernel[0], kind
    try:
        yield
    finally:
        _himix_kernel[0] = before


def causal_mask(q_idx: torch.Tensor, k_idx: torch.Tensor, k_valid: Optional[torch.Tensor]) -> torch.Tensor:
    """A key is visible if it is not later than the query and is not padding.

    Every query also sees itself, so a padding query never has an empty row (an all-masked
    softmax row is NaN); padding rows are ignored downstream anyway.
    """
    q = q_idx[:, :, None]
    k = k_idx[:, None, :]
    allowed = k <= q
    if k_valid is not None:
        allowed = allowed & k_valid[:, None, :]
    allowed = allowed | (k == q)
    return allowed[:, None]


# ---------------------------------------------------------------------------------------------
# The kernel call
# ---------------------------------------------------------------------------------------------
def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def attend(q, k, v, spec: AttnSpec, layer_idx: int = 0, callback: Optional[AttnCallback] = None):
    """q (B, H, Lq, hd), k/v (B, Hkv, Lk, hd) -> (B, H, Lq, hd)."""
    n_rep = q.shape[1] // k.shape[1]
    if callback is not None:
        return _eager(q, k, v, spec, layer_idx, callback, n_rep)
    if spec.prefix is not None:
        return _attend_split(q, k, v, spec.prefix, n_rep)
    if spec.query_split is not None:
        return _attend_rows(q, k, v, spec, n_rep)
    if spec.flex:
        return _attend_flex(q, k, v, spec, n_rep)
    if spec.mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=n_rep > 1)
    return _masked(q, k, v, spec.kernel_mask(q), n_rep)


def _masked(q, k, v, mask: torch.Tensor, n_rep: int):
    """One SDPA call under a bool mask (B, 1, Lq, Lk); on CUDA ``mask`` is an additive bias."""
    if q.is_cuda:
        # The masked CUDA kernels do not all take grouped K/V; expanding keeps us off the
        # slow math fallback.
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=n_rep > 1)


def _attend_rows(q, k, v, spec: AttnSpec, n_rep: int):
    """HiMix's rows kernel: q = text rows, k/v = [image; text] rows; the first P text rows
    precede the image, so they see only the first P text keys (causal, equal lengths)."""
    P, T = spec.query_split, q.shape[2]
    M = k.shape[2] - T
    parts = []
    if P > 0:
        kp, vp = repeat_kv(k[:, :, M:M + P], n_rep), repeat_kv(v[:, :, M:M + P], n_rep)
        parts.append(F.scaled_dot_product_attention(q[:, :, :P], kp, vp, is_causal=True))
    if T > P:
        parts.append(_masked(q[:, :, P:], k, v, spec.kernel_mask(q)[:, :, P:], n_rep))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _attend_split(q, k, v, prefix: int, n_rep: int):
    """HiMix's split kernel: q = text rows (prefix first), k/v = every row in sequence order."""
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    Lq = q.shape[2]
    parts = []
    if prefix > 0:  # the text before the image: keys are exactly the first ``prefix`` rows
        parts.append(F.scaled_dot_product_attention(q[:, :, :prefix], k[:, :, :prefix], v[:, :, :prefix],
                                                    is_causal=True))
    if Lq > prefix:  # suffix row s sits at sequence index Lk - (Lq - prefix) + s: lower-right causal
        parts.append(_lower_right_causal(q[:, :, prefix:], k, v))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _lower_right_causal(q, k, v):
    """Attention where query row s of Lq sees keys up to Lk - Lq + s (the queries are the LAST
    Lq positions of the key sequence).

    On a GPU in bf16/fp16 this is the flash kernel itself: its causal flag is lower-right
    aligned when Lq < Lk (torch.nn.attention.bias.CausalBias dispatches the same op). That
    op, unlike a CausalBias object, compiles without a graph break, which would otherwise
    recompile every HiMix layer on every step. Elsewhere the (Lq, Lk) mask is small: HiMix's
    suffix is the few text rows after the image.
    """
    Lq, Lk = q.shape[2], k.shape[2]
    hd = q.shape[-1]
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and hd % 8 == 0 and hd <= 256:
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, is_causal=True)[0]
    mask = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(Lk - Lq)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _attend_flex(q, k, v, spec: AttnSpec, n_rep: int):
    """HiMix's flex kernel: causal_mask's rule, evaluated per score inside FlexAttention."""
    from torch.nn.attention.flex_attention import flex_attention

    if not q.is_cuda and torch.is_grad_enabled() and q.requires_grad:
        # FlexAttention has no CPU backward (torch 2.13): compute the same mask as the mask kernel.
        mask = causal_mask(spec.q_idx, spec.k_idx, spec.k_valid)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=n_rep > 1)
    B = q.shape[0]
    q_idx, k_idx, k_valid = spec.q_idx.expand(B, -1), spec.k_idx.expand(B, -1), spec.k_valid

    def causal_by_index(score, b, h, qi, ki):
        q_pos, k_pos = q_idx[b, qi], k_idx[b, ki]
        allowed = k_pos <= q_pos
        if k_valid is not None:
            allowed = allowed & k_valid[b, ki]
        return torch.where(allowed | (k_pos == q_pos), score, -float("inf"))

    return flex_attention(q, k, v, score_mod=causal_by_index, enable_gqa=n_rep > 1)


def _eager(q, k, v, spec: AttnSpec, layer_idx: int, callback: AttnCallback, n_rep: int):
    """Same math as SDPA, with the probabilities materialised for the callback."""
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    mask = spec.mask
    if mask is None:
        mask = causal_mask(spec.q_idx, spec.k_idx, spec.k_valid)
    scores = scores.float().masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1)
    B = q.shape[0]
    callback(layer_idx, probs, spec.q_idx.expand(B, -1), spec.k_idx.expand(B, -1))
    return probs.to(v.dtype) @ v
