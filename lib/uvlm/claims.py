"""The verdict on each of the paper's claims (C1-C6), by a rule fixed in advance.

The rule (``VERDICT_RULE``) never looks at the paper's numbers: they are quoted beside
ours for direction only. With several seeds a difference counts only where it exceeds
the spread over seeds; with one seed the sign decides and the verdict says so.
"""
from __future__ import annotations

import numpy as np

from .results import G_HEADLINE, U_HEADLINE, Results, signed_gain, synergy_comparisons

REPRODUCED, PARTLY, NOT_AT_SCALE, NOT_TESTABLE = "reproduced", "partly", "not at this scale", "not testable"
HARD_CUT = 0.5              # C2: "cuts U FLOPs hard" = counted FLOPs at most half the baseline's
MODERATE_RETENTION = 0.85   # C2: "moderate drop" = U headline metrics keep >= 85% of baseline on average
VERDICT_RULE = (
    "A difference between two runs counts only where it exceeds the spread: with >= 2 seeds on both "
    "sides, |mean difference| > std_a + std_b (sample stds over seeds); with a single seed the sign "
    "decides and the verdict says so. One side of a comparison (U or G) is better when most of its "
    "headline metrics are better by that rule, and worse when most are worse (U: GQA-a, MME-C-a, MME-P-a, "
    "POPE-F1-a, SEED-a; G: FID-a, Attr-Acc-a, G-NLL, lower is better for FID and NLL). "
    f"C2: FLOPs cut hard = counted FLOPs <= {HARD_CUT}x; moderate drop = the U headline metrics keep "
    f">= {MODERATE_RETENTION:.0%} of the baseline on average (in-dist). C3: quality kept = the G side is "
    "not worse. C4-C6 are judged on in-dist and transfer separately; a claim holding on one only is 'partly'. "
    "Without synergy (C4) there is none to lose, so C5 and C6 are not testable.")
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


def compare(a, b, metric: str) -> dict:
    """a vs b ((mean, std, n) each) on one metric, by VERDICT_RULE; ``gain`` > 0 means a is better."""
    if a is None or b is None:
        return {"outcome": "missing"}
    gain, _ = signed_gain(a, b, metric)
    single = a[1] is None or b[1] is None
    spread = None if single else a[1] + b[1]
    limit = 0.0 if single else spread
    outcome = "better" if gain > limit else "worse" if -gain > limit else ("equal" if single else "within spread")
    return {"a": a[0], "b": b[0], "gain": gain, "spread": spread, "single_seed": single, "outcome": outcome}


def side(stats: dict, run_a, run_b, metrics, subset: str) -> dict:
    """Majority of ``metrics``: is run_a better (``beats``) or worse (``loses``) than run_b?"""
    comps = {m: compare(stats.get((run_a, subset, m)), stats.get((run_b, subset, m)), m) for m in metrics}
    have = [c for c in comps.values() if c["outcome"] != "missing"]
    better, worse = sum(c["outcome"] == "better" for c in have), sum(c["outcome"] == "worse" for c in have)
    return {"runs": [run_a, run_b], "subset": subset, "metrics": comps, "n": len(have), "better": better,
            "worse": worse, "beats": bool(have) and 2 * better > len(have),
            "loses": bool(have) and 2 * worse > len(have), "single_seed": any(c["single_seed"] for c in have)}


def _side_text(sd: dict, task: str) -> str:
    if not sd["n"]:
        return f"{task}: no numbers"
    nums = "; ".join(f"{m}-a {c['a']:.3g} vs {c['b']:.3g}" if m != "G-NLL" else f"G-NLL {c['a']:.3g} vs {c['b']:.3g}"
                     for m, c in sd["metrics"].items() if c["outcome"] != "missing")
    return f"{task} {sd['better']}/{sd['n']} better, {sd['worse']} worse [{nums}]"


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


def _claim(cid, verdict, numbers, single=False, **details) -> dict:
    return {"id": cid, "name": NAMES[cid], "claim": CLAIMS[cid], "verdict": verdict, "single_seed": bool(single),
            "numbers": numbers, "details": details}


