"""Which SDPA backend runs HiMix's masked attention (text queries over image + text keys, a float
mask), and would another be faster? Forward + backward of one layer, batch 256, 16 heads x 64,
bf16, at 40, 69 and 100 text queries; the full causal kernel over the whole sequence for scale.

    PYTHONPATH=lib python figures/gpu/sdpa_backends.py     # on a GPU machine

Output: figures/bench/sdpa-backends-nvidia-h100.txt. "default" is what uvlm's mask kernel gets.
"""
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from uvlm.attention_ops import AttnSpec, causal_mask
torch.manual_seed(0)
B, H, D, IMG, PRE = 256, 16, 64, 256, 30
def case(Lq):
    post = Lq - PRE
    q_idx = torch.cat([torch.arange(PRE), torch.arange(PRE + IMG, PRE + IMG + post)])
    k_idx = torch.cat([torch.arange(PRE, PRE + IMG), q_idx])
    q_idx, k_idx = q_idx[None].expand(B, -1).cuda(), k_idx[None].expand(B, -1).cuda()
    spec = AttnSpec(mask=causal_mask(q_idx, k_idx, None), q_idx=q_idx, k_idx=k_idx)
    return spec.bias(torch.bfloat16), Lq, IMG + Lq
def timeit(fn, n=20):
    for _ in range(3): fn()
    torch.cuda.synchronize(); s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n): fn()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / n
print(torch.__version__, torch.cuda.get_device_name(), "cudnn", torch.backends.cudnn.version())
for Lq in (40, 69, 100):
    bias, Lq, Lk = case(Lq)
    q = torch.randn(B, H, Lq, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, H, Lk, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, H, Lk, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(B, H, Lq, D, device="cuda", dtype=torch.bfloat16)
    ref = None
    for name, be in (("default", None), ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)):
        def step():
            q.grad = k.grad = v.grad = None
            if be is None:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            else:
                with sdpa_kernel(be):
                    o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            o.backward(g)
            return o
        try:
            o = step(); grads = [t.grad.clone() for t in (q, k, v)]
            if ref is None: ref = (o.detach().clone(), grads)
            diff = max((o - ref[0]).abs().max().item(), *[(a - b).abs().max().item() for a, b in zip(grads, ref[1])])
            nan = any(t.isnan().any().item() for t in [o, *grads])
            ms = timeit(step)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                step(); torch.cuda.synchronize()
            kern = sorted({e.name[:60] for e in prof.events() if "attention" in e.name.lower() or "sdpa" in e.name.lower() or "fmha" in e.name.lower() or "cudnn" in e.name.lower()})[:3]
            print(f"Lq {Lq:3d} Lk {Lk} {name:9s} {ms:7.3f} ms  max|diff| {diff:.4f} nan {nan}  {kern}")
        except Exception as ex:
            print(f"Lq {Lq:3d} {name:9s} failed: {type(ex).__name__}: {str(ex)[:150]}")
    # the full causal kernel over the whole sequence, for scale
    L = Lk
    qf = torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    kf = torch.randn_like(qf, requires_grad=True); vf = torch.randn_like(qf, requires_grad=True)
    gf = torch.randn_like(qf)
    def full():
        F.scaled_dot_product_attention(qf, kf, vf, is_causal=True).backward(gf)
    print(f"Lq {Lq:3d} causal {L}x{L} {timeit(full):7.3f} ms")
