"""Results stage: FLOPs ratios of the plans, collection of metrics and summaries, claim verdicts, figures."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from uvlm.core.config import load_config
from uvlm.core.errors import MissingInputError
from uvlm.core.io import write_json
from uvlm.eval import scoring as S
from uvlm.paper import claims as C
from uvlm.paper import results as R
from uvlm.tokens.sequences import Vocab

REPO = Path(__file__).parents[1]
GRID = yaml.safe_load((REPO / "params.yaml").read_text())["runs"]
SHAPES = {"u": np.array([[30, 16, 10], [34, 16, 12], [30, 16, 10]]), "g": np.array([[25, 16, 17]] * 2)}
VOCAB = Vocab(n_text=50, codebook_size=32)


@pytest.fixture
def cfg(tmp_path):
    """The project's run grid on the tiny preset (4 layers); no data needed."""
    params = {"preset": "tiny", "paths": {"data": str(tmp_path / "data"), "figures": str(tmp_path / "figures")},
              "train": {"seeds": [0, 1, 2]}, "runs": GRID}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return load_config(tmp_path / "params.yaml")


# ============================================================== FLOPs

def test_flops_ratios_against_each_runs_baseline(cfg):
    from uvlm.model.flops import plan_flops
    from uvlm.train.setup import model_config, run_plans
    info = R.run_info(cfg, SHAPES, VOCAB)
    assert list(info)[:3] == ["u_base", "g_base", "ug_base"]
    assert {r: i["baseline"] for r, i in info.items() if r.startswith("g_")} == \
        {"g_base": "g_base", "g_hmgen_k3": "g_base", "g_hmgen_k5": "g_base"}
    for base in ("u_base", "g_base", "ug_base"):
        assert info[base]["flops_rel"] == 1.0

    spec = cfg.run("u_himix")
    mcfg, plan = model_config(cfg, VOCAB, spec), run_plans(cfg, spec)["u"]
    by_hand = np.mean([plan_flops(mcfg, plan, int(t), int(m), float(l))["total"] for t, m, l in SHAPES["u"]])
    assert info["u_himix"]["flops_per_sample"] == pytest.approx(by_hand)
    base = np.mean([plan_flops(mcfg, None, int(t), int(m), float(l))["total"] for t, m, l in SHAPES["u"]])
    assert info["u_himix"]["flops_rel"] == pytest.approx(by_hand / base)
    assert 0 < info["u_himix"]["flops_rel"] < 1

    # K from the plan at this depth: 0.15 and 0.25 of 4 layers -> 1 shallow layer, in the middle.
    assert info["g_hmgen_k3"]["hmgen_k"] == 1 and info["g_hmgen_k3"]["shallow_layers"] == [2]
    assert 0 < info["g_hmgen_k3"]["flops_rel"] < 1

    # Unified: per-sample FLOPs weighted by the task mix, relative to the unified baseline.
    ug, sa = info["ug_base"], info["ug_himix_hmgen_shareall"]
    assert sum(ug["task_weights"].values()) == pytest.approx(1.0)
    assert ug["flops_per_sample"] == pytest.approx(sum(ug["task_weights"][t] * ug["flops_per_task"][t] for t in "ug"))
    assert sa["flops_rel"] == pytest.approx(sa["flops_per_sample"] / ug["flops_per_sample"])
    assert sa["flops_rel"] < 1 and sa["label"].startswith("HiMix-HMGen (Share All")


def test_mean_plan_flops_weights_repeated_shapes():
    from uvlm.model.flops import plan_flops
    from uvlm.model.decoder import UVLMConfig
    mcfg = UVLMConfig(vocab_size=82, image_token_start=50, d_model=16, n_layers=2, n_heads=2, n_kv_heads=2)
    one = plan_flops(mcfg, None, 10, 4, 3.0)["total"]
    two = plan_flops(mcfg, None, 20, 4, 3.0)["total"]
    got = R.mean_plan_flops(mcfg, None, np.array([[10, 4, 3], [20, 4, 3], [10, 4, 3]]))
    assert got == pytest.approx((2 * one + two) / 3)


# ============================================================== collection

