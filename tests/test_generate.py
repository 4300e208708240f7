"""Image-token generation: the KV cache changes nothing, padding changes nothing."""
import pytest
import torch

from uvlm.model.decoder import UVLM, UVLMConfig
from uvlm.model.generate import generate_images, left_pad
from uvlm.model.kv_cache import KVCache
from uvlm.model.plans import build_plan

torch.set_num_threads(1)
N_TEXT, N_CODES, LAYERS, N_IMG = 32, 32, 6, 6


def tiny_model(n_kv_heads=4):
    cfg = UVLMConfig(vocab_size=N_TEXT + N_CODES, image_token_start=N_TEXT, d_model=32, n_layers=LAYERS,
                     n_heads=4, n_kv_heads=n_kv_heads, max_seq_len=64, image_proj_sets=["img"])
    model = UVLM(cfg, seed=2)
    with torch.no_grad():  # separate image projections that differ from the text ones
        for layer in model.layers:
            layer.attn.image_qkv["img"].weight.add_(0.05 * torch.randn_like(layer.attn.qkv.weight))
    return model.eval()


PROMPTS = [[1, 7, 8, 9, 3], [1, 7, 10, 11, 12, 13, 14, 3], [1, 15, 3]]
PLANS = {"base": lambda: None,
         "hmgen_k1": lambda: build_plan("g", "hmgen", LAYERS, hmgen_k=1),
         "hmgen_k2": lambda: build_plan("g", "hmgen", LAYERS, hmgen_k=2)}


@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("plan_name", list(PLANS))
def test_cached_greedy_equals_recomputed_greedy(plan_name, gqa):
    model, plan = tiny_model(2 if gqa else 4), PLANS[plan_name]()
    fast = generate_images(model, PROMPTS, N_IMG, plan=plan, temperature=0)
    slow = generate_images(model, PROMPTS, N_IMG, plan=plan, temperature=0, use_cache=False)
    assert fast.shape == (3, N_IMG) and fast.dtype == torch.long
    assert torch.equal(fast, slow)
    assert fast.min() >= 0 and fast.max() < N_CODES


@pytest.mark.parametrize("plan_name", list(PLANS))
def test_cached_logits_equal_full_forward(plan_name):
    """Every decoding step's logits equal those of one full forward over the sequence."""
    model, plan = tiny_model(2), PLANS[plan_name]()
    ids, mask = left_pad(PROMPTS, "cpu")
    codes = torch.randint(N_TEXT, N_TEXT + N_CODES, (3, N_IMG), generator=torch.Generator().manual_seed(0))
    full_ids = torch.cat([ids, codes], 1)
    full_mask = torch.cat([mask, torch.ones_like(codes)], 1)
    with torch.no_grad():
        ref = model(full_ids, plan=plan, attention_mask=full_mask).logits
        cache = KVCache(full_ids.shape[1])
        steps = [model(ids, plan=plan, attention_mask=mask, kv_cache=cache).logits]
        for t in range(N_IMG):
            steps.append(model(codes[:, t:t + 1], plan=plan, kv_cache=cache).logits)
    torch.testing.assert_close(torch.cat(steps, 1), ref, atol=1e-5, rtol=1e-5)
    if plan_name != "base":  # shallow layers cache the prompt's text keys only
        assert cache.length("text") == ids.shape[1] and cache.length("all") == full_ids.shape[1]


@pytest.mark.parametrize("plan_name", list(PLANS))
def test_left_padded_batch_equals_one_by_one(plan_name):
    model, plan = tiny_model(2), PLANS[plan_name]()
    batched = generate_images(model, PROMPTS, N_IMG, plan=plan, temperature=0)
    alone = torch.cat([generate_images(model, [p], N_IMG, plan=plan, temperature=0) for p in PROMPTS])
    assert torch.equal(batched, alone)
    small_batches = generate_images(model, PROMPTS, N_IMG, plan=plan, temperature=0, batch_size=2)
    assert torch.equal(batched, small_batches)


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = tiny_model()

    def sample(seed, **kw):
        return generate_images(model, PROMPTS, N_IMG, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0, temperature=5.0), sample(1, temperature=5.0))
    assert torch.equal(sample(3, top_k=1), generate_images(model, PROMPTS, N_IMG, temperature=0))


def test_classifier_free_guidance():
    model = tiny_model()
    uncond = [1, 3]
    greedy = generate_images(model, PROMPTS, N_IMG, temperature=0)
    # scale 1 is the conditional model itself
    assert torch.equal(generate_images(model, PROMPTS, N_IMG, temperature=0, cfg_scale=1.0,
                                       uncond_prompt_ids=uncond), greedy)
    guided = generate_images(model, PROMPTS, N_IMG, temperature=0, cfg_scale=3.0, uncond_prompt_ids=uncond)
    assert guided.shape == greedy.shape
    with pytest.raises(ValueError, match="uncond_prompt_ids"):
        generate_images(model, PROMPTS, N_IMG, cfg_scale=3.0)


def test_generation_restores_training_mode_and_rejects_himix_cache():
    model = tiny_model().train()
    generate_images(model, PROMPTS[:1], 2, temperature=0)
    assert model.training
    with pytest.raises(NotImplementedError):
        generate_images(model, PROMPTS[:1], 2, plan=build_plan("u", "himix", LAYERS))
