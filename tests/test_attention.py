"""Segment attention allocation (Eq. 2): arithmetic, HF/ours equivalence, eager switch,
bad input, streaming memory, figures."""
import warnings

import numpy as np
import pytest
import torch

from uvlm.analysis import attention as A
from uvlm.core.errors import UVLMError
from uvlm.tokens import segments as SEG

torch.set_num_threads(1)  # tiny models: threads only add contention on a 2-core machine

# Head 0: a hand-written causal matrix; head 1: uniform causal attention.
HEAD0 = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.3, 0.5, 0], [0.1, 0.2, 0.3, 0.4]])
HEAD1 = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5)[:, None]
SEGS = torch.tensor([[SEG.SYSTEM, SEG.IMAGE, SEG.IMAGE, SEG.OUTPUT]])  # U layout, no instruction


class ScriptedModel(torch.nn.Module):
    """Stands in for the decoder: reports fixed probabilities through ``attn_callback``."""

    def __init__(self, layers):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.layers = layers  # list of (probs (H, L, L), q_pos or None)

    def forward(self, input_ids, attn_callback=None, plan=None, **_):
        B, L = input_ids.shape
        for l, (probs, q_pos) in enumerate(self.layers):
            q = torch.arange(L) if q_pos is None else torch.tensor(q_pos)
            attn_callback(l, probs[:, q][None].expand(B, -1, -1, -1), q[None].expand(B, -1),
                          torch.arange(L)[None].expand(B, -1))


def test_allocation_matches_hand_computation():
    probs = torch.stack([HEAD0, HEAD1])
    model = ScriptedModel([(probs, None), (probs, [1, 3])])
    prof = A.profile_uvlm(model, torch.zeros(1, 4, dtype=torch.long), SEGS)
    assert prof.segment_names == ["system", "image", "instruction", "output"]
    # Layer 0, all queries: head 0 -> system (1+.5+.2+.1)/4, image (0+.5+.8+.5)/4, output .4/4;
    # head 1 -> system (1+1/2+1/3+1/4)/4, image (1/2+2/3+2/4)/4, output (1/4)/4.
    h0 = np.array([1.8, 1.8, 0.0, 0.4]) / 4
    h1 = np.array([1 + 1 / 2 + 1 / 3 + 1 / 4, 1 / 2 + 2 / 3 + 2 / 4, 0.0, 1 / 4]) / 4
    np.testing.assert_allclose(prof.per_head["all"][0], 100 * np.stack([h0, h1]), atol=1e-6)
    np.testing.assert_allclose(prof.share["all"]["mean"][0], 100 * (h0 + h1) / 2, atol=1e-6)
    np.testing.assert_allclose(prof.share["all"]["mean"].sum(1), [100, 100], atol=1e-6)
    # Output view: the one output query (row 3) of each head.
    out = (np.array([0.1, 0.5, 0.0, 0.4]) + np.array([0.25, 0.5, 0.0, 0.25])) / 2
    np.testing.assert_allclose(prof.share["output"]["mean"][0], 100 * out, atol=1e-6)
    # Layer 1 only computes queries 1 and 3 (a reduction plan): shares over those two rows.
    h0 = (np.array([0.5, 0.5, 0, 0]) + np.array([0.1, 0.5, 0, 0.4])) / 2
    h1 = (np.array([0.5, 0.5, 0, 0]) + np.array([0.25, 0.5, 0, 0.25])) / 2
    np.testing.assert_allclose(prof.share["all"]["mean"][1], 100 * (h0 + h1) / 2, atol=1e-6)
    # Blocks of layer 0: image queries (rows 1, 2) -> system (.5+.2)/2 and (.5+1/3)/2 for heads 0 and 1.
    np.testing.assert_allclose(prof.blocks[0, 1, 0], ((0.5 + 0.2) / 2 + (0.5 + 1 / 3) / 2) / 2, atol=1e-6)
    np.testing.assert_allclose(prof.blocks[0, 0], [1, 0, 0, 0], atol=1e-6)
    assert np.isnan(prof.blocks[0, 2]).all()  # no instruction query: undefined, not zero
    np.testing.assert_allclose(np.nansum(prof.blocks[0], 1)[[0, 1, 3]], 1.0, atol=1e-6)


