"""Run a trained model over the held-out splits: the benchmark analogues and G metrics.

Understanding (U), each one batched teacher-forced forward pass, no decoding:

* ``gqa``   open questions, exact match (== greedy decoding writes the gold answer,
            see :func:`uvlm.eval.scoring.answer_stats`), also per question kind.
* ``pope``  "is there a <colour> <shape>?": yes iff logit(yes) > logit(no) at the
            first answer position; accuracy per negative sampling and mean F1.
* ``mme``   yes/no pairs, the same forced choice; acc + acc+ per subtask, summed
            into perception (MME-P) and reasoning (MME-C).
* ``seed``  4-way choice by the likelihood of each option written as the answer.
* ``u_test`` held-out instructions of the training families (captions first):
            exact match, token accuracy and answer NLL per family.

Generation (G):

* ``nll``   teacher-forced NLL of the g_test image tokens (nats / token).
* ``generation``  images sampled for the first ``eval.n_gen`` g_test prompts and
            decoded by the VQ tokenizer: Fréchet distance to the real images of the
            same prompts in probe features (the MJHQ-FID analogue), the floor a
            perfect token model would reach (VQ reconstructions of those real
            images), and the probe's prompt-attribute accuracy (GenEval-like).

Every metric is given for ``all`` items, the ``in_dist`` ones and the ``transfer``
ones (combos the task never trained on), with their counts.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from uvlm.core.devices import resolve_device
from uvlm.core.errors import CheckpointError, ConfigError, MissingInputError, UVLMError
from uvlm.core.io import load_npz, read_json, save_npz, write_json
from uvlm.core.threads import cpu_threads
from uvlm.tokens.sequences import _text_ids, g_prompt_ids, read_codes, read_records, tokenize_split
from uvlm.train.setup import run_dir
from . import scoring as S
from .fid import feature_frechet_distance
from .scoring import aggregate_seeds, table  # noqa: F401  (re-exported: part of this module's API)

U_BENCHMARKS = {"gqa": "bench_gqa", "pope": "bench_pope", "mme": "bench_mme", "seed": "bench_seed",
                "u_test": "u_test"}


class EvalContext:
    """What every evaluation of one configuration shares: vocabulary, data, device."""

    def __init__(self, cfg, vocab=None, tokenizer=None):
        if vocab is None or tokenizer is None:
            from uvlm.train.setup import vocab_for
            vocab, tokenizer = vocab_for(cfg)
        self.cfg, self.ecfg, self.vocab, self.tokenizer = cfg, cfg.eval, vocab, tokenizer
        self.world_dir = cfg.paths.data / "world"
        self.tokenizer_dir = cfg.paths.data / "tokenizer"
        self.system_prompt = cfg.world.system_prompt
        self.device = _device(cfg.eval.device)
        self._cache: dict = {}

    def split(self, name: str):
        """(records, codes) of a held-out split, capped at ``eval.max_items``."""
        if name not in self._cache:
            records = read_records(self.world_dir, name)
            codes = read_codes(self.tokenizer_dir, name)
            if len(records) != len(codes):
                raise UVLMError(f"{name}: {len(records)} records in {self.world_dir} but {len(codes)} code "
                                f"grids in {self.tokenizer_dir / 'codes.npz'}; re-run `dvc repro tokenizer`")
            cap = self.ecfg.max_items or len(records)
            self._cache[name] = (records[:cap], codes[:cap])
        return self._cache[name]

    def scorers(self):
        """(VQ decoder, attribute probe) on the evaluation device, loaded once per context."""
        if "scorers" not in self._cache:
            from uvlm.probe.model import load_probe
            from uvlm.probe.build import probe_path
            from uvlm.tokens.vq import load_vq
            self._cache["scorers"] = (load_vq(self.tokenizer_dir / "vq.safetensors").to(self.device),
                                      load_probe(probe_path(self.cfg)).to(self.device))
        return self._cache["scorers"]

    def token_id(self, word: str) -> int:
        ids = _text_ids(self.tokenizer, word)
        if len(ids) != 1:
            raise ConfigError("world", word, f"a single text token for '{word}' (got {ids})")
        return ids[0]


def _device(name: str) -> torch.device:
    return torch.device(resolve_device(name, "eval.device"))


# ============================================================== batched forward passes

@torch.no_grad()
def batched(model, split, plan, ctx: EvalContext, reduce) -> dict:
    """``reduce(logits, labels)`` (dict of per-row arrays) over a TokenizedSplit, concatenated."""
    model.eval()
    parts: dict = {}
    bs = ctx.ecfg.batch_size
    for start in range(0, len(split), bs):
        batch = split.batch(range(start, min(len(split), start + bs)))
        ids = batch["input_ids"].to(ctx.device)
        labels = batch["labels"].to(ctx.device)
        out = model(ids, plan=plan)
        logits = _full_logits(out, labels.shape)
        for k, v in reduce(logits, labels).items():
            parts.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _full_logits(out, shape) -> torch.Tensor:
    """(B, L, V) logits. Under HiMix the model returns text rows only (``logits_index``);
    they are put back at their positions. Image rows stay 0, and no target is predicted
    from an image row in a U sequence (the answer follows the instruction)."""
    if out.logits_index is None:
        return out.logits
    B, L = shape
    full = out.logits.new_zeros(B, L, out.logits.shape[-1])
    idx = out.logits_index[..., None].expand(-1, -1, out.logits.shape[-1])
    return full.scatter_(1, idx, out.logits)


def _qa_split(ctx, pairs, codes):
    """A U split from (instruction, answer) pairs: targets on the answer and <eos> only."""
    recs = [{"instruction": q, "answer": a} for q, a in pairs]
    return tokenize_split("u", recs, codes, ctx.tokenizer, ctx.vocab, ctx.system_prompt, loss_on="output")


def _answer_stats(model, plan, ctx, pairs, codes) -> dict:
    return batched(model, _qa_split(ctx, pairs, codes), plan, ctx, S.answer_stats)


def _yes_no(model, plan, ctx, records, codes) -> np.ndarray:
    """Forced choice between "yes" and "no" at the first answer position."""
    yes, no = ctx.token_id("yes"), ctx.token_id("no")
    split = _qa_split(ctx, [(r["question"], r["answer"]) for r in records], codes)
    out = batched(model, split, plan, ctx,
                  lambda lg, lb: {"m": S.first_answer_margin(lg, lb, yes, no)})
    return out["m"] > 0


# ============================================================== understanding

def score_gqa(model, plan, ctx):
    recs, codes = ctx.split(U_BENCHMARKS["gqa"])
    st = _answer_stats(model, plan, ctx, [(r["question"], r["answer"]) for r in recs], codes)
    kinds = [r.get("kind", "all") for r in recs]
    return S.by_subset(recs, lambda correct, kind: S.accuracy(correct, {"kind": kind}),
                       correct=st["exact"], kind=kinds)


def score_pope(model, plan, ctx):
    recs, codes = ctx.split(U_BENCHMARKS["pope"])
    pred = _yes_no(model, plan, ctx, recs, codes)
    gold = np.array([r["answer"] == "yes" for r in recs], bool)
    return S.by_subset(recs, S.pope_scores, pred_yes=pred, gold_yes=gold,
                       sampling=np.array([r["sampling"] for r in recs]))


def score_mme(model, plan, ctx):
    recs, codes = ctx.split(U_BENCHMARKS["mme"])
    correct = _yes_no(model, plan, ctx, recs, codes) == np.array([r["answer"] == "yes" for r in recs])
    subtasks = {r["subtask"]: r["category"] for r in recs}
    return S.by_subset(recs, lambda **kw: S.mme_scores(**kw, subtasks=subtasks), correct=correct,
                       subtask=np.array([r["subtask"] for r in recs]),
                       category=np.array([r["category"] for r in recs]),
                       pair_id=np.array([r["pair_id"] for r in recs]))


def score_seed(model, plan, ctx):
    recs, codes = ctx.split(U_BENCHMARKS["seed"])
    k = len(recs[0]["options"]) if recs else 4
    if any(len(r["options"]) != k for r in recs):
        raise UVLMError(f"{ctx.world_dir / 'bench_seed.jsonl'}: every item needs {k} options; "
                        "re-run `dvc repro data`")
    pairs = [(r["question"], opt) for r in recs for opt in r["options"]]
    st = _answer_stats(model, plan, ctx, pairs, np.repeat(codes, k, axis=0))
    lp, nt = st["logprob"].reshape(-1, k), st["n_tokens"].reshape(-1, k)
    return S.by_subset(recs, lambda lp, nt, ans, kind: S.multiple_choice(lp, nt, ans, {"kind": kind}),
                       lp=lp, nt=nt, ans=np.array([r["answer_index"] for r in recs], np.int64),
                       kind=[r.get("kind", "all") for r in recs])


def score_u_test(model, plan, ctx):
    recs, codes = ctx.split(U_BENCHMARKS["u_test"])
    st = _answer_stats(model, plan, ctx, [(r["instruction"], r["answer"]) for r in recs], codes)
    fam = np.array([r.get("family", "all") for r in recs])

    def score(exact, n_tokens, n_correct, logprob, fam):
        out = S.token_scores(exact, n_tokens, n_correct, logprob)
        out["by_family"] = {f: S.token_scores(exact[fam == f], n_tokens[fam == f], n_correct[fam == f],
                                              logprob[fam == f]) for f in sorted(set(fam.tolist()))}
        return out
    return S.by_subset(recs, score, fam=fam, **st)


U_SCORERS = {"gqa": score_gqa, "pope": score_pope, "mme": score_mme, "seed": score_seed,
             "u_test": score_u_test}


def evaluate_u(model, plan, ctx: EvalContext, timing: dict | None = None) -> dict:
    """All U benchmarks for one model under one layer plan."""
    out = {}
    for name, fn in U_SCORERS.items():
        t0 = time.perf_counter()
        out[name] = fn(model, plan, ctx)
        if timing is not None:
            timing[f"u_{name}_s"] = time.perf_counter() - t0
    return out


# ============================================================== generation

def g_nll(model, plan, ctx) -> dict:
    """Teacher-forced NLL of the held-out image tokens, per subset (nats / image token)."""
    recs, codes = ctx.split("g_test")
    split = tokenize_split("g", recs, codes, ctx.tokenizer, ctx.vocab, ctx.system_prompt, loss_on="output")
    start = ctx.vocab.image_token_start
    st = batched(model, split, plan, ctx,
                 lambda lg, lb: dict(zip(("total", "count"), S.image_token_nll(lg, lb, start))))

    def score(total, count):
        n = int(count.sum())
        # Standard error over images (the independent items): what a difference between two
        # runs' NLL must exceed before it counts (uvlm.paper.results.seed_noise).
        per_image = total[count > 0] / count[count > 0]
        se = float(per_image.std(ddof=1) / np.sqrt(per_image.size)) if per_image.size > 1 else None
        return {"nll": float(total.sum()) / n if n else None, "se": se, "n_images": int(count.size),
                "n_tokens": n}
    return S.by_subset(recs, score, total=st["total"], count=st["count"])


def sample_codes(model, plan, ctx, prompts: list[str], grid: tuple[int, int], seed: int) -> np.ndarray:
    """Image codes (N, h, w) sampled for text prompts under ``plan``; fixed by ``seed``."""
    from uvlm.model.generate import generate_images
    e = ctx.ecfg
    prompt_ids = [g_prompt_ids(ctx.tokenizer, ctx.system_prompt, p) for p in prompts]
    # Guidance contrasts each prompt with the empty one (system prompt, no caption, <boi>).
    uncond = g_prompt_ids(ctx.tokenizer, ctx.system_prompt, "") if e.cfg_scale is not None else None
    gen = torch.Generator(device=ctx.device).manual_seed(int(seed))
    model.eval()
    with torch.no_grad():
        codes = generate_images(model, prompt_ids, n_image_tokens=grid[0] * grid[1], plan=plan,
                                temperature=e.temperature, top_k=e.top_k, cfg_scale=e.cfg_scale,
                                uncond_prompt_ids=uncond, generator=gen, batch_size=e.batch_size)
    return codes.cpu().numpy().reshape(len(prompts), *grid)


def generation_metrics(recs, generated, real, recon, probe) -> dict:
    """FD(generated, real), the reconstruction floor FD(recon, real) and attribute accuracy, per subset."""
    from uvlm.probe.model import prompt_attribute_report
    f_gen, f_real, f_rec = probe.features(generated), probe.features(real), probe.features(recon)

    def attr(images, idx):
        if not len(idx):
            return {"object_accuracy": None, "image_accuracy": None}
        return prompt_attribute_report(probe, images[idx], [recs[i] for i in idx])

    out = {}
    for name, idx in S.subset_indices(recs).items():
        gen_a, real_a, rec_a = attr(generated, idx), attr(real, idx), attr(recon, idx)
        pct = (lambda v: None if v is None else 100.0 * v)
        out[name] = {"fd": feature_frechet_distance(f_gen[idx], f_real[idx]),
                     "fd_recon_floor": feature_frechet_distance(f_rec[idx], f_real[idx]),
                     "attr_acc": pct(gen_a["object_accuracy"]),
                     "attr_image_acc": pct(gen_a["image_accuracy"]),
                     "attr_acc_real": pct(real_a["object_accuracy"]),
                     "attr_acc_recon": pct(rec_a["object_accuracy"]),
                     "n": int(len(idx))}
    return out


def evaluate_g(model, plan, ctx: EvalContext, seed: int, timing: dict | None = None):
    """G metrics for one model under one layer plan -> (metrics, sample dict for figures)."""
    timing = {} if timing is None else timing
    t0 = time.perf_counter()
    out = {"nll": g_nll(model, plan, ctx)}
    timing["g_nll_s"] = time.perf_counter() - t0

    recs, codes = ctx.split("g_test")
    n = min(ctx.ecfg.n_gen, len(recs))
    recs, codes = recs[:n], codes[:n]
    t0 = time.perf_counter()
    gen_codes = sample_codes(model, plan, ctx, [r["prompt"] for r in recs], codes.shape[1:], seed)
    timing["g_sample_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vq, probe = ctx.scorers()
    real = load_npz(ctx.world_dir / "g_test.npz", stage="data")["images"][:n]
    generated, recon = vq.decode(gen_codes), vq.decode(codes)
    out["generation"] = generation_metrics(recs, generated, real, recon, probe)
    out["n_gen"] = n
    timing["g_score_s"] = time.perf_counter() - t0
    k = min(ctx.ecfg.n_figure_samples, n)
    samples = {"images": generated[:k], "real": real[:k], "codes": gen_codes[:k].astype(np.int32),
               "prompts": np.array([r["prompt"] for r in recs[:k]], dtype=str)}
    return out, samples


# ============================================================== one run

def eval_dir(cfg, run_name: str, seed: int) -> Path:
    """Where evaluation writes (stage eval@RUN): never inside the training stage's output."""
    return cfg.paths.data / "evals" / run_name / f"seed{seed}"


