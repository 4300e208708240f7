"""HiMix and HMGen against slow full-size references, and projection sharing.

The references never gather rows: they run every layer at full size (B, L, d), choose
projections with torch.where, block attention with masks, and restore the rows a mode
must not change. The model's gathered computation must give the same numbers.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from uvlm.model.decoder import UVLM, UVLMConfig
from uvlm.model.plans import LayerMode, build_plan

torch.set_num_threads(1)
N_TEXT, N_CODES, L_LAYERS = 32, 32, 6


def tiny_model(sets=("img",), n_kv_heads=4, seed=0):
    cfg = UVLMConfig(vocab_size=N_TEXT + N_CODES, image_token_start=N_TEXT, d_model=32, n_layers=L_LAYERS,
                     n_heads=4, n_kv_heads=n_kv_heads, max_seq_len=64, image_proj_sets=list(sets))
    model = UVLM(cfg, seed=seed)
    with torch.no_grad():  # make the image projections differ from the text ones
        for layer in model.layers:
            for lin in layer.attn.image_qkv.values():
                lin.weight.add_(0.05 * torch.randn_like(lin.weight))
    return model


def batch(kind="u", B=2, seed=0):
    """U: [text 5][image 8][text 4]; G: [text 6][image 8][eoi]. Image blocks start at
    different positions per row (rows are rolled), as with prompts of different length."""
    g = torch.Generator().manual_seed(seed)
    if kind == "u":
        ids = torch.cat([torch.randint(6, N_TEXT, (B, 5), generator=g),
                         torch.randint(N_TEXT, N_TEXT + N_CODES, (B, 8), generator=g),
                         torch.randint(6, N_TEXT, (B, 4), generator=g)], 1)
    else:
        ids = torch.cat([torch.randint(6, N_TEXT, (B, 6), generator=g),
                         torch.randint(N_TEXT, N_TEXT + N_CODES, (B, 8), generator=g),
                         torch.full((B, 1), 4)], 1)
    ids[1] = ids[1].roll(2)  # row 1: image block shifted
    return ids


# ----------------------------------------------------------------------------- the reference
def _rope(x, pos, theta=10000.0):
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    ang = pos.float()[:, None, :, None] * inv
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _norm(w, x, eps=1e-5):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def reference_logits(model, ids, plan):
    """Full-size, masked, unoptimised forward of a plan -> logits (B, L, V)."""
    cfg = model.config
    B, L = ids.shape
    H, Hkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    img = (ids >= cfg.image_token_start)[:, :, None]  # (B, L, 1)
    pos = torch.arange(L)[None].expand(B, L)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    emb = model.tok_emb(ids)
    h = emb
    for layer, mode in zip(model.layers, plan):
        a = layer.attn
        x = _norm(layer.attn_norm.weight, h)
        qkv = x @ a.qkv.weight.T
        if mode.mode == "full" and mode.image_proj:
            qkv = torch.where(img, x @ a.image_qkv[mode.image_proj].weight.T, qkv)
        if mode.mode == "himix":  # image K/V from the layer-0 embeddings, image-set projections
            w = (a.image_qkv[mode.image_proj] if mode.image_proj else a.qkv).weight
            qkv = torch.where(img, _norm(layer.attn_norm.weight, emb) @ w.T, qkv)
        q, k, v = qkv.split([H * hd, Hkv * hd, Hkv * hd], -1)
        q = _rope(q.view(B, L, H, hd).transpose(1, 2), pos)
        k = _rope(k.view(B, L, Hkv, hd).transpose(1, 2), pos).repeat_interleave(H // Hkv, 1)
        v = v.view(B, L, Hkv, hd).transpose(1, 2).repeat_interleave(H // Hkv, 1)
        allowed = causal[None].expand(B, L, L)
        if mode.mode == "shallow":  # text queries see text keys only; image rows see themselves
            allowed = allowed & ~img.transpose(1, 2) | torch.eye(L, dtype=torch.bool)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~allowed[:, None], float("-inf"))
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, L, H * hd) @ a.out.weight.T
        new = h + o
        new = new + layer.ffn.down(F.silu(_norm(layer.ffn_norm.weight, new) @ layer.ffn.gate_up.weight[:cfg.ffn_dim].T)
                                   * (_norm(layer.ffn_norm.weight, new) @ layer.ffn.gate_up.weight[cfg.ffn_dim:].T))
        # Image rows never change in shallow and HiMix layers.
        h = torch.where(img, h, new) if mode.mode in ("shallow", "himix") else new
    return model.lm_head(_norm(model.norm.weight, h))


def _text_rows(x, ids):
    return x[ids < N_TEXT].view(ids.shape[0], -1, *x.shape[2:])


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("start", [0, 2])
@pytest.mark.parametrize("proj", ["img", None])
def test_himix_matches_full_size_reference(n_kv_heads, start, proj):
    model = tiny_model(n_kv_heads=n_kv_heads)
    ids = batch("u")
    plan = [LayerMode("full")] * start + [LayerMode("himix", proj)] * (L_LAYERS - start)
    with torch.no_grad():
        ours = model(ids, plan=plan)
        ref = reference_logits(model, ids, plan)
    assert ours.logits.shape[1] == ids.shape[1] - 8  # the saving is real: text rows only
    torch.testing.assert_close(ours.logits, _text_rows(ref, ids), atol=1e-5, rtol=1e-5)
    # logits_index names the original position of every row: all text tokens
    assert (ids.gather(1, ours.logits_index) < N_TEXT).all()


def test_himix_layer0_with_copied_projections_sees_baseline_keys():
    """With copy-initialised image projections, a one-layer HiMix model equals the one-layer
    baseline on text rows: image K/V come from the same normalised embeddings."""
    cfg = UVLMConfig(vocab_size=N_TEXT + N_CODES, image_token_start=N_TEXT, d_model=32, n_layers=1,
                     n_heads=4, n_kv_heads=2, image_proj_sets=["img"])
    model = UVLM(cfg, seed=5)
    ids = batch("u")
    with torch.no_grad():
        himix = model(ids, plan=[LayerMode("himix", "img")]).logits
        torch.testing.assert_close(himix, _text_rows(model(ids).logits, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("k", [1, 2])
def test_hmgen_matches_full_size_reference(n_kv_heads, k):
    model = tiny_model(n_kv_heads=n_kv_heads)
    ids = batch("g")
    plan = build_plan("g", "hmgen", L_LAYERS, hmgen_k=k)
    assert sum(m.mode == "shallow" for m in plan) == k
    with torch.no_grad():
        torch.testing.assert_close(model(ids, plan=plan).logits, reference_logits(model, ids, plan),
                                   atol=1e-5, rtol=1e-5)


def test_shallow_text_rows_equal_a_text_only_model():
    """With the image block at the end, text tokens sit at the same positions as in a
    text-only sequence, so an all-shallow plan must give the text-only model's logits."""
    model = tiny_model()
    ids = batch("u")[:1]
    text_ids = ids[ids < N_TEXT][None]
    tail = torch.cat([text_ids, ids[ids >= N_TEXT][None]], 1)
    with torch.no_grad():
        ours = model(tail, plan=[LayerMode("shallow")] * L_LAYERS).logits[:, :text_ids.shape[1]]
        torch.testing.assert_close(ours, model(text_ids).logits, atol=1e-5, rtol=1e-5)


