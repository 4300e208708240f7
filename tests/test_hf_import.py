"""Loading a local Hugging Face Llama as the backbone: logits must match HF exactly."""
import pytest
import torch

from uvlm.core.errors import CheckpointError
from uvlm.model.hf_import import load_llama_backbone
from uvlm.model.plans import build_plan

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
HF_VOCAB, CODES = 100, 16


def save_tiny_llama(path, tie=False, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=HF_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   rope_theta=500.0, rms_norm_eps=1e-6, tie_word_embeddings=tie)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norms, so a mismapped norm weight would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("tie", [False, True])
def test_logits_match_hf(tmp_path, impl, tie):
    hf = save_tiny_llama(tmp_path / "llama", tie=tie)
    ours = load_llama_backbone(tmp_path / "llama", codebook_size=CODES).eval()
    assert ours.config.image_token_start == HF_VOCAB and ours.config.vocab_size == HF_VOCAB + CODES
    assert ours.config.rope_theta == 500.0 and ours.config.n_kv_heads == 2 and ours.config.tie_embeddings == tie
    ids = torch.randint(0, HF_VOCAB, (2, 11), generator=torch.Generator().manual_seed(0))
    hf_model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "llama", attn_implementation=impl,
                                                             local_files_only=True).eval()
    with torch.no_grad():
        ref = hf_model(ids).logits
        got = ours(ids).logits
    torch.testing.assert_close(got[..., :HF_VOCAB], ref, atol=1e-4, rtol=1e-4)
    # left-padded batches agree too (HF positions from the mask, like ours)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        ref = hf_model(ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[0, 3:, :HF_VOCAB], ref[0, 3:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1, :, :HF_VOCAB], ref[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_image_rows_start_near_the_text_mean(tmp_path, threads):
    hf = save_tiny_llama(tmp_path / "llama")
    ours = load_llama_backbone(tmp_path / "llama", codebook_size=CODES, image_proj_sets=["img"])
    text = hf.model.embed_tokens.weight.detach()
    new = ours.tok_emb.weight.detach()[HF_VOCAB:]
    assert new.shape == (CODES, 64)
    assert (new.mean(0) - text.mean(0)).abs().max() < 0.5 * text.std()
    assert new.std(0).mean() < text.std()  # small noise around the mean, and not all equal
    assert not torch.equal(new[0], new[1])
    assert torch.equal(ours.layers[0].attn.image_qkv["img"].weight, ours.layers[0].attn.qkv.weight)
    # the imported backbone runs every plan (image codes are the new ids)
    ids = torch.cat([torch.randint(0, HF_VOCAB, (1, 5)), torch.arange(HF_VOCAB, HF_VOCAB + 6)[None],
                     torch.randint(0, HF_VOCAB, (1, 3))], 1)
    # Two code paths, the same maths: the hmgen plan sends image rows through the (copied) image
    # projections as separate, smaller matmuls. With one thread the sums happen in the same order
    # and agree bit for bit; with more, the kernels split the reductions by shape, so the two
    # agree to float32 rounding only. That rounding (~1e-6 here) is the tolerance, whatever
    # thread count an earlier test left behind.
    from uvlm.core.threads import cpu_threads
    with cpu_threads(threads):
        base = ours(ids).logits
        same = ours(ids, plan=build_plan("g", "hmgen", 2, hmgen_k=0)).logits
    torch.testing.assert_close(same, base, atol=1e-5, rtol=1e-5)


def test_missing_directory_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_llama_backbone(tmp_path / "none", codebook_size=4)
