"""Key/value cache for incremental decoding, aware of layers that hold text keys only.

Layers group into *key sets*: every full layer stores a key for every token ("all");
an HMGen shallow layer stores keys for text tokens only ("text"), because image tokens
never enter its attention. Each key set records the sequence index and the padding
flag of its keys once per forward call; each layer stores only its K and V.

Buffers are preallocated to ``capacity`` tokens and written in place, so the cache is
for inference (``torch.no_grad``) only.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"KVCache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.seen = 0  # sequence indices consumed so far (padding included)
        self.next_pos = None  # (B,) RoPE position of the next real token of each row
        self.plan = None  # the plan the cache was filled with; it must not change
        self._keysets: dict[str, dict] = {}
        self._kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def bind_plan(self, plan) -> None:
        if self.plan is None:
            self.plan = list(plan)
        elif list(plan) != self.plan:
            raise ValueError("a KVCache must be used with the same layer plan on every call")

    # -- key sets ---------------------------------------------------------------------------
    def append_keys(self, name: str, idx: torch.Tensor, valid: torch.Tensor) -> None:
        """Record the sequence index / padding flag of the new keys of key set ``name``."""
        ks = self._keysets.get(name)
        B, n = idx.shape
        if ks is None:
            ks = dict(idx=torch.zeros(B, self.capacity, dtype=torch.long, device=idx.device),
                      valid=torch.zeros(B, self.capacity, dtype=torch.bool, device=idx.device),
                      length=0, offset=0)
            self._keysets[name] = ks
        if ks["length"] + n > self.capacity:
            raise ValueError(f"KVCache capacity {self.capacity} exceeded: make it at least prompt "
                             "length + number of generated tokens")
        ks["idx"][:, ks["length"]:ks["length"] + n] = idx
        ks["valid"][:, ks["length"]:ks["length"] + n] = valid
        ks["offset"], ks["length"] = ks["length"], ks["length"] + n

    def keys(self, name: str):
        """(idx, valid) of all keys of key set ``name`` so far, each (B, S)."""
        ks = self._keysets[name]
        n = ks["length"]
        return ks["idx"][:, :n], ks["valid"][:, :n]

    def length(self, name: str) -> int:
        ks = self._keysets.get(name)
        return 0 if ks is None else ks["length"]

    # -- per-layer K/V ----------------------------------------------------------------------
    def update(self, layer_idx: int, keyset: str, k: torch.Tensor, v: torch.Tensor):
        """Store this call's k/v (B, Hkv, n, hd) of a layer; return all its keys and values."""
        ks = self._keysets[keyset]
        if layer_idx not in self._kv:
            B, H, _, hd = k.shape
            shape = (B, H, self.capacity, hd)
            self._kv[layer_idx] = (k.new_zeros(shape), v.new_zeros(shape))
        kb, vb = self._kv[layer_idx]
        start, end = ks["offset"], ks["length"]
        if end - start != k.shape[2]:
            raise RuntimeError(f"layer {layer_idx}: {k.shape[2]} new keys for key set '{keyset}', "
                               f"expected {end - start}")
        kb[:, :, start:end] = k
        vb[:, :, start:end] = v
        return kb[:, :, :end], vb[:, :, :end]