def test_shallow_layers_pass_image_rows_unchanged():
    model = tiny_model()
    ids = batch("g")
    seen = {}
    plan = [LayerMode("shallow")] * L_LAYERS

    def grab(mod, inp, out):
        seen.setdefault("h", []).append(out)

    handles = [layer.register_forward_hook(grab) for layer in model.layers]
    with torch.no_grad():
        emb = model.tok_emb(ids)
        model(ids, plan=plan)
    for hd in handles:
        hd.remove()
    img = ids >= N_TEXT
    for h in seen["h"]:
        assert torch.equal(h[img], emb[img])


def test_share_partial_gradients_are_separate():
    model = tiny_model(sets=("u", "g"))
    plans = {t: build_plan(t, "himix+hmgen", L_LAYERS, hmgen_k=1, share="partial") for t in "ug"}
    for task, used, unused in (("u", "u", "g"), ("g", "g", "u")):
        model.zero_grad(set_to_none=True)
        ids = batch(task)
        labels = ids.clone()
        labels[:, :-2] = -100  # U: the last two text tokens; G: the last image code and <eoi>
        model(ids, labels=labels, plan=plans[task]).loss.backward()
        for layer in model.layers:
            g_unused = layer.attn.image_qkv[unused].weight.grad
            assert g_unused is None or g_unused.abs().sum() == 0
        assert any(layer.attn.image_qkv[used].weight.grad is not None
                   and layer.attn.image_qkv[used].weight.grad.abs().sum() > 0 for layer in model.layers)


