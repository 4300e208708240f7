"""Segment attention allocation (docs/method.md §2), streamed layer by layer.

For layer l and a segment S of keys:

    alpha_S(l) = 1/H sum_h 1/|Q| sum_{i in Q} sum_{j in S} A(l,h)[i, j]      (in %)

so the segments of one layer sum to 100%. Two query sets Q are kept:
``"all"`` (every real token; the paper's definition) and ``"output"`` (only
OUTPUT tokens: the answer for U, the generated image tokens for G; FastV-style).
Padding is never a query. Under a token-reduction plan (HiMix) a layer computes
only some queries; Q is then the real queries that layer computes.

Each layer's (B, H, Lq, Lk) probabilities are reduced, inside the forward, to a
segment-block sum (B, H, S, S) before the next layer runs, so the profiler's
memory grows with one layer's map and not with depth
(:func:`measure_profiler_peak_memory` measures it). From the block sums come
the shares of both views, the per-head shares and the coarsened maps of Fig. 2.

Statistics are over samples: each sample gets its own share per layer, then
mean, std (ddof=1) and a 95% t-interval half-width are taken over samples.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from uvlm.core.errors import UVLMError
from uvlm.core.io import read_json, write_json
from uvlm.tokens import segments as SEG

VIEWS = ("all", "output")
PAD_SEGMENT = -1  # uvlm.tokens.sequences marks right padding with -1


class AttentionInputError(UVLMError, ValueError):
    """Inputs of the attention profiler do not describe the sequence they come with."""


# ----------------------------------------------------------------------------- result
@dataclass
class AttentionProfile:
    """Segment attention allocation of one model over ``n_samples`` sequences.

    share[view][stat]: (n_layers, S) in %, stat in {"mean", "std", "ci95"} (ci95 = half-width)
    per_head[view]:    (n_layers, n_heads, S) in %, mean over samples
    per_sample[view]:  (n_samples, n_layers, S) in %, head-averaged
    blocks:            (n_layers, S, S) fraction; [l, q, k] = mean over the queries of
                       segment q of the attention mass they send to the keys of segment k
                       (head- and sample-averaged). Rows sum to 1; causal, so blocks above
                       the diagonal are ~0. NaN where a segment has no query.
    block_density:     (n_layers, S, S) mean attention weight per (query, key) pair of the block.
    Layers a reduction plan skipped for every query hold NaN.
    """
    segments: list[int]
    segment_names: list[str]
    n_samples: int
    n_layers: int
    n_heads: int
    views: list[str]
    share: dict
    per_head: dict
    per_sample: dict
    blocks: np.ndarray
    block_density: np.ndarray
    meta: dict = field(default_factory=dict)

    def column(self, segment: int) -> int:
        if segment not in self.segments:
            raise AttentionInputError(f"segment {segment} ({SEG.NAMES.get(segment, '?')}) is not in this "
                                      f"profile; it holds {self.segment_names}")
        return self.segments.index(segment)

    def segment_share(self, segment: int, view: str = "all", stat: str = "mean") -> np.ndarray:
        """(n_layers,) share of one segment in %, for plotting."""
        return self.share[_view(self, view)][stat][:, self.column(segment)]

    def to_json(self) -> dict:
        arrays = lambda d: {k: _jsonable(v) for k, v in d.items()}
        return {"segments": list(self.segments), "segment_names": list(self.segment_names),
                "n_samples": self.n_samples, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "views": list(self.views), "share": {v: arrays(s) for v, s in self.share.items()},
                "per_head": arrays(self.per_head), "per_sample": arrays(self.per_sample),
                "blocks": _jsonable(self.blocks), "block_density": _jsonable(self.block_density),
                "meta": self.meta}

    @classmethod
    def from_json(cls, d: dict) -> "AttentionProfile":
        arrays = lambda x: {k: _array(v) for k, v in x.items()}
        return cls(segments=list(d["segments"]), segment_names=list(d["segment_names"]),
                   n_samples=d["n_samples"], n_layers=d["n_layers"], n_heads=d["n_heads"],
                   views=list(d["views"]), share={v: arrays(s) for v, s in d["share"].items()},
                   per_head=arrays(d["per_head"]), per_sample=arrays(d["per_sample"]),
                   blocks=_array(d["blocks"]), block_density=_array(d["block_density"]),
                   meta=d.get("meta", {}))

    def save(self, path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path, stage: str | None = None) -> "AttentionProfile":
        """``stage``: the pipeline stage that writes ``path``, named in the error if it is missing."""
        return cls.from_json(read_json(path, stage=stage))


def _jsonable(a):
    # NaN is not JSON; it becomes null and comes back as NaN.
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isnan(a), None, np.round(a, 6).astype(object)).tolist()


def _array(x) -> np.ndarray:
    return np.array(x, dtype=np.float64)  # None -> nan


def _view(profile, view: str) -> str:
    if view not in profile.views:
        raise AttentionInputError(f"view {view!r} was not profiled; available views: {profile.views}")
    return view


# ----------------------------------------------------------------------------- input checks
def _check_inputs(input_ids, segment_ids, attention_mask, segments, views):
    """-> (input_ids, attention_mask, column of each token in ``segments`` (-1 = padding), segments)."""
    input_ids, segment_ids = torch.as_tensor(input_ids), torch.as_tensor(segment_ids)
    if input_ids.dim() != 2:
        raise AttentionInputError(f"input_ids must be (batch, seq_len); got shape {tuple(input_ids.shape)}")
    if segment_ids.shape != input_ids.shape:
        raise AttentionInputError(f"segment_ids has shape {tuple(segment_ids.shape)} but input_ids has shape "
                                  f"{tuple(input_ids.shape)}: one segment id per token is needed")
    if segment_ids.dtype.is_floating_point or segment_ids.dtype == torch.bool:
        raise AttentionInputError(f"segment_ids must be integers, got {segment_ids.dtype}")
    segment_ids = segment_ids.long()
    bad_views = [v for v in views if v not in VIEWS]
    if not views or bad_views:
        raise AttentionInputError(f"views must be a non-empty subset of {VIEWS}; got {tuple(views)}")
    if attention_mask is not None:
        attention_mask = torch.as_tensor(attention_mask)
        if attention_mask.shape != input_ids.shape:
            raise AttentionInputError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids "
                                      f"has shape {tuple(input_ids.shape)}")
        real = attention_mask.bool()
    else:
        # -1 marks right padding only: every position after the first -1 must be -1 too.
        pad = segment_ids == PAD_SEGMENT
        real = ~(pad.long().cumsum(1) > 0)
        leak = (~pad) & ~real
        if leak.any():
            b, p = leak.nonzero()[0].tolist()
            raise AttentionInputError(f"sample {b}: a real token at position {p} follows padding (segment id -1); "
                                      "-1 marks right padding only; pass attention_mask for other layouts")
    ids_real = segment_ids[real]
    unknown = sorted(set(ids_real.unique().tolist()) - set(SEG.NAMES))
    if unknown:
        b, p = (real & (segment_ids == unknown[0])).nonzero()[0].tolist()
        raise AttentionInputError(f"unknown segment id {unknown[0]} (sample {b}, position {p}); segment ids "
                                  f"are {dict(SEG.NAMES)} and -1 for padding")
    present = set(ids_real.unique().tolist())
    if segments is None:
        segments = SEG.U_SEGMENTS if SEG.IMAGE in present else SEG.G_SEGMENTS
    segments = [int(s) for s in segments]
    if not segments or set(segments) - set(SEG.NAMES) or len(set(segments)) != len(segments):
        raise AttentionInputError(f"segments must be distinct ids among {dict(SEG.NAMES)}; got {segments}")
    extra = sorted(present - set(segments))
    if extra:
        raise AttentionInputError(f"segment id {extra[0]} ({SEG.NAMES[extra[0]]}) occurs in the tokens but "
                                  f"is not among the profiled segments {segments}; shares would not sum to 100%")
    empty = (~real).all(1)
    if empty.any():
        raise AttentionInputError(f"sample {int(empty.nonzero()[0])} has no real token")
    if "output" in views:
        has_out = ((segment_ids == SEG.OUTPUT) & real).any(1)
        if not has_out.all():
            b = int((~has_out).nonzero()[0])
            raise AttentionInputError(f"sample {b} has no output token, so the 'output' view (queries = "
                                      "output tokens) is empty; pass views=('all',) or fix the segment ids")
    lut = torch.full((max(SEG.NAMES) + 1,), -1, dtype=torch.long)
    lut[torch.tensor(segments)] = torch.arange(len(segments))
    cols = torch.where(real, lut[segment_ids.clamp(min=0)], torch.full_like(segment_ids, -1))
    return input_ids, attention_mask, cols, segments


# ----------------------------------------------------------------------------- streaming reduction
class SegmentAccumulator:
    """Receives one layer's probabilities at a time and keeps only segment-block sums.

    Use as the model's ``attn_callback(layer_idx, probs, q_pos, k_pos)``: ``probs`` is
    (B, H, Lq, Lk); ``q_pos``/``k_pos`` are (B, Lq)/(B, Lk) (or 1-D) original positions.
    """

    def __init__(self, segments, views, n_layers: int = 0):
        self.segments, self.views, self.n_layers = list(segments), list(views), n_layers
        self.S = len(self.segments)
        self.out_col = self.segments.index(SEG.OUTPUT) if SEG.OUTPUT in self.segments else None
        self._samples = {v: [] for v in self.views}   # per batch: (B, L, H, S)
        self._blocks, self._density = [], []          # per batch: (B, L, S, S)
        self._cols, self._batch, self.n_heads = None, {}, None

    def start_batch(self, cols: torch.Tensor) -> None:
        self._cols, self._batch = cols, {}

    @torch.no_grad()
    def __call__(self, layer_idx: int, probs, q_pos=None, k_pos=None) -> None:
        if probs is None:
            raise UVLMError(f"layer {layer_idx} returned no attention weights (only eager attention returns them)")
        B, H, Lq, Lk = probs.shape
        qcol, kcol = self._positions_to_cols(q_pos, Lq, B, "q_pos"), self._positions_to_cols(k_pos, Lk, B, "k_pos")
        probs = probs.detach()
        if probs.dtype not in (torch.float32, torch.float64):  # bf16 sums over long rows lose mass
            probs = probs.float()
        k1h = _one_hot(kcol, self.S, probs.dtype)                       # (B, Lk, S)
        mass = torch.matmul(probs, k1h[:, None])                       # (B, H, Lq, S): mass to each key segment
        q1h = _one_hot(qcol, self.S, torch.float64)                     # (B, Lq, S)
        block = torch.einsum("bqs,bhqt->bhst", q1h, mass.double())      # (B, H, S, S)
        nq, nk = q1h.sum(1), k1h.double().sum(1)
        if layer_idx in self._batch:  # a layer may report its queries in several calls
            old = self._batch[layer_idx]
            block, nq, nk = block + old[0], nq + old[1], torch.maximum(nk, old[2])
        self._batch[layer_idx] = (block, nq, nk)
        if self.n_heads is not None and H != self.n_heads:
            raise UVLMError(f"layer {layer_idx} has {H} heads, earlier layers {self.n_heads}")
        self.n_heads = H
        self.n_layers = max(self.n_layers, layer_idx + 1)

    def _positions_to_cols(self, pos, length, B, name):
        if pos is None:
            pos = torch.arange(length)
        pos = torch.as_tensor(pos, device=self._cols.device).long()
        if pos.dim() == 1:
            pos = pos[None].expand(B, -1)
        if pos.shape != (B, length):
            raise UVLMError(f"{name} has shape {tuple(pos.shape)}, expected {(B, length)}")
        if pos.numel() and (pos.min() < 0 or pos.max() >= self._cols.shape[1]):
            raise UVLMError(f"{name} holds positions outside [0, {self._cols.shape[1]})")
        return self._cols.gather(1, pos)

    def end_batch(self) -> None:
        if not self._batch:
            raise UVLMError("no attention weights reached the profiler: the model never called it back")
        B, L, H, S = self._cols.shape[0], self.n_layers, self.n_heads, self.S
        heads = {v: np.full((B, L, H, S), np.nan) for v in self.views}
        blocks, density = np.full((B, L, S, S), np.nan), np.full((B, L, S, S), np.nan)
        for l, (block, nq, nk) in self._batch.items():
            block, nq, nk = block.cpu().numpy(), nq.cpu().numpy(), nk.cpu().numpy()
            with np.errstate(invalid="ignore", divide="ignore"):
                if "all" in self.views:
                    heads["all"][:, l] = block.sum(2) / nq.sum(1)[:, None, None]
                if "output" in self.views:
                    heads["output"][:, l] = block[:, :, self.out_col] / nq[:, self.out_col][:, None, None]
                avg = block.mean(1)
                blocks[:, l] = np.where(nq[:, :, None] > 0, avg / nq[:, :, None], np.nan)
                pairs = nq[:, :, None] * nk[:, None, :]
                density[:, l] = np.where(pairs > 0, avg / pairs, np.nan)
        for v in self.views:
            self._samples[v].append(heads[v] * 100.0)
        self._blocks.append(blocks)
        self._density.append(density)
        self._batch = {}

    def result(self, meta: dict | None = None) -> AttentionProfile:
        L = self.n_layers
        pad = lambda a: np.concatenate([a, np.full(a.shape[:1] + (L - a.shape[1],) + a.shape[2:], np.nan)], 1)
        heads = {v: np.concatenate([pad(a) for a in self._samples[v]]) for v in self.views}
        blocks = np.concatenate([pad(a) for a in self._blocks])
        density = np.concatenate([pad(a) for a in self._density])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN layers stay NaN
            per_sample = {v: np.nanmean(h, axis=2) for v, h in heads.items()}
            share = {v: _stats(per_sample[v]) for v in self.views}
            per_head = {v: np.nanmean(h, axis=0) for v, h in heads.items()}
            blocks, density = np.nanmean(blocks, 0), np.nanmean(density, 0)
        n_samples = int(next(iter(per_sample.values())).shape[0])
        return AttentionProfile(self.segments, [SEG.NAMES[s] for s in self.segments], n_samples,
                                L, int(self.n_heads), list(self.views), share, per_head, per_sample,
                                blocks, density, dict(meta or {}))


def _one_hot(cols, S, dtype):
    return (cols[..., None] == torch.arange(S, device=cols.device)).to(dtype)


_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    """Two-sided 95% Student-t quantile (table up to 30, Cornish-Fisher beyond; error < 1e-3)."""
    if df < 1:
        return float("nan")
    if df <= 30:
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def _stats(x: np.ndarray) -> dict:
    """Mean, std (ddof=1) and 95% t half-width over axis 0, ignoring NaN."""
    n = np.sum(~np.isnan(x), axis=0)
    mean = np.nanmean(x, 0)
    std = np.where(n > 1, np.nanstd(x, 0, ddof=1) if x.shape[0] > 1 else 0.0, 0.0)
    t = np.vectorize(lambda k: t975(int(k) - 1))(n) if n.size else n
    ci = np.where(n > 1, t * std / np.sqrt(np.maximum(n, 1)), np.nan)
    return {"mean": mean, "std": std, "ci95": ci}


# ----------------------------------------------------------------------------- running models
def _run_batches(acc, cols, input_ids, attention_mask, batch_size, progress, forward) -> None:
    from tqdm.auto import tqdm

    starts = range(0, input_ids.shape[0], max(1, int(batch_size)))
    for s in tqdm(starts, desc="attention profile", disable=not progress, mininterval=5):
        sl = slice(s, s + batch_size)
        acc.start_batch(cols[sl])
        forward(input_ids[sl], None if attention_mask is None else attention_mask[sl])
        acc.end_batch()


def profile_uvlm(model, input_ids, segment_ids, plan=None, *, attention_mask=None, segments=None,
                 views=VIEWS, batch_size: int = 8, progress: bool = False, meta=None) -> AttentionProfile:
    """Profile our decoder (uvlm.model.decoder.UVLM) through its ``attn_callback``.

    ``plan``: the layer plan to run under (None = the model's default, full computation). Under
    token-reduction plans a layer may see only some queries; the callback's positions say which.
    Padding: segment id -1 (right padding, as uvlm.tokens.sequences writes it) or ``attention_mask`` == 0
    (then also passed to the model). Padding queries are left out of every share.
    """
    input_ids, attention_mask, cols, segments = _check_inputs(input_ids, segment_ids, attention_mask,
                                                              segments, views)
    n_layers = int(getattr(getattr(model, "config", None), "n_layers", 0) or 0)
    acc = SegmentAccumulator(segments, views, n_layers)
    device = next(model.parameters()).device

    def forward(ids, mask):  # no LM head: the profile needs no (B, L, vocab) logits
        model(ids.to(device), plan=plan, attention_mask=None if mask is None else mask.to(device),
              attn_callback=acc, compute_logits="none")

    with torch.no_grad(), _eval_mode(model):
        _run_batches(acc, cols.to(device), input_ids, attention_mask, batch_size, progress, forward)
    return acc.result({"backend": "uvlm", **(meta or {})})


def profile_hf(model, input_ids, segment_ids, *, attention_mask=None, segments=None, views=VIEWS,
               batch_size: int = 8, attention_modules=None, progress: bool = False,
               meta=None) -> AttentionProfile:
    """Profile any transformers decoder (Llama, and local Emu3/Janus/Chameleon alike).

    Forward hooks on each self-attention module read its (attn_output, attn_weights) output,
    reduce the weights to segment blocks and let them go; ``output_attentions`` stays False, so
    transformers itself collects nothing and peak memory is one layer's map. Only eager attention
    returns weights: under SDPA/flash/flex the model is switched to eager for the profile (with a
    warning; slower, and O(L^2) memory for one layer) and switched back afterwards.
    ``attention_modules``: the modules to hook, in layer order, if the default (the model's
    recorded ``attentions`` class, e.g. LlamaAttention) would also catch, say, a vision tower.
    """
    input_ids, attention_mask, cols, segments = _check_inputs(input_ids, segment_ids, attention_mask,
                                                              segments, views)
    modules = list(attention_modules) if attention_modules is not None else _hf_attention_modules(model)
    acc = SegmentAccumulator(segments, views, len(modules))
    runner = getattr(model, "base_model", model)  # skips the LM head: no (B, L, vocab) logits
    device = next(model.parameters()).device

    def hook_for(layer):
        def hook(_module, _args, output):
            acc(layer, output[1] if isinstance(output, tuple) and len(output) > 1 else None)
        return hook

    def forward(ids, mask):
        runner(input_ids=ids.to(device), attention_mask=None if mask is None else mask.to(device),
               use_cache=False, output_attentions=False)

    with torch.no_grad(), _eval_mode(model), _eager_attention(model, modules):
        handles = [m.register_forward_hook(hook_for(l)) for l, m in enumerate(modules)]
        try:
            _run_batches(acc, cols.to(device), input_ids, attention_mask, batch_size, progress, forward)
        finally:
            for h in handles:
                h.remove()
    return acc.result({"backend": "hf", "model_class": type(model).__name__, **(meta or {})})


def _hf_attention_modules(model) -> list:
    """Self-attention modules in layer order: the class transformers records ``attentions`` from
    (the outermost model that declares one), else modules named *Attention with a layer index."""
    targets = ()
    for sub in model.modules():
        spec = (getattr(type(sub), "_can_record_outputs", None) or {}).get("attentions")
        specs = spec if isinstance(spec, (list, tuple)) else [spec]
        targets = tuple(t for t in (getattr(r, "target_class", r) for r in specs) if isinstance(t, type))
        if targets:
            break
    if targets:
        mods = [m for m in model.modules() if isinstance(m, targets)]
    else:
        mods = [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
    if not mods:
        raise UVLMError(f"found no self-attention modules in {type(model).__name__}; pass attention_modules=")
    if all(isinstance(getattr(m, "layer_idx", None), int) for m in mods):
        mods.sort(key=lambda m: m.layer_idx)
    return mods


class _eval_mode:
    """Dropout off while profiling; the caller's train/eval state comes back afterwards."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


class _eager_attention:
    def __init__(self, model, modules):
        self.model, self.modules, self.previous = model, modules, None

    def _impls(self):
        configs = [getattr(m, "config", None) for m in self.modules] + [self.model.config]
        return {getattr(c, "_attn_implementation", None) or "eager" for c in configs if c is not None}

    def __enter__(self):
        impls = self._impls()
        if impls == {"eager"}:
            return
        self.previous = self.model.config._attn_implementation
        warnings.warn(f"{type(self.model).__name__} runs '{self.previous}' attention, which returns no "
                      "attention weights; switching to 'eager' for the profile (slower, one layer's full "
                      "map in memory) and back afterwards", UserWarning, stacklevel=3)
        setter = getattr(self.model, "set_attn_implementation", None)
        if setter is None:
            raise UVLMError(f"{type(self.model).__name__} cannot switch to eager attention; load it with "
                            "attn_implementation='eager'")
        setter("eager")
        if self._impls() != {"eager"}:
            raise UVLMError(f"{type(self.model).__name__} did not switch to eager attention "
                            f"(still {sorted(self._impls())}); load it with attn_implementation='eager'")

    def __exit__(self, *exc):
        if self.previous is not None:
            self.model.set_attn_implementation(self.previous)


# ----------------------------------------------------------------------------- verdict
def image_segment_of(profile: AttentionProfile) -> int:
    """The segment holding image tokens: IMAGE for U, OUTPUT (generated image) for G."""
    return SEG.IMAGE if SEG.IMAGE in profile.segments else SEG.OUTPUT


def late_layers(n_layers: int) -> range:
    """The last third of the layers (at least one)."""
    return range(n_layers - max(1, round(n_layers / 3)), n_layers)


def asymmetry_ratio(profile: AttentionProfile, image_segment: int | None = None, view: str = "all",
                    n_boot: int = 2000, seed: int = 0) -> dict:
    """Image share in the last third of layers / image share in the first layer.

    ratio = (mean over samples of late share) / (mean over samples of first-layer share);
    spread: bootstrap over samples (``n_boot`` resamples, seeded): std and 95% percentile
    interval. The per-sample ratios' mean and std are reported as well.
    """
    seg = image_segment_of(profile) if image_segment is None else image_segment
    x = profile.per_sample[_view(profile, view)][:, :, profile.column(seg)]
    late = late_layers(profile.n_layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first, last = x[:, 0], np.nanmean(x[:, late.start:], axis=1)
    keep = ~(np.isnan(first) | np.isnan(last))
    if not keep.any() or np.nanmean(first[keep]) <= 0:
        raise AttentionInputError(f"no first-layer {SEG.NAMES[seg]} share to compare against (view {view!r})")
    first, last = first[keep], last[keep]
    ratio = float(last.mean() / first.mean())
    idx = np.random.default_rng(seed).integers(0, len(first), (n_boot, len(first)))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = last[idx].mean(1) / first[idx].mean(1)
        per = last / first
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return {"ratio": ratio, "std": float(np.nanstd(boot)), "ci95": [float(lo), float(hi)],
            "per_sample_mean": float(np.nanmean(per)), "per_sample_std": float(np.nanstd(per)),
            "first_layer_share": float(first.mean()), "late_share": float(last.mean()),
            "late_layers": [late.start, late.stop - 1], "segment": SEG.NAMES[seg], "view": view,
            "n_samples": int(len(first))}


REDUNDANCY_CEILING = 0.5  # strong U redundancy: late layers keep at most half the first-layer image share
VERDICT_RULE = (
    "With the 95% bootstrap intervals of the late/first image-share ratios: U shows late-layer "
    "visual redundancy if its whole interval lies below 1, and strong redundancy (the paper's collapse "
    "of image attention) if its whole interval lies below redundancy_ceiling (default 0.5), i.e. late "
    "layers keep at most half of the first-layer image share; below 1 but not below the ceiling is a "
    "mild decline. G shows persistent image dependence if its interval reaches persist_floor (default "
    "0.5), i.e. late layers keep at least half of the first-layer image share, not clearly less. The "
    "asymmetry holds if both hold and G's interval lies wholly above U's; it holds strongly if U's "
    "redundancy is strong as well.")


def _u_reading(u_ratio: dict, ceiling: float) -> str:
    ratio, hi = u_ratio["ratio"], u_ratio["ci95"][1]
    if hi < ceiling:
        return f"late-layer image attention collapses (below {ceiling:g}: strong visual redundancy). "
    if hi < 1.0:
        return (f"a mild decline only (ratio {ratio:.2f}; the paper's pattern is a collapse; strong = "
                f"below {ceiling:g}). ")
    return "no clear late-layer drop in image attention. "


def verdict(u_ratio: dict, g_ratio: dict, persist_floor: float = 0.5,
            redundancy_ceiling: float = REDUNDANCY_CEILING) -> dict:
    """Plain-language reading of the two ratios (from :func:`asymmetry_ratio`); rule: VERDICT_RULE."""
    u_lo, u_hi = u_ratio["ci95"]
    g_lo, g_hi = g_ratio["ci95"]
    u_red, g_pers, apart = u_hi < 1.0, g_hi >= persist_floor, g_lo > u_hi
    u_strong = u_hi < redundancy_ceiling
    asym = u_red and g_pers and apart
    fmt = lambda r: f"{r['ratio']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
    text = (f"U late/first image-share ratio {fmt(u_ratio)}: " + _u_reading(u_ratio, redundancy_ceiling)
            + f"G ratio {fmt(g_ratio)}: "
            + (f"image attention persists through depth (not clearly below {persist_floor}). " if g_pers else
               f"image attention fades with depth (clearly below {persist_floor}). ")
            + ("The asymmetry of the paper holds." if asym and u_strong else
               "The asymmetry holds only weakly (U declines mildly, no collapse)." if asym else
               "The asymmetry of the paper is not shown."))
    return {"u_late_visual_redundancy": bool(u_red), "u_strong_redundancy": bool(u_strong),
            "g_persistent_image_dependence": bool(g_pers), "g_above_u": bool(apart), "asymmetry": bool(asym),
            "u_ratio": u_ratio, "g_ratio": g_ratio, "persist_floor": persist_floor,
            "redundancy_ceiling": redundancy_ceiling, "rule": VERDICT_RULE, "summary": text}


def image_share_evolution(checkpoints, image_segment: int | None = None, view: str = "all") -> dict:
    """Image share per layer over training: ``checkpoints`` = [(step, AttentionProfile), ...].

    -> {"steps": [C], "share": (C, L) %, "ci95": (C, L), "segment", "view", "n_layers"}, sorted by step.
    """
    checkpoints = sorted(checkpoints, key=lambda sp: sp[0])
    if not checkpoints:
        raise AttentionInputError("no checkpoints given for the evolution of the image share")
    layers = {p.n_layers for _, p in checkpoints}
    if len(layers) != 1:
        raise AttentionInputError(f"checkpoints have different depths {sorted(layers)}")
    seg = image_segment_of(checkpoints[0][1]) if image_segment is None else image_segment
    return {"steps": [int(s) for s, _ in checkpoints],
            "share": np.stack([p.segment_share(seg, view) for _, p in checkpoints]),
            "ci95": np.stack([p.segment_share(seg, view, "ci95") for _, p in checkpoints]),
            "segment": SEG.NAMES[seg], "view": view, "n_layers": layers.pop()}


# ----------------------------------------------------------------------------- memory check
class _LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside the block and still alive; keeps the peak.

    Every op's output passes through here; a storage is freed once the last tensor made on it
    dies (weakref finalizers). Buffers internal to a kernel are not seen, the same for any depth.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._refs = {}  # storage pointer -> [tensors alive on it, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t):
        storage = t.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0:
            return
        if key not in self._refs:
            self._refs[key] = [0, nbytes]
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self._refs[key][0] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key):
        ref = self._refs.get(key)
        if ref is None:
            return
        ref[0] -= 1
        if ref[0] == 0:
            self.live -= ref[1]
            del self._refs[key]


def measure_profiler_peak_memory(n_layers_list=(4, 32), seq_len: int = 256, hidden_size: int = 32,
                                 n_heads: int = 4, backend: str = "hf", seed: int = 0) -> dict:
    """Peak bytes of tensors alive while profiling a tiny model, per depth.

    ``backend``: "hf" (a transformers LlamaForCausalLM, eager) or "uvlm" (our decoder).
    Two runs per depth: the streaming profiler, and the same forward also holding every
    layer's attention map (what collecting ``output_attentions`` costs). Returns
    {"n_layers": [...], "profiler_peak_bytes": [...], "hold_all_peak_bytes": [...],
     "one_layer_map_bytes": H * L * L * 4}. Parameters exist before counting starts, so the
    numbers are the forward's extra memory.
    """
    n_sys = n_instr = n_out = max(1, seq_len // 16)
    seg = torch.tensor([SEG.SYSTEM] * n_sys + [SEG.IMAGE] * (seq_len - n_sys - n_instr - n_out)
                       + [SEG.INSTRUCTION] * n_instr + [SEG.OUTPUT] * n_out)[None]
    ids = torch.randint(0, 64, (1, seq_len), generator=torch.Generator().manual_seed(seed))
    result = {"n_layers": list(n_layers_list), "profiler_peak_bytes": [], "hold_all_peak_bytes": [],
              "one_layer_map_bytes": n_heads * seq_len * seq_len * 4, "backend": backend}
    for n in n_layers_list:
        model, run = _tiny_model(backend, n, seq_len, hidden_size, n_heads, seed)
        for hold in (False, True):
            kept = []
            meter = _LiveTensorBytes()
            with meter:
                run(ids, seg, kept if hold else None)
            del kept
            result["hold_all_peak_bytes" if hold else "profiler_peak_bytes"].append(int(meter.peak))
    return result


def _tiny_model(backend, n_layers, seq_len, hidden_size, n_heads, seed):
    """-> (model, run(ids, seg, kept)): ``kept`` (a list, or None) also receives every map."""
    torch.manual_seed(seed)
    if backend == "hf":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=64, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
            max_position_embeddings=seq_len, attn_implementation="eager")).eval()

        def run(ids, seg, kept):
            handles = [m.register_forward_hook(lambda _m, _a, o: kept.append(o[1]))
                       for m in _hf_attention_modules(model)] if kept is not None else []
            try:
                profile_hf(model, ids, seg, views=("all",))
            finally:
                for h in handles:
                    h.remove()
        return model, run
    if backend == "uvlm":
        from uvlm.model.decoder import UVLM, UVLMConfig

        model = UVLM(UVLMConfig(vocab_size=128, image_token_start=64, d_model=hidden_size, n_layers=n_layers,
                                n_heads=n_heads, n_kv_heads=n_heads, ffn_hidden=2 * hidden_size,
                                max_seq_len=seq_len), seed=seed).eval()

        class Keeping(torch.nn.Module):  # our forward with a callback that also keeps each map
            def __init__(self, kept):
                super().__init__()
                self.inner, self.kept, self.config = model, kept, model.config

            def forward(self, ids, attn_callback=None, **kw):
                def both(l, probs, q, k):
                    self.kept.append(probs)
                    attn_callback(l, probs, q, k)
                return self.inner(ids, attn_callback=both, **kw)

        def run(ids, seg, kept):
            profile_uvlm(model if kept is None else Keeping(kept), ids, seg, views=("all",))
        return model, run
    raise ValueError(f"backend must be 'hf' or 'uvlm', got {backend!r}")
