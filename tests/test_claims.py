"""The verdict rule (uvlm.paper.claims.VERDICT_RULE, uvlm.paper.results.compare), branch by branch, on small
synthetic numbers; the step-cap check of the training summaries; POPE's accuracy and yes-ratio."""
import math
import warnings

import numpy as np
import pytest
import yaml

from uvlm.analysis.attention import verdict as attention_verdict
from uvlm.core.config import load_config
from uvlm.core.io import write_json
from uvlm.eval import scoring as S
from uvlm.paper import claims as C
from uvlm.paper import results as R
from uvlm.paper import tables as T


def _se(se):
    return {"se": se, "n": 100}


# ============================================================== one comparison

def test_t_quantiles():
    assert R.t95(1) == 12.706 and R.t95(2) == 4.303 and R.t95(30) == 2.042
    assert R.t95(31) == pytest.approx(2.0395, abs=2e-4) and R.t95(1000) == pytest.approx(1.9623, abs=2e-4)
    with pytest.raises(ValueError):
        R.t95(0)


def test_the_seed_interval_is_over_paired_differences():
    a, b = {0: 12.0, 1: 15.0, 2: 18.0}, {0: 10.0, 1: 12.0, 2: 14.0}  # gaps 2, 3, 4: sd 1
    c = C.compare(a, b, "GQA")
    half = 4.303 * 1.0 / math.sqrt(3)
    assert c["gain"] == pytest.approx(3.0) and c["interval"] == pytest.approx(half) and c["seeds"] == 3
    assert c["outcome"] == "better" and c["limit"] == pytest.approx(half) and not c["single_seed"]
    # The same scores with seeds 1 and 2 of b swapped: the gaps now vary (2, 1, 6), the means do not.
    swapped = C.compare(a, {0: 10.0, 1: 14.0, 2: 12.0}, "GQA")
    assert swapped["gain"] == pytest.approx(3.0) and swapped["outcome"] == "within spread"
    assert swapped["interval"] == pytest.approx(4.303 * math.sqrt(7) / math.sqrt(3))
    assert C.compare(b, a, "GQA")["outcome"] == "worse"
    # Lower is better: the gain's sign flips, and so does the outcome.
    assert C.compare(a, b, "FID")["outcome"] == "worse" and C.compare(a, b, "FID")["gain"] == pytest.approx(-3.0)


def test_only_seeds_both_runs_have_are_paired():
    c = C.compare({0: 5.0, 1: 20.0, 2: 22.0}, {1: 10.0, 2: 11.0, 3: 50.0}, "GQA")
    # Seeds 1 and 2: gaps 10 and 11, so the means are over those seeds only.
    assert c["seeds"] == 2 and (c["a"], c["b"]) == (21.0, 10.5) and c["gain"] == pytest.approx(10.5)
    assert c["interval"] == pytest.approx(12.706 * (0.5 ** 0.5) / 2 ** 0.5)


def test_the_item_floor_bounds_the_margin_from_below():
    a, b = {0: 55.0, 1: 55.1, 2: 55.2}, {0: 50.0, 1: 50.1, 2: 50.2}  # gaps all 5: no seed spread at all
    c = C.compare(a, b, "GQA", _se(5.0), _se(5.0))
    floor = 2 * math.hypot(5.0, 5.0)
    assert c["interval"] == pytest.approx(0.0, abs=1e-9) and c["noise"] == pytest.approx(floor)
    assert c["limit"] == pytest.approx(floor) and c["outcome"] == "within noise"
    # A wide seed interval wins over a small floor: then it is the spread that leaves it undecided.
    wide = C.compare({0: 40.0, 1: 70.0, 2: 55.0}, {0: 50.0, 1: 50.0, 2: 50.0}, "GQA", _se(0.5), _se(0.5))
    assert wide["interval"] > wide["noise"] and wide["limit"] == wide["interval"]
    assert wide["outcome"] == "within spread"
    # Beyond both: decided.
    far = C.compare({0: 80.0, 1: 80.5, 2: 81.0}, b, "GQA", _se(5.0), _se(5.0))
    assert far["outcome"] == "better" and far["limit"] == pytest.approx(floor)