def _metrics(u: float, fd: float) -> dict:
    """One seed's metrics in evaluate.evaluate_run's structure (the parts the table reads)."""
    m = {"u": {"gqa": {}, "pope": {}, "mme": {}, "seed": {}}, "g": {"generation": {}, "nll": {}}}
    for s in S.SUBSETS:
        m["u"]["gqa"][s] = {"acc": u, "n": 10}
        m["u"]["pope"][s] = {k: {"acc": u} for k in S.POPE_SAMPLINGS} | {"f1": u, "acc": u}
        m["u"]["mme"][s] = {"perception": 3 * u, "reasoning": u}
        m["u"]["seed"][s] = {"acc": u}
        m["g"]["generation"][s] = {"fd": fd, "fd_recon_floor": 0.1, "attr_acc": 60.0}
        m["g"]["nll"][s] = {"nll": 2.0}
    m["table"] = S.table(m)
    return m


def _write_run(cfg, run, values, times):
    per_seed = {}
    for seed, (u, fd) in enumerate(values):
        per_seed[str(seed)] = {"run": run, "seed": seed, **_metrics(u, fd)}
        write_json(cfg.paths.data / "runs" / run / f"seed{seed}" / "train_summary.json",
                   {"train_time_s": times[seed], "mean_step_time_s": times[seed] / 10, "tokens_per_s": 1.0,
                    "flops_total": 1e9, "steps": 10})
    write_json(cfg.paths.figures / "metrics" / f"{run}.json",
               {"run": run, "seeds": list(range(len(values))), "per_seed": per_seed})


def test_tidy_frame_summary_and_time_ratios(cfg):
    _write_run(cfg, "u_base", [(50, 4), (52, 4), (54, 4)], [10.0, 10.0, 20.0])
    _write_run(cfg, "u_himix", [(40, 4), (41, 4), (42, 4)], [5.0, 6.0, 8.0])
    with pytest.raises(MissingInputError, match="eval@g_base"):
        R.tidy_frame(cfg)
    frame = R.tidy_frame(cfg, strict=False)
    assert set(frame.columns) == {"run", "seed", "subset", "metric", "value"}
    rel = frame[(frame.run == "u_himix") & (frame.metric == "time_rel")].sort_values("seed")["value"].tolist()
    assert rel == pytest.approx([0.5, 0.6, 0.4])
    stats = R.lookup(R.summarise(frame))
    mean, std, n = stats[("u_base", "in_dist", "GQA")]
    assert (mean, n) == (52.0, 3) and std == pytest.approx(2.0)
    assert stats[("u_himix", "all", "time_rel")][0] == pytest.approx(0.5)
    assert ("u_base", "transfer", "POPE-F1") in stats


def test_single_seed_has_no_std(cfg):
    _write_run(cfg, "u_base", [(50, 4)], [10.0])
    stats = R.lookup(R.summarise(R.tidy_frame(cfg, strict=False)))
    assert stats[("u_base", "in_dist", "GQA")] == (50.0, None, 1)


def test_noise_table_reads_item_counts_and_keeps_the_se_over_seeds(cfg):
    _write_run(cfg, "u_base", [(50, 4), (50, 4)], [10.0, 10.0])
    _write_run(cfg, "g_base", [(0, 4), (0, 4)], [10.0, 10.0])
    noise = R.noise_table(cfg)
    # 50% on 10 items: SE = 100 * sqrt(0.25 / 10); seeds share the items, so no / sqrt(2).
    assert noise[("u_base", "in_dist", "GQA")] == {"se": pytest.approx(15.811, abs=1e-3), "n": 10}
    assert noise[("g_base", "transfer", "FID")] == {"floor": 0.1}
    assert ("g_base", "in_dist", "G-NLL") not in noise  # no per-item spread saved
    assert ("u_base", "in_dist", "SEED") not in noise   # no item count saved


