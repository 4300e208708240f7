"""The attention stage: profile a trained run (or a local HF decoder) on held-out samples.

U samples are detailed-caption items of u_test (the ShareGPT-4V analogue the
paper profiles); G samples are g_test prompts with their real image tokens,
teacher-forced, as the paper profiles JourneyDB pairs.
"""
from __future__ import annotations

from pathlib import Path

from uvlm.core.devices import resolve_device
from uvlm.tokens import segments as S
from uvlm.tokens.sequences import load_split
from uvlm.train.setup import load_trained, run_dir, run_plans, tasks_of, vocab_for
from .attention import asymmetry_ratio, image_share_evolution, profile_hf, profile_uvlm, verdict


def profiling_batches(cfg, tokenizer, vocab, n: int) -> dict:
    """{task: (input_ids, segment_ids)} of ``n`` held-out samples per task."""
    kw = dict(tokenizer=tokenizer, vocab=vocab, system_prompt=cfg.world.system_prompt)
    u = load_split(cfg.paths.data, "u", "u_test", **kw)
    captions = [i for i, r in enumerate(u.records) if r.get("family") == "caption"][:n]
    g = load_split(cfg.paths.data, "g", "g_test", **kw)
    out = {}
    for task, split, idx in (("u", u, captions), ("g", g, list(range(min(n, len(g)))))):
        b = split.batch(idx)
        out[task] = (b["input_ids"], b["segment_ids"])
    return out


def profile_model(model, batches, plans=None, hf: bool = False) -> dict:
    """{task: AttentionProfile} in both views (all queries, output queries)."""
    out = {}
    for task, (ids, seg) in batches.items():
        segs = S.U_SEGMENTS if task == "u" else S.G_SEGMENTS
        meta = {"task": task}
        if hf:
            out[task] = profile_hf(model, ids, seg, segments=segs, meta=meta)
        else:
            plan = (plans or {}).get(task)
            out[task] = profile_uvlm(model, ids, seg, plan=plan, segments=segs, meta=meta)
    return out


def _device(cfg) -> str:
    return resolve_device(cfg.attention.device, "attention.device")


def profile_run(cfg, run: str, seed: int, n_samples: int) -> dict:
    """Profile the final checkpoint of a run, on its own plan per task."""
    vocab, tok = vocab_for(cfg)
    batches = profiling_batches(cfg, tok, vocab, n_samples)
    spec = cfg.run(run)
    plans = run_plans(cfg, spec)
    model = load_trained(cfg, run, seed, "final").to(_device(cfg))
    # An isolated run is profiled on its own task only.
    batches = {t: b for t, b in batches.items() if t in tasks_of(spec)}
    return profile_model(model, batches, plans)


def profile_local_hf(cfg, path: str, n_samples: int) -> dict:
    """Profile a local transformers decoder (e.g. a unified VLM) on our sequences.

    The model must share our vocabulary; a real pretrained VLM needs its own
    tokenisation of its own data, with segment ids built the same way.
    """
    from transformers import AutoModelForCausalLM
    vocab, tok = vocab_for(cfg)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    model = model.to(_device(cfg))
    return profile_model(model, profiling_batches(cfg, tok, vocab, n_samples), hf=True)


def snapshot_evolution(cfg, run: str, seed: int, n_samples: int) -> dict:
    """{task: image-share-per-layer over training snapshots} of a run."""
    vocab, tok = vocab_for(cfg)
    spec = cfg.run(run)
    batches = {t: b for t, b in profiling_batches(cfg, tok, vocab, n_samples).items() if t in tasks_of(spec)}
    plans = run_plans(cfg, spec)
    snap_dir = run_dir(cfg, run, seed) / "snapshots"
    steps = sorted(int(p.name[4:]) for p in snap_dir.glob("step*")) if snap_dir.exists() else []
    per_task = {t: [] for t in batches}
    device = _device(cfg)
    for step in steps:
        model = load_trained(cfg, run, seed, f"snapshots/step{step:06d}").to(device)
        for t, prof in profile_model(model, batches, plans).items():
            per_task[t].append((step, prof))
    final = profile_model(load_trained(cfg, run, seed, "final").to(device), batches, plans)
    total = _final_step(cfg, run, seed)
    for t, prof in final.items():
        per_task[t].append((total, prof))
    return {t: image_share_evolution(v) for t, v in per_task.items() if v}


def _final_step(cfg, run, seed) -> int:
    import json
    p = run_dir(cfg, run, seed) / "train_summary.json"
    return json.loads(Path(p).read_text())["steps"] if p.exists() else 0


def asymmetry_metrics(profiles: dict) -> dict:
    """The one-number-per-task summary and the verdict, for both views."""
    out = {}
    for view in ("all", "output"):
        ratios = {t: asymmetry_ratio(p, view=view) for t, p in profiles.items()}
        entry = {f"{t}_ratio": r for t, r in ratios.items()}
        if "u" in ratios and "g" in ratios:
            entry["verdict"] = verdict(ratios["u"], ratios["g"])
        out[view] = entry
    return out