def test_one_seed_falls_back_to_the_item_floor_then_to_the_sign():
    c = C.compare({0: 55.0}, {0: 50.0}, "GQA", _se(4.975), _se(5.0))
    assert c["single_seed"] and not c["sign_only"] and c["interval"] is None
    assert c["outcome"] == "within noise" and c["noise"] == pytest.approx(14.107, abs=1e-3)
    assert C.compare({0: 70.0}, {0: 50.0}, "GQA", _se(2.291), _se(2.5))["outcome"] == "better"
    # FID's floor is the larger reconstruction floor of the two runs.
    assert C.compare({0: 3.0}, {0: 3.3}, "FID", {"floor": 0.5}, {"floor": 0.4})["outcome"] == "within noise"
    assert C.compare({0: 3.0}, {0: 4.0}, "FID", {"floor": 0.5}, {"floor": 0.4})["outcome"] == "better"
    # No floor (one side has none): the sign decides, and says so; no difference at all is "equal".
    sign = C.compare({0: 55.0}, {0: 50.0}, "GQA", _se(5.0), None)
    assert sign["sign_only"] and sign["outcome"] == "better" and sign["limit"] == 0.0
    assert C.compare({0: 50.0}, {0: 50.0}, "GQA")["outcome"] == "equal"
    # Several seeds each, but only one in common: no interval, so the floor decides alone.
    assert C.compare({0: 60.0, 1: 61.0}, {1: 50.0, 2: 49.0}, "GQA", _se(1.0), _se(1.0))["single_seed"]


def test_a_missing_side_is_missing():
    assert C.compare(None, {0: 1.0}, "GQA") == {"outcome": "missing"}
    assert C.compare({0: 1.0}, {}, "GQA") == {"outcome": "missing"}


def test_side_is_the_majority_of_its_metrics():
    values = {("a", "in_dist", "GQA"): {0: 70.0, 1: 71.0, 2: 72.0}, ("b", "in_dist", "GQA"): {0: 50.0, 1: 50.0, 2: 50.0},
              ("a", "in_dist", "SEED"): {0: 70.0, 1: 71.0, 2: 72.0}, ("b", "in_dist", "SEED"): {0: 50.0, 1: 51.0, 2: 52.0},
              ("a", "in_dist", "MME-C"): {0: 1.0, 1: 2.0, 2: 3.0}, ("b", "in_dist", "MME-C"): {0: 2.0, 1: 1.0, 2: 3.0}}
    sd = C.side(values, "a", "b", ("GQA", "SEED", "MME-C", "POPE-F1"), "in_dist")
    assert (sd["n"], sd["better"], sd["worse"], sd["beats"], sd["loses"]) == (3, 2, 0, True, False)
    one = C.side(values, "a", "b", ("GQA", "MME-C"), "in_dist")  # 1 of 2 is no majority
    assert not one["beats"] and not one["loses"]
    assert not C.side(values, "a", "b", ("POPE-F1",), "in_dist")["beats"]  # nothing to count


# ============================================================== claim by claim

@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Run info and roles of the project's grid on the tiny preset (no data: fixed shapes)."""
    from uvlm.tokens.sequences import Vocab
    root = tmp_path_factory.mktemp("grid")
    runs = yaml.safe_load((__import__("pathlib").Path(__file__).parents[1] / "params.yaml").read_text())["runs"]
    (root / "params.yaml").write_text(yaml.safe_dump(
        {"preset": "tiny", "paths": {"data": str(root / "data"), "figures": str(root / "figures")},
         "train": {"seeds": [0, 1, 2]}, "runs": runs}, sort_keys=False))
    cfg = load_config(root / "params.yaml")
    shapes = {"u": np.array([[30, 16, 10], [34, 16, 12]]), "g": np.array([[25, 16, 17]] * 2)}
    return cfg, R.run_info(cfg, shapes, Vocab(n_text=50, codebook_size=32)), R.roles(cfg)


def _tight(value):
    """Three seeds within 0.1 of ``value``: a seed interval far below every gap used here."""
    return {0: value - 0.1, 1: value, 2: value + 0.1}


