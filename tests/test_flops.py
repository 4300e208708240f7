"""Analytic FLOPs must match torch's FLOP counter on the real forward + backward."""
import pytest
import torch

from uvlm.model.decoder import UVLM, UVLMConfig
from uvlm.model.flops import count_flops, paper_estimate, plan_flops
from uvlm.model.plans import LayerMode, build_plan

torch.set_num_threads(1)
N_TEXT, N_CODES, LAYERS = 40, 24, 8

PLANS = {
    "base_u": ("u", lambda: None),
    "base_g": ("g", lambda: None),
    "himix": ("u", lambda: build_plan("u", "himix", LAYERS)),
    "himix_start3": ("u", lambda: build_plan("u", "himix", LAYERS, himix_start_layer=3)),
    "hmgen_k0": ("g", lambda: build_plan("g", "hmgen", LAYERS, hmgen_k=0)),
    "hmgen_k2": ("g", lambda: build_plan("g", "hmgen", LAYERS, hmgen_k=2)),
    "hmgen_k3_center": ("g", lambda: build_plan("g", "hmgen", LAYERS, hmgen_k=3, hmgen_placement="center")),
    "share_all_u": ("u", lambda: build_plan("u", "himix+hmgen", LAYERS, share="all")),
    "share_all_g": ("g", lambda: build_plan("g", "himix+hmgen", LAYERS, hmgen_k=3, share="all")),
    "share_partial_u": ("u", lambda: build_plan("u", "himix+hmgen", LAYERS, himix_start_layer=1, share="partial")),
    "share_partial_g": ("g", lambda: build_plan("g", "himix+hmgen", LAYERS, hmgen_k=3, share="partial")),
}


def make_batch(task, B=2, M=12):
    g = torch.Generator().manual_seed(1)
    if task == "u":  # [system 4][boi][image M][eoi][question 5][answer 3]
        pre = torch.randint(6, N_TEXT, (B, 5), generator=g)
        post = torch.randint(6, N_TEXT, (B, 9), generator=g)
        n_targets = 3
    else:  # [system+prompt 7 + boi][image M][eoi]
        pre = torch.randint(6, N_TEXT, (B, 8), generator=g)
        post = torch.full((B, 1), 4)
        n_targets = M + 1
    ids = torch.cat([pre, torch.randint(N_TEXT, N_TEXT + N_CODES, (B, M), generator=g), post], 1)
    labels = torch.full_like(ids, -100)
    labels[:, -n_targets:] = ids[:, -n_targets:]
    return ids, labels, ids.shape[1] - M, M


@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("name", list(PLANS))
def test_plan_flops_match_the_counter(name, gqa):
    task, make_plan = PLANS[name]
    cfg = UVLMConfig(vocab_size=N_TEXT + N_CODES, image_token_start=N_TEXT, d_model=32, n_layers=LAYERS,
                     n_heads=4, n_kv_heads=2 if gqa else 4, ffn_hidden=80, image_proj_sets=["img", "u", "g"])
    model = UVLM(cfg)
    ids, labels, T, M = make_batch(task)
    plan = make_plan()
    counted = count_flops(model, ids, labels, plan)
    # the LM head runs on the rows that have a target (the row before each labelled token)
    loss_tokens = int((labels[0, 1:] != -100).sum())
    est = plan_flops(cfg, plan, T=T, M=M, loss_tokens=loss_tokens)
    B = ids.shape[0]
    assert est["forward"] * B == pytest.approx(counted["forward"], rel=0.02)
    assert est["total"] * B == pytest.approx(counted["total"], rel=0.02)
    assert est["total"] == pytest.approx(est["attention"] + est["proj"] + est["ffn"] + est["head"])
    assert est["total"] == pytest.approx(sum(est["per_layer"]) + est["head"])
    fwd_only = plan_flops(cfg, plan, T=T, M=M, loss_tokens=loss_tokens, backward=False)
    assert fwd_only["total"] == pytest.approx(est["forward"]) and fwd_only["backward"] == 0


def test_accelerators_save_what_the_paper_says():
    cfg = UVLMConfig(d_model=256, n_layers=12, n_heads=4, vocab_size=512, image_token_start=256)
    T, M = 48, 256
    base = plan_flops(cfg, None, T, M, loss_tokens=0)["total"]
    himix = plan_flops(cfg, build_plan("u", "himix", 12), T, M, loss_tokens=0)["total"]
    hmgen = plan_flops(cfg, build_plan("g", "hmgen", 12, hmgen_k=3), T, M, loss_tokens=0)["total"]
    assert himix / base < 0.35
    ideal = paper_estimate(cfg, build_plan("g", "hmgen", 12, hmgen_k=3), T, M)
    assert ideal["hmgen_ideal"] == pytest.approx(1 - 3 / 12)
    # the exact ratio is a little above 1 - K/L (shallow layers still process the text rows)
    assert 1 - 3 / 12 < hmgen / base < 1 - 3 / 12 + 0.05
    p = paper_estimate(cfg, build_plan("u", "himix", 12), T, M)
    d = cfg.d_model
    assert p["total"] == 12 * (T * (T + M) * d + 8 * T * d * d)
    assert p["baseline"] == 12 * ((T + M) ** 2 * d + 8 * (T + M) * d * d)


def test_vanilla_plan_equals_none():
    cfg = UVLMConfig()
    assert plan_flops(cfg, None, 10, 20, 5) == plan_flops(cfg, [LayerMode("full")] * cfg.n_layers, 10, 20, 5)
