"""A text prior: the backbone trained on the world's text alone, before any image.

VILA-U and the paper start from a pretrained LLM; our models start from nothing. The
text prior stands in for that LLM: a language model of the world's captions, questions
and answers (u_train instructions + answers, g_train prompts), with no image token in
sight. Runs of the sweep with ``text_prior: true`` then start from it
(``model.init_from``), exactly as a user's local HF Llama would.

The corpus covers both tasks' training text, so every (colour, shape) word pair the
transfer split hides from one task's images is seen here as text, as a real LLM would
have seen it.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from uvlm.core.io import write_json
from uvlm.tokens import segments as SEG
from uvlm.tokens.sequences import BOS, EOS, _pad, _text_ids_many, read_records
from .batching import batch_indices


def text_rows(tokenizer, system_prompt: str, records_u, records_g):
    """Token ids and segment ids of the text-only sequences."""
    texts = [(r["instruction"], r["answer"]) for r in records_u] + [(r["prompt"], None) for r in records_g]
    known = _text_ids_many(tokenizer, [system_prompt, *(t for pair in texts for t in pair if t is not None)])
    sys_ids = known[system_prompt]
    rows, segs = [], []
    for first, second in texts:
        a = known[first]
        b = known[second] if second is not None else []
        ids = [BOS, *sys_ids, *a, *b, EOS]
        seg = [SEG.SYSTEM] * (1 + len(sys_ids)) + [SEG.INSTRUCTION] * len(a) + [SEG.OUTPUT] * (len(b) + 1)
        rows.append(ids)
        segs.append(seg)
    return rows, segs


def text_split(cfg, tokenizer, which: str):
    """The text corpus of ``train`` or ``val`` as a TokenizedSplit, loss on every token."""
    world = cfg.paths.data / "world"
    u, g = read_records(world, f"u_{which}"), read_records(world, f"g_{which}")
    rows, segs = text_rows(tokenizer, cfg.world.system_prompt, u, g)
    return _pad("text", u + g, rows, segs, loss_on="all")


@torch.no_grad()
def text_loss(model, split, batch_size: int, device, autocast) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(split), batch_size):
        b = split.batch(range(start, min(len(split), start + batch_size)))
        ids, labels = b["input_ids"].to(device), b["labels"].to(device)
        with autocast():
            out = model(ids, labels=labels, loss_reduction="sum_per_sample")
        total += float(out.loss.sum())
        count += int((labels[:, 1:] != -100).sum())
    model.train()
    return total / max(1, count)


def train_text_prior(cfg, seed: int, lr: float, out_dir, progress: bool = False) -> dict:
    """Train ``cfg.model`` on the text corpus; write ``out_dir/model`` and ``prior_summary.json``.

    Short by design (text rows are a fifth of an image sequence), so it restarts rather
    than resumes: the model dir appears atomically only when training has finished.
    """
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    from .checkpoint import save_model_dir
    from .setup import vocab_for
    from .loop import device_and_precision, lr_at, make_optimizer

    pc = cfg.text_prior
    out_dir = Path(out_dir)
    device, precision = device_and_precision(cfg.train)
    vocab, tokenizer = vocab_for(cfg)
    train, val = text_split(cfg, tokenizer, "train"), text_split(cfg, tokenizer, "val")
    model = _fresh_model(cfg, vocab, seed).to(device)
    tc = dataclasses.replace(cfg.train, lr=lr, warmup_steps=pc.warmup_steps, batch_size=pc.batch_size)
    opt = make_optimizer(model, tc, device)
    autocast = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext)
    total = max(1, math.ceil(pc.epochs * len(train) / pc.batch_size))
    t0 = time.perf_counter()
    losses = []
    for step in tqdm(range(total), desc=f"text prior {cfg.model.d_model}x{cfg.model.n_layers}/seed{seed}",
                     disable=not progress, mininterval=5.0):
        b = train.batch(batch_indices(len(train), pc.batch_size, step, seed))
        ids, labels = b["input_ids"].to(device), b["labels"].to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, tc)
        with autocast():
            loss = model(ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % max(1, total // 20) == 0 or step == total - 1:
            losses.append({"step": step + 1, "loss": float(loss.detach())})
    val_loss = text_loss(model, val, pc.batch_size, device, autocast)
    save_model_dir(model.cpu(), out_dir / "model")
    summary = {"seed": seed, "lr": lr, "steps": total, "n_train_texts": len(train), "val_text_loss": val_loss,
               "params": model.num_params(), "train_time_s": time.perf_counter() - t0, "device": device,
               "precision": precision, "loss_curve": losses}
    write_json(out_dir / "prior_summary.json", summary)
    return summary


def _fresh_model(cfg, vocab, seed: int):
    """The baseline's model at this size: no image projection sets, text and image rows alike."""
    from uvlm.core.config import RunSpec
    from uvlm.model.decoder import UVLM
    from .setup import model_config
    torch.manual_seed(seed)
    return UVLM(model_config(cfg, vocab, RunSpec(task="u", accel="base")), seed=seed)
