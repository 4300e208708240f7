"""Figure 5: HMGen at inference time only, on the G-only baseline, with no retraining.

The baseline checkpoint is loaded once. An HMGen plan needs image projections; the
model adds them as copies of the text projections, so the full layers of that plan
compute exactly what the baseline computes and only the K shallow layers differ
(image tokens skip them). Every plan generates images for the same g_test prompts
with the same sampling seed, so the samples are paired, and the generations are timed
in the same process, one after the other, after a short warm-up.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from uvlm.core.errors import CheckpointError, MissingInputError
from uvlm.model import plans as P


def hmgen_ks(cfg) -> list[int]:
    """The K values of the grid's HMGen runs at this depth (those of g_hmgen_k3 / g_hmgen_k5)."""
    from uvlm.train.setup import accel_settings
    return sorted({accel_settings(cfg, s)[1].k for s in cfg.runs.values() if "hmgen" in s.accel and s.task == "g"})


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def inference_time_hmgen(cfg, run: str = "g_base", seed: int | None = None, ks=None, n: int | None = None,
                         out_path=None) -> dict:
    """Generate the first ``eval.n_gen`` g_test prompts with the full plan and with HMGen plans
    (K in ``ks``, default :func:`hmgen_ks`) from ``best_g`` of ``run``; score and time each.

    Writes the numbers to ``figures/metrics/fig5.json`` (or ``out_path``) and returns
    ``{"metrics": <that JSON>, "samples": {"real", "prompts", <plan>: images}}`` (first
    ``eval.n_figure_samples`` of each, uint8) for the figure.
    """
    from uvlm.eval.evaluate import EvalContext, generation_metrics, sample_codes
    from uvlm.core.threads import cpu_threads
    from uvlm.core.io import load_npz, write_json
    from uvlm.model.decoder import UVLM
    from uvlm.train.setup import run_dir

    seed = cfg.train.seeds[0] if seed is None else seed
    ks = hmgen_ks(cfg) if ks is None else list(ks)
    L = cfg.model.n_layers
    plans = {"full": P.build_plan("g", "base", L)}
    for k in ks:
        plans[f"hmgen_k{k}"] = P.build_plan("g", "hmgen", L, hmgen_k=k, hmgen_placement=cfg.hmgen.placement)
    path = run_dir(cfg, run, seed) / "best_g"
    if not path.exists():
        raise MissingInputError(path, f"train@{run}")
    try:
        model = UVLM.from_pretrained(path, image_proj_sets=("img",) if ks else ())
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"model directory '{path}' (stage train@{run}) cannot be loaded: {e}") from e

    ctx = EvalContext(cfg)
    model = model.to(ctx.device).eval()
    recs, codes = ctx.split("g_test")
    n = min(n or cfg.eval.n_gen, len(recs))
    recs, codes = recs[:n], codes[:n]
    prompts, grid = [r["prompt"] for r in recs], codes.shape[1:]
    vq, probe = ctx.scorers()
    real = load_npz(ctx.world_dir / "g_test.npz", stage="data")["images"][:n]
    recon = vq.decode(codes)

    out = {"run": run, "seed": seed, "n": n, "device": str(ctx.device), "n_layers": L, "plans": {}}
    keep = min(cfg.eval.n_figure_samples, n)
    samples = {"real": real[:keep], "prompts": np.array(prompts[:keep], dtype=str)}
    with cpu_threads(cfg.eval.threads):
        for plan in plans.values():  # warm-up: first-call allocations must not count for one plan
            sample_codes(model, plan, ctx, prompts[:2], grid, seed)
        for name, plan in plans.items():
            _sync(ctx.device)
            t0 = time.perf_counter()
            gen_codes = sample_codes(model, plan, ctx, prompts, grid, seed)
            _sync(ctx.device)
            seconds = time.perf_counter() - t0
            images = vq.decode(gen_codes)
            out["plans"][name] = {"k": sum(m.mode == "shallow" for m in plan),
                                  "shallow_layers": [i for i, m in enumerate(plan) if m.mode == "shallow"],
                                  "time_s": seconds,
                                  "generation": generation_metrics(recs, images, real, recon, probe)}
            samples[name] = images[:keep]
    # Counted forward FLOPs of one whole sequence (prompt + M image tokens, logits at the M
    # image positions): what decoding with a KV cache computes, up to the causal half of
    # the attention scores, which every plan shares.
    from uvlm.tokens.sequences import g_prompt_ids
    from uvlm.model.flops import plan_flops
    T = float(np.mean([len(g_prompt_ids(ctx.tokenizer, ctx.system_prompt, p)) for p in prompts]))
    M = int(np.prod(grid))
    flops = {k: plan_flops(model.config, plans[k], round(T), M, M, backward=False)["total"] for k in plans}
    full = out["plans"]["full"]["time_s"]
    for name, v in out["plans"].items():
        v["speedup"] = full / v["time_s"] if v["time_s"] > 0 else None
        v["forward_flops_rel"] = flops[name] / flops["full"]
    write_json(out_path or cfg.paths.figures / "metrics" / "fig5.json", out)
    return {"metrics": out, "samples": samples}


def fig5_frame(result: dict):
    """One row per plan: K, time, speedup, counted forward FLOPs ratio, FID-a and Attr-Acc-a per subset."""
    import pandas as pd
    rows = {}
    for name, p in result["metrics"]["plans"].items():
        row = {"K": p["k"], "time (s)": p["time_s"], "speedup": p["speedup"],
               "forward FLOPs rel": p["forward_flops_rel"]}
        for s in ("in_dist", "transfer"):
            row[f"FID-a {s}"] = p["generation"][s]["fd"]
            row[f"Attr-Acc-a {s}"] = p["generation"][s]["attr_acc"]
        rows[name] = row
    return pd.DataFrame(rows).T
