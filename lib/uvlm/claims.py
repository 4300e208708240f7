"""The verdict on each of the paper's claims (C1-C6), by a rule fixed in advance.

The rule (``VERDICT_RULE``) never looks at the paper's numbers: they are quoted beside
ours for direction only. A difference counts only where it exceeds the sampling noise of
the test items (from the item counts) and, with several seeds, the spread over seeds.
Where neither is known (one seed, no noise estimate) the sign decides and the verdict says so.
"""
from __future__ import annotations

import math

import numpy as np

from .attention import REDUNDANCY_CEILING
from .attention import verdict as attention_verdict
from .results import G_HEADLINE, U_HEADLINE, Results, signed_gain, synergy_comparisons

REPRODUCED, PARTLY, NOT_AT_SCALE, NOT_TESTABLE = "reproduced", "partly", "not at this scale", "not testable"
HARD_CUT = 0.5              # C2: "cuts U FLOPs hard" = counted FLOPs at most half the baseline's
MODERATE_RETENTION = 0.85   # C2: "moderate drop" = U headline metrics keep >= 85% of baseline on average
COLLAPSE = 0.5              # ... and none of them falls, beyond noise, below half of the baseline's value
NOISE_Z = 2.0               # noise floor = 2 SE of the difference: about a 95% two-sided test
VERDICT_RULE = (
    "A difference between two runs counts only where |difference| exceeds the larger of the sampling "
    "noise floor of the test items and, with >= 2 seeds on both sides, the spread std_a + std_b (sample "
    "stds over seeds); otherwise it is 'within noise' or 'within spread'. Noise floor: "
    f"{NOISE_Z:g}*sqrt(SE_a^2 + SE_b^2) (about a 95% two-sided test). A percentage p over n items "
    "(GQA, POPE-A/P/R, SEED, Attr-Acc) has SE = 100*sqrt(p(1-p)/n); Attr-Acc counts images, not "
    "objects (conservative). MME-P/MME-C (sum over subtasks of acc + acc+, acc+ over question pairs): "
    "SE = sqrt(sum over subtasks of (SE_acc + SE_acc+)^2). POPE-F1 (mean of the three samplings' F1): "
    "delta-method SE of each F1 = 2x/(1+x), x = TP/(TP+FP+FN), from the saved confusion counts, "
    "combined as sqrt(sum SE^2)/3. FID: the floor is the larger FID-floor (FD of the VQ reconstructions "
    "to the real test images) of the two runs. SEs and floors are averaged over seeds, not divided by "
    "sqrt(seeds), since all seeds share the test items. G-NLL (nats per image token): SE over the test "
    "images of their per-image NLL. A metric with no noise estimate is judged, with one seed, by its sign, "
    "and the verdict says so. One side of a comparison (U or G) is better when most of its "
    "headline metrics are better by that rule, and worse when most are worse (U: GQA-a, MME-C-a, MME-P-a, "
    "POPE-F1-a, SEED-a; G: FID-a, Attr-Acc-a, G-NLL, lower is better for FID and NLL). "
    f"C2: FLOPs cut hard = counted FLOPs <= {HARD_CUT}x; moderate drop = the U headline metrics keep "
    f">= {MODERATE_RETENTION:.0%} of the baseline on average (in-dist) and none that is worse beyond noise keeps "
    f"< {COLLAPSE:.0%} of it (a collapsed benchmark is not a moderate drop). C3: quality kept = the G side is "
    "not worse. C4-C6 are judged on in-dist and transfer separately; a claim holding on one only is 'partly'. "
    "Without synergy (C4) there is none to lose, so C5 and C6 are not testable. C1 (uvlm.attention."
    "VERDICT_RULE): reproduced if the asymmetry holds with strong U redundancy (U's 95% interval of the "
    f"late/first image-share ratio wholly below {REDUNDANCY_CEILING:g}); partly if it holds with a mild U "
    f"decline only (interval below 1, not below {REDUNDANCY_CEILING:g}) or if only one of its parts holds; "
    "else not at this scale.")
# Reported beside the verdicts of C2 and C4-C6, never deciding them: the answer NLL of the U test
# items. The rule's U side counts benchmark scores only (fixed in advance); U-NLL was added to the
# report after the gpu records showed it moving, so it is an observation, not a pre-set test.
LOSS_VIEW = "U-NLL"
CLAIMS = {
    "C1": "Asymmetry: U attends to the image less in late layers, G keeps depending on image tokens",
    "C2": "HiMix cuts U FLOPs hard with a moderate drop in quality",
    "C3": "HMGen cuts G FLOPs with generation quality kept",
    "C4": "Unified training beats both isolated baselines (synergy)",
    "C5": "Synergy is lost under the combined accelerators (HiMix + HMGen, share all)",
    "C6": "Share partial (separate image projections per task) restores part of the synergy",
}
NAMES = {"C1": "asymmetry", "C2": "HiMix efficiency", "C3": "HMGen efficiency", "C4": "unified synergy",
         "C5": "synergy loss", "C6": "share partial"}