def test_spread_over_samples_and_json_round_trip(tmp_path):
    # Two samples, one map: sample 1 has an instruction token where sample 0 has an image token.
    segs = torch.tensor([[0, 1, 1, 3], [0, 1, 2, 3]])
    model = ScriptedModel([(HEAD0[None], None)])
    prof = A.profile_uvlm(model, torch.zeros(2, 4, dtype=torch.long), segs, batch_size=1)
    s0 = 100 * np.array([1.8, 1.8, 0.0, 0.4]) / 4
    s1 = 100 * np.array([1.8, 1.0, 0.8, 0.4]) / 4
    np.testing.assert_allclose(prof.per_sample["all"][:, 0], [s0, s1], atol=1e-6)
    np.testing.assert_allclose(prof.share["all"]["std"][0], np.std([s0, s1], 0, ddof=1), atol=1e-6)
    np.testing.assert_allclose(prof.share["all"]["ci95"][0], 12.706 * np.std([s0, s1], 0, ddof=1) / np.sqrt(2),
                               atol=1e-4)
    prof.save(tmp_path / "p.json")
    back = A.AttentionProfile.load(tmp_path / "p.json")
    np.testing.assert_allclose(back.share["all"]["mean"], prof.share["all"]["mean"], atol=1e-5)
    assert np.isnan(back.blocks[0, 2]).sum() == np.isnan(prof.blocks[0, 2]).sum()
    assert back.n_samples == 2 and back.segment_names == prof.segment_names


def test_bad_segment_ids_raise_clear_errors():
    model = ScriptedModel([(HEAD0[None], None)])
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(A.AttentionInputError, match="one segment id per token"):
        A.profile_uvlm(model, ids, SEGS[:, :3])
    with pytest.raises(A.AttentionInputError, match="unknown segment id 7"):
        A.profile_uvlm(model, ids, torch.tensor([[0, 1, 7, 3]]))
    with pytest.raises(A.AttentionInputError, match="unknown segment id -2"):
        A.profile_uvlm(model, ids, torch.tensor([[0, 1, -2, 3]]))
    with pytest.raises(A.AttentionInputError, match="follows padding"):
        A.profile_uvlm(model, ids, torch.tensor([[0, -1, 1, 3]]))
    with pytest.raises(A.AttentionInputError, match="no output token"):
        A.profile_uvlm(model, ids, torch.tensor([[0, 1, 1, 2]]))
    with pytest.raises(A.AttentionInputError, match="not among the profiled segments"):
        A.profile_uvlm(model, ids, SEGS, segments=SEG.G_SEGMENTS)
    assert issubclass(A.AttentionInputError, (UVLMError, ValueError))
    # Right padding (-1) is fine: the padded query is left out, shares still sum to 100.
    prof = A.profile_uvlm(model, ids, torch.tensor([[0, 1, 3, -1]]))
    np.testing.assert_allclose(prof.share["all"]["mean"].sum(1), 100, atol=1e-6)


def _tiny_llama(n_layers=2, attn="eager", seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      attn_implementation=attn, tie_word_embeddings=False,
                      initializer_range=0.3)  # peaked, layer-specific attention, not near-uniform
    return LlamaForCausalLM(cfg).eval()


def _u_batch(n=3, L=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 96, (n, L), generator=g)
    seg = torch.tensor([SEG.SYSTEM] * 3 + [SEG.IMAGE] * 10 + [SEG.INSTRUCTION] * 3 + [SEG.OUTPUT] * 4)
    return ids, seg[None].repeat(n, 1)


