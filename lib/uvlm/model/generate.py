"""Autoregressive image-token sampling with a KV cache.

Prompts are G prefixes ``[<bos> system ... prompt ... <boi>]``; the model samples
``n_image_tokens`` codes, each restricted to image-code ids (every other logit is masked).
The closing ``<eoi>`` is fixed by the format, so it is not sampled.

Any G plan works, including HMGen at inference: shallow layers never see image tokens, so
their cache entries hold the prompt's text keys only, and decoding steps skip them.
Batches are left-padded; RoPE positions come from the attention mask, so a padded row
decodes exactly as it would alone.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from .kv_cache import KVCache

PAD_ID = 0


def left_pad(prompts: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> input_ids (B, Lmax), attention_mask (B, Lmax) with padding on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def sample_next(logits: torch.Tensor, temperature: float, top_k: Optional[int],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """logits (B, C) -> indices (B,). temperature 0 = greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    dev = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(dev), 1, generator=generator).squeeze(1).to(logits.device)


@torch.no_grad()
def generate_images(model, prompt_ids: Sequence[Sequence[int]], n_image_tokens: int, plan=None,
                    temperature: float = 1.0, top_k: Optional[int] = None, cfg_scale: Optional[float] = None,
                    uncond_prompt_ids: Optional[Sequence[int]] = None, generator: Optional[torch.Generator] = None,
                    batch_size: int = 32, use_cache: bool = True, progress: bool = False) -> torch.Tensor:
    """Sample image codes for every prompt -> LongTensor (N, n_image_tokens) of code indices.

    cfg_scale: classifier-free guidance, logits = u + s (c - u), where u comes from
        ``uncond_prompt_ids`` (same system prompt, empty caption, <boi>); None = off.
    generator: fixes the samples (on the model's device or on the CPU).
    use_cache: False recomputes the whole sequence each step (a reference for tests).
    """
    if n_image_tokens < 1:
        raise ValueError(f"n_image_tokens must be >= 1, got {n_image_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if cfg_scale is not None and uncond_prompt_ids is None:
        raise ValueError("cfg_scale needs uncond_prompt_ids: the system prompt with an empty caption and <boi>")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    was_training = model.training
    model.eval()
    out = []
    starts = range(0, len(prompt_ids), batch_size)
    for s in tqdm(starts, disable=not progress, mininterval=5, desc="generate"):
        batch = list(prompt_ids[s:s + batch_size])
        out.append(_generate_batch(model, batch, n_image_tokens, plan, temperature, top_k, cfg_scale,
                                   uncond_prompt_ids, generator, use_cache))
    model.train(was_training)
    if not out:
        return torch.zeros((0, n_image_tokens), dtype=torch.long)
    return torch.cat(out)


def _generate_batch(model, prompts, n, plan, temperature, top_k, cfg_scale, uncond, generator, use_cache):
    cfg = model.config
    device = next(model.parameters()).device
    n_cond = len(prompts)
    rows = prompts + [list(uncond)] * n_cond if cfg_scale is not None else prompts
    ids, mask = left_pad(rows, device)
    start, n_codes = cfg.image_token_start, cfg.codebook_size
    codes = torch.empty((n_cond, n), dtype=torch.long, device=device)

    cache = KVCache(capacity=ids.shape[1] + n) if use_cache else None
    step_ids = ids
    for t in range(n):
        if use_cache:
            logits = model(step_ids, plan=plan, attention_mask=mask if t == 0 else None, kv_cache=cache,
                           compute_logits="last").logits[:, -1]
        else:
            logits = model(ids, plan=plan, attention_mask=mask, compute_logits="last").logits[:, -1]
        logits = logits[:, start:start + n_codes].float()
        if cfg_scale is not None:
            cond, unc = logits[:n_cond], logits[n_cond:]
            logits = unc + cfg_scale * (cond - unc)
        nxt = sample_next(logits, temperature, top_k, generator)
        codes[:, t] = nxt
        step_ids = (nxt + start)[:, None]
        if cfg_scale is not None:
            step_ids = step_ids.repeat(2, 1)
        if not use_cache:
            ids = torch.cat((ids, step_ids), dim=1)
            mask = torch.cat((mask, torch.ones_like(step_ids)), dim=1)
    return codes