def noise_floor(noise_a: dict | None, noise_b: dict | None) -> float | None:
    """The smallest difference item sampling alone does not explain (entries of
    ``results.noise_table``); None where either side has no estimate."""
    if not noise_a or not noise_b:
        return None
    if "floor" in noise_a and "floor" in noise_b:
        return max(noise_a["floor"], noise_b["floor"])
    if "se" in noise_a and "se" in noise_b:
        return NOISE_Z * math.hypot(noise_a["se"], noise_b["se"])
    return None


def compare(a, b, metric: str, noise_a: dict | None = None, noise_b: dict | None = None) -> dict:
    """a vs b ((mean, std, n) each) on one metric, by VERDICT_RULE; ``gain`` > 0 means a is better.

    ``noise_a`` / ``noise_b``: each run's sampling noise on this metric ({"se"} or {"floor"}).
    """
    if a is None or b is None:
        return {"outcome": "missing"}
    gain, _ = signed_gain(a, b, metric)
    single = a[1] is None or b[1] is None
    spread = None if single else a[1] + b[1]
    floor = noise_floor(noise_a, noise_b)
    limit = max(spread or 0.0, floor or 0.0)
    if abs(gain) > limit:
        outcome = "better" if gain > 0 else "worse"
    elif floor is not None and floor >= (spread or 0.0):
        outcome = "within noise"
    else:
        outcome = "equal" if spread is None else "within spread"
    return {"a": a[0], "b": b[0], "gain": gain, "spread": spread, "noise": floor, "limit": limit,
            "single_seed": single, "sign_only": single and floor is None, "outcome": outcome}


def side(stats: dict, run_a, run_b, metrics, subset: str, noise: dict | None = None) -> dict:
    """Majority of ``metrics``: is run_a better (``beats``) or worse (``loses``) than run_b?

    ``noise``: {(run, subset, metric): entry} as ``results.noise_table`` gives it.
    """
    noise = noise or {}
    comps = {m: compare(stats.get((run_a, subset, m)), stats.get((run_b, subset, m)), m,
                        noise.get((run_a, subset, m)), noise.get((run_b, subset, m))) for m in metrics}
    have = [c for c in comps.values() if c["outcome"] != "missing"]
    count = lambda outcome: sum(c["outcome"] == outcome for c in have)
    better, worse = count("better"), count("worse")
    return {"runs": [run_a, run_b], "subset": subset, "metrics": comps, "n": len(have), "better": better,
            "worse": worse, "within_noise": count("within noise"), "beats": bool(have) and 2 * better > len(have),
            "loses": bool(have) and 2 * worse > len(have), "single_seed": any(c["single_seed"] for c in have),
            "sign_only": [m for m, c in comps.items() if c.get("sign_only")]}


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _margin(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.2g}"  # a noise estimate has no third digit to speak of


def _comparison_text(metric: str, c: dict) -> str:
    """``GQA-a 28 vs 22.7 (±8.5, within noise)``: the two values, the margin to beat, the outcome."""
    name = metric if metric.endswith("-NLL") else f"{metric}-a"
    if c["sign_only"]:
        note = "no noise estimate: sign only"
    else:
        note = f"±{_margin(c['limit'])}" + (f", {c['outcome']}" if c["outcome"] not in ("better", "worse") else "")
    return f"{name} {_num(c['a'])} vs {_num(c['b'])} ({note})"


def _side_text(sd: dict, task: str) -> str:
    if not sd["n"]:
        return f"{task}: no numbers"
    nums = "; ".join(_comparison_text(m, c) for m, c in sd["metrics"].items() if c["outcome"] != "missing")
    rest = sd["n"] - sd["better"] - sd["worse"]
    return f"{task} {sd['better']}/{sd['n']} better, {sd['worse']} worse, {rest} undecided [{nums}]"