def test_sdpa_model_switches_to_eager_with_warning():
    model = _tiny_llama(attn="sdpa")
    ids, seg = _u_batch()
    with pytest.warns(UserWarning, match="switching to 'eager'"):
        prof = A.profile_hf(model, ids, seg)
    assert model.config._attn_implementation == "sdpa"  # given back as it was
    share = prof.share["all"]["mean"]
    assert share.shape == (2, 4) and (share[:, [0, 1, 2]] > 0).all()
    np.testing.assert_allclose(share.sum(1), 100, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # eager already: no warning
        ref = A.profile_hf(_tiny_llama(attn="eager"), ids, seg)
    np.testing.assert_allclose(prof.share["all"]["mean"], ref.share["all"]["mean"], atol=1e-4)


def test_hf_profile_equals_explicit_output_attentions():
    """The streaming hooks give what transformers' own output_attentions maps give."""
    model = _tiny_llama(n_layers=3)
    ids, seg = _u_batch()
    prof = A.profile_hf(model, ids, seg, batch_size=2)
    with torch.no_grad():
        maps = model(ids, output_attentions=True).attentions  # (B, H, L, L) per layer
    for l, m in enumerate(maps):
        per_seg = torch.stack([m[..., seg[0] == s].sum(-1) for s in SEG.U_SEGMENTS], -1)  # (B, H, L, S)
        expect = 100 * per_seg.mean(dim=(1, 2)).mean(0).numpy()
        np.testing.assert_allclose(prof.share["all"]["mean"][l], expect, atol=1e-4)
        out = 100 * per_seg[:, :, seg[0] == SEG.OUTPUT].mean(dim=(1, 2)).mean(0).numpy()
        np.testing.assert_allclose(prof.share["output"]["mean"][l], out, atol=1e-4)


def test_hf_and_uvlm_give_the_same_allocation(tmp_path):
    pytest.importorskip("uvlm.model.hf_import", reason="uvlm.model.hf_import (our HF loader) is not available")
    from uvlm.model.hf_import import load_llama_backbone

    hf = _tiny_llama(n_layers=2)
    hf.save_pretrained(tmp_path / "llama")
    ours = load_llama_backbone(tmp_path / "llama", codebook_size=8)  # ids below 96: all text
    ids, seg = _u_batch()
    a = A.profile_hf(hf, ids, seg)
    b = A.profile_uvlm(ours, ids, seg)
    for view in A.VIEWS:
        np.testing.assert_allclose(b.share[view]["mean"], a.share[view]["mean"], atol=1e-3)
        np.testing.assert_allclose(b.per_head[view], a.per_head[view], atol=1e-3)
    np.testing.assert_allclose(b.blocks, a.blocks, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("backend", ["hf", "uvlm"])
def test_peak_memory_follows_one_layer_not_depth(backend):
    mem = A.measure_profiler_peak_memory(n_layers_list=(4, 32), seq_len=128, backend=backend)
    shallow, deep = mem["profiler_peak_bytes"]
    assert deep < 1.5 * shallow, mem
    assert shallow < 4 * mem["one_layer_map_bytes"], mem  # a few copies of one layer's map
    held_shallow, held_deep = mem["hold_all_peak_bytes"]
    assert held_deep > 4 * held_shallow, mem  # the meter does see maps that are kept


def _profile_from(shares_by_layer, n=6, seed=0):
    """A profile whose per-sample image shares follow ``shares_by_layer`` plus noise."""
    rng = np.random.default_rng(seed)
    L = len(shares_by_layer)
    img = np.clip(np.asarray(shares_by_layer)[None] + rng.normal(0, 1, (n, L)), 0.1, 99)
    per = np.stack([100 - img, img], -1)  # (N, L, 2): system, image
    nan = np.full((L, 2, 2), np.nan)
    stats = A._stats(per)
    return A.AttentionProfile([SEG.SYSTEM, SEG.IMAGE], ["system", "image"], n, L, 1, ["all"],
                              {"all": stats}, {"all": stats["mean"][:, None]}, {"all": per}, nan, nan)


def test_asymmetry_ratio_and_verdict():
    u = A.asymmetry_ratio(_profile_from([33, 2, 3, 4, 5, 4, 3, 5, 6]), SEG.IMAGE)
    g = A.asymmetry_ratio(_profile_from([30, 5, 8, 20, 30, 35, 30, 40, 56], seed=1), SEG.IMAGE)
    assert u["late_layers"] == [6, 8] and u["ratio"] < 0.3 and u["ci95"][1] < 1
    assert 0.8 < g["ratio"] < 1.6 and g["ci95"][0] <= g["ratio"] <= g["ci95"][1]
    v = A.verdict(u, g)
    assert v["asymmetry"] and v["u_late_visual_redundancy"] and v["g_persistent_image_dependence"]
    assert v["u_strong_redundancy"] and u["ci95"][1] < A.REDUNDANCY_CEILING
    assert "asymmetry of the paper holds" in v["summary"]
    assert not A.verdict(u, u)["asymmetry"]


def _ratio(lo, hi):
    return {"ratio": (lo + hi) / 2, "ci95": [lo, hi]}


def test_a_mild_u_decline_is_not_strong_redundancy():
    g = _ratio(0.81, 0.88)
    v = A.verdict(_ratio(0.77, 0.80), g)
    assert v["asymmetry"] and v["u_late_visual_redundancy"] and not v["u_strong_redundancy"]
    assert "mild decline only (ratio 0.79; the paper's pattern is a collapse; strong = below 0.5)" in v["summary"]
    assert "holds only weakly" in v["summary"] and "of the paper holds" not in v["summary"]
    # The whole interval must lie below the ceiling; a stricter ceiling is honoured.
    assert not A.verdict(_ratio(0.40, 0.55), g)["u_strong_redundancy"]
    assert A.verdict(_ratio(0.30, 0.45), g)["u_strong_redundancy"]
    assert not A.verdict(_ratio(0.30, 0.45), g, redundancy_ceiling=0.3)["u_strong_redundancy"]


def test_the_strength_qualifier_never_loosens_the_old_flags():
    g = _ratio(0.6, 0.9)
    for lo, hi in ((0.1, 0.3), (0.3, 0.6), (0.7, 0.95), (0.9, 1.1), (1.1, 1.3)):
        v = A.verdict(_ratio(lo, hi), g)
        assert v["u_late_visual_redundancy"] == (hi < 1.0) and v["asymmetry"] == (hi < 1.0 and g["ci95"][0] > hi)
        assert not v["u_strong_redundancy"] or v["u_late_visual_redundancy"]


def test_figures_are_written(tmp_path):
    from uvlm.analysis import figures as F

    model = _tiny_llama(n_layers=4)
    ids, seg = _u_batch()
    u = A.profile_hf(model, ids, seg)
    g_seg = seg.clone()
    g_seg[g_seg == SEG.IMAGE] = SEG.INSTRUCTION
    g_seg[:, 10:] = SEG.OUTPUT
    g = A.profile_hf(model, ids, g_seg)
    assert g.segment_names == ["system", "instruction", "output"]
    F.plot_segment_blocks(u, g, tmp_path / "fig2.png")
    for view in A.VIEWS:
        F.plot_segment_shares(u, g, tmp_path / f"fig3_{view}.png", view=view)
    evo_u = A.image_share_evolution([(200, u), (100, u)])
    evo_g = A.image_share_evolution([(100, g), (200, g)])
    assert evo_u["steps"] == [100, 200] and evo_u["segment"] == "image" and evo_g["segment"] == "output"
    F.plot_image_share_evolution(evo_u, evo_g, tmp_path / "evolution.png")
    for name in ("fig2.png", "fig3_all.png", "fig3_output.png", "evolution.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_attention_device_is_checked_and_auto_falls_back_to_cpu(tmp_path, monkeypatch):
    import torch

    from uvlm.analysis.stage import _device
    from uvlm.core.config import load_config
    from uvlm.core.errors import ConfigError
    from conftest import write_tiny_params

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _device(load_config(write_tiny_params(tmp_path, "attention:\n  device: auto\n"))) == "cpu"
    with pytest.raises(ConfigError, match="attention.device"):
        _device(load_config(write_tiny_params(tmp_path, "attention:\n  device: cuda\n")))
    with pytest.raises(ConfigError, match="attention.device"):
        load_config(write_tiny_params(tmp_path, "attention:\n  device: tpu\n"))