def _load_model(path: Path, run_name: str, plan, device):
    from uvlm.model.decoder import UVLM
    if not path.exists():
        raise MissingInputError(path, f"train@{run_name}")
    try:
        model = UVLM.from_pretrained(path, plan=plan)
    except CheckpointError as e:
        raise CheckpointError(f"{e} (stage train@{run_name})") from e
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"model directory '{path}' (stage train@{run_name}) cannot be loaded: {e}") from e
    return model.to(device).eval()


def evaluate_run(cfg, run_name: str, seed: int, out_path=None, ctx: EvalContext | None = None,
                 progress: bool = True) -> dict:
    """Evaluate one trained run at one seed and write its metrics JSON (atomically).

    U metrics use the ``best_u`` model under the run's U plan, G metrics the
    ``best_g`` model under its G plan; an isolated run is evaluated on its task
    only. Writes ``data/evals/<run>/seed<S>/metrics.json`` (or ``out_path``) and,
    for G, ``samples.npz`` (generated images, their real counterparts, codes and
    prompts, for figures) in that same evaluation dir.
    """
    with cpu_threads(cfg.eval.threads):
        return _evaluate_run(cfg, run_name, seed, out_path, ctx, progress)


def _evaluate_run(cfg, run_name, seed, out_path, ctx, progress) -> dict:
    from uvlm.train.setup import run_plans, tasks_of
    t_start = time.perf_counter()
    spec = cfg.run(run_name)
    rdir = run_dir(cfg, run_name, seed)
    summary = read_json(rdir / "train_summary.json", stage=f"train@{run_name}")
    ctx = ctx or EvalContext(cfg)
    plans = run_plans(cfg, spec)
    timing: dict = {}
    metrics = {"run": run_name, "seed": seed, "preset": cfg.preset, "spec": _spec_dict(spec),
               "checkpoints": {}}
    for task in tasks_of(spec):
        best = summary.get("best", {}).get(task, {})
        t0 = time.perf_counter()
        model = _load_model(rdir / f"best_{task}", run_name, plans[task], ctx.device)
        timing[f"load_{task}_s"] = time.perf_counter() - t0
        metrics["checkpoints"][task] = {"dir": f"best_{task}", "step": best.get("step"),
                                        "val_loss": best.get("val_loss"), "steps_total": summary.get("steps")}
        if progress:
            print(f"[eval {run_name}/seed{seed}] {task} (checkpoint step {best.get('step')})", flush=True)
        if task == "u":
            metrics["u"] = evaluate_u(model, plans["u"], ctx, timing)
        else:
            metrics["g"], samples = evaluate_g(model, plans["g"], ctx, seed, timing)
            save_npz(eval_dir(cfg, run_name, seed) / "samples.npz", **samples)
            metrics["samples"] = "samples.npz"
    timing["total_s"] = time.perf_counter() - t_start
    metrics["timing"] = {k: round(v, 3) for k, v in timing.items()}
    metrics["device"] = str(ctx.device)
    metrics["table"] = table(metrics)
    write_json(out_path or eval_dir(cfg, run_name, seed) / "metrics.json", metrics)
    return metrics