def test_himix_image_query_rows_of_the_set_get_no_gradient():
    """HiMix reads only the K/V rows of its projection set (image queries do not exist)."""
    model = tiny_model(sets=("u",))
    ids = batch("u")
    labels = ids.clone()
    labels[:, :-2] = -100
    model(ids, labels=labels, plan=build_plan("u", "himix+hmgen", L_LAYERS, share="partial")).loss.backward()
    q_dim = model.config.d_model
    for layer in model.layers:
        g = layer.attn.image_qkv["u"].weight.grad
        assert g[:q_dim].abs().sum() == 0 and g[q_dim:].abs().sum() > 0


def test_hmgen_at_inference_on_a_baseline_checkpoint(tmp_path):
    """Paper Fig. 5: shallow layers applied to a model trained without them. With K = 0
    the copied projections make it exactly the baseline; with K > 0 it runs and differs."""
    base = UVLM(UVLMConfig(vocab_size=N_TEXT + N_CODES, image_token_start=N_TEXT, d_model=32,
                           n_layers=L_LAYERS, n_heads=4, n_kv_heads=2, max_seq_len=64), seed=4)
    base.save_pretrained(tmp_path / "base")
    ids = batch("g")
    ref = base(ids).logits
    for k in (0, 2):
        plan = build_plan("g", "hmgen", L_LAYERS, hmgen_k=k)
        model = UVLM.from_pretrained(tmp_path / "base", plan=plan)
        out = model(ids, plan=plan).logits
        if k == 0:
            assert torch.equal(out, ref)
        else:
            assert torch.isfinite(out).all() and not torch.allclose(out, ref)


@pytest.mark.parametrize("kind,plan", [
    ("u", [LayerMode("full", "img")] + [LayerMode("himix", "img")] * (L_LAYERS - 1)),
    ("g", build_plan("g", "hmgen", L_LAYERS, hmgen_k=2)),
])
def test_gradients_match_the_reference(kind, plan):
    """The gathers, merges and row permutations have hand-written backward passes: every
    parameter gradient must equal the full-size reference's."""
    model = tiny_model(n_kv_heads=2)
    ids = batch(kind)
    weights = torch.randn(ids.shape[0], ids.shape[1], model.config.vocab_size,
                          generator=torch.Generator().manual_seed(0))
    ours = model(ids, plan=plan)
    rows = ours.logits_index if ours.logits_index is not None else torch.arange(ids.shape[1]).expand_as(ids)
    w = weights.gather(1, rows[..., None].expand(-1, -1, weights.shape[-1]))
    (ours.logits * w).sum().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    ref = reference_logits(model, ids, plan)
    ref_rows = ref.gather(1, rows[..., None].expand(-1, -1, ref.shape[-1]))
    (ref_rows * w).sum().backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name in got:
        torch.testing.assert_close(got[name], expected[name], atol=2e-5, rtol=1e-4, msg=name)


# ----------------------------------------------------------------------------- HiMix kernels
def aligned_u_batch(B=3, seed=1, pad_last=0):
    """U rows with the image block at the same index in every row (a shared system prompt)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.randint(6, N_TEXT, (B, 5), generator=g),
                     torch.randint(N_TEXT, N_TEXT + N_CODES, (B, 8), generator=g),
                     torch.randint(6, N_TEXT, (B, 6), generator=g)], 1)
    if pad_last:
        ids[-1, -pad_last:] = 0  # right padding (PAD is a text id), as training batches have
    return ids


@pytest.mark.parametrize("kernel", ["split", "rows"])
@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("start", [0, 2])
@pytest.mark.parametrize("pad_last", [0, 3])
def test_himix_split_kernels_match_mask_kernel_and_reference(kernel, n_kv_heads, start, pad_last):
    from uvlm.model.attention import use_himix_kernel

    model = tiny_model(n_kv_heads=n_kv_heads)
    ids = aligned_u_batch(pad_last=pad_last)
    labels = ids.clone()
    plan = [LayerMode("full")] * start + [LayerMode("himix", "img")] * (L_LAYERS - start)
    grads = {}
    for k in ("mask", kernel):
        model.zero_grad(set_to_none=True)
        with use_himix_kernel(k):
            model(ids, labels=labels, plan=plan).loss.backward()
            with torch.no_grad():
                logits = model(ids, plan=plan).logits
        grads[k] = (logits, [p.grad.clone() for p in model.parameters() if p.grad is not None])
    with torch.no_grad():
        ref = reference_logits(model, ids, plan)
    torch.testing.assert_close(grads[kernel][0], _text_rows(ref, ids), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[kernel][0], grads["mask"][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads[kernel][1], grads["mask"][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rows", ["aligned", "rolled"])
@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("padded", [False, True])
def test_himix_flex_kernel_matches_mask_kernel_and_reference(rows, n_kv_heads, padded):
    """Forward only: FlexAttention has no backward on CPU (the GPU test below checks gradients).
    ``padded`` masks row 0's first two keys (left padding): the kernel then reads k_valid."""
    from uvlm.model.attention import use_himix_kernel

    model = tiny_model(n_kv_heads=n_kv_heads)
    ids = aligned_u_batch() if rows == "aligned" else batch("u")
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :2] = not padded
    plan = [LayerMode("full")] * 2 + [LayerMode("himix", "img")] * (L_LAYERS - 2)
    with torch.no_grad():
        logits = {}
        for kernel in ("mask", "flex"):
            with use_himix_kernel(kernel):
                logits[kernel] = model(ids, plan=plan, attention_mask=mask).logits
        if not padded:
            ref = reference_logits(model, ids, plan)
            torch.testing.assert_close(logits["flex"], _text_rows(ref, ids), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits["flex"], logits["mask"], atol=1e-5, rtol=1e-5)