def _res(grid, u: dict, g: dict, subsets=("in_dist", "transfer"), flops=None) -> R.Results:
    """``u`` / ``g``: {run: value, or {subset: value}}; G values are losses (Attr-Acc gets the negative)."""
    _, info, roles = grid
    values = {}
    for metrics, by_run, sign in ((R.U_HEADLINE, u, {}), (R.G_HEADLINE, g, {"Attr-Acc": -1})):
        for run, v in by_run.items():
            for s in subsets:
                x = v.get(s) if isinstance(v, dict) else v
                if x is not None:
                    values.update({(run, s, m): _tight(sign.get(m, 1) * x) for m in metrics})
    info = {r: dict(i) for r, i in info.items()}
    for run, rel in (flops or {}).items():
        info[run]["flops_rel"] = rel
    return R.from_values(values, info, roles)


@pytest.mark.parametrize("u_ci, g_ci, verdict", [
    ([0.10, 0.30], [0.80, 0.90], C.REPRODUCED),    # asymmetry, U collapses
    ([0.70, 0.80], [0.85, 0.95], C.PARTLY),        # asymmetry, U declines mildly only
    ([0.10, 0.30], [0.20, 0.40], C.PARTLY),        # U redundancy only (G fades below 0.5)
    ([0.90, 1.10], [0.80, 0.90], C.PARTLY),        # G persistence only (U does not drop)
    ([0.70, 0.90], [0.60, 0.80], C.PARTLY),        # both parts, but G's interval not above U's
    ([0.90, 1.20], [0.10, 0.30], C.NOT_AT_SCALE),  # neither part
])
def test_c1_every_branch(u_ci, g_ci, verdict):
    ratio = lambda ci: {"ratio": sum(ci) / 2, "ci95": ci}
    saved = attention_verdict(ratio(u_ci), ratio(g_ci))
    c1 = C.claim_c1({"source": "ug_base", "all": {"verdict": saved}})
    assert c1["verdict"] == verdict
    assert c1["details"]["asymmetry"] == (verdict == C.REPRODUCED or u_ci == [0.70, 0.80])


def test_c1_the_rule_text_says_what_the_code_does():
    assert "at least one of its two parts does" in C.VERDICT_RULE and "whether or not the other holds" in C.VERDICT_RULE
    assert C.claim_c1(None)["verdict"] == C.NOT_TESTABLE


@pytest.mark.parametrize("himix, rel, verdict", [
    (48, 0.3, C.REPRODUCED),     # hard cut, 96% kept
    (48, 0.8, C.PARTLY),         # moderate drop, no hard cut
    (30, 0.3, C.PARTLY),         # hard cut, 60% kept
    (30, 0.8, C.NOT_AT_SCALE),   # neither
])
def test_c2_every_branch(grid, himix, rel, verdict):
    c2 = C.claim_c2(_res(grid, {"u_base": 50, "u_himix": himix}, {}, flops={"u_himix": rel}))
    assert c2["verdict"] == verdict and set(c2["details"]["per_subset"].values()) == {verdict}


def test_c2_a_collapsed_metric_is_not_a_moderate_drop(grid):
    res = _res(grid, {"u_base": 50, "u_himix": 60}, {}, flops={"u_himix": 0.3})
    res.per_seed.update({("u_himix", s, "MME-C"): _tight(10.0) for s in ("in_dist", "transfer")})
    c2 = C.claim_c2(res)  # mean kept (4 x 120% + 20%) / 5 = 100%, but MME-C fell to 20%
    assert c2["details"]["mean_retention"]["in_dist"] == pytest.approx(1.0, abs=1e-3)
    assert c2["details"]["collapsed"] == {"in_dist": ["MME-C"], "transfer": ["MME-C"]}
    assert c2["verdict"] == C.PARTLY and "MME-C-a collapsed (kept 20%)" in c2["numbers"]


