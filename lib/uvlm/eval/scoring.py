"""Metric arithmetic of the benchmark analogues: pure functions, no model, no files.

Two layers:

* **From logits** (torch): per-row statistics of the answer tokens of a
  teacher-forced batch. Labels follow the training convention (aligned with the
  inputs, ``-100`` where there is no target); logits at position ``t`` predict
  token ``t + 1``, so both are shifted here exactly as the model's loss does.
* **From per-item results** (numpy): accuracies, POPE, MME and multiple-choice
  scores, the in-distribution / transfer split, and the mean / std over seeds.

Accuracies, precision, recall and F1 are percentages (0-100), as in the paper's
tables; an MME subtask scores acc + acc+ (up to 200). A metric of an empty set is
``None`` (JSON null), never a made-up number.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

IGNORE = -100
SUBSETS = ("all", "in_dist", "transfer")
POPE_SAMPLINGS = ("adversarial", "popular", "random")
# Table columns (the paper's names, then ours) -> where each sits in a run's metrics;
# the subset key goes after the benchmark name.
COLUMNS = {
    "GQA": ("u", "gqa", "acc"), "MME-C": ("u", "mme", "reasoning"), "MME-P": ("u", "mme", "perception"),
    "POPE-A": ("u", "pope", "adversarial", "acc"), "POPE-P": ("u", "pope", "popular", "acc"),
    "POPE-R": ("u", "pope", "random", "acc"), "POPE-F1": ("u", "pope", "f1"),
    # Beside F1, which alone cannot tell a model that answers from one that always says "yes":
    # POPE's accuracy (mean over the samplings) and its share of "yes" answers (the items are
    # half "yes", so 50% is unbiased and 0 or 100% is a constant answer).
    "POPE-Acc": ("u", "pope", "acc"), "POPE-Yes": ("u", "pope", "yes_ratio"), "SEED": ("u", "seed", "acc"),
    "Caption-NLL": ("u", "u_test", "by_family", "caption", "nll"), "U-NLL": ("u", "u_test", "nll"),
    "FID": ("g", "generation", "fd"), "FID-floor": ("g", "generation", "fd_recon_floor"),
    "Attr-Acc": ("g", "generation", "attr_acc"), "G-NLL": ("g", "nll", "nll"),
}


# ============================================================== from logits

def _shifted(logits: torch.Tensor, labels: torch.Tensor):
    """(predicting logits, their targets, target mask): position t predicts t + 1."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree "
                         "on (batch, length)")
    target = labels[:, 1:]
    return logits[:, :-1], target, target != IGNORE


