"""One HiMix attention call at the 207M bench's shapes (batch 256, 16 heads of 64, text queries over
[image; text] keys), forward + backward in bf16 on one GPU, timed with CUDA events.

1. Kernels at 69 queries x 325 keys: SDPA with the float bias (the "mask" kernel), compiled
   FlexAttention with the causal rule read from the rows' sequence indices (as a score_mod, and as
   a block mask made once or per call), FlexAttention with no mask (its floor at these shapes),
   and causal SDPA over the full 325-token sequence (the baseline's call).
2. The masked call against the number of text queries (keys fixed at 256 image + the text): if
   the kernel works in tiles of 64 query rows, time steps up just past each multiple of 64.
3. Two more ways to call it without a mask tensor, at 40, 69 and 100 text queries: one varlen
   flash call (torch.nn.attention.varlen) over two sequences per sample, [prefix queries over
   prefix keys] and [suffix queries over prefix, image and suffix keys, bottom-right causal],
   with and without the layout copies it needs (rows first, the prefix keys twice); and compiled
   FlexAttention whose block mask is pure arithmetic on the row numbers (no index tensors read).

    python scripts/gpu/attention_probe.py > records/bench/attention-probe-<device>.txt
"""
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

dev = "cuda"
B, H, hd, N_IMG, N_PRE = 256, 16, 64, 256, 30


