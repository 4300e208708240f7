"""The results stage: every run's metrics and training summary in one tidy table, and the
counted-FLOPs and measured-time ratios of each run to its baseline. The verdicts on the
paper's claims are built from these in uvlm.paper.claims, the tables in uvlm.paper.tables.

Inputs (all written by earlier stages):

* ``figures/metrics/<run>.json``  (eval@RUN): each seed's scores, read into the paper
  columns per subset by :func:`uvlm.eval.scoring.table`; the item counts beside each score give
  its sampling noise (:func:`noise_table`);
* ``data/runs/<run>/seed<S>/train_summary.json`` (train@RUN): measured training time;
* ``figures/metrics/attention.json`` (attention): the verdict on the asymmetry (C1);
* the training splits and the run grid, for the counted FLOPs of each run's layer plans.

Baselines: U-only runs are compared with the U-only baseline, G-only runs with the
G-only baseline, unified runs with the unified baseline (the run of the same task with
``accel: base``).

How large a difference between two runs must be to count (:func:`compare`) is decided here,
beside the noise it is measured against; ``uvlm.paper.claims.VERDICT_RULE`` states that rule in words,
and the claims and the synergy figure both use :func:`compare`, so they cannot disagree.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from uvlm.core.errors import MissingInputError
from uvlm.core.io import read_json
from uvlm.eval import scoring as S
from uvlm.model import plans as P

SUBSETS = S.SUBSETS
METRICS = tuple(S.COLUMNS)
LOWER_IS_BETTER = {"FID", "FID-floor", "G-NLL", "Caption-NLL", "U-NLL"}
# What "the U side" and "the G side" of a comparison mean in the claims (fixed before
# any result was seen): the paper's U benchmark families and its G quality, as analogues.
U_HEADLINE = ("GQA", "MME-C", "MME-P", "POPE-F1", "SEED")
G_HEADLINE = ("FID", "Attr-Acc", "G-NLL")
# train_summary.json key -> our metric name (subset "all")
TRAIN_KEYS = {"train_time_s": "train_time_s", "mean_step_time_s": "step_time_s",
              "tokens_per_s": "tokens_per_s", "flops_total": "train_flops"}
RATIOS = {"train_time_s": "time_rel", "step_time_s": "step_time_rel", "train_flops": "train_flops_rel"}


# ============================================================== the run grid

def grid_runs(cfg) -> dict:
    """The runs that play the paper's parts: every run but the step-matched controls (a base run
    trained for more epochs), which are only ever compared against."""
    return {n: s for n, s in cfg.runs.items() if s.steps_scale == 1}


def baseline_of_task(cfg, task: str) -> str | None:
    """The run of ``task`` with ``accel: base`` (``<task>_base`` if there are several)."""
    names = [n for n, s in grid_runs(cfg).items() if s.task == task and s.accel == "base"]
    return f"{task}_base" if f"{task}_base" in names else (names[0] if names else None)


def baseline_of(cfg, run: str) -> str | None:
    return baseline_of_task(cfg, cfg.run(run).task)


def run_label(spec, k: int | None) -> str:
    where = {"u": "U-only", "g": "G-only", "ug": "Unified"}[spec.task]
    if spec.steps_scale != 1:
        where += f", {spec.steps_scale:g}x epochs"
    if spec.accel == "base":
        return f"Baseline ({where})"
    if spec.accel == "himix":
        return f"HiMix ({where})"
    if spec.accel == "hmgen":
        return f"HMGen K={k} ({where})"
    return f"HiMix-HMGen (Share {'All' if spec.share == 'all' else 'Partial'}, K={k})"


def run_order(spec) -> tuple:
    """Table order: baselines first (U, G, unified), then HiMix, HMGen, both (share all, partial)."""
    accel = ("base", "himix", "hmgen", "himix+hmgen").index(spec.accel)
    return (accel, ("u", "g", "ug").index(spec.task), spec.share != "all", spec.hmgen_fraction or spec.hmgen_k or 0,
            spec.steps_scale)


def layer_plans(cfg) -> dict:
    """{run: {task: plan}}: the plans the runs trained and were evaluated with."""
    from uvlm.train.setup import run_plans
    order = sorted(cfg.runs, key=lambda r: run_order(cfg.runs[r]))
    return {run: run_plans(cfg, cfg.runs[run]) for run in order}


def roles(cfg) -> dict:
    """Which run plays which part in the claims, found by spec (not by name)."""
    from uvlm.train.setup import accel_settings

    grid = grid_runs(cfg)

    def find(task, accel, share="all"):
        names = [n for n, s in grid.items() if (s.task, s.accel, s.share) == (task, accel, share)]
        return names[0] if names else None

    def longer(task):  # an isolated baseline trained for more epochs: the step-matched control
        names = [n for n, s in cfg.runs.items() if (s.task, s.accel) == (task, "base") and s.steps_scale > 1]
        return names[0] if names else None
    k = lambda n: accel_settings(cfg, cfg.run(n))[1].k
    hmgen = sorted((n for n, s in grid.items() if (s.task, s.accel) == ("g", "hmgen")), key=k)
    out = {"u_base": baseline_of_task(cfg, "u"), "g_base": baseline_of_task(cfg, "g"),
           "ug_base": baseline_of_task(cfg, "ug"), "u_himix": find("u", "himix"), "g_hmgen": hmgen,
           "shareall": find("ug", "himix+hmgen", "all"), "sharepartial": find("ug", "himix+hmgen", "partial"),
           "u_base_long": longer("u"), "g_base_long": longer("g")}
    # The isolated HMGen run matching the unified runs' K (their G plan), for C5 and C6.
    ref = out["shareall"] or out["sharepartial"]
    same_k = [n for n in hmgen if ref and k(n) == k(ref)]
    out["g_hmgen_matched"] = same_k[0] if same_k else (hmgen[0] if hmgen else None)
    return out


# ============================================================== counted FLOPs of the plans

def sample_shapes(split, image_token_start: int) -> np.ndarray:
    """(N, 3) int array of (text tokens T, image tokens M, loss tokens) per row of a TokenizedSplit."""
    ids, lengths = split.input_ids, split.lengths.numpy()
    m = (ids >= image_token_start).sum(1).numpy()
    loss = (split.labels != -100).sum(1).numpy()
    return np.stack([lengths - m, m, loss], axis=1).astype(np.int64)


def training_shapes(cfg, vocab=None, tokenizer=None) -> dict:
    """{task: sample_shapes} of the training splits (what the runs trained on)."""
    from uvlm.tokens.sequences import load_split
    from uvlm.train.setup import TASK_SPLITS, vocab_for
    if vocab is None or tokenizer is None:
        vocab, tokenizer = vocab_for(cfg)
    return {t: sample_shapes(load_split(cfg.paths.data, t, splits[0], tokenizer, vocab, cfg.world.system_prompt,
                                        cfg.train.loss_on), vocab.image_token_start)
            for t, splits in TASK_SPLITS.items()}


def mean_plan_flops(model_cfg, plan, shapes: np.ndarray, backward: bool = True) -> float:
    """Mean over samples of the exact per-sample FLOPs (``flops.plan_flops``), each at its own length."""
    from uvlm.model.flops import plan_flops
    rows, counts = np.unique(np.asarray(shapes), axis=0, return_counts=True)
    total = sum(int(c) * plan_flops(model_cfg, plan, int(T), int(M), float(L), backward)["total"]
                for (T, M, L), c in zip(rows, counts))
    return float(total) / float(counts.sum())


def task_weights(cfg, spec, sizes: dict) -> dict:
    """Share of training samples per task: one for an isolated run, the step mix for a unified one."""
    from uvlm.train.batching import unified_steps
    if spec.task != "ug":
        return {spec.task: 1.0}
    tc = cfg.train
    steps = unified_steps(sizes["u"], sizes["g"], tc.batch_size, tc.cap_epochs * spec.steps_scale, tc.mix_ratio)
    total = sum(steps.values())
    return {t: n / total for t, n in steps.items()}


def run_info(cfg, shapes: dict | None = None, vocab=None) -> dict:
    """{run: label, spec, K, plan, counted FLOPs per training sample and relative to the baseline}.

    ``shapes`` ({task: (N, 3) array}) and ``vocab`` come from the data when not given.
    """
    from uvlm.model.flops import paper_estimate
    from uvlm.train.setup import accel_settings, model_config, run_plans, vocab_for
    if vocab is None:
        vocab, tokenizer = vocab_for(cfg)
        shapes = shapes if shapes is not None else training_shapes(cfg, vocab, tokenizer)
    elif shapes is None:
        shapes = training_shapes(cfg, vocab)
    sizes = {t: len(s) for t, s in shapes.items()}
    info = {}
    for run, spec in cfg.runs.items():
        himix, hmgen = accel_settings(cfg, spec)
        plans = run_plans(cfg, spec)
        mcfg = model_config(cfg, vocab, spec)
        w = task_weights(cfg, spec, sizes)
        per_task = {t: mean_plan_flops(mcfg, plans[t], shapes[t]) for t in plans}
        mean_tm = {t: shapes[t][:, :2].mean(0) for t in plans}
        paper = {t: paper_estimate(mcfg, plans[t], float(mean_tm[t][0]), float(mean_tm[t][1]))["total"]
                 for t in plans}
        g_plan = plans.get("g")
        shallow = [i for i, m in enumerate(g_plan) if m.mode == "shallow"] if g_plan else []
        info[run] = {"label": run_label(spec, len(shallow)), "task": spec.task, "accel": spec.accel,
                     "epochs_factor": spec.steps_scale,
                     "share": spec.share, "baseline": baseline_of(cfg, run),
                     "hmgen_k": len(shallow) if "hmgen" in spec.accel else None,
                     "shallow_layers": shallow if "hmgen" in spec.accel else None,
                     "himix_start_layer": himix.start_layer if "himix" in spec.accel else None,
                     "plans": {t: P.describe_plan(p) for t, p in plans.items()},
                     "task_weights": w, "flops_per_task": per_task,
                     "flops_per_sample": sum(w[t] * per_task[t] for t in w),
                     "paper_formula_per_sample": sum(w[t] * paper[t] for t in w)}
    info = dict(sorted(info.items(), key=lambda kv: run_order(cfg.runs[kv[0]])))
    labels = [i["label"] for i in info.values()]
    for run, i in info.items():  # two runs with one plan (say, equal K at a small depth) stay apart
        if labels.count(i["label"]) > 1:
            i["label"] += f" [{run}]"
    for run, i in info.items():
        base = info.get(i["baseline"]) if i["baseline"] else None
        i["flops_rel"] = i["flops_per_sample"] / base["flops_per_sample"] if base else None
        i["flops_rel_paper_formula"] = (i["paper_formula_per_sample"] / base["paper_formula_per_sample"]
                                        if base else None)
    return info


# ============================================================== metrics + training summaries

def read_run_metrics(cfg, strict: bool = True) -> dict:
    """{run: its figures/metrics/<run>.json}; ``strict``: a missing file raises MissingInputError."""
    out = {}
    for run in cfg.runs:
        path = cfg.paths.figures / "metrics" / f"{run}.json"
        if path.exists():
            out[run] = read_json(path)
        elif strict:
            raise MissingInputError(path, f"eval@{run}")
    return out


def tidy_frame(cfg, strict: bool = True, run_metrics: dict | None = None):
    """One row per (run, seed, subset, metric): the paper columns of every run and seed, plus
    measured training time / throughput / logged FLOPs (subset "all") and their ratios to the
    baseline at the same seed. ``strict``: a missing metrics file raises MissingInputError.
    ``run_metrics``: :func:`read_run_metrics`, when the caller has read them already."""
    import pandas as pd

    from uvlm.train.setup import run_dir
    if run_metrics is None:
        run_metrics = read_run_metrics(cfg, strict)
    rows = []
    for run, result in run_metrics.items():
        for seed_key, metrics in result.get("per_seed", {}).items():
            seed = int(seed_key)
            tab = S.table(metrics)  # from the raw scores, so a column added later reads older records too
            for subset in SUBSETS:
                for metric, value in (tab.get(subset) or {}).items():
                    if value is not None:
                        rows.append((run, seed, subset, metric, float(value)))
            summary_path = run_dir(cfg, run, seed) / "train_summary.json"
            if summary_path.exists():
                summary = read_json(summary_path)
                for key, metric in TRAIN_KEYS.items():
                    if summary.get(key) is not None:
                        rows.append((run, seed, "all", metric, float(summary[key])))
            elif strict:
                raise MissingInputError(summary_path, f"train@{run}")
    frame = pd.DataFrame(rows, columns=["run", "seed", "subset", "metric", "value"])
    return pd.concat([frame, _ratio_rows(cfg, frame)], ignore_index=True)


def _ratio_rows(cfg, frame):
    import pandas as pd
    eff = frame[frame.metric.isin(list(RATIOS))].set_index(["run", "seed", "metric"])["value"]
    rows = []
    for (run, seed, metric), value in eff.items():
        base = baseline_of(cfg, run)
        if base is not None and (base, seed, metric) in eff.index and eff[(base, seed, metric)] > 0:
            rows.append((run, seed, "all", RATIOS[metric], value / eff[(base, seed, metric)]))
    return pd.DataFrame(rows, columns=frame.columns)


def summarise(frame):
    """Mean, sample std (ddof 1; None below two seeds) and n per (run, subset, metric)."""
    g = frame.groupby(["run", "subset", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].astype(object).where(out["n"] >= 2, None)
    return out


def lookup(summary) -> dict:
    """{(run, subset, metric): (mean, std, n)} of a :func:`summarise` frame."""
    return {(r.run, r.subset, r.metric): (float(r.mean), None if r.std is None else float(r.std), int(r.n))
            for r in summary.itertuples(index=False)}


def per_seed_values(frame) -> dict:
    """{(run, subset, metric): {seed: value}} of a :func:`tidy_frame`: what the paired
    comparisons of :func:`compare` read."""
    out = defaultdict(dict)
    for r in frame.itertuples(index=False):
        out[(r.run, r.subset, r.metric)][int(r.seed)] = float(r.value)
    return dict(out)


def stats_of(values: dict) -> dict:
    """{key: (mean, sample std or None below two seeds, n)} of {key: {seed: value}}, as :func:`lookup`."""
    out = {}
    for key, by_seed in values.items():
        v = np.asarray(list(by_seed.values()), dtype=float)
        out[key] = (float(v.mean()), float(v.std(ddof=1)) if len(v) >= 2 else None, len(v))
    return out


# ============================================================== best checkpoint against the step cap

AT_CAP, BEFORE_CAP, UNKNOWN = "at cap", "before cap", "unknown"


class BestAtCapWarning(UserWarning):
    """A run's best checkpoint sits at its step cap: the cap, not convergence, may have chosen it."""