def test_c2_is_judged_on_both_subsets(grid):
    res = _res(grid, {"u_base": 50, "u_himix": {"in_dist": 48, "transfer": 30}}, {}, flops={"u_himix": 0.3})
    c2 = C.claim_c2(res)
    assert c2["details"]["per_subset"] == {"in_dist": C.REPRODUCED, "transfer": C.PARTLY}
    assert c2["verdict"] == C.PARTLY and "transfer: the U metrics keep 60%" in c2["numbers"]
    # A subset without numbers is left out: in-dist alone decides.
    only = C.claim_c2(_res(grid, {"u_base": 50, "u_himix": 48}, {}, ("in_dist",), {"u_himix": 0.3}))
    assert only["details"]["per_subset"]["transfer"] == C.NOT_TESTABLE and only["verdict"] == C.REPRODUCED
    assert C.claim_c2(_res(grid, {"u_base": 50}, {}))["verdict"] == C.NOT_TESTABLE


@pytest.mark.parametrize("k3, k5, rel5, verdict", [
    (10, 10, 0.7, C.REPRODUCED),     # both keep quality (equal to the baseline)
    (10, 20, 0.7, C.PARTLY),         # K5 worse
    (20, 20, 0.7, C.NOT_AT_SCALE),   # both worse
    (10, 10, 1.0, C.PARTLY),         # K5 keeps quality but cuts no FLOPs
])
def test_c3_every_branch(grid, k3, k5, rel5, verdict):
    res = _res(grid, {}, {"g_base": 10, "g_hmgen_k3": k3, "g_hmgen_k5": k5},
               flops={"g_hmgen_k3": 0.8, "g_hmgen_k5": rel5})
    c3 = C.claim_c3(res)
    assert c3["verdict"] == verdict and set(c3["details"]["per_subset"].values()) == {verdict}


def test_c3_is_judged_on_both_subsets(grid):
    res = _res(grid, {}, {"g_base": 10, "g_hmgen_k3": {"in_dist": 10, "transfer": 20}, "g_hmgen_k5": 10},
               flops={"g_hmgen_k3": 0.8, "g_hmgen_k5": 0.7})
    c3 = C.claim_c3(res)
    assert c3["details"]["per_subset"] == {"in_dist": C.REPRODUCED, "transfer": C.PARTLY}
    assert c3["verdict"] == C.PARTLY
    assert C.claim_c3(_res(grid, {}, {"g_base": 10}))["verdict"] == C.NOT_TESTABLE


@pytest.mark.parametrize("ug, verdict", [((60, 5), C.REPRODUCED), ((60, 10), C.PARTLY), ((50, 10), C.NOT_AT_SCALE)])
def test_c4_every_branch(grid, ug, verdict):
    res = _res(grid, {"u_base": 50, "ug_base": ug[0]}, {"g_base": 10, "ug_base": ug[1]})
    c4, c5, c6 = C.claims_c4_c6(res)
    assert c4["verdict"] == verdict and set(c4["details"]["per_subset"].values()) == {verdict}
    if verdict == C.NOT_AT_SCALE:
        assert c5["verdict"] == c6["verdict"] == C.NOT_TESTABLE
        assert "no synergy at this scale" in c5["numbers"]


def test_c5_c6_say_when_c4_itself_is_missing(grid):
    c4, c5, c6 = C.claims_c4_c6(_res(grid, {"u_base": 50}, {"g_base": 10}))
    assert c4["verdict"] == c5["verdict"] == c6["verdict"] == C.NOT_TESTABLE
    assert "C4 is not testable" in c5["numbers"] and "no synergy at this scale" not in c6["numbers"]


@pytest.mark.parametrize("share_all, share_partial, c5, c6", [
    ((40, 20), (55, 5), C.REPRODUCED, C.REPRODUCED),     # both lost, both restored
    ((40, 20), (55, 20), C.REPRODUCED, C.PARTLY),        # both lost, U restored only
    ((40, 20), (40, 20), C.REPRODUCED, C.NOT_AT_SCALE),  # both lost, none restored
    ((60, 20), (60, 20), C.PARTLY, C.NOT_AT_SCALE),      # G lost only, not restored
    ((60, 5), (60, 5), C.NOT_AT_SCALE, C.NOT_TESTABLE),  # nothing lost: nothing to restore
])
def test_c5_c6_every_branch(grid, share_all, share_partial, c5, c6):
    sa, sp = "ug_himix_hmgen_shareall", "ug_himix_hmgen_sharepartial"
    res = _res(grid, {"u_base": 50, "ug_base": 60, "u_himix": 50, sa: share_all[0], sp: share_partial[0]},
               {"g_base": 10, "ug_base": 5, "g_hmgen_k3": 10, "g_hmgen_k5": 10, sa: share_all[1],
                sp: share_partial[1]})
    got = C.claims_c4_c6(res)
    assert [c["verdict"] for c in got] == [C.REPRODUCED, c5, c6]