def shapes(n_text):
    """Sequence indices of the text queries and of the keys [image; text], as HiMix layers order them."""
    n_post = n_text - N_PRE
    Lk = N_IMG + n_text
    img = torch.arange(N_PRE, N_PRE + N_IMG, device=dev)
    txt = torch.cat([torch.arange(N_PRE, device=dev), torch.arange(N_PRE + N_IMG, N_PRE + N_IMG + n_post, device=dev)])
    q_idx = txt[None].expand(B, -1).contiguous()
    k_idx = torch.cat([img, txt])[None].expand(B, -1).contiguous()
    mask = (k_idx[:, None, :] <= q_idx[:, :, None])[:, None]
    bias = torch.full((B, 1, n_text, -(-Lk // 16) * 16), float("-inf"), device=dev, dtype=torch.bfloat16)[..., :Lk]
    return q_idx, k_idx, bias.masked_fill_(mask, 0.0), Lk


def leaf(n):
    return torch.randn(B, H, n, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)


def time_ms(fn, reps=20):
    for _ in range(3):
        fn().float().sum().backward()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn().float().sum().backward()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def kernels():
    q_idx, k_idx, bias, Lk = shapes(69)
    Lq = q_idx.shape[1]
    q, k, v = leaf(Lq), leaf(Lk), leaf(Lk)
    qf, kf, vf = leaf(Lk), leaf(Lk), leaf(Lk)

    def score_mod(s, b, h, qi, ki):
        return torch.where(k_idx[b, ki] <= q_idx[b, qi], s, -float("inf"))

    def mask_mod(b, h, qi, ki):
        return k_idx[b, ki] <= q_idx[b, qi]

    flex = torch.compile(flex_attention, dynamic=False)
    fixed = create_block_mask(mask_mod, B, None, Lq, Lk, device=dev)
    variants = {
        "sdpa_bias (the mask kernel)": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
        "flex, score_mod by index": lambda: flex(q, k, v, score_mod=score_mod),
        "flex, block mask made once": lambda: flex(q, k, v, block_mask=fixed),
        "flex, block mask per call": lambda: flex(q, k, v, block_mask=create_block_mask(mask_mod, B, None, Lq, Lk,
                                                                                        device=dev)),
        "flex, no mask (floor)": lambda: flex(q, k, v),
        "causal sdpa, 325 x 325 (baseline)": lambda: F.scaled_dot_product_attention(qf, kf, vf, is_causal=True),
    }
    ref = variants["sdpa_bias (the mask kernel)"]().float()
    print(f"1. one layer's HiMix attention, {Lq} queries x {Lk} keys, forward + backward (ms, mean of 20)")
    for name, fn in variants.items():
        diff = "" if "floor" in name or "baseline" in name else \
            f"  (max |out - mask kernel's| {(fn().float() - ref).abs().max().item():.4f})"
        print(f"   {name:36s} {time_ms(fn):7.3f}{diff}", flush=True)


def query_sweep():
    print("2. the mask kernel against the number of text queries (keys: 256 image + the text)")
    for n_text in (40, 48, 56, 64, 65, 69, 80, 96, 112, 128, 129):
        q_idx, k_idx, bias, Lk = shapes(n_text)
        q, k, v = leaf(n_text), leaf(Lk), leaf(Lk)
        ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
        print(f"   queries {n_text:4d}  keys {Lk:4d}  {ms:7.3f} ms  {ms / n_text * 1e3:6.2f} us per query row", flush=True)


def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k):
    """Causal varlen flash attention; torch 2.11 takes window_size, some releases is_causal."""
    import inspect

    from torch.nn.attention import varlen
    causal = {"is_causal": True} if "is_causal" in inspect.signature(varlen.varlen_attn).parameters \
        else {"window_size": (-1, 0)}
    return varlen.varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, **causal)


def maskless_calls():
    print("3. other calls without a mask tensor (ms, forward + backward, mean of 20)")
    flex = torch.compile(flex_attention, dynamic=False)
    for n_text in (40, 69, 100):
        n_post = n_text - N_PRE
        q_idx, k_idx, bias, Lk = shapes(n_text)
        q, k, v = leaf(n_text), leaf(Lk), leaf(Lk)
        # keys per sample in sequence order, the prefix twice: [prefix | prefix, image, suffix]
        order = torch.cat([torch.arange(N_IMG, N_IMG + N_PRE), torch.arange(N_IMG, N_IMG + N_PRE),
                           torch.arange(N_IMG), torch.arange(N_IMG + N_PRE, Lk)]).to(dev)
        n_k = 2 * N_PRE + N_IMG + n_post
        cu_q = torch.nn.functional.pad(torch.tensor([N_PRE, n_post], device=dev).repeat(B).cumsum(0), (1, 0)).int()
        cu_k = torch.nn.functional.pad(torch.tensor([N_PRE, n_k - N_PRE], device=dev).repeat(B).cumsum(0),
                                       (1, 0)).int()
        max_q, max_k = max(N_PRE, n_post), n_k - N_PRE

        def varlen_copies():
            rows = lambda x: x.transpose(1, 2)[:, order].reshape(-1, H, hd)
            out = varlen_attn(q.transpose(1, 2).reshape(-1, H, hd), rows(k), rows(v), cu_q, cu_k, max_q, max_k)
            return out.view(B, n_text, H, hd).transpose(1, 2)

        qv = torch.randn(B * n_text, H, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
        kv = torch.randn(B * n_k, H, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
        vv = torch.randn_like(kv, requires_grad=True)

        def arithmetic(b, h, qi, ki):  # query qi, key ki -> sequence indices, from the layout alone
            q_pos = torch.where(qi < N_PRE, qi, qi + N_IMG)
            k_pos = torch.where(ki < N_IMG, ki + N_PRE, torch.where(ki < N_IMG + N_PRE, ki - N_IMG, ki))
            return k_pos <= q_pos

        full = (leaf(Lk), leaf(Lk), leaf(Lk))
        block_mask = create_block_mask(arithmetic, None, None, n_text, Lk, device=dev)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).float()
        variants = {
            "sdpa_bias (the mask kernel)": (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias), True),
            "varlen flash, with layout copies": (varlen_copies, True),
            "varlen flash, rows already first": (lambda: varlen_attn(qv, kv, vv, cu_q, cu_k, max_q, max_k), False),
            "flex, arithmetic block mask": (lambda: flex(q, k, v, block_mask=block_mask), True),
            "causal sdpa, full sequence": (lambda: F.scaled_dot_product_attention(*full, is_causal=True), False),
        }
        print(f"   {n_text} queries ({N_PRE} before the image, {n_post} after) x {Lk} keys")
        for name, (fn, compare) in variants.items():
            diff = f"  (max |out - mask kernel's| {(fn().float() - ref).abs().max().item():.4f})" if compare else ""
            print(f"     {name:34s} {time_ms(fn):7.3f}{diff}", flush=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; batch {B}, {H} heads x {hd}, bf16")
    kernels()
    query_sweep()
    maskless_calls()
