"""Which SDPA backend runs HiMix's masked attention (text queries over image + text keys, a float
mask), and would another be faster? Forward + backward of one layer, batch 256, 16 heads x 64,
bf16, at 40, 69 and 100 text queries; the full causal kernel over the whole sequence for scale.

    PYTHONPATH=lib python scripts/gpu/sdpa_backends.py     # on a GPU machine

Output: records/bench/sdpa-backends-nvidia-h100.txt. "default" is what uvlm's mask kernel gets;
max|diff| compares each backend's output and gradients with the default's.
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from uvlm.model.attention import AttnSpec, causal_mask

B, H, D = 256, 16, 64
IMAGE, TEXT_BEFORE = 256, 30  # image tokens; text rows before the image (the prompt)
BACKENDS = (("default", None), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH))
KERNEL_WORDS = ("attention", "sdpa", "fmha", "cudnn")


def himix_bias(n_queries: int) -> torch.Tensor:
    """The float mask uvlm builds for HiMix: keys as [image; text], queries the text rows."""
    after = n_queries - TEXT_BEFORE
    q_idx = torch.cat([torch.arange(TEXT_BEFORE), torch.arange(TEXT_BEFORE + IMAGE, TEXT_BEFORE + IMAGE + after)])
    k_idx = torch.cat([torch.arange(TEXT_BEFORE, TEXT_BEFORE + IMAGE), q_idx])
    q_idx, k_idx = q_idx[None].expand(B, -1).cuda(), k_idx[None].expand(B, -1).cuda()
    return AttnSpec(mask=causal_mask(q_idx, k_idx, None), q_idx=q_idx, k_idx=k_idx).bias(torch.bfloat16)


def ms_per_call(fn, n: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def leaf(*shape):
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)


def attention_kernels(fn) -> list:
    """The names of the attention kernels one call launches."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.name[:60] for e in prof.events() if any(w in e.name.lower() for w in KERNEL_WORDS)})[:3]


def main():
    torch.manual_seed(0)
    print(torch.__version__, torch.cuda.get_device_name(), "cudnn", torch.backends.cudnn.version())
    for n_queries in (40, 69, 100):
        bias, n_keys = himix_bias(n_queries), IMAGE + n_queries
        q, k, v = leaf(B, H, n_queries, D), leaf(B, H, n_keys, D), leaf(B, H, n_keys, D)
        grad_out = torch.randn(B, H, n_queries, D, device="cuda", dtype=torch.bfloat16)
        reference = None
        for name, backend in BACKENDS:
            def step():
                q.grad = k.grad = v.grad = None
                if backend is None:
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
                else:
                    with sdpa_kernel(backend):
                        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
                out.backward(grad_out)
                return out
            try:
                results = [step().detach(), *(t.grad.clone() for t in (q, k, v))]
                reference = reference or results
                diff = max((a - b).abs().max().item() for a, b in zip(results, reference))
                nan = any(t.isnan().any().item() for t in results)
                print(f"Lq {n_queries:3d} Lk {n_keys} {name:9s} {ms_per_call(step):7.3f} ms  max|diff| {diff:.4f} "
                      f"nan {nan}  {attention_kernels(step)}")
            except RuntimeError as e:  # a backend that does not take these inputs
                print(f"Lq {n_queries:3d} {name:9s} failed: {str(e)[:150]}")
        qf, kf, vf = (leaf(B, H, n_keys, D) for _ in range(3))
        grad_full = torch.randn_like(qf)
        full = lambda: F.scaled_dot_product_attention(qf, kf, vf, is_causal=True).backward(grad_full)  # noqa: E731
        print(f"Lq {n_queries:3d} causal {n_keys}x{n_keys} {ms_per_call(full):7.3f} ms")


if __name__ == "__main__":
    main()