def test_standard_errors_by_hand():
    assert R.proportion_se(50.0, 100) == pytest.approx(5.0)
    assert R.proportion_se(50.0, 0) is None and R.proportion_se(None, 10) is None
    # MME: per subtask SE_acc + SE_acc+ (5 + 100*sqrt(0.16/50) = 10.657); two subtasks add in quadrature.
    sub = {"category": "perception", "acc": 50.0, "acc_plus": 20.0, "n": 100, "n_pairs": 50}
    subtasks = {"a": sub, "b": dict(sub), "c": dict(sub, category="reasoning", n=0)}
    assert R.mme_se(subtasks, "perception") == pytest.approx(2 ** 0.5 * (5 + 100 * (0.16 / 50) ** 0.5))
    assert R.mme_se(subtasks, "reasoning") is None  # a subtask without items: no estimate
    # POPE: 100 items, 50 "yes", precision 80%, accuracy 80% -> TP 40, FP 10, FN 10, TN 40, F1 80%.
    # x = TP / (TP + FP + FN) = 2/3 over m = 60 items; SE(F1) = 2 / (1 + x)^2 * sqrt(x (1 - x) / m).
    one = {"acc": 80.0, "precision": 80.0, "recall": 80.0, "f1": 80.0, "yes_ratio": 50.0, "n": 100}
    by_hand = 100 * 2 / (5 / 3) ** 2 * ((2 / 9) / 60) ** 0.5
    assert R.f1_se(one) == pytest.approx(by_hand)
    pope = {s: dict(one) for s in S.POPE_SAMPLINGS}
    assert R.pope_f1_se(pope) == pytest.approx(by_hand / 3 ** 0.5)  # mean of three disjoint samplings
    noise = R.seed_noise({"u": {"pope": {"in_dist": {**pope, "f1": 80.0, "acc": 80.0, "n": 300}}}})
    assert noise[("in_dist", "POPE-F1")]["n"] == 300 and noise[("in_dist", "POPE-A")]["se"] == pytest.approx(4.0)


# ============================================================== verdicts

def _se(pct, n):
    return {"se": R.proportion_se(pct, n), "n": n}


def test_claims_show_what_is_within_noise(cfg):
    res = R.from_values({}, R.run_info(cfg, SHAPES, VOCAB), R.roles(cfg))
    for run, u, g in (("u_base", 22.7, None), ("g_base", None, 3.34), ("ug_base", 28.0, 3.06)):
        for s in ("in_dist", "transfer"):
            for m in (R.U_HEADLINE if u is not None else ()):
                res.per_seed[(run, s, m)] = {0: u}
                res.noise[(run, s, m)] = _se(u, 211)
            for m in (R.G_HEADLINE if g is not None else ()):
                res.per_seed[(run, s, m)] = {0: g}
                if m != "G-NLL":
                    res.noise[(run, s, m)] = {"floor": 1.0} if m == "FID" else _se(g, 138)
    c4 = C.claims_c4_c6(res)[0]
    # 28.0 vs 22.7 on 211 items (floor 8.5) is within noise; unified G is only better by G-NLL's sign.
    u_side = c4["details"]["sides"]["in_dist"]["u"]
    assert u_side["better"] == 0 and u_side["within_noise"] == 5 and not u_side["beats"]
    assert c4["verdict"] == C.NOT_AT_SCALE and c4["sign_only"] == ["G-NLL"]
    assert "GQA-a 28 vs 22.7 (±8.5, within noise)" in c4["numbers"]
    assert "G-NLL 3.06 vs 3.34 (no noise estimate: sign only)" in c4["numbers"]
    md = C.claims_markdown([c4])
    assert "(single seed; G-NLL judged by sign only (no noise estimate))" in md and "within noise" in md


# Each run's three seeds sit at value -1, 0, +1 (std 1), in an order of the run's own, so that the
# paired differences of two runs vary over seeds as independent runs' do: sd 1, 1.73 or 2, that is
# 95% half-widths of 2.48, 4.30 or 4.97 over three seeds.
OFFSETS = {"u_base": (-1, 0, 1), "g_base": (-1, 0, 1), "ug_base": (1, 0, -1), "u_himix": (0, 1, -1),
           "g_hmgen_k3": (0, -1, 1), "g_hmgen_k5": (1, -1, 0), "ug_himix_hmgen_shareall": (-1, 1, 0),
           "ug_himix_hmgen_sharepartial": (0, -1, 1), "u_base_x2": (1, -1, 0)}


def _seeds(run, value, metric=""):
    sign = -1 if metric == "Attr-Acc" else 1  # the g value is "lower is better": Attr-Acc gets its negative
    return {s: sign * float(value + o) for s, o in enumerate(OFFSETS[run])}


def _values(values: dict, subsets=("in_dist", "transfer")) -> dict:
    """{run: (u_value, g_value)} -> {(run, subset, metric): {seed: value}}, same numbers on both subsets."""
    out = {}
    for run, (u, g) in values.items():
        for s in subsets:
            out.update({(run, s, m): _seeds(run, u) for m in R.U_HEADLINE if u is not None})
            out.update({(run, s, m): _seeds(run, g, m) for m in R.G_HEADLINE if g is not None})
    return out