def test_the_seed_spread_decides_what_the_item_floor_alone_would_not():
    """POPE-F1-like: a small item floor, a large seed-to-seed swing. One seed: decided by the floor;
    three seeds with the same means but paired gaps of -20, 10, 40: undecided."""
    noise = {(r, s, "POPE-F1"): _se(3.0) for r in ("u_base", "ug_base") for s in ("in_dist", "transfer")}
    one = {("u_base", "in_dist", "POPE-F1"): {0: 50.0}, ("ug_base", "in_dist", "POPE-F1"): {0: 60.0}}
    assert C.side(one, "ug_base", "u_base", ("POPE-F1",), "in_dist", noise)["better"] == 1
    three = {("u_base", "in_dist", "POPE-F1"): {0: 70.0, 1: 40.0, 2: 40.0},
             ("ug_base", "in_dist", "POPE-F1"): {0: 50.0, 1: 50.0, 2: 80.0}}
    c = C.side(three, "ug_base", "u_base", ("POPE-F1",), "in_dist", noise)["metrics"]["POPE-F1"]
    assert c["gain"] == pytest.approx(10.0) and c["outcome"] == "within spread" and c["limit"] > 30


# ============================================================== the step cap

def _summary(best: dict, cap=None, every=None, **extra) -> dict:
    out = {"steps": cap or 500, "best": {t: {"val_loss": 1.0, "step": s} for t, s in best.items()}, **extra}
    if cap is not None:
        out.update(cap_steps=cap, stopped_step=cap, stopped_early=False, eval_every=every)
    return out


def test_best_vs_cap_every_branch():
    got = R.best_vs_cap(_summary({"u": 1000, "g": 901, "x": 900}, cap=1000, every=100))
    assert {t: e["status"] for t, e in got.items()} == {"u": R.AT_CAP, "g": R.AT_CAP, "x": R.BEFORE_CAP}
    assert got["u"] == {"status": R.AT_CAP, "best_step": 1000, "cap_steps": 1000, "eval_every": 100,
                        "stopped_early": False}
    early = R.best_vs_cap(_summary({"u": 300}, cap=1000, every=100) | {"stopped_early": True, "stopped_step": 500})
    assert early["u"]["status"] == R.BEFORE_CAP and early["u"]["stopped_early"]
    # Summaries from before the cap was recorded: unknown, never guessed from "steps".
    assert R.best_vs_cap(_summary({"u": 500}))["u"]["status"] == R.UNKNOWN
    assert R.best_vs_cap(_summary({"u": None}, cap=1000, every=100))["u"]["status"] == R.UNKNOWN
    assert R.best_vs_cap({"cap_steps": True, "eval_every": 1, "best": {"u": {"step": 5}}})["u"]["status"] == R.UNKNOWN
    assert R.best_vs_cap({}) == {}


