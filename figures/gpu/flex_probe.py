"""Why HiMix's flex kernel is slow: one HiMix attention call at the 207M bench's shapes (batch 256,
16 heads of 64, 69 text queries over 325 keys as [image; text]), forward + backward, bf16, on one
GPU. Compares SDPA with the float bias (the "mask" kernel), compiled FlexAttention with the causal
rule read from the rows' sequence indices (as a score_mod, and as a block mask made once or per
call), FlexAttention with no mask at all (its floor at these shapes), and causal flash over the
full 325-token sequence (the baseline's kernel).
    python figures/gpu/flex_probe.py      (output of one run: figures/bench/nvidia-h200-flex-probe.txt)
"""
import time, torch, torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention, create_block_mask
torch.manual_seed(0)
dev = "cuda"; B, H, hd = 256, 16, 64
n_pre, n_img, n_post = 30, 256, 39
Lq, Lk = n_pre + n_post, n_img + n_pre + n_post
img = torch.arange(n_pre, n_pre + n_img, device=dev)
txt = torch.cat([torch.arange(n_pre, device=dev), torch.arange(n_pre + n_img, Lk, device=dev)])
q_idx = txt[None].expand(B, -1).contiguous(); k_idx = torch.cat([img, txt])[None].expand(B, -1).contiguous()
mask = (k_idx[:, None, :] <= q_idx[:, :, None])[:, None]
bias = torch.full((B, 1, Lq, 336), float("-inf"), device=dev, dtype=torch.bfloat16)[..., :Lk]
bias.masked_fill_(mask, 0.0)
def mk(n): return torch.randn(B, H, n, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
q, k, v = mk(Lq), mk(Lk), mk(Lk)
def score_mod(s, b, h, qi, ki):
    return torch.where(k_idx[b, ki] <= q_idx[b, qi], s, -float("inf"))
def mask_mod(b, h, qi, ki):
    return k_idx[b, ki] <= q_idx[b, qi]
flex_c = torch.compile(flex_attention, dynamic=False)
def sdpa(): return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
def flex_score(): return flex_c(q, k, v, score_mod=score_mod)
def flex_block():
    bm = create_block_mask(mask_mod, B, None, Lq, Lk, device=dev)
    return flex_c(q, k, v, block_mask=bm)
bm_fixed = create_block_mask(mask_mod, B, None, Lq, Lk, device=dev)
def flex_block_pre(): return flex_c(q, k, v, block_mask=bm_fixed)
def flex_dense(): return flex_c(q, k, v)
qf, kf, vf = (torch.randn(B, H, Lk, hd, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
def causal_full(): return F.scaled_dot_product_attention(qf, kf, vf, is_causal=True)
ref = sdpa().float()
for name, fn in [("sdpa_bias", sdpa), ("flex_score", flex_score), ("flex_block_pre", flex_block_pre),
                 ("flex_block_each", flex_block), ("flex_dense", flex_dense), ("causal_full_325", causal_full)]:
    try:
        for _ in range(3):
            o = fn(); o.float().sum().backward()
        if name.startswith("flex") and name != "flex_dense":
            print(name, "max abs diff vs sdpa", (fn().float() - ref).abs().max().item())
        torch.cuda.synchronize(); st = torch.cuda.Event(enable_timing=True); en = torch.cuda.Event(enable_timing=True)
        st.record()
        for _ in range(20):
            o = fn(); o.float().sum().backward()
        en.record(); torch.cuda.synchronize()
        print(f"{name}: {st.elapsed_time(en)/20:.3f} ms fwd+bwd (one layer)", flush=True)
    except Exception as e:
        print(name, "FAILED", type(e).__name__, str(e)[:300], flush=True)
