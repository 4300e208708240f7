"""One decoder layer and its parts (LLaMA style: RMSNorm, RoPE, SwiGLU, optional GQA).

A layer runs in one of the modes a plan assigns (see plans.py); the dispatch lives in
:meth:`DecoderLayer.forward` and nowhere else.

- ``full``, no image projection: vanilla pre-norm attention + FFN over all tokens.
- ``full`` with image projection set ``p``: image rows get their Q/K/V from
  ``attn.image_qkv[p]`` and text rows from ``attn.qkv``; the output projection and FFN
  are shared (HMGen full layer, docs/method.md §3).
- ``shallow`` (HMGen): image rows skip the layer unchanged; text rows are gathered, attend
  to text keys only, run the FFN, and are put back.
- ``himix``: the hidden state holds text rows only. Image keys/values are recomputed in
  every HiMix layer from the *input* image embeddings (layer-0 token embeddings). They are
  normalised with this layer's attention input norm (the same RMSNorm as the text rows; a
  HiMix layer 0 with copied projections therefore sees exactly the baseline's image K/V)
  and projected by the image set's K/V rows (W_v^K, W_v^V). Text queries attend causally,
  by original sequence index, to those image keys and to the text keys.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import apply_rope, attend


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # one fused kernel
        return self.weight * rms_normalize(x, self.eps)


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x), computed in float32 (as HF Llama does), returned in x's dtype."""
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)  # [gate; up] fused: one GEMM
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Attention(nn.Module):
    """Projections only; the attention pattern is decided by the layer mode and the layout."""

    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_dim = cfg.n_heads * cfg.head_dim
        self.kv_dim = cfg.n_kv_heads * cfg.head_dim
        # [q; k; v] fused (nanoGPT's c_attn): one GEMM per row group.
        self.qkv = nn.Linear(cfg.d_model, self.q_dim + 2 * self.kv_dim, bias=False)
        self.out = nn.Linear(self.q_dim, cfg.d_model, bias=False)
        self.image_qkv = nn.ModuleDict({name: nn.Linear(cfg.d_model, self.q_dim + 2 * self.kv_dim, bias=False)
                                        for name in cfg.image_proj_sets})

    def rope_qkv(self, qkv: torch.Tensor, cos, sin):
        """(B, N, (H + 2 Hkv) hd) -> q (B, H, N, hd), k, v (B, Hkv, N, hd), RoPE on q and k in one pass."""
        B, N, _ = qkv.shape
        heads = qkv.view(B, N, self.n_heads + 2 * self.n_kv_heads, self.head_dim).transpose(1, 2)
        H, Hkv = self.n_heads, self.n_kv_heads
        qk = apply_rope(heads[:, :H + Hkv], cos, sin)
        return qk[:, :H], qk[:, H:], heads[:, H + Hkv:]

    def heads(self, x: torch.Tensor, n_heads: int) -> torch.Tensor:
        """(B, N, n_heads * hd) -> (B, n_heads, N, hd)."""
        B, N, _ = x.shape
        return x.view(B, N, n_heads, self.head_dim).transpose(1, 2)

    def split_kv(self, kv: torch.Tensor):
        """(B, N, 2 Hkv hd) -> k, v (B, Hkv, N, hd)."""
        heads = self.heads(kv, 2 * self.n_kv_heads)
        return heads[:, :self.n_kv_heads], heads[:, self.n_kv_heads:]

    def kv_weight(self, image_proj):
        """The K/V rows of an image projection set (or of the text set when None)."""
        lin = self.qkv if image_proj is None else self.image_qkv[image_proj]
        return lin.weight[self.q_dim:]

    def merge_heads(self, o: torch.Tensor) -> torch.Tensor:
        B, _, N, _ = o.shape
        return self.out(o.transpose(1, 2).reshape(B, N, self.q_dim))


