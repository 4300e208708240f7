"""The few metrics a sweep job is scored on: cheap, and both discrete and continuous.

Per task, in-distribution and transfer, from the checkpoints with the best validation
loss of that task:

* U: GQA-analogue exact-match accuracy (%) and held-out answer NLL (nats / token) on
  u_test. The NLL moves smoothly where accuracy moves in steps, so small gaps show.
* G: held-out image-token NLL (nats / token) on g_test and the probe's attribute
  accuracy (%) of ``sweep.n_gen`` sampled images.

Every value comes with its item count, and accuracies and NLL with a standard error
over items, so a gap can be compared with the noise of the test set as well as with
the spread over seeds.
"""
from __future__ import annotations

import numpy as np

from uvlm.eval import evaluate as E
from uvlm.eval import scoring as S
from uvlm.paper.results import proportion_se
from uvlm.train.setup import run_plans, tasks_of

# metric -> (task, higher is better, unit)
METRICS = {
    "gqa_acc": ("u", True, "%"),
    "answer_nll": ("u", False, "nats/token"),
    "image_nll": ("g", False, "nats/token"),
    "attr_acc": ("g", True, "%"),
    # The best validation loss of the task's training run (the checkpoint every other metric
    # scores): what early stopping chose on, reported beside the benchmarks.
    "val_loss": ("u|g", False, "nats/token"),
}
SUBSETS = ("in_dist", "transfer")


def score_u(model, plan, ctx) -> dict:
    gqa = E.score_gqa(model, plan, ctx)
    recs, codes = ctx.split(E.U_BENCHMARKS["u_test"])
    st = E._answer_stats(model, plan, ctx, [(r["instruction"], r["answer"]) for r in recs], codes)
    per_item = -st["logprob"] / np.maximum(st["n_tokens"], 1)

    def nll(logprob, n_tokens, per_item):
        n_tok = int(np.sum(n_tokens))
        se = float(per_item.std(ddof=1) / np.sqrt(per_item.size)) if per_item.size > 1 else None
        return {"value": -float(np.sum(logprob)) / n_tok if n_tok else None, "se": se, "n": int(per_item.size)}
    ans = S.by_subset(recs, nll, logprob=st["logprob"], n_tokens=st["n_tokens"], per_item=per_item)
    out = {}
    for sub in SUBSETS:
        g = gqa[sub]
        out[sub] = {"gqa_acc": {"value": g["acc"], "se": proportion_se(g["acc"], g["n"]), "n": g["n"]},
                    "answer_nll": ans[sub]}
    return out


def score_g(model, plan, ctx, seed: int) -> dict:
    from uvlm.probe.model import prompt_attribute_report

    nll = E.g_nll(model, plan, ctx)
    recs, codes = ctx.split("g_test")
    n = min(ctx.ecfg.n_gen, len(recs))
    recs, codes = recs[:n], codes[:n]
    gen_codes = E.sample_codes(model, plan, ctx, [r["prompt"] for r in recs], codes.shape[1:], seed)
    vq, probe = ctx.scorers()
    images = vq.decode(gen_codes)
    out = {}
    for sub, idx in S.subset_indices(recs).items():
        if sub not in SUBSETS:
            continue
        rep = prompt_attribute_report(probe, images[idx], [recs[i] for i in idx]) if len(idx) else None
        acc = 100.0 * rep["object_accuracy"] if rep else None
        n_obj = rep["n_objects"] if rep else 0
        out[sub] = {"image_nll": {"value": nll[sub]["nll"], "se": nll[sub]["se"], "n": nll[sub]["n_images"]},
                    # SE over objects (objects of one image are not independent: a lower bound)
                    "attr_acc": {"value": acc, "se": proportion_se(acc, n_obj), "n": int(len(idx))}}
    return out


def evaluate_job(cfg, train_dir, seed: int) -> dict:
    """{task: {subset: {metric: {value, se, n}}}} of one trained sweep job."""
    from uvlm.model.decoder import UVLM
    from .plan import RUN_NAME

    spec = cfg.run(RUN_NAME)
    plans = run_plans(cfg, spec)
    ctx = E.EvalContext(cfg)
    out = {}
    for task in tasks_of(spec):
        model = UVLM.from_pretrained(train_dir / f"best_{task}", plan=plans[task]).to(ctx.device).eval()
        out[task] = score_u(model, plans[task], ctx) if task == "u" else score_g(model, plans[task], ctx, seed)
        del model
    return out