def _results(cfg, values):
    return R.from_values(_values(values), R.run_info(cfg, SHAPES, VOCAB), R.roles(cfg))


def test_no_synergy_makes_c5_c6_not_testable(cfg):
    res = _results(cfg, {"u_base": (50, None), "g_base": (None, 10), "ug_base": (51, 9.5),
                         "u_himix": (45, None), "g_hmgen_k3": (None, 10),
                         "ug_himix_hmgen_shareall": (30, 12), "ug_himix_hmgen_sharepartial": (40, 11)})
    c4, c5, c6 = C.claims_c4_c6(res)
    assert c4["verdict"] == C.NOT_AT_SCALE and not c4["single_seed"]
    assert c5["verdict"] == c6["verdict"] == C.NOT_TESTABLE
    assert "30 vs 45" in c5["numbers"]  # numbers are still reported


def test_synergy_lost_and_partly_restored(cfg):
    res = _results(cfg, {"u_base": (50, None), "g_base": (None, 10), "ug_base": (60, 4),
                         "u_himix": (45, None), "g_hmgen_k3": (None, 10),
                         "ug_himix_hmgen_shareall": (30, 12), "ug_himix_hmgen_sharepartial": (40, 11)})
    c4, c5, c6 = C.claims_c4_c6(res)
    # Share partial restores U (40 vs 30) but its G is inside the seed interval (11 vs 12, half-width 4.3).
    assert (c4["verdict"], c5["verdict"], c6["verdict"]) == (C.REPRODUCED, C.REPRODUCED, C.PARTLY)
    res.per_seed.update(_values({"ug_himix_hmgen_sharepartial": (None, 6)}))  # 6 vs 12: beyond it
    assert C.claims_c4_c6(res)[2]["verdict"] == C.REPRODUCED
    # Synergy on U only, in one subset only -> partly.
    res.per_seed.update(_values({"ug_base": (50, None), "u_base": (50, None)}, subsets=("transfer",)))
    res.per_seed.update(_values({"ug_base": (None, 10)}))
    c4, c5, _ = C.claims_c4_c6(res)
    assert c4["details"]["per_subset"] == {"in_dist": C.PARTLY, "transfer": C.NOT_AT_SCALE}
    assert c4["verdict"] == C.PARTLY
    assert c5["details"]["per_subset"]["transfer"] == C.NOT_TESTABLE and c5["verdict"] == C.REPRODUCED


def test_c1_c2_c3(cfg):
    att = {"source": "ug_base", "all": {"verdict": {"asymmetry": False, "u_late_visual_redundancy": True,
                                                    "g_persistent_image_dependence": False, "summary": "U drops."}}}
    assert C.claim_c1(att)["verdict"] == C.PARTLY
    assert C.claim_c1(None)["verdict"] == C.NOT_TESTABLE
    # The asymmetry with only a mild U decline is partly; with U's collapse (CI below 0.5) reproduced.
    ratios = lambda u_ci: {"source": "ug_base", "all": {"verdict": {
        "u_ratio": {"ratio": sum(u_ci) / 2, "ci95": u_ci}, "g_ratio": {"ratio": 0.84, "ci95": [0.81, 0.88]},
        "asymmetry": True, "u_late_visual_redundancy": True, "g_persistent_image_dependence": True,
        "summary": "saved before the strength qualifier"}}}
    mild = C.claim_c1(ratios([0.77, 0.80]))
    assert mild["verdict"] == C.PARTLY and "mild decline" in mild["numbers"] and mild["details"]["asymmetry"]
    assert C.claim_c1(ratios([0.30, 0.45]))["verdict"] == C.REPRODUCED
    res = _results(cfg, {"u_base": (50, None), "u_himix": (46, None), "g_base": (None, 10),
                         "g_hmgen_k3": (None, 10.5), "g_hmgen_k5": (None, 16)})
    res.info["u_himix"]["flops_rel"] = 0.3
    c2 = C.claim_c2(res)
    assert c2["verdict"] == C.REPRODUCED and c2["details"]["mean_retention"]["in_dist"] == pytest.approx(0.92)
    res.info["u_himix"]["flops_rel"] = 0.8  # a small cut is not "hard"
    assert C.claim_c2(res)["verdict"] == C.PARTLY
    c3 = C.claim_c3(res)  # K3 within the seed interval (kept), K5 clearly worse (16 vs 10, half-width 4.3)
    assert c3["verdict"] == C.PARTLY
    md = C.claims_markdown([C.claim_c1(att), c2, c3], "tiny", [0, 1, 2])
    assert md.count("\n- **C") == 3 and "Verdict: **partly**" in md