def _spec_dict(spec) -> dict:
    import dataclasses
    return dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else dict(spec)


def evaluate_seeds(cfg, run_name: str, seeds=None, out_path=None, progress: bool = True) -> dict:
    """Every seed of a run, plus their mean / std / n; written to ``out_path`` if given."""
    seeds = list(cfg.train.seeds if seeds is None else seeds)
    ctx = EvalContext(cfg)
    per_seed = {str(s): evaluate_run(cfg, run_name, s, ctx=ctx, progress=progress) for s in seeds}
    from uvlm.core.devices import machine
    out = {"run": run_name, "seeds": seeds, "aggregate": aggregate_seeds(list(per_seed.values())),
           "per_seed": per_seed, "machine": machine()}
    if out_path is not None:
        write_json(out_path, out)
    return out


def table_frame(result: dict, subsets=S.SUBSETS):
    """A pandas DataFrame (rows: subsets, columns: paper columns) of :func:`evaluate_seeds` output.

    Cells read ``mean ± std`` with several seeds, else the single value.
    """
    import pandas as pd
    agg = result["aggregate"]["table"]
    rows = {}
    for subset in subsets:
        row = {}
        for col, v in agg[subset].items():
            if not isinstance(v, dict) or v.get("mean") is None:
                continue
            row[col] = f"{v['mean']:.2f}" + (f" ± {v['std']:.2f}" if v.get("std") is not None else "")
        rows[subset] = row
    return pd.DataFrame(rows).T
