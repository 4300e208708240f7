"""Where text and image tokens sit in one forward call.

Everything that depends only on the token ids, the padding mask and the cache is computed
here once per forward call and shared by all layers: the row indices of text and image
tokens, RoPE tables, and attention masks. Layers then only gather, compute and merge.

Every row of a batch holds the same number of image tokens M (a fixed image grid), so
text rows have an equal count T per row and one flat index tensor selects them all. This
is what makes HiMix / HMGen savings real: the gathered text tensor is physically
(B, T, d), not a masked (B, T + M, d).
"""
from __future__ import annotations

from functools import cached_property
from typing import Optional

import torch

from .attention_ops import AttnSpec, causal_mask, rope_tables
from .kv_cache import KVCache


class TokenLayout:
    def __init__(self, input_ids: torch.Tensor, image_token_start: int, inv_freq: torch.Tensor,
                 attention_mask: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None,
                 text_keys: bool = False):
        B, L = input_ids.shape
        self.B, self.L, self.device = B, L, input_ids.device
        self.input_ids, self.image_token_start = input_ids, image_token_start
        self.cache = cache
        valid = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids "
                                 f"shape {tuple(input_ids.shape)}")
            valid = attention_mask.to(device=self.device, dtype=torch.bool)
            if bool(valid.all()):
                valid = None  # nothing is padding: keep the plain causal kernel
        self.valid = valid
        seen = cache.seen if cache is not None else 0
        # "simple": queries and keys are the same tokens in order with no padding, so plain
        # causal attention is exact and SDPA may use its fastest causal kernel.
        self.simple = valid is None and seen == 0
        arange = torch.arange(L, device=self.device)
        self.seq_idx = (seen + arange)[None].expand(B, L)

        base = cache.next_pos if (cache is not None and cache.next_pos is not None) else None
        steps = arange[None] if valid is None else (valid.long().cumsum(1) - 1).clamp(min=0)
        positions = steps if base is None else base[:, None] + steps
        self._rope_all = rope_tables(positions, inv_freq)

        if cache is not None:
            cache.seen = seen + L
            n_real = valid.long().sum(1) if valid is not None else torch.full((B,), L, device=self.device)
            cache.next_pos = n_real if base is None else base + n_real
            new_valid = valid if valid is not None else torch.ones(B, L, dtype=torch.bool, device=self.device)
            cache.append_keys("all", self.seq_idx, new_valid)
            if text_keys:
                cache.append_keys("text", self.text(self.seq_idx), self.text(new_valid))
        self._specs: dict[str, AttnSpec] = {}

    # -- the text / image split (computed on first use: a vanilla plan never needs it) -------
    @cached_property
    def _split(self):
        B, L = self.B, self.L
        is_image = self.input_ids >= self.image_token_start
        counts = is_image.sum(1).tolist()  # one host sync per forward call
        if len(set(counts)) > 1:
            raise ValueError(f"every row of a batch must hold the same number of image tokens; "
                             f"got {counts}")
        M = counts[0] if counts else 0
        # A stable sort puts text rows first and image rows after, each in original order.
        order = torch.argsort(is_image.to(torch.int8), dim=1, stable=True)
        offsets = (torch.arange(B, device=self.device) * L)[:, None]
        inverse = torch.empty_like(order).scatter_(1, order, torch.arange(L, device=self.device).expand(B, L))
        return dict(M=M, T=L - M,
                    text_flat=(order[:, :L - M] + offsets).reshape(-1),
                    image_flat=(order[:, L - M:] + offsets).reshape(-1),
                    unsort_flat=(inverse + offsets).reshape(-1))

    @property
    def M(self) -> int:
        return self._split["M"]

    @property
    def T(self) -> int:
        return self._split["T"]

    @property
    def text_flat(self) -> torch.Tensor:
        """Flat indices (B*T,) of text rows into a flattened (B*L, ...) tensor."""
        return self._split["text_flat"]

    def _rows(self, x: torch.Tensor, flat: torch.Tensor, n: int) -> torch.Tensor:
        x = x.expand(self.B, *x.shape[1:])
        rest = x.shape[2:]
        return x.reshape(self.B * self.L, *rest).index_select(0, flat).view(self.B, n, *rest)

    def text(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (B, T, ...): the text rows, in original order."""
        if self.M == 0:
            return x.expand(self.B, *x.shape[1:])
        return self._rows(x, self._split["text_flat"], self.T)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (B, M, ...): the image rows, in original order."""
        return self._rows(x, self._split["image_flat"], self.M)

    def merge(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Inverse of (text, image): one concatenation and one gather back to original order."""
        if self.M == 0:
            return text
        if self.T == 0:
            return image
        both = torch.cat((text, image), dim=1)
        rest = both.shape[2:]
        return both.reshape(self.B * self.L, *rest).index_select(0, self._split["unsort_flat"]).view(
            self.B, self.L, *rest)

    def put_text(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x with its text rows replaced by ``text`` (out of place, autograd-safe)."""
        if self.M == 0:
            return text
        rest = x.shape[2:]
        flat = x.reshape(self.B * self.L, *rest).index_copy(
            0, self._split["text_flat"], text.reshape(self.B * self.T, *rest))
        return flat.view(self.B, self.L, *rest)

    # -- RoPE ----------------------------------------------------------------------------------
    @cached_property
    def _rope_text(self):
        return tuple(self.text(t) for t in self._rope_all)

    @cached_property
    def _rope_image(self):
        return tuple(self.image(t) for t in self._rope_all)

    def rope(self, rows: str):
        """cos, sin (B|1, N, hd) for rows 'all', 'text' or 'image'."""
        return {"all": lambda: self._rope_all, "text": lambda: self._rope_text,
                "image": lambda: self._rope_image}[rows]()

    # -- attention specs ------------------------------------------------------------------------
    def spec(self, kind: str) -> AttnSpec:
        """Masks and indices for 'full' (all->all), 'text' (text->text) and 'himix'
        (text queries -> [image keys; text keys]); built once per forward call."""
        if kind in self._specs:
            return self._specs[kind]
        valid = self.valid
        if kind == "full":
            q_idx = self.seq_idx
            k_idx, k_valid = (self.seq_idx, valid) if self.cache is None else self.cache.keys("all")
            simple = self.simple
        elif kind == "text":
            q_idx = self.text(self.seq_idx)
            if self.cache is None:
                k_idx, k_valid = q_idx, (None if valid is None else self.text(valid))
            else:
                k_idx, k_valid = self.cache.keys("text")
            simple = self.simple
        elif kind == "himix":
            if self.cache is not None:
                raise NotImplementedError("HiMix layers do not support a KV cache")
            q_idx = self.text(self.seq_idx)
            k_idx = torch.cat((self.image(self.seq_idx), q_idx), dim=1)
            k_valid = None if valid is None else torch.cat((self.image(valid), self.text(valid)), dim=1)
            simple = self.simple and self.M == 0
        else:
            raise KeyError(kind)
        if simple:
            k_valid = None
        mask = None if simple else causal_mask(q_idx, k_idx, k_valid)
        spec = AttnSpec(mask=mask, q_idx=q_idx, k_idx=k_idx)
        self._specs[kind] = spec
        return spec