def best_vs_cap(summary: dict) -> dict:
    """{task: {"status", "best_step", "cap_steps", "eval_every", "stopped_early"}} of one seed's
    ``train_summary.json``.

    The best checkpoint is "at cap" when it comes from the last evaluation before the step cap
    (best step > cap_steps - eval_every): validation loss was still falling at the last look,
    so a longer run might have found a better checkpoint and the cap, not convergence, decided
    the result. Summaries written before the cap was recorded lack cap_steps / eval_every; their
    status is "unknown", never guessed from the steps they trained.
    """
    cap, every = summary.get("cap_steps"), summary.get("eval_every")
    out = {}
    for task, best in sorted((summary.get("best") or {}).items()):
        step = (best or {}).get("step")
        known = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (cap, every, step))
        status = UNKNOWN if not known else AT_CAP if step > cap - every else BEFORE_CAP
        out[task] = {"status": status, "best_step": step, "cap_steps": cap, "eval_every": every,
                     "stopped_early": summary.get("stopped_early")}
    return out


def convergence_table(cfg, runs=None) -> dict:
    """{run: {seed: :func:`best_vs_cap`}} of every training summary there is (a seed without
    one is left out: :func:`tidy_frame` already names a missing summary)."""
    from uvlm.train.setup import run_dir
    out = {}
    for run in (cfg.runs if runs is None else runs):
        for seed in cfg.train.seeds:
            path = run_dir(cfg, run, seed) / "train_summary.json"
            if path.exists():
                out.setdefault(run, {})[int(seed)] = best_vs_cap(read_json(path))
    return out