def test_cap_lists_and_table_cells():
    conv = {"u_base": {0: R.best_vs_cap(_summary({"u": 1000}, 1000, 100)),
                       1: R.best_vs_cap(_summary({"u": 500}, 1000, 100)),
                       2: R.best_vs_cap(_summary({"u": 500}))},
            "ug_base": {0: R.best_vs_cap(_summary({"u": 950, "g": 100}, 1000, 100)),
                        1: R.best_vs_cap(_summary({"u": 960, "g": 990}, 1000, 100))},
            "g_base": {0: R.best_vs_cap(_summary({"g": 500}))}}
    assert R.at_cap(conv) == ["u_base seed 0 (U)", "ug_base seed 0 (U)", "ug_base seed 1 (G)", "ug_base seed 1 (U)"]
    assert R.at_cap(conv, {"g_base"}) == [] and R.cap_unknown(conv) == ["u_base seed 2", "g_base seed 0"]
    assert R.cap_text(conv["u_base"]) == "seed 0 (U); 1 unknown"
    assert R.cap_text(conv["ug_base"]) == "seeds 0 (U), 1 (G), 1 (U)"
    assert R.cap_text(conv["g_base"]) == "unknown" and R.cap_text({}) == "unknown"
    assert R.cap_text({0: R.best_vs_cap(_summary({"u": 10}, 1000, 100))}) == "no"
    with pytest.warns(R.BestAtCapWarning, match="u_base seed 0 \\(U\\)"):
        assert R.warn_best_at_cap(conv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert R.warn_best_at_cap({"g_base": conv["g_base"]}) is None  # unknown alone is no warning


def test_the_results_stage_flags_a_best_checkpoint_at_the_cap(grid):
    """From the training summaries on disk to the warning, the tables and the claims."""
    cfg, info, roles = grid
    runs = cfg.paths.data / "runs"
    for seed in (0, 1, 2):
        write_json(runs / "u_himix" / f"seed{seed}" / "train_summary.json",
                   _summary({"u": 1000 if seed == 1 else 400}, 1000, 100))
        write_json(runs / "u_base" / f"seed{seed}" / "train_summary.json", _summary({"u": 500}))
    conv = R.convergence_table(cfg)
    assert set(conv) == {"u_himix", "u_base"} and conv["u_himix"][1]["u"]["status"] == R.AT_CAP
    res = _res(grid, {"u_base": 50, "u_himix": 48}, {}, flops={"u_himix": 0.3})
    res.convergence = conv
    res.info = {r: {**i, "best_at_cap": R.cap_text(conv.get(r, {}))} for r, i in res.info.items()}
    c2 = C.claim_c2(res)
    assert c2["at_cap"] == ["u_himix seed 1 (U)"] and len(c2["cap_unknown"]) == 3
    md = C.claims_markdown([c2])
    assert "best checkpoint at the step cap: u_himix seed 1 (U)" in md
    assert "**Best checkpoint at the step cap**" in md and "for 3 run/seed(s)" in md
    t1 = T.table1(res.stats, res.info)
    cells = {r["Method"]: r["Best at cap"] for r in t1.rows}
    assert cells == {res.info["u_base"]["label"]: "unknown", res.info["u_himix"]["label"]: "seed 1 (U)"}
    # Nothing at the cap and nothing unknown: the claims say nothing about it.
    plain = C.claims_markdown([C.claim_c2(_res(grid, {"u_base": 50, "u_himix": 48}, {}))])
    assert "Best checkpoint at the step cap" not in plain and "Step cap not recorded" not in plain


# ============================================================== POPE beside its F1

def test_pope_accuracy_and_yes_ratio_are_columns():
    pred = np.array([1, 1, 1, 1, 1, 0, 1, 0], bool)
    gold = np.array([1, 0, 1, 0, 1, 0, 1, 0], bool)
    pope = S.pope_scores(pred, gold, ["adversarial"] * 4 + ["random"] * 4)
    assert pope["yes_ratio"] == pytest.approx((100 + 50) / 2) and pope["acc"] == pytest.approx((50 + 100) / 2)
    row = S.table({"u": {"pope": {"in_dist": pope}}})["in_dist"]
    assert row["POPE-Acc"] == pytest.approx(75.0) and row["POPE-Yes"] == pytest.approx(75.0)
    # A record scored before the overall yes-ratio was saved: rebuilt from the samplings present.
    old = {k: v for k, v in pope.items() if k != "yes_ratio"}
    assert S.table({"u": {"pope": {"in_dist": old}}})["in_dist"]["POPE-Yes"] == pytest.approx(75.0)
    assert S.table({})["in_dist"]["POPE-Yes"] is None
    # POPE-Acc has an item SE like any accuracy: over all n POPE items.
    assert R.seed_noise({"u": {"pope": {"in_dist": pope}}})[("in_dist", "POPE-Acc")] == \
        {"se": pytest.approx(R.proportion_se(75.0, 8)), "n": 8}
    heads = [h for h, _, _ in T.U_COLUMNS]
    assert heads.index("POPE-Acc-a") == heads.index("POPE-F1-a") + 1 and "POPE yes %" in heads