def claim_c1(attention: dict | None) -> dict:
    v = ((attention or {}).get("all") or {}).get("verdict") or (attention or {}).get("verdict")
    if not v:
        return _claim("C1", NOT_TESTABLE, "figures/metrics/attention.json holds no verdict (a run profiled on "
                      "both tasks is needed)")
    parts = (v["u_late_visual_redundancy"], v["g_persistent_image_dependence"])
    verdict = REPRODUCED if v["asymmetry"] else PARTLY if any(parts) else NOT_AT_SCALE
    out = ((attention.get("output") or {}).get("verdict") or {})
    extra = (f" Output-query view: asymmetry {'holds' if out['asymmetry'] else 'not shown'}." if out else "")
    return _claim("C1", verdict, v["summary"] + f" (source {attention.get('source')}; 95% bootstrap intervals "
                  "over samples)." + extra, asymmetry=v["asymmetry"], parts=list(parts))


def claim_c2(res: Results) -> dict:
    r, b = res.roles["u_himix"], res.roles["u_base"]
    if r is None or b is None or not any(k[0] == r for k in res.stats):
        return _claim("C2", NOT_TESTABLE, "no HiMix U-only run and U-only baseline with metrics")
    rel = res.info[r]["flops_rel"]
    sides = {s: side(res.stats, r, b, U_HEADLINE, s) for s in ("in_dist", "transfer")}
    keep = {m: c["a"] / c["b"] for m, c in sides["in_dist"]["metrics"].items()
            if c["outcome"] != "missing" and c["b"] > 0}
    mean_keep = float(np.mean(list(keep.values()))) if keep else None
    hard, moderate = rel is not None and rel <= HARD_CUT, mean_keep is not None and mean_keep >= MODERATE_RETENTION
    verdict = REPRODUCED if hard and moderate else PARTLY if hard or moderate else NOT_AT_SCALE
    keep_txt = "n/a" if mean_keep is None else f"{mean_keep:.0%}"
    text = (f"counted FLOPs {rel:.2f}x of the U-only baseline (paper 0.24x); in-dist the U metrics keep "
            f"{keep_txt} of the baseline on average (paper 93%). In-dist: {_side_text(sides['in_dist'], 'U')}. "
            f"Transfer: {_side_text(sides['transfer'], 'U')}.")
    return _claim("C2", verdict, text, any(s["single_seed"] for s in sides.values()), flops_rel=rel,
                  retention=keep, mean_retention=mean_keep, sides=sides)


def claim_c3(res: Results) -> dict:
    b, runs = res.roles["g_base"], [r for r in res.roles["g_hmgen"] if any(k[0] == r for k in res.stats)]
    if b is None or not runs:
        return _claim("C3", NOT_TESTABLE, "no HMGen G-only run and G-only baseline with metrics")
    ok, parts, sides = [], [], {}
    for r in runs:
        rel = res.info[r]["flops_rel"]
        sides[r] = {s: side(res.stats, r, b, G_HEADLINE, s) for s in ("in_dist", "transfer")}
        kept = not sides[r]["in_dist"]["loses"]
        ok.append(rel is not None and rel < 1 and kept)
        parts.append(f"K={res.info[r]['hmgen_k']}: FLOPs {rel:.2f}x, in-dist {_side_text(sides[r]['in_dist'], 'G')}"
                     f", transfer {_side_text(sides[r]['transfer'], 'G')}")
    single = any(sd["single_seed"] for v in sides.values() for sd in v.values())
    return _claim("C3", _from_flags(ok), "; ".join(parts) + " (paper: K=3 0.85x FID 17.45->12.16, K=5 0.75x "
                  "->12.55).", single, sides=sides)


def _synergy_sides(res: Results, unified, isolated: dict, subset) -> dict:
    return {t: side(res.stats, unified, isolated[t], U_HEADLINE if t == "u" else G_HEADLINE, subset)
            for t in ("u", "g") if unified and isolated.get(t)}


