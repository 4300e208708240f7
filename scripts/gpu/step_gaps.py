"""Where a training step's GPU waits: the gaps between kernels of queued steps, and what the host
was doing meanwhile.

    python scripts/gpu/step_gaps.py --plans u_himix --batch-size 192 --set model.d_model=2048 ...

Builds the benchmark's variants (uvlm.perf.bench), warms them up, then profiles ``--steps`` steps
queued back to back per variant (one sync at the end, as the benchmark's --chunk does) and
prints: the span, the union of kernel time, the idle rest, the largest gaps with the kernels
around them, and the host calls that wait for the device (synchronisations, device-to-host copies).
"""
from __future__ import annotations

import argparse
import sys

import torch

from uvlm.perf import bench as B
from uvlm.tokens.sequences import Vocab
from uvlm.core.schema import build

# Host calls that can wait for the device (cudaMemcpy* covers the device-to-host copies).
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def kernel_intervals(prof):
    out = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False):
            out.append((e.time_range.start, e.time_range.end, e.name))
    return sorted(out)


def gaps_report(v, device, steps, top):
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            v.train_step(device)
        torch.cuda.synchronize()
    ks = kernel_intervals(prof)
    span = ks[-1][1] - ks[0][0]
    busy, gaps, end, prev = 0.0, [], ks[0][0], None
    for s, e, name in ks:
        if s > end:
            gaps.append((s - end, prev, name))
        busy += max(0.0, e - max(s, end))
        end, prev = max(end, e), name
    print(f"\n== {v.name}: {steps} steps queued, span {span / 1e3 / steps:.2f} ms/step, kernels busy "
          f"{busy / 1e3 / steps:.2f} ms/step, idle {(span - busy) / 1e3 / steps:.2f} ms/step, "
          f"{len(ks) // steps} kernels/step")
    small = sum(g for g, *_ in gaps if g < 20)
    print(f"   gaps < 20 us sum to {small / 1e3 / steps:.2f} ms/step over {sum(g < 20 for g, *_ in gaps) // steps} gaps/step")
    for g, a, b in sorted(gaps, reverse=True)[:top]:
        print(f"   gap {g / 1e3:7.3f} ms after {a[:70]!r} before {b[:70]!r}")
    syncs = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CPU and e.name.startswith(SYNC_CALLS):
            syncs.setdefault(e.name, [0, 0.0])
            syncs[e.name][0] += 1
            syncs[e.name][1] += e.cpu_time_total
    for name, (n, t) in syncs.items():
        print(f"   host {name}: {n} calls, {t / 1e3:.2f} ms")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans", default="u_himix")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--set", dest="sets", action="append")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--sdpa", default="auto")
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args(argv)
    opts = build(B.BenchConfig, dict(preset="gpu", batch_size=a.batch_size, compile=not a.no_compile,
                                     plans=a.plans.split(","), sets=a.sets, sdpa=a.sdpa), prefix="bench")
    cfg = B.bench_config(opts.preset, None, opts.sets)
    runs = B.grid_runs(cfg)
    names = B.select_runs(runs, opts.plans)
    notes = []
    settings = B.settings_of(opts, "cuda", notes)
    M = (cfg.world.image_size // cfg.tokenizer.downsample) ** 2
    vocab = Vocab(n_text=opts.n_text, codebook_size=cfg.tokenizer.codebook_size)
    variants = B.build_variants(cfg, opts, "cuda", runs, names, settings, vocab, M)
    B.measure(variants, "cuda", 2, 3, 0, tolerate=False, progress=False, chunk=a.steps)
    for v in variants:
        print(f"{v.name}: timed {[round(t * 1e3, 2) for t in v.times]} ms/step")
        gaps_report(v, "cuda", a.steps, a.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
