"""The decoder: shapes, losses, padding, callbacks, persistence and config errors."""
import json

import pytest
import torch

from uvlm.core.errors import CheckpointError, ConfigError
from uvlm.core.schema import build
from uvlm.model.decoder import UVLM, UVLMConfig, checked_config
from uvlm.model.plans import LayerMode, build_plan

torch.set_num_threads(2)
N_TEXT, N_CODES = 32, 32


def tiny_config(**kw):
    base = dict(vocab_size=N_TEXT + N_CODES, image_token_start=N_TEXT, d_model=32, n_layers=6, n_heads=4,
                n_kv_heads=4, max_seq_len=64, image_proj_sets=["img"])
    return UVLMConfig(**{**base, **kw})


def u_batch(B=3, pre=5, M=8, post=4, seed=0):
    """[text pre][image M][text post], loss on the last ``post - 1`` tokens (as in U data, the
    answer follows text, never an image token)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.randint(6, N_TEXT, (B, pre), generator=g),
                     torch.randint(N_TEXT, N_TEXT + N_CODES, (B, M), generator=g),
                     torch.randint(6, N_TEXT, (B, post), generator=g)], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, 1 - post:] = ids[:, 1 - post:]
    return ids, labels


PLANS = {
    "base": lambda L: None,
    "himix": lambda L: build_plan("u", "himix", L),
    "himix_start2": lambda L: build_plan("u", "himix", L, himix_start_layer=2),
    "hmgen": lambda L: build_plan("g", "hmgen", L, hmgen_k=2),
}


@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("plan_name", list(PLANS))
def test_forward_backward_shapes(gqa, plan_name):
    cfg = tiny_config(n_kv_heads=2 if gqa else 4)
    model = UVLM(cfg)
    ids, labels = u_batch()
    plan = PLANS[plan_name](cfg.n_layers)
    out = model(ids, labels=labels, plan=plan, compute_logits="all")
    rows = ids.shape[1] - (8 if plan_name.startswith("himix") else 0)
    assert out.logits.shape == (3, rows, cfg.vocab_size)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert int(out.n_targets) == 3 * 3
    if plan_name.startswith("himix"):
        assert out.logits_index.shape == (3, rows)
        assert (out.logits_index[:, :5] == torch.arange(5)).all()
    out.loss.backward()
    assert model.tok_emb.weight.grad is not None and model.layers[-1].ffn.down.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("plan_name", list(PLANS))
def test_loss_reductions_agree(plan_name):
    model = UVLM(tiny_config())
    ids, labels = u_batch()
    plan = PLANS[plan_name](6)
    mean = model(ids, labels=labels, plan=plan).loss
    per_sample = model(ids, labels=labels, plan=plan, loss_reduction="sum_per_sample").loss
    per_token = model(ids, labels=labels, plan=plan, loss_reduction="none").loss
    full_logits = model(ids, labels=labels, plan=plan, compute_logits="all")
    assert per_sample.shape == (3,) and per_token.shape == ids.shape
    torch.testing.assert_close(per_token.sum(1), per_sample)
    torch.testing.assert_close(per_sample.sum() / 9, mean)
    torch.testing.assert_close(full_logits.loss, mean)
    # target-aligned: only the labelled positions carry a loss
    assert (per_token[:, :-3] == 0).all() and (per_token[:, -3:] > 0).all()
    # and it is -log p of the token, read from the previous row's logits
    logp = full_logits.logits.float().log_softmax(-1)
    row = logp.shape[1] - 2  # the row predicting the last token
    torch.testing.assert_close(per_token[:, -1], -logp[torch.arange(3), row, ids[:, -1]])


def test_logits_last_and_no_labels():
    model = UVLM(tiny_config())
    ids, _ = u_batch()
    full = model(ids).logits
    last = model(ids, compute_logits="last").logits
    torch.testing.assert_close(last[:, 0], full[:, -1])
    assert model(ids).loss is None


@pytest.mark.parametrize("plan_name", list(PLANS))
def test_left_padding_matches_unpadded(plan_name):
    """A left-padded row with its attention mask gives the logits it gives alone."""
    model = UVLM(tiny_config(n_kv_heads=2))
    ids, _ = u_batch(B=2)
    plan = PLANS[plan_name](6)
    alone = model(ids, plan=plan).logits
    pad = 3
    padded = torch.cat([torch.zeros(2, pad, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(2, pad, dtype=torch.long), torch.ones_like(ids)], 1)
    out = model(padded, plan=plan, attention_mask=mask).logits
    torch.testing.assert_close(out[:, pad:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("plan_name", list(PLANS))
def test_attn_callback_matches_sdpa(plan_name):
    model = UVLM(tiny_config(n_kv_heads=2))
    ids, _ = u_batch(B=2)
    plan = PLANS[plan_name](6)
    seen = []

    def cb(layer, probs, q_pos, k_pos):
        assert probs.shape[-2:] == (q_pos.shape[1], k_pos.shape[1])
        torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))
        # causal by original position
        assert (probs * (k_pos[:, None, None, :] > q_pos[:, None, :, None])).sum() == 0
        seen.append((layer, q_pos.shape[1], k_pos.shape[1]))

    fast = model(ids, plan=plan).logits
    slow = model(ids, plan=plan, attn_callback=cb).logits
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=1e-5)
    assert [s[0] for s in seen] == list(range(6))
    L = ids.shape[1]
    if plan_name == "himix":
        assert all(s[1:] == (L - 8, L) for s in seen)  # text queries, image + text keys
    if plan_name == "hmgen":
        shallow = [i for i, m in enumerate(plan) if m.mode == "shallow"]
        assert all(seen[i][1:] == (L - 8, L - 8) for i in shallow)


def test_unequal_image_counts_rejected():
    model = UVLM(tiny_config())
    ids, _ = u_batch(B=2)
    ids[1, 6] = 7  # one image token fewer in row 1
    with pytest.raises(ValueError, match="same number of image tokens"):
        model(ids, plan=PLANS["himix"](6))


def test_too_long_sequence_rejected():
    model = UVLM(tiny_config(max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.ones(1, 9, dtype=torch.long))


def test_init_is_seeded_and_image_sets_are_copies():
    a, b = UVLM(tiny_config(), seed=1), UVLM(tiny_config(), seed=1)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    assert not torch.equal(UVLM(tiny_config(), seed=2).tok_emb.weight, a.tok_emb.weight)
    for layer in a.layers:
        assert torch.equal(layer.attn.image_qkv["img"].weight, layer.attn.qkv.weight)


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("tie", [False, True])
def test_save_load_round_trip(tmp_path, tie):
    model = UVLM(tiny_config(tie_embeddings=tie, image_proj_sets=["u", "g"]), seed=3)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = UVLM.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    ids, labels = u_batch()
    plan = build_plan("u", "himix+hmgen", 6, share="partial")
    torch.testing.assert_close(loaded(ids, labels=labels, plan=plan).loss, model(ids, labels=labels, plan=plan).loss)
    if tie:
        assert loaded.lm_head.weight is loaded.tok_emb.weight


def test_from_pretrained_adds_missing_sets_by_copy(tmp_path):
    UVLM(tiny_config(image_proj_sets=[])).save_pretrained(tmp_path / "m")
    plan = build_plan("g", "hmgen", 6, hmgen_k=0)
    model = UVLM.from_pretrained(tmp_path / "m", plan=plan)
    assert model.config.image_proj_sets == ["img"]
    ids, _ = u_batch()
    torch.testing.assert_close(model(ids, plan=plan).logits, model(ids).logits, atol=0, rtol=0)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        UVLM.from_pretrained(tmp_path / "nothing")
    UVLM(tiny_config()).save_pretrained(tmp_path / "m")
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        UVLM.from_pretrained(tmp_path / "m")
    w.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        UVLM.from_pretrained(tmp_path / "m")
    # shape mismatch: the config says a bigger model than the weights hold
    UVLM(tiny_config()).save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["d_model"] = 64
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        UVLM.from_pretrained(tmp_path / "m")
    cfg["n_heads"] = 5
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model.n_heads"):
        UVLM.from_pretrained(tmp_path / "m")


# ----------------------------------------------------------------------------- config errors
@pytest.mark.parametrize("changes,key", [
    (dict(n_heads=5), "model.n_heads"),
    (dict(n_kv_heads=3), "model.n_kv_heads"),
    (dict(image_token_start=64), "model.image_token_start"),
    (dict(d_model=4), "model.d_model"),
    (dict(image_proj_sets=["a.b"]), "model.image_proj_sets[0]"),
    (dict(image_proj_sets=["u", "u"]), "model.image_proj_sets"),
    (dict(norm_eps=0.0), "model.norm_eps"),
])
def test_config_errors_name_the_key(changes, key):
    with pytest.raises(ConfigError) as e:
        UVLM(tiny_config(**changes))
    assert e.value.key == key


def test_config_from_dict_is_strict():
    with pytest.raises(ConfigError) as e:
        build(UVLMConfig, {"d_modle": 64}, prefix="model")
    assert e.value.key == "model.d_modle"
    cfg = checked_config(UVLMConfig())
    assert cfg.ffn_dim == 352 and cfg.head_dim == 32 and cfg.codebook_size == 256


def test_plan_needing_a_missing_set_is_a_config_error():
    model = UVLM(tiny_config(image_proj_sets=[]))
    with pytest.raises(ConfigError) as e:
        model(u_batch()[0], plan=build_plan("g", "hmgen", 6))
    assert e.value.key == "model.image_proj_sets"
    bad = [LayerMode("himix", None)] * 3 + [LayerMode("full")] * 3
    with pytest.raises(ConfigError) as e:
        model(u_batch()[0], plan=bad)
    assert e.value.key == "plan[3].mode"


def test_safetensors_files_are_byte_identical_for_the_same_weights(tmp_path):
    """safetensors writes metadata in hash-map order; the header is sorted, so DVC sees one hash."""
    from uvlm.core.io import load_tensors, save_tensors
    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4, dtype=torch.int64)}
    meta = {"format": "uvlm", "config": {"z": 1, "a": [1, 2]}, "metrics": {"x": 0.5}, "probe": "p", "seed": 3}
    blobs = set()
    for i in range(6):
        save_tensors(tmp_path / f"{i}.safetensors", tensors, meta)
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    back, got = load_tensors(tmp_path / "0.safetensors")
    assert got == meta and all(torch.equal(back[k], tensors[k]) for k in tensors)