def test_himix_flex_kernel_builds_no_mask():
    from uvlm.model.attention import use_himix_kernel
    from uvlm.model.layout import TokenLayout

    model = tiny_model()
    ids = batch("u")
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[0, :2] = False
    with use_himix_kernel("flex"):
        spec = TokenLayout(ids, N_TEXT, model.rope_inv_freq, attention_mask=valid).spec("himix")
        assert spec.flex and spec.mask is None and spec.k_valid is not None
        full = TokenLayout(ids, N_TEXT, model.rope_inv_freq).spec("full")  # only HiMix layers change
        assert not full.flex


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("kernel", ["flex", "rows"])
def test_himix_kernel_gradients_on_gpu(kernel):
    """Compiled, as the kernels are meant to run: logits and gradients equal the masked kernel's."""
    from uvlm.model.attention import use_himix_kernel

    cfg = UVLMConfig(vocab_size=N_TEXT + N_CODES, image_token_start=N_TEXT, d_model=64, n_layers=2, n_heads=4,
                     n_kv_heads=2, max_seq_len=64, image_proj_sets=["img"])
    model = UVLM(cfg, seed=0).cuda()  # head dim 16: FlexAttention's smallest
    # rows needs one image start for every row (else it is the mask kernel)
    ids = (aligned_u_batch(pad_last=3) if kernel == "rows" else batch("u")).cuda()
    plan = [LayerMode("himix", "img")] * 2
    out = {}
    for k in ("mask", kernel):
        model.zero_grad(set_to_none=True)
        step = torch.compile(model, dynamic=False)
        with use_himix_kernel(k):
            res = step(ids, labels=ids, plan=plan, host_sizes=model.host_sizes(ids.cpu(), ids.cpu(), plan))
            res.loss.backward()
        out[k] = [res.loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]
        torch._dynamo.reset()
    for a, b in zip(out[kernel], out["mask"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_himix_split_kernel_uses_the_prefix_only_when_rows_agree():
    from uvlm.model.attention import use_himix_kernel
    from uvlm.model.layout import TokenLayout

    model = tiny_model()
    aligned = TokenLayout(aligned_u_batch(), N_TEXT, model.rope_inv_freq)
    rolled = TokenLayout(batch("u"), N_TEXT, model.rope_inv_freq)
    with use_himix_kernel("split"):
        assert aligned.spec("himix").prefix == 5 and aligned.spec("himix").mask is None
        assert rolled.spec("himix").prefix is None and rolled.spec("himix").mask is not None
    with use_himix_kernel("rows"):
        aligned = TokenLayout(aligned_u_batch(), N_TEXT, model.rope_inv_freq)
        rolled = TokenLayout(batch("u"), N_TEXT, model.rope_inv_freq)
        assert aligned.spec("himix").query_split == 5 and aligned.spec("himix").mask is not None
        assert rolled.spec("himix").query_split is None and rolled.spec("himix").mask is not None
    assert TokenLayout(aligned_u_batch(), N_TEXT, model.rope_inv_freq).spec("himix").prefix is None  # default: mask
    with use_himix_kernel("split"), torch.no_grad():  # the fallback still computes HiMix exactly
        plan = [LayerMode("himix", "img")] * L_LAYERS
        ids = batch("u")
        torch.testing.assert_close(model(ids, plan=plan).logits, _text_rows(reference_logits(model, ids, plan), ids),
                                   atol=1e-5, rtol=1e-5)


def test_lower_right_causal_matches_its_mask():
    from uvlm.model.attention import _lower_right_causal

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 16, generator=g) for n in (4, 11, 11))
    mask = torch.ones(4, 11, dtype=torch.bool).tril(7)  # query s sees keys up to 7 + s
    torch.testing.assert_close(_lower_right_causal(q, k, v), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_lower_right_causal_flash_kernel_on_gpu():
    """The bf16 GPU path is the flash op; its gradients must match the masked kernel's."""
    from uvlm.model.attention import _lower_right_causal

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 64, generator=g, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for n in (40, 300, 300))
    mask = torch.ones(40, 300, dtype=torch.bool, device="cuda").tril(260)
    out = {}
    for name, fn in (("flash", lambda: _lower_right_causal(q, k, v)),
                     ("mask", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))):
        o = fn()
        o.float().square().sum().backward()
        out[name] = [o.detach().float()] + [t.grad.float() for t in (q, k, v)]
        for t in (q, k, v):
            t.grad = None
    for a, b in zip(out["flash"], out["mask"]):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)