def _cap_entries(convergence: dict, runs=None):
    for run, by_seed in convergence.items():
        if runs is None or run in runs:
            for seed, tasks in sorted(by_seed.items(), key=lambda kv: int(kv[0])):
                yield run, int(seed), tasks


def at_cap(convergence: dict, runs=None) -> list[str]:
    """``["u_base seed 0 (U)", ...]``: each run, seed and task whose best checkpoint is at the cap."""
    return [f"{run} seed {seed} ({task.upper()})" for run, seed, tasks in _cap_entries(convergence, runs)
            for task, e in tasks.items() if e["status"] == AT_CAP]


def cap_unknown(convergence: dict, runs=None) -> list[str]:
    """``["u_base seed 0", ...]``: the run/seeds whose summary does not say where the cap was."""
    return [f"{run} seed {seed}" for run, seed, tasks in _cap_entries(convergence, runs)
            if not tasks or any(e["status"] == UNKNOWN for e in tasks.values())]


def cap_text(by_seed: dict) -> str:
    """One run's table cell: "no", the seeds (and tasks) at the cap, or "unknown"."""
    if not by_seed:
        return "unknown"
    conv = {"run": by_seed}
    flagged = [f"{seed} ({task.upper()})" for _, seed, tasks in _cap_entries(conv)
               for task, e in tasks.items() if e["status"] == AT_CAP]
    unknown = len(cap_unknown(conv))
    if unknown == len(by_seed):
        return "unknown"
    text = f"seed{'s' if len(flagged) > 1 else ''} {', '.join(flagged)}" if flagged else "no"
    return text + (f"; {unknown} unknown" if unknown else "")