def answer_stats(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Per-row statistics of the target tokens of a teacher-forced batch.

    Returns numpy arrays of length B:

    * ``exact``: every target token is the argmax of its predicting logits. With
      the answer ending in ``<eos>``, this is exactly "greedy decoding writes the
      gold answer and stops": greedy decoding emits the argmax at each step, and
      as long as every argmax so far equals the gold token its prefix *is* the
      teacher-forced prefix; the first disagreement is a wrong greedy token. So
      one batched forward pass replaces free-running decoding.
    * ``n_tokens``, ``n_correct``: target tokens and how many are the argmax.
    * ``logprob``: summed log-likelihood of the targets (nats).
    """
    lg, target, mask = _shifted(logits, labels)
    rows, cols = mask.nonzero(as_tuple=True)
    picked = lg[rows, cols].float()  # only target positions: (K, V)
    gold = target[rows, cols]
    logp = torch.log_softmax(picked, dim=-1).gather(1, gold[:, None])[:, 0]
    hit = (picked.argmax(-1) == gold).to(torch.float64)
    B = labels.shape[0]
    n_tokens = torch.zeros(B, dtype=torch.float64).index_add_(0, rows.cpu(), torch.ones_like(hit).cpu())
    n_correct = torch.zeros(B, dtype=torch.float64).index_add_(0, rows.cpu(), hit.cpu())
    logprob = torch.zeros(B, dtype=torch.float64).index_add_(0, rows.cpu(), logp.double().cpu())
    return {"exact": (n_correct == n_tokens).numpy() & (n_tokens > 0).numpy(),
            "n_tokens": n_tokens.numpy().astype(np.int64),
            "n_correct": n_correct.numpy().astype(np.int64),
            "logprob": logprob.numpy()}


def first_answer_margin(logits: torch.Tensor, labels: torch.Tensor, pos_id: int, neg_id: int) -> np.ndarray:
    """logit(pos) - logit(neg) where the first target token is predicted, per row.

    A forced choice between two one-token answers ("yes" / "no"), as POPE and MME
    read the first word of a reply. Rows without a target give NaN.
    """
    lg, _, mask = _shifted(logits, labels)
    has = mask.any(1)
    first = mask.to(torch.int8).argmax(1)  # index of the first True
    at = lg[torch.arange(lg.shape[0], device=lg.device), first].float()
    margin = (at[:, pos_id] - at[:, neg_id]).cpu().double()
    margin[~has.cpu()] = float("nan")
    return margin.numpy()


def image_token_nll(logits: torch.Tensor, labels: torch.Tensor, image_token_start: int):
    """Per-row (summed NLL in nats, count) over the targets that are image codes.

    Text targets and the closing ``<eoi>`` are left out, so the ratio of the sums
    is nats per image token.
    """
    lg, target, mask = _shifted(logits, labels)
    rows, cols = (mask & (target >= image_token_start)).nonzero(as_tuple=True)
    gold = target[rows, cols]
    nll = -torch.log_softmax(lg[rows, cols].float(), dim=-1).gather(1, gold[:, None])[:, 0]
    B = labels.shape[0]
    total = torch.zeros(B, dtype=torch.float64).index_add_(0, rows.cpu(), nll.double().cpu())
    count = torch.zeros(B, dtype=torch.int64).index_add_(0, rows.cpu(), torch.ones_like(rows).cpu())
    return total.numpy(), count.numpy()


# ============================================================== subsets

def subset_indices(records) -> dict:
    """{"all", "in_dist", "transfer"} -> row indices, from each record's ``transfer`` flag."""
    flags = np.array([bool(r.get("transfer", False)) for r in records], dtype=bool)
    idx = np.arange(len(records))
    return {"all": idx, "in_dist": idx[~flags], "transfer": idx[flags]}


def by_subset(records, score, **arrays) -> dict:
    """``score(**arrays restricted to the subset)`` for all / in_dist / transfer."""
    out = {}
    for name, idx in subset_indices(records).items():
        out[name] = score(**{k: _take(v, idx) for k, v in arrays.items()})
    return out


def _take(v, idx):
    if isinstance(v, np.ndarray):
        return v[idx]
    return [v[i] for i in idx]


# ============================================================== plain scores

def percent(hits) -> float | None:
    hits = np.asarray(hits, dtype=bool)
    return float(100.0 * hits.mean()) if hits.size else None


def accuracy(correct, groups=None) -> dict:
    """{"acc", "n"}, plus ``by_<group>`` accuracies when ``groups`` (name -> labels) is given."""
    correct = np.asarray(correct, dtype=bool)
    out = {"acc": percent(correct), "n": int(correct.size)}
    for gname, labels in (groups or {}).items():
        labels = np.asarray(labels)
        out[f"by_{gname}"] = {str(g): {"acc": percent(correct[labels == g]), "n": int((labels == g).sum())}
                              for g in sorted(set(labels.tolist()))}
    return out


def binary_scores(pred_pos, gold_pos) -> dict:
    """Accuracy, precision, recall, F1 (positive = "yes") and the share of "yes" predictions.

    With no positive prediction (or no positive item) precision / recall are 0,
    and so is F1: the usual zero-division convention, never NaN.
    """
    pred = np.asarray(pred_pos, dtype=bool)
    gold = np.asarray(gold_pos, dtype=bool)
    n = int(pred.size)
    if n == 0:
        return {"acc": None, "precision": None, "recall": None, "f1": None, "yes_ratio": None, "n": 0}
    tp = int((pred & gold).sum())
    fp = int((pred & ~gold).sum())
    fn = int((~pred & gold).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"acc": percent(pred == gold), "precision": 100 * precision, "recall": 100 * recall,
            "f1": 100 * f1, "yes_ratio": percent(pred), "n": n}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def pope_scores(pred_yes, gold_yes, sampling) -> dict:
    """Per-sampling binary scores, plus ``acc`` and ``f1`` averaged over the samplings present.

    The paper's POPE-A / POPE-P / POPE-R columns are the per-sampling accuracies and
    POPE-F1 is the mean of the three F1 scores.
    """
    pred = np.asarray(pred_yes, dtype=bool)
    gold = np.asarray(gold_yes, dtype=bool)
    sampling = np.asarray(sampling)
    out = {s: binary_scores(pred[sampling == s], gold[sampling == s]) for s in POPE_SAMPLINGS}
    present = [out[s] for s in POPE_SAMPLINGS if out[s]["n"]]
    out["acc"] = _mean(p["acc"] for p in present)
    out["f1"] = _mean(p["f1"] for p in present)
    out["yes_ratio"] = _mean(p["yes_ratio"] for p in present)
    out["n"] = int(pred.size)
    return out


def mme_scores(correct, subtask, category, pair_id, subtasks: dict | None = None) -> dict:
    """MME: per subtask acc (per question) + acc+ (per pair: every question right), in %.

    ``subtasks`` (name -> category) fixes which subtasks a category sums over; by
    default those seen in the data. A category whose subtask has no item in this
    set gets ``None``, since a sum over fewer subtasks is not comparable.
    Pairs are keyed by (subtask, pair_id).
    """
    correct = np.asarray(correct, dtype=bool)
    subtask = np.asarray(subtask).astype(str)
    category = np.asarray(category).astype(str)
    pair_id = np.asarray(pair_id)
    if subtasks is None:
        subtasks = {s: c for s, c in zip(subtask.tolist(), category.tolist())}
    per = {}
    for name in sorted(subtasks):
        sel = subtask == name
        pairs = defaultdict(list)
        for p, c in zip(pair_id[sel].tolist(), correct[sel].tolist()):
            pairs[p].append(c)
        acc = percent(correct[sel])
        acc_plus = percent([all(v) for v in pairs.values()])
        per[name] = {"category": subtasks[name], "acc": acc, "acc_plus": acc_plus,
                     "score": None if acc is None else acc + acc_plus,
                     "n": int(sel.sum()), "n_pairs": len(pairs)}
    out = {}
    for cat in sorted(set(subtasks.values())):
        scores = [per[s]["score"] for s in per if per[s]["category"] == cat]
        out[cat] = None if any(s is None for s in scores) else float(sum(scores))
        out[f"{cat}_max"] = 200 * len(scores)
    out["subtasks"] = per
    out["n"] = int(correct.size)
    return out


def multiple_choice(option_logprob, option_tokens, answer_index, groups=None) -> dict:
    """4-way choice by answer likelihood.

    ``acc`` (the headline) picks the option with the highest *summed*
    log-likelihood of its answer tokens including ``<eos>``: the probability that
    the model writes exactly that option and stops. The ``<eos>`` term is what lets
    a short option compete fairly with a longer option that extends it.
    ``acc_norm`` picks by the per-token mean instead (length-normalised), for
    reference. Ties go to the first option.
    """
    lp = np.asarray(option_logprob, dtype=np.float64)
    nt = np.asarray(option_tokens, dtype=np.float64)
    ans = np.asarray(answer_index, dtype=np.int64)
    if lp.size == 0:
        return {"acc": None, "acc_norm": None, "n": 0}
    hit = lp.argmax(1) == ans
    hit_norm = (lp / np.maximum(nt, 1)).argmax(1) == ans
    out = {"acc": percent(hit), "acc_norm": percent(hit_norm), "n": int(ans.size)}
    for gname, labels in (groups or {}).items():
        labels = np.asarray(labels)
        out[f"by_{gname}"] = {str(g): {"acc": percent(hit[labels == g]), "n": int((labels == g).sum())}
                              for g in sorted(set(labels.tolist()))}
    return out


def token_scores(exact, n_tokens, n_correct, logprob) -> dict:
    """Teacher-forced answer quality: exact match %, token accuracy %, NLL in nats / token."""
    exact = np.asarray(exact, dtype=bool)
    n_tok = int(np.sum(n_tokens))
    return {"exact_match": percent(exact),
            "token_acc": 100.0 * float(np.sum(n_correct)) / n_tok if n_tok else None,
            "nll": -float(np.sum(logprob)) / n_tok if n_tok else None,
            "n": int(exact.size), "n_tokens": n_tok}


# ============================================================== seeds

def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def aggregate_seeds(results: list[dict]) -> dict:
    """Mean, std and n of every numeric leaf over per-seed metric dicts.

    Every numeric leaf becomes ``{"mean", "std", "n"}``; ``std`` is the sample
    standard deviation (ddof = 1), ``None`` with fewer than two values. ``None``
    leaves (a metric undefined for that seed) are left out of ``n``; a leaf that is
    ``None`` in every seed stays ``None``. A key present
    in only some seeds is aggregated over those. Other leaves (strings, lists,
    bools) are kept when all seeds agree, else listed per seed.
    """
    if not results:
        raise ValueError("aggregate_seeds needs at least one metrics dict")
    keys = []
    for r in results:
        keys += [k for k in r if k not in keys]
    out = {}
    for k in keys:
        vals = [r[k] for r in results if k in r]
        if all(isinstance(v, dict) for v in vals):
            out[k] = aggregate_seeds(vals)
        elif all(v is None for v in vals):
            out[k] = None
        elif all(v is None or _is_number(v) for v in vals):
            nums = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
            n = len(nums)
            out[k] = {"mean": float(np.mean(nums)) if n else None,
                      "std": float(np.std(nums, ddof=1)) if n >= 2 else None, "n": n}
        else:
            out[k] = vals[0] if all(v == vals[0] for v in vals) else vals
    return out


# ============================================================== tables

def nested_get(d, path):
    """``d[k0][k1]...`` along ``path``, or None where any level is missing or None."""
    for key in path:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return d


def table(metrics: dict) -> dict:
    """{subset: {paper column: value}} of one run's metrics (None where not evaluated)."""
    out = {}
    for subset in SUBSETS:
        row = {}
        for col, (task, bench, *rest) in COLUMNS.items():
            row[col] = nested_get(metrics, (task, bench, subset, *rest))
        if row["POPE-Yes"] is None:  # records scored before pope_scores saved it: the same mean, rebuilt
            pope = nested_get(metrics, ("u", "pope", subset)) or {}
            row["POPE-Yes"] = _mean(nested_get(pope, (s, "yes_ratio")) for s in POPE_SAMPLINGS
                                    if nested_get(pope, (s, "n")))
        out[subset] = row
    return out