def test_compiled_split_kernel_compiles_once():
    """No graph break in the HiMix layers: steps after the first reuse the compiled graphs.

    Graph breaks and recompiles are decided by dynamo's capture, before any backend sees a
    graph, so the graphs go to ``aot_eager`` (forward and backward traced, no code generated):
    the same counts in seconds instead of a minute of inductor's C++ builds on two cores.
    Inductor's own code for these layers is run by test_train's compiled-training test."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from uvlm.model.attention import use_himix_kernel

    torch._dynamo.reset()
    cfg = UVLMConfig(vocab_size=N_TEXT + N_CODES, image_token_start=N_TEXT, d_model=32, n_layers=2, n_heads=4,
                     max_seq_len=64, image_proj_sets=["img"])
    model = UVLM(cfg, seed=0)
    step = torch.compile(model, dynamic=False, backend="aot_eager")
    ids = aligned_u_batch()
    plan = [LayerMode("himix", "img")] * 2
    sizes = []
    with use_himix_kernel("split"):
        for i in range(3):
            step(ids, labels=ids, plan=plan, host_sizes=model.host_sizes(ids, ids, plan)).loss.backward()
            sizes.append(counters["stats"]["unique_graphs"])
    assert sizes[0] == sizes[1] == sizes[2], sizes
    assert counters["graph_break"] == {} or not any("CausalBias" in k for k in counters["graph_break"])


def test_himix_kernel_rejects_unknown_names():
    from uvlm.model.attention import use_himix_kernel
    from uvlm.core.errors import ConfigError

    with pytest.raises(ConfigError, match="split"):
        with use_himix_kernel("dense"):
            pass


def test_split_kernel_prefix_comes_with_the_forward_pass_single_host_sync():
    from uvlm.model.attention import use_himix_kernel

    model = tiny_model()
    plan = [LayerMode("himix", "img")] * L_LAYERS
    ids = aligned_u_batch()
    assert model.host_sizes(ids, ids, plan)[2] == "unknown"  # the masked kernel needs no prefix
    with use_himix_kernel("rows"):
        assert model.host_sizes(ids, ids, plan)[2] == 5
    with use_himix_kernel("split"):
        assert model.host_sizes(ids, ids, plan)[2] == 5
        assert model.host_sizes(batch("u"), None, plan)[2] is None  # rows disagree: the mask is used
        assert model.host_sizes(ids, None, [LayerMode("full")] * L_LAYERS)[2] == "unknown"  # no HiMix layer


@pytest.mark.parametrize("plan", [[LayerMode("full")] * L_LAYERS, [LayerMode("himix", "img")] * L_LAYERS,
                                  [LayerMode("full")] * 2 + [LayerMode("shallow")] * (L_LAYERS - 2)])
def test_sizes_given_by_the_caller_change_nothing(plan):
    """Training passes host_sizes computed from the batch's CPU copy (no wait on the GPU)."""
    model = tiny_model()
    ids = batch("u")
    labels = torch.where(ids >= model.config.image_token_start, torch.full_like(ids, -100), ids)
    own = model(ids, labels=labels, plan=plan, loss_reduction="sum_per_sample")
    given = model(ids, labels=labels, plan=plan, loss_reduction="sum_per_sample",
                  host_sizes=model.host_sizes(ids, labels, plan))
    assert torch.equal(own.loss, given.loss)