def loss_view(res: Results, run_a, run_b) -> dict:
    """{subset: compare()} of run_a vs run_b on LOSS_VIEW, by the same rule as the verdicts."""
    return {s: compare(res.stats.get((run_a, s, LOSS_VIEW)), res.stats.get((run_b, s, LOSS_VIEW)), LOSS_VIEW,
                       res.noise.get((run_a, s, LOSS_VIEW)), res.noise.get((run_b, s, LOSS_VIEW)))
            for s in ("in_dist", "transfer")} if run_a and run_b else {}


def _loss_text(view: dict) -> str:
    parts = []
    for s, c in view.items():
        if c["outcome"] == "missing":
            continue
        decided = c["outcome"] in ("better", "worse") and not c["sign_only"]  # the margin text omits these
        parts.append(f"{s.replace('_', '-')} {_comparison_text(LOSS_VIEW, c)}" + (f", {c['outcome']}" if decided else ""))
    return f" Loss view (reported, not part of the verdict): {'; '.join(parts)}." if parts else ""


def step_matched_view(res: Results, unified) -> dict:
    """{task: {subset: side()}}: the unified run against isolated baselines trained for more epochs
    (runs with ``epochs_factor`` > 1), on the task's headline metrics, U-NLL included for U."""
    out = {}
    for task, metrics in (("u", (*U_HEADLINE, LOSS_VIEW)), ("g", G_HEADLINE)):
        longer = res.roles.get(f"{task}_base_long")
        if unified and longer and any(k[0] == longer for k in res.stats):
            out[task] = {s: side(res.stats, unified, longer, metrics, s, res.noise) for s in ("in_dist", "transfer")}
    return out


def _step_matched_text(res: Results, view: dict) -> str:
    parts = []
    for task, by_subset in view.items():
        run = by_subset["in_dist"]["runs"][1]
        factor = (res.info.get(run) or {}).get("epochs_factor")
        parts.append(f"against {run} ({factor:g}x epochs): " if factor else f"against {run}: ")
        parts[-1] += "; ".join(f"{s.replace('_', '-')} {_side_text(sd, task.upper())}" for s, sd in by_subset.items())
    return (" Step-matched view (isolated baselines given the unified run's optimizer steps; reported, not "
            f"part of the verdict): {' | '.join(parts)}.") if parts else ""


def _from_flags(flags) -> str:
    flags = list(flags)
    if not flags:
        return NOT_TESTABLE
    return REPRODUCED if all(flags) else PARTLY if any(flags) else NOT_AT_SCALE


def _combine(verdicts) -> str:
    vs = [v for v in verdicts if v != NOT_TESTABLE]
    if not vs:
        return NOT_TESTABLE
    return vs[0] if all(v == vs[0] for v in vs) else PARTLY


def _caveats(sides) -> dict:
    """What the verdict leans on: one seed only, and which metrics had only their sign to go by."""
    sides = list(sides)
    return {"single_seed": any(sd["single_seed"] for sd in sides),
            "sign_only": sorted({m for sd in sides for m in sd["sign_only"]})}


def _nested_caveats(by_subset: dict) -> dict:
    return _caveats(sd for per_task in by_subset.values() for sd in per_task.values())


def _claim(cid, verdict, numbers, caveats: dict | None = None, **details) -> dict:
    caveats = caveats or {}
    return {"id": cid, "name": NAMES[cid], "claim": CLAIMS[cid], "verdict": verdict,
            "single_seed": bool(caveats.get("single_seed")), "sign_only": caveats.get("sign_only", []),
            "numbers": numbers, "details": details}


def _attention_verdict(saved: dict | None) -> dict | None:
    """The C1 reading of a saved attention verdict, redone from its ratios so that the current
    rule (with the strength qualifier) applies to profiles saved before it."""
    if not saved:
        return None
    if "u_ratio" not in saved or "g_ratio" not in saved:
        return saved
    return attention_verdict(saved["u_ratio"], saved["g_ratio"], saved.get("persist_floor", 0.5),
                   saved.get("redundancy_ceiling", REDUNDANCY_CEILING))


def _c1_verdict(v: dict) -> str:
    parts = (v["u_late_visual_redundancy"], v["g_persistent_image_dependence"])
    if v["asymmetry"]:
        return REPRODUCED if v.get("u_strong_redundancy") else PARTLY  # a mild U decline is not the collapse
    return PARTLY if any(parts) else NOT_AT_SCALE