def warn_best_at_cap(convergence: dict) -> str | None:
    """Warn (:class:`BestAtCapWarning`) about every best checkpoint at its step cap; the message, or None."""
    flagged = at_cap(convergence)
    if not flagged:
        return None
    msg = (f"best checkpoint at the step cap (best step > cap_steps - eval_every) for {', '.join(flagged)}: "
           "validation loss was still falling at the last evaluation, so the cap, not convergence, chose "
           "these checkpoints; a longer cap (train.max_epochs) may change the scores compared here.")
    warnings.warn(msg, BestAtCapWarning, stacklevel=2)
    return msg


# ============================================================== sampling noise of the test items

# Percentages over independent items: the value's dict also holds the item count "n".
# Attr-Acc is a share of prompt-named objects, but only the image count is saved; objects of
# one image are not independent, and counting images (fewer items) overstates the noise.
# POPE-Acc is the mean of the samplings' accuracies over all n POPE items: the pooled accuracy
# when the samplings are of one size (as the benchmark builds them).
PROPORTIONS = ("GQA", "POPE-A", "POPE-P", "POPE-R", "POPE-Acc", "SEED", "Attr-Acc")
MME_CATEGORIES = {"MME-P": "perception", "MME-C": "reasoning"}


def proportion_se(pct, n) -> float | None:
    """Standard error in points of a percentage ``pct`` measured on ``n`` independent items."""
    if pct is None or not n:
        return None
    p = min(max(pct / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def mme_se(subtasks: dict, category: str) -> float | None:
    """SE of an MME category score, the sum over its subtasks of acc + acc+ (points).

    acc and acc+ of one subtask come from the same questions, so their SEs are added
    (as if perfectly correlated: an upper bound); subtasks have their own items, so
    their variances add.
    """
    parts = []
    for sub in subtasks.values():
        if sub.get("category") != category:
            continue
        se_acc, se_plus = proportion_se(sub.get("acc"), sub.get("n")), proportion_se(sub.get("acc_plus"),
                                                                                     sub.get("n_pairs"))
        if se_acc is None or se_plus is None:
            return None
        parts.append(se_acc + se_plus)
    return math.sqrt(sum(v * v for v in parts)) if parts else None


def f1_se(scores: dict) -> float | None:
    """Delta-method SE (points) of one POPE sampling's F1, from its saved confusion counts.

    F1 = 2 TP / (2 TP + FP + FN) = 2x / (1 + x) with x = TP / (TP + FP + FN), a proportion
    over the m items that are not true negatives; so SE(F1) = 2 / (1 + x)^2 * SE(x).
    The counts are rebuilt from n, the share of "yes" answers, precision and accuracy.
    """
    n = scores.get("n")
    if not n or any(scores.get(k) is None for k in ("acc", "precision", "yes_ratio")):
        return None
    pred_yes = round(scores["yes_ratio"] * n / 100.0)
    tp = round(scores["precision"] * pred_yes / 100.0)
    m = n - (round(scores["acc"] * n / 100.0) - tp)  # all items but the true negatives
    if m <= 0:
        return None
    x = tp / m
    return 100.0 * 2.0 / (1.0 + x) ** 2 * math.sqrt(x * (1.0 - x) / m)


def pope_f1_se(pope: dict) -> float | None:
    """POPE-F1 is the mean of the samplings' F1 (disjoint items): SE = sqrt(sum SE^2) / k."""
    present = [pope[s] for s in S.POPE_SAMPLINGS if S.nested_get(pope, (s, "n"))]
    ses = [f1_se(p) for p in present]
    if not ses or any(v is None for v in ses):
        return None
    return math.sqrt(sum(v * v for v in ses)) / len(ses)


def seed_noise(metrics: dict) -> dict:
    """{(subset, metric): {"se", "n"} or {"floor"}}: the sampling noise of one seed's scores.

    FID has no item-level SE; its noise scale is the reconstruction floor (FD between the VQ
    reconstructions of the test images and the images): a gap smaller than what the tokenizer
    alone costs is not resolved. G-NLL's SE is over images (its tokens are not independent);
    metrics written before it was saved have none, and are then judged by sign.
    """
    out = {}
    for subset in SUBSETS:
        for metric in PROPORTIONS:
            task, bench, *rest = S.COLUMNS[metric]
            holder = S.nested_get(metrics, (task, bench, subset, *rest[:-1])) or {}
            se = proportion_se(holder.get(rest[-1]), holder.get("n"))
            if se is not None:
                out[(subset, metric)] = {"se": se, "n": int(holder["n"])}
        pope, mme = S.nested_get(metrics, ("u", "pope", subset)), S.nested_get(metrics, ("u", "mme", subset))
        se = pope_f1_se(pope) if pope else None
        if se is not None:
            out[(subset, "POPE-F1")] = {"se": se, "n": int(pope["n"])}
        for metric, category in MME_CATEGORIES.items():
            se = mme_se(mme.get("subtasks") or {}, category) if mme else None
            if se is not None:
                out[(subset, metric)] = {"se": se, "n": int(mme["n"])}
        nll = S.nested_get(metrics, ("g", "nll", subset)) or {}
        if nll.get("se") is not None:
            out[(subset, "G-NLL")] = {"se": float(nll["se"]), "n": int(nll["n_images"])}
        floor = S.nested_get(metrics, ("g", "generation", subset, "fd_recon_floor"))
        if floor is not None:
            out[(subset, "FID")] = {"floor": float(floor)}
    return out


def noise_table(cfg, run_metrics: dict | None = None) -> dict:
    """{(run, subset, metric): noise entry of :func:`seed_noise`}, averaged over seeds.

    Every seed is scored on the same test items, so averaging over seeds does not shrink
    this noise (unlike the spread over seeds): the mean SE is kept, not SE / sqrt(seeds).
    """
    if run_metrics is None:
        run_metrics = read_run_metrics(cfg, strict=False)
    entries = defaultdict(list)
    for run, result in run_metrics.items():
        for metrics in result.get("per_seed", {}).values():
            for (subset, metric), entry in seed_noise(metrics).items():
                entries[(run, subset, metric)].append(entry)
    return {key: _mean_entry(es) for key, es in entries.items()}


def _mean_entry(entries: list[dict]) -> dict:
    mean = {k: float(np.mean([e[k] for e in entries])) for k in entries[0]}
    return {k: int(round(v)) if k == "n" else v for k, v in mean.items()}


# ============================================================== comparing two runs

# What a difference between two runs must exceed to count; uvlm.paper.claims.VERDICT_RULE states
# this rule in words, and every verdict and the synergy figure's whiskers come from compare().
NOISE_Z = 2.0  # item floor = 2 SE of the difference: about a 95% two-sided test
# Two-sided 95% Student-t quantiles, degrees of freedom 1-30 (no scipy in the environment).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042)


def t95(df: int) -> float:
    """Two-sided 95% Student-t quantile for ``df`` >= 1 degrees of freedom (table to 30; beyond it
    the Cornish-Fisher expansion, within 1e-4)."""
    if df < 1:
        raise ValueError(f"a t quantile needs >= 1 degree of freedom, got {df}")
    if df <= len(T95):
        return T95[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def noise_floor(noise_a: dict | None, noise_b: dict | None) -> float | None:
    """The smallest difference item sampling alone does not explain (entries of
    :func:`noise_table`); None where either side has no estimate."""
    if not noise_a or not noise_b:
        return None
    if "floor" in noise_a and "floor" in noise_b:
        return max(noise_a["floor"], noise_b["floor"])
    if "se" in noise_a and "se" in noise_b:
        return NOISE_Z * math.hypot(noise_a["se"], noise_b["se"])
    return None


def compare(a: dict | None, b: dict | None, metric: str, noise_a: dict | None = None,
            noise_b: dict | None = None) -> dict:
    """Run a against run b on one metric and subset, by ``uvlm.paper.claims.VERDICT_RULE``.

    ``a`` / ``b``: {seed: value} of each run; ``noise_a`` / ``noise_b``: each run's item noise on
    this metric ({"se"} or {"floor"}, from :func:`noise_table`). ``gain`` > 0 means a is better.

    The seeds both runs have are paired (seed s against seed s: same initialisation seed, same
    test items), so what varies between them is only what the seed changes. With k >= 2 pairs the
    margin is the larger of the 95% t-interval half-width of the mean paired difference and the
    item floor. The interval measures how the difference moves with the training seed on these
    test items, and it already holds each model's own item noise (every seed errs on different
    items). The floor measures what a fresh draw of test items could move, which no number of
    seeds reveals because all seeds share the items. Each bounds a different source, so a
    difference must clear both; adding them would count the per-model item noise twice.
    With fewer than two pairs there is no interval and the item floor alone decides
    (``single_seed``); with no floor either, the sign does (``sign_only``).
    """
    if not a or not b:
        return {"outcome": "missing"}
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    paired = sorted(set(a) & set(b))
    va = np.asarray([a[s] for s in paired] if paired else list(a.values()), dtype=float)
    vb = np.asarray([b[s] for s in paired] if paired else list(b.values()), dtype=float)
    gain = sign * float(va.mean() - vb.mean())
    k = len(paired)
    interval = t95(k - 1) * float(np.std(sign * (va - vb), ddof=1)) / math.sqrt(k) if k >= 2 else None
    floor = noise_floor(noise_a, noise_b)
    limit = max(interval or 0.0, floor or 0.0)
    if abs(gain) > limit:
        outcome = "better" if gain > 0 else "worse"
    elif floor is not None and floor >= (interval or 0.0):
        outcome = "within noise"
    else:
        outcome = "equal" if interval is None else "within spread"
    return {"a": float(va.mean()), "b": float(vb.mean()), "gain": gain, "seeds": k, "interval": interval,
            "noise": floor, "limit": limit, "single_seed": interval is None,
            "sign_only": interval is None and floor is None, "outcome": outcome}


@dataclass
class Results:
    frame: object       # tidy per-seed DataFrame
    summary: object     # mean / std / n DataFrame
    stats: dict         # lookup of summary
    info: dict          # run_info (with "best_at_cap", the table cell of each run's convergence)
    roles: dict
    noise: dict = field(default_factory=dict)     # noise_table: item-sampling noise per (run, subset, metric)
    per_seed: dict = field(default_factory=dict)  # per_seed_values: {(run, subset, metric): {seed: value}}
    convergence: dict = field(default_factory=dict)  # convergence_table: best checkpoint vs step cap


def from_values(values: dict, info: dict, roles: dict, noise: dict | None = None,
                convergence: dict | None = None) -> Results:
    """Results from {(run, subset, metric): {seed: value}} alone (no files): for checks of the rule."""
    return Results(None, None, stats_of(values), info, roles, noise or {}, values, convergence or {})


def collect(cfg, strict: bool = True, info: dict | None = None) -> Results:
    run_metrics = read_run_metrics(cfg, strict)  # read once, for the scores and their noise
    frame = tidy_frame(cfg, strict, run_metrics)
    summary = summarise(frame)
    conv = convergence_table(cfg)
    info = info if info is not None else run_info(cfg)
    info = {run: {**i, "best_at_cap": cap_text(conv.get(run, {}))} for run, i in info.items()}
    warn_best_at_cap(conv)  # shown where the results stage runs (notebook 07's output, rescore)
    return Results(frame, summary, lookup(summary), info, roles(cfg), noise_table(cfg, run_metrics),
                   per_seed_values(frame), conv)


def read_attention(cfg) -> dict | None:
    path = cfg.paths.figures / "metrics" / "attention.json"
    return read_json(path) if path.exists() else None


# ============================================================== derived views for figures

def synergy_comparisons(rl: dict) -> list[tuple]:
    """(name, unified run, {task: isolated run}) for C4-C6, then, where the grid has them, the
    unified baseline against the step-matched controls (isolated runs with its optimizer steps)."""
    acc_iso = {"u": rl["u_himix"], "g": rl["g_hmgen_matched"]}
    out = [("unified vs isolated (base)", rl["ug_base"], {"u": rl["u_base"], "g": rl["g_base"]}),
           ("share all vs isolated (accelerated)", rl["shareall"], acc_iso),
           ("share partial vs isolated (accelerated)", rl["sharepartial"], acc_iso)]
    if rl.get("u_base_long") or rl.get("g_base_long"):
        out.append(("unified vs isolated (base, step-matched)", rl["ug_base"],
                    {"u": rl.get("u_base_long"), "g": rl.get("g_base_long")}))
    return out


def synergy_frame(res: Results):
    """Unified minus isolated per metric and subset, by :func:`compare`: ``gain`` is signed so that
    positive = unified better; ``limit`` is what it must exceed to count (the larger of the seed
    interval ``err`` and the item floor ``noise``)."""
    import pandas as pd

    rows = []
    for name, uni, iso in synergy_comparisons(res.roles):
        for task, metrics in (("u", U_HEADLINE), ("g", G_HEADLINE)):
            for metric in metrics:
                for subset in ("in_dist", "transfer"):
                    c = compare(res.per_seed.get((uni, subset, metric)),
                                res.per_seed.get((iso[task], subset, metric)), metric,
                                res.noise.get((uni, subset, metric)), res.noise.get((iso[task], subset, metric)))
                    if c["outcome"] != "missing":
                        rows.append({"comparison": name, "task": task, "metric": metric, "subset": subset,
                                     "gain": c["gain"], "err": c["interval"], "noise": c["noise"],
                                     "limit": c["limit"], "outcome": c["outcome"], "unified": c["a"],
                                     "isolated": c["b"], "n": c["seeds"],
                                     "lower_is_better": metric in LOWER_IS_BETTER})
    return pd.DataFrame(rows)


def efficiency_frame(res: Results):
    """Per accelerated run: counted FLOPs ratio (plans; and as logged in training) vs measured time ratio."""
    import pandas as pd
    rows = []
    for run, i in res.info.items():
        if i["accel"] == "base":
            continue
        t, lf = res.stats.get((run, "all", "time_rel")), res.stats.get((run, "all", "train_flops_rel"))
        rows.append({"run": run, "label": i["label"], "flops_rel": i["flops_rel"],
                     "train_flops_rel": lf[0] if lf else None, "time_rel": t[0] if t else None,
                     "time_rel_std": t[1] if t else None, "n": t[2] if t else 0})
    return pd.DataFrame(rows)


def info_frame(res: Results):
    """One row per run: label, baseline, K, counted FLOPs per sample and relative (exact, and the paper's formula)."""
    import pandas as pd
    return pd.DataFrame({run: {"label": i["label"], "baseline": i["baseline"], "K": i["hmgen_k"],
                               "FLOPs / sample": i["flops_per_sample"], "FLOPs rel": i["flops_rel"],
                               "paper's formula rel": i["flops_rel_paper_formula"]}
                         for run, i in res.info.items()}).T


def write_results_json(cfg, res: Results, claims: list, extra: dict | None = None, path=None):
    from uvlm.core.io import write_json
    path = path or cfg.paths.figures / "metrics" / "results.json"
    summary = [{"run": r.run, "subset": r.subset, "metric": r.metric, "mean": float(r.mean),
                "std": None if r.std is None else float(r.std), "n": int(r.n)}
               for r in res.summary.itertuples(index=False)]
    noise = [{"run": r, "subset": s, "metric": m, **e} for (r, s, m), e in res.noise.items()]
    convergence = [{"run": run, "seed": int(seed), "task": task, **e}
                   for run, by_seed in res.convergence.items() for seed, tasks in by_seed.items()
                   for task, e in tasks.items()]
    write_json(path, {"preset": cfg.preset, "seeds": list(cfg.train.seeds), "runs": res.info,
                      "roles": res.roles, "summary": summary, "noise": noise, "convergence": convergence,
                      "per_seed": res.frame.to_dict(orient="records"),
                      "claims": claims, **(extra or {})})
    return path