def claims_c4_c6(res: Results) -> list[dict]:
    (_, ug, iso), (_, sa, acc), (_, sp, _) = synergy_comparisons(res.roles)
    subsets = ("in_dist", "transfer")
    base = {s: _synergy_sides(res, ug, iso, s) for s in subsets}
    accel = {s: _synergy_sides(res, sa, acc, s) for s in subsets}
    part = {s: {t: side(res.stats, sp, sa, U_HEADLINE if t == "u" else G_HEADLINE, s) for t in ("u", "g")}
            if sp and sa else {} for s in subsets}
    fmt = lambda sides: ", ".join(_side_text(sd, t.upper()) for t, sd in sides.items()) or "missing runs"
    single = lambda d: any(sd["single_seed"] for v in d.values() for sd in v.values())

    c4_sub = {s: _from_flags([sd["beats"] for sd in base[s].values()]) if len(base[s]) == 2 else NOT_TESTABLE
              for s in subsets}
    c4 = _claim("C4", _combine(c4_sub.values()), " | ".join(f"{s}: {fmt(base[s])}" for s in subsets) +
                " (paper: GQA 52.86->56.00, POPE-F1 79.40->82.30, SEED 46.05->47.88, MJHQ 17.45->15.78).",
                single(base), per_subset=c4_sub, sides=base)
    c5_text = " | ".join(f"{s}: {fmt(accel[s])}" for s in subsets) + " (share all vs isolated HiMix / HMGen; " \
        "paper: GQA 49.92->33.00, MJHQ 12.16->12.53)."
    c6_text = " | ".join(f"{s}: {fmt(part[s])}" for s in subsets) + " (share partial vs share all; paper: GQA " \
        "33.00->47.05, POPE-F1 67.59->76.58, SEED 31.38->34.50, MJHQ 12.53->14.54)."
    if c4["verdict"] in (NOT_AT_SCALE, NOT_TESTABLE):
        why = "no synergy at this scale (C4), so none to lose or restore. Numbers: "
        return [c4, _claim("C5", NOT_TESTABLE, why + c5_text, single(accel), sides=accel),
                _claim("C6", NOT_TESTABLE, why + c6_text, single(part), sides=part)]
    # C5 only on the sides (task, subset) where synergy showed; C6 only where it was then lost.
    c5_sub, c6_sub = {}, {}
    for s in subsets:
        tested = [t for t, sd in base[s].items() if sd["beats"] and t in accel[s]]
        lost = [t for t in tested if not accel[s][t]["beats"]]
        c5_sub[s] = _from_flags([t in lost for t in tested])
        c6_sub[s] = _from_flags([part[s][t]["beats"] for t in lost if t in part[s]])
    return [c4, _claim("C5", _combine(c5_sub.values()), c5_text, single(accel), per_subset=c5_sub, sides=accel),
            _claim("C6", _combine(c6_sub.values()), c6_text, single(part), per_subset=c6_sub, sides=part)]


def decide_claims(res: Results, attention: dict | None) -> list[dict]:
    return [claim_c1(attention), claim_c2(res), claim_c3(res), *claims_c4_c6(res)]


def claims_markdown(claims: list[dict], preset: str = "", seeds=()) -> str:
    lines = ["# The paper's claims at this scale", "",
             f"Preset `{preset}`, seeds {list(seeds)}. Our numbers are benchmark analogues on the scene world; "
             "the paper's values are quoted for direction only.", "", f"Rule: {VERDICT_RULE}", ""]
    for c in claims:
        caveat = " (single seed)" if c["single_seed"] else ""
        lines.append(f"- **{c['id']} {c['name']}**: {c['claim']}. {c['numbers']} "
                     f"Verdict: **{c['verdict']}**{caveat}.")
    return "\n".join(lines) + "\n"


def write_claims(cfg, claims: list[dict], path=None):
    """``figures/claims.md`` (atomically) -> its path."""
    from .io import write_text
    path = path or cfg.paths.figures / "claims.md"
    write_text(path, claims_markdown(claims, cfg.preset, cfg.train.seeds))
    return path