def claim_c1(attention: dict | None) -> dict:
    attention = attention or {}
    v = _attention_verdict((attention.get("all") or {}).get("verdict") or attention.get("verdict"))
    if not v:
        return _claim("C1", NOT_TESTABLE, "figures/metrics/attention.json holds no verdict (a run profiled on "
                      "both tasks is needed)")
    out = _attention_verdict((attention.get("output") or {}).get("verdict"))
    extra = ""
    if out:
        how = ("holds" if out.get("u_strong_redundancy") else "holds weakly") if out["asymmetry"] else "not shown"
        extra = f" Output-query view: asymmetry {how}."
    return _claim("C1", _c1_verdict(v), v["summary"] + f" (source {attention.get('source')}; 95% bootstrap "
                  "intervals over samples)." + extra, asymmetry=v["asymmetry"],
                  strong=bool(v.get("u_strong_redundancy")),
                  parts=[v["u_late_visual_redundancy"], v["g_persistent_image_dependence"]])


def claim_c2(res: Results) -> dict:
    r, b = res.roles["u_himix"], res.roles["u_base"]
    if r is None or b is None or not any(k[0] == r for k in res.stats):
        return _claim("C2", NOT_TESTABLE, "no HiMix U-only run and U-only baseline with metrics")
    rel = res.info[r]["flops_rel"]
    sides = {s: side(res.stats, r, b, U_HEADLINE, s, res.noise) for s in ("in_dist", "transfer")}
    keep = {m: c["a"] / c["b"] for m, c in sides["in_dist"]["metrics"].items()
            if c["outcome"] != "missing" and c["b"] > 0}
    mean_keep = float(np.mean(list(keep.values()))) if keep else None
    collapsed = [m for m, c in sides["in_dist"]["metrics"].items()
                 if c["outcome"] == "worse" and m in keep and keep[m] < COLLAPSE]
    hard = rel is not None and rel <= HARD_CUT
    moderate = mean_keep is not None and mean_keep >= MODERATE_RETENTION and not collapsed
    verdict = REPRODUCED if hard and moderate else PARTLY if hard or moderate else NOT_AT_SCALE
    keep_txt = "n/a" if mean_keep is None else f"{mean_keep:.0%}"
    collapse_txt = (f" {', '.join(m + '-a' for m in collapsed)} collapsed (kept "
                    f"{', '.join(f'{keep[m]:.0%}' for m in collapsed)}), so the drop is not moderate."
                    if collapsed else "")
    text = (f"counted FLOPs {rel:.2f}x of the U-only baseline (paper 0.24x); in-dist the U metrics keep "
            f"{keep_txt} of the baseline on average (paper 93%).{collapse_txt} "
            f"In-dist: {_side_text(sides['in_dist'], 'U')}. Transfer: {_side_text(sides['transfer'], 'U')}.")
    view = loss_view(res, r, b)
    return _claim("C2", verdict, text + _loss_text(view), _caveats(sides.values()), flops_rel=rel,
                  retention=keep, mean_retention=mean_keep, collapsed=collapsed, sides=sides, loss_view=view)


def claim_c3(res: Results) -> dict:
    b, runs = res.roles["g_base"], [r for r in res.roles["g_hmgen"] if any(k[0] == r for k in res.stats)]
    if b is None or not runs:
        return _claim("C3", NOT_TESTABLE, "no HMGen G-only run and G-only baseline with metrics")
    ok, parts, sides = [], [], {}
    for r in runs:
        rel = res.info[r]["flops_rel"]
        sides[r] = {s: side(res.stats, r, b, G_HEADLINE, s, res.noise) for s in ("in_dist", "transfer")}
        kept = not sides[r]["in_dist"]["loses"]
        ok.append(rel is not None and rel < 1 and kept)
        parts.append(f"K={res.info[r]['hmgen_k']}: FLOPs {rel:.2f}x, in-dist {_side_text(sides[r]['in_dist'], 'G')}"
                     f", transfer {_side_text(sides[r]['transfer'], 'G')}")
    return _claim("C3", _from_flags(ok), "; ".join(parts) + " (paper: K=3 0.85x FID 17.45->12.16, K=5 0.75x "
                  "->12.55).", _nested_caveats(sides), sides=sides)


def _synergy_sides(res: Results, unified, isolated: dict, subset) -> dict:
    return {t: side(res.stats, unified, isolated[t], U_HEADLINE if t == "u" else G_HEADLINE, subset, res.noise)
            for t in ("u", "g") if unified and isolated.get(t)}