# ============================================================== figures and notebook

def test_figures_write_pngs(cfg, tmp_path):
    from uvlm.paper import figures as F
    F.plot_layer_plans(R.layer_plans(cfg), tmp_path / "plans.png")
    res = _results(cfg, {"u_base": (50, None), "g_base": (None, 10), "ug_base": (60, 5), "u_himix": (45, None),
                         "g_hmgen_k3": (None, 10), "ug_himix_hmgen_shareall": (30, 12),
                         "ug_himix_hmgen_sharepartial": (40, 11)})
    res.stats[("u_himix", "all", "time_rel")] = (0.7, 0.1, 3)
    F.plot_synergy(R.synergy_frame(res), tmp_path / "syn.png")
    F.plot_efficiency(R.efficiency_frame(res), tmp_path / "eff.png")
    F.plot_efficiency(R.efficiency_frame(R.Results(None, None, {}, {}, {})), tmp_path / "eff_empty.png")
    assert (tmp_path / "eff_empty.png").stat().st_size > 0  # a grid without accelerated runs still gets its figure
    img = np.zeros((2, 8, 8, 3), np.uint8)
    gen = {s: {"fd": 1.0} for s in S.SUBSETS}
    F.plot_fig5({"metrics": {"n": 2, "device": "cpu", "plans": {
        "full": {"k": 0, "shallow_layers": [], "time_s": 2.0, "speedup": 1.0, "generation": gen},
        "hmgen_k1": {"k": 1, "shallow_layers": [2], "time_s": 1.0, "speedup": 2.0, "generation": gen}}},
        "samples": {"real": img, "full": img, "hmgen_k1": img, "prompts": np.array(["a", "b"])}},
        tmp_path / "fig5.png")
    for name in ("plans", "syn", "eff", "fig5"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_inference_time_hmgen_on_a_baseline_checkpoint(tiny_world, tmp_path):
    """HMGen with K = 0 only swaps in copied image projections: samples equal the full plan's."""
    from uvlm.paper.fig5 import fig5_frame, inference_time_hmgen
    from uvlm.train.setup import build_model, vocab_for
    cfg = load_config(tiny_world)
    vocab, _ = vocab_for(cfg)
    model = build_model(cfg, vocab, cfg.run("g_base"), 0)
    model.save_pretrained(cfg.paths.data / "runs" / "g_base" / "seed0" / "best_g")
    out = inference_time_hmgen(cfg, "g_base", 0, ks=[0, 1], n=4, out_path=tmp_path / "fig5.json")
    m = out["metrics"]
    assert list(m["plans"]) == ["full", "hmgen_k0", "hmgen_k1"] and m["plans"]["hmgen_k1"]["shallow_layers"] == [2]
    assert np.array_equal(out["samples"]["full"], out["samples"]["hmgen_k0"])
    assert m["plans"]["hmgen_k1"]["forward_flops_rel"] < 1 == m["plans"]["full"]["speedup"]
    assert m["plans"]["full"]["generation"]["all"]["n"] == 4 and (tmp_path / "fig5.json").exists()
    assert len(fig5_frame(out)) == 3


def test_notebook_is_stored_clean_with_a_parameters_cell():
    import nbformat
    nb = nbformat.read(REPO / "notebooks" / "07_results.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []) and 'params_path = "params.yaml"' in code[0].source
    assert all(not c.outputs and c.execution_count is None for c in code)


def test_g_nll_noise_comes_from_its_saved_standard_error():
    from uvlm.paper.results import seed_noise

    metrics = {"g": {"nll": {"in_dist": {"nll": 3.1, "se": 0.02, "n_images": 200, "n_tokens": 13000}}}}
    assert seed_noise(metrics)[("in_dist", "G-NLL")] == {"se": 0.02, "n": 200}
    assert ("transfer", "G-NLL") not in seed_noise(metrics)


def test_loss_view_is_reported_beside_the_verdicts_and_never_decides_them(cfg):
    res = _results(cfg, {"u_base": (50, None), "g_base": (None, 10), "ug_base": (50, 12),
                         "u_himix": (50, None), "g_hmgen_k3": (None, 10),
                         "ug_himix_hmgen_shareall": (50, 12), "ug_himix_hmgen_sharepartial": (50, 12)})
    nll = {"u_base": (0.150, 0.155, 0.160), "ug_base": (0.090, 0.098, 0.106), "u_himix": (0.140, 0.151, 0.162),
           "ug_himix_hmgen_shareall": (0.171, 0.176, 0.181), "ug_himix_hmgen_sharepartial": (0.150, 0.167, 0.184)}
    for run, by_seed in nll.items():
        for s in ("in_dist", "transfer"):
            res.per_seed[(run, s, C.LOSS_VIEW)] = dict(enumerate(by_seed))
    before = [c["verdict"] for c in C.claims_c4_c6(res)]
    c4, c5, c6 = C.claims_c4_c6(res)
    assert [c4["verdict"], c5["verdict"], c6["verdict"]] == before == [C.NOT_AT_SCALE, C.NOT_TESTABLE,
                                                                         C.NOT_TESTABLE]
    # 0.098 vs 0.155: paired gaps 0.060, 0.057, 0.054 (sd 0.003), half-width 4.303 * 0.003 / sqrt(3) = 0.0075.
    assert c4["details"]["loss_view"]["in_dist"]["outcome"] == "better"
    assert "Loss view (reported, not part of the verdict): in-dist U-NLL 0.098 vs 0.155 (±0.0075), better" \
        in c4["numbers"]
    assert c5["details"]["loss_view"]["in_dist"]["outcome"] == "worse"          # 0.176 vs HiMix's 0.151
    assert c6["details"]["loss_view"]["in_dist"]["outcome"] == "within spread"  # gaps 0.021, 0.009, -0.003
    c2 = C.claim_c2(res)
    assert c2["details"]["loss_view"]["transfer"]["outcome"] == "within spread"
    # One seed and no item-level noise: the sign only, and the text says so.
    res.per_seed.update({(r, s, C.LOSS_VIEW): {0: v[1]} for r, v in nll.items() for s in ("in_dist", "transfer")})
    assert "U-NLL 0.098 vs 0.155 (no noise estimate: sign only)" in C.claims_c4_c6(res)[0]["numbers"]


def test_u_nll_is_a_table_column_read_from_the_u_test_items(cfg):
    from uvlm.paper import tables as T
    m = _metrics(50, 4)
    for s in S.SUBSETS:
        m["u"]["u_test"] = {**m["u"].get("u_test", {}), s: {"nll": 0.25, "n": 10}}
    assert S.nested_get(m, ("u", "u_test", "in_dist", "nll")) == 0.25
    assert "U-NLL" in R.LOWER_IS_BETTER and ("U-NLL", "U-NLL", 3) in T.U_COLUMNS


def _record(tmp_path):
    """A record folder as the gpu pipeline brings one back: params, per-run metrics, summaries, run info."""
    record = tmp_path / "record"
    record.mkdir()
    (record / "params.yaml").write_text(yaml.safe_dump({"preset": "tiny", "train": {"seeds": [0, 1, 2]},
                                                        "runs": GRID}, sort_keys=False))
    cfg = load_config(record / "params.yaml", overrides={"paths": {"data": str(record), "figures": str(record)}})
    for i, run in enumerate(GRID):
        _write_run(cfg, run, [(50 + i, 4), (51 + i, 4), (52 + i, 4)], [10.0, 11.0, 12.0])
    write_json(record / "metrics" / "results.json", {"runs": R.run_info(cfg, SHAPES, VOCAB), "fig5": {"kept": 1}})
    return record


def test_rescore_rewrites_a_record_from_its_saved_scores(tmp_path):
    from uvlm.core.io import read_json
    from uvlm.paper.rescore import main, rescore
    record = _record(tmp_path)
    claims = rescore(record)
    assert [c["id"] for c in claims] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert "U-NLL" in (record / "tables" / "table3.md").read_text()
    assert (record / "claims.md").read_text().startswith("# The paper's claims")
    saved = read_json(record / "metrics" / "results.json")
    assert saved["fig5"] == {"kept": 1} and [c["id"] for c in saved["claims"]] == [c["id"] for c in claims]
    assert (record / "fig_synergy.png").stat().st_size > 0 and (record / "fig_efficiency.png").stat().st_size > 0
    assert main([str(record)]) == 0


def test_rescore_names_what_a_record_lacks(tmp_path, capsys):
    from uvlm.core.errors import UVLMError
    from uvlm.paper.rescore import main, rescore
    record = _record(tmp_path)
    saved = yaml.safe_load((record / "metrics" / "results.json").read_text())
    write_json(record / "metrics" / "results.json", {"runs": {"u_base": saved["runs"]["u_base"]}})
    with pytest.raises(UVLMError, match="does not describe the runs"):
        rescore(record)
    (record / "metrics" / "results.json").unlink()
    with pytest.raises(MissingInputError, match="results.json"):
        rescore(record)
    assert main([str(tmp_path / "nowhere")]) == 2 and "params.yaml" in capsys.readouterr().err


def test_a_step_matched_baseline_is_a_control_never_a_baseline(tmp_path):
    grid = {**GRID, "u_base_x2": {"task": "u", "accel": "base", "epochs_factor": 2.0}}
    params = {"preset": "tiny", "paths": {"data": str(tmp_path / "data"), "figures": str(tmp_path / "figures")},
              "train": {"seeds": [0, 1, 2]}, "runs": grid}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = load_config(tmp_path / "params.yaml")
    rl = R.roles(cfg)
    assert rl["u_base"] == "u_base" and rl["u_base_long"] == "u_base_x2" and rl["g_base_long"] is None
    info = R.run_info(cfg, SHAPES, VOCAB)
    assert info["u_base_x2"]["label"] == "Baseline (U-only, 2x epochs)" and info["u_base_x2"]["baseline"] == "u_base"
    assert info["u_base_x2"]["flops_rel"] == pytest.approx(1.0)  # per sample; it just sees more of them
    assert list(info).index("u_base_x2") == list(info).index("u_base") + 1

    values = {"u_base": (50, None), "g_base": (None, 10), "ug_base": (60, 12), "u_himix": (50, None),
              "g_hmgen_k3": (None, 10), "ug_himix_hmgen_shareall": (50, 12), "ug_himix_hmgen_sharepartial": (50, 12)}
    res = R.from_values(_values(values), info, rl)
    plain = C.claims_c4_c6(res)[0]
    assert "Step-matched view" not in plain["numbers"]  # no control run scored: nothing to report
    res.per_seed.update(_values({"u_base_x2": (65, None)}))
    c4 = C.claims_c4_c6(res)[0]
    assert c4["verdict"] == plain["verdict"] == C.PARTLY  # U beats u_base, G does not; the control never decides
    u = c4["details"]["step_matched"]["u"]["in_dist"]
    assert u["runs"] == ["ug_base", "u_base_x2"] and u["worse"] == 5  # 60 vs 65: gaps -5, -4, -6
    assert "Step-matched view" in c4["numbers"] and "against u_base_x2 (2x epochs)" in c4["numbers"]
    # The synergy figure's frame shows the same comparison, U side only (no G control in this grid).
    syn = R.synergy_frame(res)
    matched = syn[syn.comparison == "unified vs isolated (base, step-matched)"]
    assert set(matched.task) == {"u"} and (matched.isolated == 65).all() and (matched.gain == -5).all()
    assert "unified vs isolated (base, step-matched)" not in set(R.synergy_frame(
        R.from_values(_values(values), info, {**rl, "u_base_long": None})).comparison)


@pytest.mark.parametrize("record", ["records/gpu/grid", "records/gpu/step_matched", "records/gpu/parallel",
                                    "records/gpu/critical_path", "records/gpu/ten_minutes",
                                    "records/step_matched_cpu"])
def test_committed_records_read_as_the_current_code_reads_them(tmp_path, record):
    """A committed record's tables and claims are what the current results code makes of its scores
    (re-derive them with `python -m uvlm.paper.rescore RECORD` after changing that code)."""
    import shutil

    from uvlm.paper.rescore import rescore
    copy = tmp_path / "record"
    shutil.copytree(REPO / record, copy)
    rescore(copy)
    for name in ["claims.md", *(f"tables/{p.name}" for p in (REPO / record / "tables").iterdir())]:
        assert (copy / name).read_text() == (REPO / record / name).read_text(), f"{record}/{name}"