class LayerContext:
    """What one forward call shares with all layers."""

    def __init__(self, layout, cache=None, attn_callback=None):
        self.layout, self.cache, self.attn_callback = layout, cache, attn_callback
        self.image_inputs = None  # rms-normalised layer-0 image embeddings, set when HiMix starts


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.ffn_dim)

    def forward(self, h: torch.Tensor, mode, layer_idx: int, ctx: LayerContext) -> torch.Tensor:
        if mode.mode == "full":
            return self._full(h, mode.image_proj, layer_idx, ctx)
        if mode.mode == "shallow":
            return self._shallow(h, layer_idx, ctx)
        if mode.mode == "himix":
            return self._himix(h, mode.image_proj, layer_idx, ctx)
        raise ValueError(f"unknown layer mode {mode.mode!r}")

    # -- shared pieces ------------------------------------------------------------------------
    def _attend(self, q, k, v, kind: str, keyset: str, layer_idx: int, ctx: LayerContext):
        if ctx.cache is not None:
            k, v = ctx.cache.update(layer_idx, keyset, k, v)
        o = attend(q, k, v, ctx.layout.spec(kind), layer_idx, ctx.attn_callback)
        return self.attn.merge_heads(o)

    def _ffn(self, h):
        return h + self.ffn(self.ffn_norm(h))

    # -- modes ---------------------------------------------------------------------------------
    def _full(self, h, image_proj, layer_idx, ctx):
        lay = ctx.layout
        x = self.attn_norm(h)
        if image_proj is None or lay.M == 0:
            qkv = self.attn.qkv(x)
        elif lay.T == 0:
            qkv = self.attn.image_qkv[image_proj](x)
        else:
            x_text, x_image = lay.split(x)
            qkv = lay.merge(self.attn.qkv(x_text), self.attn.image_qkv[image_proj](x_image))
        q, k, v = self.attn.rope_qkv(qkv, *lay.rope("all", qkv.dtype))
        h = h + self._attend(q, k, v, "full", "all", layer_idx, ctx)
        return self._ffn(h)

    def _shallow(self, h, layer_idx, ctx):
        lay = ctx.layout
        if lay.T == 0:  # only image rows in this call (a decoding step): nothing to do
            return h
        ht = lay.text(h)
        qkv = self.attn.qkv(self.attn_norm(ht))
        q, k, v = self.attn.rope_qkv(qkv, *lay.rope("text", qkv.dtype))
        ht = ht + self._attend(q, k, v, "text", "text", layer_idx, ctx)
        return lay.put_text(h, self._ffn(ht))

    def _himix(self, h, image_proj, layer_idx, ctx):
        """h: (B, T, d) text rows only."""
        lay = ctx.layout
        qkv = self.attn.qkv(self.attn_norm(h))
        # norm(e) @ W^T = e_hat @ (W * g)^T: fold this layer's norm gain into the image K/V
        # weight so the (B, M, d) image inputs are normalised once per forward, not per layer.
        w_img = self.attn.kv_weight(image_proj) * self.attn_norm.weight
        kv_image, kv_text = F.linear(ctx.image_inputs, w_img), qkv[..., self.attn.q_dim:]
        P = lay.spec("himix").prefix
        if P is None:  # keys/values in [image; text] order: one concatenation, one RoPE pass
            kv, key_rows = torch.cat((kv_image, kv_text), dim=1), "himix_keys"
        else:  # the split kernel: keys in sequence order, the image block after P text rows
            kv, key_rows = torch.cat((kv_text[:, :P], kv_image, kv_text[:, P:]), dim=1), "all"
        k, v = self.attn.split_kv(kv)
        k = apply_rope(k, *lay.rope(key_rows, k.dtype))
        q = self.attn.heads(qkv[..., :self.attn.q_dim], self.attn.n_heads)
        q = apply_rope(q, *lay.rope("text", q.dtype))
        h = h + self._attend(q, k, v, "himix", "all", layer_idx, ctx)
        return self._ffn(h)
