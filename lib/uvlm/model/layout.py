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

from .attention import AttnSpec, causal_mask, himix_kernel, rope_tables, signed_sin
from .kv_cache import KVCache
from .row_ops import gather_rows, permute_rows


PREFIX_UNKNOWN = "unknown"  # the HiMix prefix has not been fetched yet


def image_block_stats(is_image: torch.Tensor) -> torch.Tensor:
    """(earliest and latest first image index over rows, most image blocks in one row), one
    tensor so that a caller can fetch it in the same host sync as other sizes."""
    first = is_image.int().argmax(1)
    blocks = (is_image[:, 1:] & ~is_image[:, :-1]).sum(1) + is_image[:, 0]
    return torch.stack((first.min(), first.max(), blocks.max()))


def image_block_prefix(stats: list[int]) -> Optional[int]:
    """The text rows before the image when every row has one contiguous image block starting
    at the same index (what HiMix's split and rows kernels need); else None, and the mask is used."""
    lo, hi, most = stats
    return lo if lo == hi and most == 1 else None


class TokenLayout:
    def __init__(self, input_ids: torch.Tensor, image_token_start: int, inv_freq: torch.Tensor,
                 attention_mask: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None,
                 text_keys: bool = False, image_counts: Optional[list] = None,
                 himix_prefix: Optional[int] | str = PREFIX_UNKNOWN):
        B, L = input_ids.shape
        self.B, self.L, self.device = B, L, input_ids.device
        self.input_ids, self.image_token_start = input_ids, image_token_start
        self._image_counts = image_counts  # per-row image-token counts, if the caller synced them
        # Text rows before the image, if the caller synced it (None: no single prefix).
        self._himix_prefix_known = himix_prefix
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
        self._rope: dict = {}

    # -- the text / image split (computed on first use: a vanilla plan never needs it) -------
    # Rows are addressed in a flattened (B*L, ...) view. The "sorted" order holds all text
    # rows of the batch first (row by row, in original order), then all image rows, so the
    # text part and the image part are each one contiguous block.
    @cached_property
    def _split(self):
        B, L = self.B, self.L
        is_image = self.input_ids >= self.image_token_start
        counts = self._image_counts
        if counts is None:
            counts = is_image.sum(1).tolist()  # a host sync
        if len(set(counts)) > 1:
            raise ValueError(f"every row of a batch must hold the same number of image tokens; "
                             f"got {counts}")
        M = counts[0] if counts else 0
        # A stable sort puts text rows first and image rows after, each in original order.
        order = torch.argsort(is_image.to(torch.int8), dim=1, stable=True)
        order = order + (torch.arange(B, device=self.device) * L)[:, None]
        text_flat, image_flat = order[:, :L - M].reshape(-1), order[:, L - M:].reshape(-1)
        sort = torch.cat((text_flat, image_flat))
        unsort = torch.empty_like(sort).scatter_(0, sort, torch.arange(B * L, device=self.device))
        return dict(M=M, T=L - M, text_flat=text_flat, image_flat=image_flat, sort=sort, unsort=unsort)

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

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(self.B, *x.shape[1:])
        return x.reshape(self.B * self.L, *x.shape[2:])

    def text(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (B, T, ...): the text rows, in original order."""
        if self.M == 0:
            return x.expand(self.B, *x.shape[1:])
        return gather_rows(self._flat(x), self._split["text_flat"]).view(self.B, self.T, *x.shape[2:])

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (B, M, ...): the image rows, in original order."""
        return gather_rows(self._flat(x), self._split["image_flat"]).view(self.B, self.M, *x.shape[2:])

    def split(self, x: torch.Tensor):
        """(B, L, ...) -> text rows (B*T, ...), image rows (B*M, ...): one permutation, two views."""
        rows = permute_rows(self._flat(x), self._split["sort"], self._split["unsort"])
        return rows.split((self.B * self.T, self.B * self.M))

    def merge(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Inverse of split: text rows (B*T, ...) and image rows (B*M, ...) -> (B, L, ...)."""
        both = torch.cat((text, image))
        out = permute_rows(both, self._split["unsort"], self._split["sort"])
        return out.view(self.B, self.L, *both.shape[1:])

    def put_text(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x with its text rows replaced by ``text`` (out of place, autograd-safe)."""
        if self.M == 0:
            return text
        rest = x.shape[2:]
        flat = x.reshape(self.B * self.L, *rest).index_copy(
            0, self._split["text_flat"], text.reshape(self.B * self.T, *rest))
        return flat.view(self.B, self.L, *rest)

    # -- RoPE ----------------------------------------------------------------------------------
    def rope(self, rows: str, dtype: torch.dtype):
        """cos, signed sin (B|1, 1, N, hd) in ``dtype`` for rows 'all', 'text', 'image' or 'himix_keys'
        (made once per forward call)."""
        key = (rows, dtype)
        if key not in self._rope:
            cos, sin = self._rope_all
            if rows in ("text", "image"):
                pick = self.text if rows == "text" else self.image
                cos, sin = pick(cos), pick(sin)
            elif rows == "himix_keys":  # [image rows; text rows], the key order of HiMix layers
                cos = torch.cat((self.image(cos), self.text(cos)), dim=1)
                sin = torch.cat((self.image(sin), self.text(sin)), dim=1)
            self._rope[key] = (cos.unsqueeze(1).to(dtype), signed_sin(sin).unsqueeze(1).to(dtype))
        return self._rope[key]

    def _himix_prefix(self) -> Optional[int]:
        """Text rows before the image, for HiMix's split and rows kernels (see :func:`image_block_prefix`)."""
        if self.M == 0:
            return None
        if self._himix_prefix_known == PREFIX_UNKNOWN:
            is_image = self.input_ids >= self.image_token_start
            self._himix_prefix_known = image_block_prefix(image_block_stats(is_image).tolist())  # a host sync
        return self._himix_prefix_known

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
            prefix = self._himix_prefix() if himix_kernel() == "split" and valid is None else None
            if prefix is not None:
                spec = AttnSpec(mask=None, q_idx=q_idx, k_idx=self.seq_idx, prefix=prefix)
                self._specs[kind] = spec
                return spec
            k_idx = torch.cat((self.image(self.seq_idx), q_idx), dim=1)
            k_valid = None if valid is None else torch.cat((self.image(valid), self.text(valid)), dim=1)
            simple = self.simple and self.M == 0
        else:
            raise KeyError(kind)
        if simple:
            k_valid = None
        if kind == "himix" and not simple and himix_kernel() == "flex":
            spec = AttnSpec(mask=None, q_idx=q_idx, k_idx=k_idx, flex=True, k_valid=k_valid)
            self._specs[kind] = spec
            return spec
        mask = None if simple else causal_mask(q_idx, k_idx, k_valid)
        spec = AttnSpec(mask=mask, q_idx=q_idx, k_idx=k_idx)
        if kind == "himix" and mask is not None and himix_kernel() == "rows" and valid is None:
            spec.query_split = self._himix_prefix()
        self._specs[kind] = spec
        return spec