def claims_c4_c6(res: Results) -> list[dict]:
    (_, ug, iso), (_, sa, acc), (_, sp, _) = synergy_comparisons(res.roles)[:3]  # C4-C6
    subsets = ("in_dist", "transfer")
    base = {s: _synergy_sides(res, ug, iso, s) for s in subsets}
    accel = {s: _synergy_sides(res, sa, acc, s) for s in subsets}
    part = {s: _synergy_sides(res, sp, {"u": sa, "g": sa}, s) if sp and sa else {} for s in subsets}
    fmt = lambda sides: ", ".join(_side_text(sd, t.upper()) for t, sd in sides.items()) or "missing runs"
    # The U side of each comparison on LOSS_VIEW: C4 unified vs U-only, C5 share all vs HiMix, C6 share
    # partial vs share all.
    views = [loss_view(res, ug, iso.get("u")), loss_view(res, sa, acc.get("u")), loss_view(res, sp, sa)]

    c4_sub = {s: _from_flags([sd["beats"] for sd in base[s].values()]) if len(base[s]) == 2 else NOT_TESTABLE
              for s in subsets}
    matched = step_matched_view(res, ug)
    c4 = _claim("C4", _combine(c4_sub.values()), " | ".join(f"{s}: {fmt(base[s])}" for s in subsets) +
                " (paper: GQA 52.86->56.00, POPE-F1 79.40->82.30, SEED 46.05->47.88, MJHQ 17.45->15.78)." +
                _loss_text(views[0]) + _step_matched_text(res, matched), _nested_caveats(base), per_subset=c4_sub,
                sides=base, loss_view=views[0], step_matched=matched)
    c5_text = " | ".join(f"{s}: {fmt(accel[s])}" for s in subsets) + " (share all vs isolated HiMix / HMGen; " \
        "paper: GQA 49.92->33.00, MJHQ 12.16->12.53)." + _loss_text(views[1])
    c6_text = " | ".join(f"{s}: {fmt(part[s])}" for s in subsets) + " (share partial vs share all; paper: GQA " \
        "33.00->47.05, POPE-F1 67.59->76.58, SEED 31.38->34.50, MJHQ 12.53->14.54)." + _loss_text(views[2])
    if c4["verdict"] in (NOT_AT_SCALE, NOT_TESTABLE):
        why = "no synergy at this scale (C4), so none to lose or restore. Numbers: "
        return [c4, _claim("C5", NOT_TESTABLE, why + c5_text, _nested_caveats(accel), sides=accel,
                           loss_view=views[1]),
                _claim("C6", NOT_TESTABLE, why + c6_text, _nested_caveats(part), sides=part, loss_view=views[2])]
    # C5 only on the sides (task, subset) where synergy showed; C6 only where it was then lost.
    c5_sub, c6_sub = {}, {}
    for s in subsets:
        tested = [t for t, sd in base[s].items() if sd["beats"] and t in accel[s]]
        lost = [t for t in tested if not accel[s][t]["beats"]]
        c5_sub[s] = _from_flags([t in lost for t in tested])
        c6_sub[s] = _from_flags([part[s][t]["beats"] for t in lost if t in part[s]])
    return [c4, _claim("C5", _combine(c5_sub.values()), c5_text, _nested_caveats(accel), per_subset=c5_sub,
                       sides=accel, loss_view=views[1]),
            _claim("C6", _combine(c6_sub.values()), c6_text, _nested_caveats(part), per_subset=c6_sub, sides=part,
                   loss_view=views[2])]


def decide_claims(res: Results, attention: dict | None) -> list[dict]:
    return [claim_c1(attention), claim_c2(res), claim_c3(res), *claims_c4_c6(res)]


def claims_markdown(claims: list[dict], preset: str = "", seeds=()) -> str:
    lines = ["# The paper's claims at this scale", "",
             f"Preset `{preset}`, seeds {list(seeds)}. Our numbers are benchmark analogues on the scene world; "
             "the paper's values are quoted for direction only.", "", f"Rule: {VERDICT_RULE}", ""]
    for c in claims:
        lines.append(f"- **{c['id']} {c['name']}**: {c['claim']}. {c['numbers']} "
                     f"Verdict: **{c['verdict']}**{_caveat_text(c)}.")
    return "\n".join(lines) + "\n"


def _caveat_text(claim: dict) -> str:
    notes = ["single seed"] if claim["single_seed"] else []
    if claim.get("sign_only"):
        notes.append(f"{', '.join(claim['sign_only'])} judged by sign only (no noise estimate)")
    return f" ({'; '.join(notes)})" if notes else ""


def write_claims(cfg, claims: list[dict], path=None):
    """``figures/claims.md`` (atomically) -> its path."""
    from .io import write_text
    path = path or cfg.paths.figures / "claims.md"
    write_text(path, claims_markdown(claims, cfg.preset, cfg.train.seeds))
    return path
