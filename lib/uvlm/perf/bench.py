"""Wall-clock cost of the layer plans: one full training step per plan, measured side by side.

    python -m uvlm.perf.bench                          # cpu preset, every plan of the run grid
    python -m uvlm.perf.bench --preset gpu --compare compile
    python -m uvlm.perf.bench --preset gpu --compile --hmgen-ks 1,2,3,4,5 --profile
    python -m uvlm.perf.bench --preset gpu --compile --plans u_base,g_base --set model.d_model=768 --set model.n_heads=12
    result = run_benchmark(preset="tiny", steps=2)

Every plan of the run grid (baseline U, HiMix U, baseline G, HMGen G at each K, and the
unified pairs: one U batch then one G batch, each its own optimizer step, as training
interleaves them) runs the step of ``train.py``: forward with
``loss_reduction="sum_per_sample"``, backward, gradient clipping, AdamW. Batches are
synthetic but shaped like the real sequences (:func:`synthetic_batch`).

All variants live in ONE process on ONE device and are timed round-robin, in a fresh random
order every round, so a slow spell of a shared machine hits every variant alike and the
ratios stay trustworthy. Every number in the result names the device it was measured on.

Derived per variant: speedup over its task's baseline (time ratio), FLOPs-ideal speedup
(ratio of counted FLOPs, ``flops.plan_flops``), speedup efficiency = their quotient, and on
GPUs the MFU against the card's bf16 dense peak. ``compare=KNOB`` runs every plan under
each value of one implementation choice (torch.compile, precision, AdamW kernel, SDPA
backend), so the table shows what that choice buys. ``sets`` overrides config keys the way
``dvc exp run -S`` does (a larger model, say); ``hmgen_ks`` adds an HMGen G plan per K;
``profile`` records one profiled step per variant: device busy time, kernel count and the
time per kind of kernel (GEMM, attention, gathers and copies, optimizer, ...), which says
where a plan's time goes when its speedup falls short of its FLOPs.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from uvlm.core import devices
from uvlm.core.config import DEFAULT_RUNS, PRESETS, RunSpec, load_config, resolve
from uvlm.core.errors import ConfigError, UVLMError
from uvlm.core.io import write_json, write_text
from uvlm.core.schema import build, rule
from uvlm.model import plans as P
from uvlm.model.attention import HIMIX_KERNELS, use_himix_kernel
from uvlm.model.flops import plan_flops
from uvlm.tokens.sequences import BOI, BOS, EOI, EOS, IGNORE, PAD, Vocab
from uvlm.train.setup import accel_settings, model_config, run_plans

FORMAT = "uvlm.perf.bench/1"
KNOBS = {  # compare=KNOB: the values it runs; the first is the reference ("without the choice")
    "compile": (False, True),
    "cuda_graphs": (False, True),  # with compile: torch.compile's "reduce-overhead" mode
    "precision": ("fp32", "bf16"),
    "optimizer": ("loop", "foreach", "fused"),
    "sdpa": ("math", "auto"),
    "himix": HIMIX_KERNELS,  # HiMix attention kernels (attention_ops.HIMIX_KERNELS)
}
GPU_SDPA = ("efficient", "flash", "cudnn")  # more kernels a GPU comparison of sdpa runs
# bf16 dense tensor-core peaks (vendor datasheets; sparsity figures halved). First match wins.
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
                   ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12), ("L4", 121e12))
# Text lengths of the synthetic batches, (low, high) inclusive, around the real data's typical ones.
U_INSTRUCTION, U_ANSWER, G_PROMPT = (9, 15), (19, 31), (11, 19)


@dataclass
class BenchConfig:
    """Options of :func:`run_benchmark` and ``python -m uvlm.perf.bench``."""

    preset: str = field(default="cpu", metadata=rule(choices=PRESETS))
    params_path: Optional[str] = None  # a params.yaml instead of a bare preset (its model and run grid)
    batch_size: Optional[int] = field(default=None, metadata=rule(ge=1))  # None: train.batch_size
    steps: int = field(default=10, metadata=rule(ge=1))  # timed steps per variant
    # Steps queued back to back per timing, with one device sync at the end: > 1 measures the
    # throughput of training's loop, where the host queues the next step while the GPU still
    # runs this one (train.log_every); 1 times each step alone, host and device time added.
    chunk: int = field(default=1, metadata=rule(ge=1))
    warmup: int = field(default=3, metadata=rule(ge=0))  # untimed steps per variant, first
    compile: bool = False
    cuda_graphs: bool = False  # with compile, on a GPU: CUDA graphs (mode "reduce-overhead")
    precision: str = field(default="auto", metadata=rule(choices=("auto", "fp32", "bf16")))
    optimizer: str = field(default="auto", metadata=rule(choices=("auto", "loop", "foreach", "fused")))
    sdpa: str = field(default="auto", metadata=rule(choices=("auto", "math", "flash", "efficient", "cudnn")))
    himix: str = field(default="mask", metadata=rule(choices=HIMIX_KERNELS))  # HiMix attention kernel
    compare: Optional[str] = field(default=None, metadata=rule(choices=tuple(KNOBS)))
    values: Optional[list[str]] = None  # with compare: only these of the knob's values (None = all)
    plans: Optional[list[str]] = None  # run names; None = the whole grid (baselines always come along)
    device: str = field(default="auto", metadata=rule(choices=("auto", "cpu", "cuda")))
    threads: int = field(default=0, metadata=rule(ge=0))  # CPU threads; 0 = torch's default
    n_text: int = field(default=150, metadata=rule(ge=8))  # text ids of the synthetic batches
    seed: int = field(default=0, metadata=rule(ge=0))
    sets: Optional[list[str]] = None  # KEY=VALUE config overrides, e.g. model.d_model=768
    hmgen_ks: Optional[list[int]] = None  # one extra HMGen G plan per K: runs "g_hmgen_at_k<K>"
    profile: bool = False  # one profiled step per variant (see profile_step)


@dataclass(frozen=True)
class Setting:
    """The implementation choices one variant runs with."""

    compile: bool
    precision: str
    optimizer: str
    sdpa: str
    himix: str = "mask"
    cuda_graphs: bool = False


# ---------------------------------------------------------------------------------------------
# The card's peak (device and precision resolve in uvlm.core.devices)
# ---------------------------------------------------------------------------------------------
def peak_bf16_flops(name: str, device: str) -> Optional[float]:
    if device != "cuda":
        return None
    return next((peak for key, peak in PEAK_BF16_FLOPS if key.lower() in name.lower()), None)


def make_adamw(model, tc, device: str, impl: str) -> torch.optim.Optimizer:
    """AdamW with train.make_optimizer's groups; ``impl`` picks the kernel ('auto' = training's)."""
    from uvlm.train.loop import make_optimizer
    if impl == "auto":
        return make_optimizer(model, tc, device)
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": tc.weight_decay},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    kind = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[impl]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), **kind)


def sdpa_context(backend: str):
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel({"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
                        "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend])


# ---------------------------------------------------------------------------------------------
# Batches and FLOPs
# ---------------------------------------------------------------------------------------------
@dataclass
class Batch:
    task: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    n_targets: int  # loss targets of the batch (the loss is normalised by it, as in training)
    T: int  # text rows per sample, padding included (the model computes on them)
    M: int  # image tokens per sample


def synthetic_batch(task: str, batch_size: int, M: int, vocab: Vocab, n_system: int,
                    gen: torch.Generator) -> Batch:
    """Random ids shaped like the real sequences, right-padded, loss on OUTPUT tokens:
    U = [bos system][boi image eoi][instruction][answer eos], G = [bos system][prompt boi][image eoi]."""
    def text(lo_hi):
        n = lo_hi if isinstance(lo_hi, int) else int(torch.randint(lo_hi[0], lo_hi[1] + 1, (1,), generator=gen))
        return torch.randint(6, vocab.n_text, (n,), generator=gen).tolist()

    rows, n_out = [], []
    for _ in range(batch_size):
        image = (torch.randint(0, vocab.codebook_size, (M,), generator=gen) + vocab.image_token_start).tolist()
        if task == "u":
            answer = text(U_ANSWER)
            rows.append([BOS, *text(n_system), BOI, *image, EOI, *text(U_INSTRUCTION), *answer, EOS])
            n_out.append(len(answer) + 1)
        else:
            rows.append([BOS, *text(n_system), *text(G_PROMPT), BOI, *image, EOI])
            n_out.append(M + 1)
    L = max(map(len, rows))
    ids = torch.full((batch_size, L), PAD, dtype=torch.long)
    labels = torch.full((batch_size, L), IGNORE, dtype=torch.long)
    for i, (row, k) in enumerate(zip(rows, n_out)):
        ids[i, :len(row)] = torch.tensor(row)
        labels[i, len(row) - k:len(row)] = ids[i, len(row) - k:len(row)]
    return Batch(task, ids, labels, int((labels[:, 1:] != IGNORE).sum()), L - M, M)


def batch_flops(model_cfg, plan, batch: Batch) -> float:
    """Counted FLOPs (forward + backward) of one step on ``batch``. The LM head runs on the
    rows with a target; under HiMix image rows have none (the model's own rule)."""
    targets = batch.labels[:, 1:] != IGNORE
    if any(m.mode == "himix" for m in plan):
        targets &= batch.input_ids[:, :-1] < model_cfg.image_token_start
    B = batch.input_ids.shape[0]
    return plan_flops(model_cfg, plan, T=batch.T, M=batch.M, loss_tokens=float(targets.sum()) / B)["total"] * B


# ---------------------------------------------------------------------------------------------
# One variant: (run, setting)
# ---------------------------------------------------------------------------------------------
class Variant:
    """Its own model and optimizer, the batches of its tasks, its timings."""

    def __init__(self, name, run, setting, model, opt, parts, baseline, grad_clip, sizes=None):
        self.name, self.run, self.setting, self.baseline = name, run, setting, baseline
        self.model, self.opt, self.grad_clip = model, opt, grad_clip
        self.parts = parts  # [(Batch, plan)]: one optimizer step each, in order
        # Per part, the model's host_sizes from the batch's CPU copy, as training passes them.
        self.sizes = sizes or [None] * len(parts)
        self.step_fn = model  # the compiled model when setting.compile
        self.times: list[float] = []
        self.extra_mem: list[int] = []  # CUDA: peak bytes above what was allocated before the step
        self.error: Optional[str] = None

    def _contexts(self, device):
        amp = torch.autocast(device, dtype=torch.bfloat16, enabled=self.setting.precision == "bf16")
        return amp, sdpa_context(self.setting.sdpa), use_himix_kernel(self.setting.himix)

    def train_step(self, device: str) -> None:
        for (batch, plan), sizes in zip(self.parts, self.sizes):
            if self.setting.cuda_graphs:
                # The last step's graph outputs are dead: each variant's graphs stay roots of
                # the CUDA graph tree and replay in any order of variants, never re-record.
                torch.compiler.cudagraph_mark_step_begin()
            amp, sdpa, himix = self._contexts(device)
            with amp, sdpa, himix:
                out = self.step_fn(batch.input_ids, labels=batch.labels, plan=plan, loss_reduction="sum_per_sample",
                                   host_sizes=sizes)
            (out.loss.sum() / batch.n_targets).backward()  # outside autocast, as in training
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

    def timed_step(self, device: str, chunk: int = 1) -> None:
        """Time ``chunk`` steps queued back to back (one sync at the end) -> their mean."""
        cuda = device == "cuda"
        if cuda:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(chunk):
            self.train_step(device)
        if cuda:
            torch.cuda.synchronize()
        self.times.append((time.perf_counter() - t0) / chunk)
        if cuda:
            self.extra_mem.append(torch.cuda.max_memory_allocated() - before)

    def resident_bytes(self) -> int:
        """Parameters + optimizer state (gradients are freed between steps)."""
        tensors = [*self.model.parameters()] + [t for s in self.opt.state.values() for t in s.values()
                                                if torch.is_tensor(t)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def saved_activation_bytes(self, device: str) -> int:
        """Bytes autograd keeps for backward in the largest forward of the step (eager graph,
        weights excluded): the activation memory of the plan, measurable on any device."""
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            # Detached: a tensor a node saves of its own output would otherwise hold that node
            # (a reference cycle through C++ that gc cannot break), and the whole forward graph
            # with it: every variant's activations stayed allocated until the process ended.
            return t.detach()

        total = 0
        for batch, plan in self.parts:
            seen.clear()
            amp, sdpa, himix = self._contexts(device)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp, sdpa, himix:
                out = self.model(batch.input_ids, labels=batch.labels, plan=plan, loss_reduction="sum_per_sample")
            total = max(total, sum(seen.values()))
            del out
        return total


# ---------------------------------------------------------------------------------------------
# The grid of variants
# ---------------------------------------------------------------------------------------------
def bench_config(preset: str, params_path=None, sets=None):
    from uvlm.core.overrides import parse_sets
    overrides = parse_sets(sets, flag="bench.sets")
    if params_path is not None:
        return load_config(params_path, sets=overrides)
    return resolve({"preset": preset, **overrides}, root=Path.cwd())


def grid_runs(cfg, hmgen_ks=None) -> dict[str, RunSpec]:
    runs = dict(cfg.runs) or {k: build(RunSpec, v, prefix=f"runs.{k}") for k, v in DEFAULT_RUNS.items()}
    limit = P.max_shallow_layers(cfg.model.n_layers, cfg.hmgen.placement)
    for i, k in enumerate(hmgen_ks or []):
        if not 1 <= k <= limit:
            raise ConfigError(f"bench.hmgen_ks[{i}]", k, f"1 <= K <= {limit} for {cfg.model.n_layers} layers "
                              f"(hmgen.placement '{cfg.hmgen.placement}')")
        runs[sweep_name(k)] = RunSpec(task="g", accel="hmgen", hmgen_k=k)
    for task in ("u", "g", "ug"):  # every task present needs its baseline
        if any(s.task == task for s in runs.values()) and baseline_of(runs, task) is None:
            runs[f"{task}_base"] = RunSpec(task=task, accel="base")
    return runs


def sweep_name(k: int) -> str:
    # Not "g_hmgen_k<K>": the grid's names carry the paper's K (at 32 layers), not this depth's.
    return f"g_hmgen_at_k{k}"


def baseline_of(runs: dict, task: str) -> Optional[str]:
    return next((n for n, s in runs.items() if s.task == task and s.accel == "base"), None)


def select_runs(runs: dict, wanted: Optional[list[str]]) -> list[str]:
    for i, name in enumerate(wanted or []):
        if name not in runs:
            raise ConfigError(f"bench.plans[{i}]", name, f"one of the runs {list(runs)}")
    chosen = set(wanted or runs) | {baseline_of(runs, runs[n].task) for n in wanted or []}
    return [n for n in runs if n in chosen]


def settings_of(opts: BenchConfig, device: str, notes: list) -> list[Setting]:
    if opts.himix == "flex" and device != "cuda":
        # FlexAttention has no CPU backward: training steps would time the mask kernel under its name.
        raise ConfigError("bench.himix", "flex", "'mask' or 'split' off a GPU (FlexAttention has no CPU backward)")
    if (opts.cuda_graphs or opts.compare == "cuda_graphs") and device != "cuda":
        raise ConfigError("bench.cuda_graphs", True, "false off a GPU (CUDA graphs need CUDA)")
    if (opts.cuda_graphs or opts.compare == "cuda_graphs") and not opts.compile:
        raise ConfigError("bench.cuda_graphs", True, "false, or true together with --compile (the graphs are "
                                                      "torch.compile's)")
    base = Setting(opts.compile, devices.resolve_precision(opts.precision, device, "bench.precision", notes), opts.optimizer, opts.sdpa,
                   opts.himix, opts.cuda_graphs)
    if opts.compare is None:
        if opts.values is not None:
            raise ConfigError("bench.values", ",".join(opts.values), "unset, or set together with bench.compare")
        return [base]
    values = list(KNOBS[opts.compare]) + (list(GPU_SDPA) if opts.compare == "sdpa" and device == "cuda" else [])
    if opts.compare == "himix" and device != "cuda":
        values.remove("flex")
        notes.append("HiMix kernel 'flex' left out: FlexAttention has no CPU backward")
    if opts.values is not None:
        allowed = [str(v).lower() for v in values]
        for i, v in enumerate(opts.values):
            if v.lower() not in allowed:
                raise ConfigError(f"bench.values[{i}]", v, f"one of {allowed} (the values of compare={opts.compare} "
                                                           f"on {device})")
        wanted = {v.lower() for v in opts.values}
        values = [v for v in values if str(v).lower() in wanted]
    if opts.compare == "precision":
        values = [devices.resolve_precision(v, device, "bench.precision", notes) for v in values]
    return list(dict.fromkeys(dataclasses.replace(base, **{opts.compare: v}) for v in values))


def build_variants(cfg, opts: BenchConfig, device, runs, names, settings, vocab, M) -> list[Variant]:
    gen = torch.Generator().manual_seed(opts.seed)
    n_system = len(cfg.world.system_prompt.split())
    batches = {t: synthetic_batch(t, opts.batch_size or cfg.train.batch_size, M, vocab, n_system, gen)
               for t in ("u", "g")}
    on_cpu = {t: (b.input_ids, b.labels) for t, b in batches.items()}
    for b in batches.values():
        b.input_ids, b.labels = b.input_ids.to(device), b.labels.to(device)
    from uvlm.model.decoder import UVLM
    variants = []
    for setting in settings:
        for name in names:
            spec, plans = runs[name], run_plans(cfg, runs[name])
            model = UVLM(model_config(cfg, vocab, spec), seed=opts.seed).to(device).train()
            opt = make_adamw(model, cfg.train, device, setting.optimizer)
            with use_himix_kernel(setting.himix):  # the split and rows kernels' prefix is one of the sizes
                sizes = [model.host_sizes(*on_cpu[t], plans[t]) for t in plans]
            v = Variant(name, spec, setting, model, opt, [(batches[t], plans[t]) for t in plans],
                        baseline_of(runs, spec.task), cfg.train.grad_clip, sizes)
            if setting.compile:
                # Static shapes: each variant's shapes are fixed, and the automatic dynamic
                # shapes that the shared layer frames would otherwise get crash the compiled
                # backward on CPU (torch 2.13: a stride assertion after the third new length).
                v.step_fn = torch.compile(model, dynamic=False,
                                          mode="reduce-overhead" if setting.cuda_graphs else None)
            variants.append(v)
    return variants


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
def _guarded(v: Variant, device: str, tolerate: bool, action) -> None:
    """Run ``action``. A CUDA OOM becomes a clear error; in a comparison, a choice that cannot
    run a plan (an SDPA kernel without mask support, say) is recorded, not fatal."""
    try:
        action()
    except torch.cuda.OutOfMemoryError:
        v.opt.zero_grad(set_to_none=True)
        b = v.parts[0][0].input_ids.shape[0]
        raise UVLMError(f"a batch of {b} sequences does not fit in the memory of {devices.device_name(device)} for plan "
                        f"'{v.name}': lower the batch size (--batch-size), or train with a larger "
                        "train.grad_accum (each micro-batch is then batch_size / grad_accum sequences)") from None
    except Exception as e:  # noqa: BLE001 (recorded in the result, only when comparing choices)
        if not tolerate:
            raise
        v.error = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
        v.opt.zero_grad(set_to_none=True)


def measure(variants: list[Variant], device: str, steps: int, warmup: int, seed: int, tolerate: bool,
            progress: bool, chunk: int = 1) -> None:
    from tqdm.auto import tqdm
    # With static shapes the layer frames (one code object for every variant) recompile per
    # shape and layer mode: lift dynamo's limit so that no variant silently falls back to eager.
    limits = torch._dynamo.config.patch(recompile_limit=4096, accumulated_recompile_limit=65536)
    with limits if any(v.setting.compile for v in variants) else contextlib.nullcontext():
        for v in variants:  # warm-up first: allocator, autotuning, compilation
            for _ in range(max(warmup, 1)):
                _guarded(v, device, tolerate, lambda v=v: v.train_step(device))
        rng = np.random.default_rng(seed)
        gc.collect()
        gc.disable()  # a collection inside one variant's step would be charged to it alone
        try:
            for _ in tqdm(range(steps), desc="bench rounds", disable=not progress, mininterval=5.0):
                live = [v for v in variants if v.error is None]
                for i in rng.permutation(len(live)):
                    _guarded(live[i], device, tolerate, lambda v=live[i]: v.timed_step(device, chunk))
        finally:
            gc.enable()
    for v in variants:
        if v.error is not None:
            v.times, v.extra_mem = [], []  # failed mid-way: no comparable timings


# Kinds of kernel (CUDA kernel names; aten op names on a CPU), first match wins.
KERNEL_KINDS = (
    ("attention", re.compile(r"flash|fmha|attention|sdpa", re.I)),
    ("gemm", re.compile(r"gemm|cutlass|xmma|nvjet|cublas|wgmma|triton_tem|aten::(addmm|mm|bmm)$", re.I)),
    ("optimizer", re.compile(r"adam|multi_tensor|foreach|lpnorm", re.I)),
    ("fused", re.compile(r"^triton_")),  # inductor's fused elementwise/reduction kernels
    ("gather/copy", re.compile(r"index|gather|scatter|copy|cat|memcpy|memset|roll|permute", re.I)),
)


def kernel_kind(name: str) -> str:
    return next((kind for kind, pattern in KERNEL_KINDS if pattern.search(name)), "other")


def profile_step(v: Variant, device: str, median_s: Optional[float], top: int = 8) -> dict:
    """Where one training step of ``v`` spends its time, from torch.profiler.

    On a GPU: the summed time of its kernels ("busy"), how many it launches, and the time per
    kind of kernel. busy / median step time far below 1 means the GPU waits on the host
    (launches, syncs), so fewer FLOPs cannot buy proportionally less time. On a CPU the same
    is read from aten operators' own CPU time.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        v.train_step(device)
        if cuda:
            torch.cuda.synchronize()
    if cuda:
        # Not the ranges torch marks on the GPU timeline ("Optimizer.step#AdamW.step" and the
        # like): they span kernels already counted, and would count those twice.
        events = [e for e in prof.key_averages()
                  if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
        seconds = [getattr(e, "self_device_time_total", 0) * 1e-6 for e in events]
    else:
        events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        seconds = [e.self_cpu_time_total * 1e-6 for e in events]
    if not events:  # the profiler saw no kernels (no CUPTI, say): nothing to attribute
        return {"busy_s": None, "busy_fraction": None, "kernels": 0, "by_kind_s": {}, "top": []}
    by_kind: dict[str, float] = {kind: 0.0 for kind, _ in KERNEL_KINDS} | {"other": 0.0}
    for e, t in zip(events, seconds):
        by_kind[kernel_kind(e.key)] += t
    busy = sum(seconds)
    order = sorted(range(len(events)), key=lambda i: -seconds[i])[:top]
    return {"busy_s": busy, "busy_fraction": busy / median_s if median_s else None,
            "kernels": sum(e.count for e in events), "by_kind_s": by_kind,
            "top": [{"name": events[i].key[:120], "seconds": seconds[i], "count": events[i].count} for i in order]}


def step_flops(v: Variant) -> float:
    return sum(batch_flops(v.model.config, plan, b) for b, plan in v.parts)


def _spread(xs) -> Optional[list]:
    return [float(np.percentile(xs, 25)), float(np.percentile(xs, 75))] if xs else None


def summarise(v: Variant, by_key: dict, device: str, dev_name: str, peak, knob, reference: Setting) -> dict:
    flops, tokens = step_flops(v), sum(b.input_ids.numel() for b, _ in v.parts)
    med = statistics.median(v.times) if v.times else None
    row = {"name": v.name if knob is None else f"{v.name}[{knob}={getattr(v.setting, knob)}]",
           "run": v.name, "task": v.run.task, "accel": v.run.accel, "share": v.run.share,
           "setting": dataclasses.asdict(v.setting), "baseline": v.baseline, "device": dev_name,
           "plans": {b.task: P.describe_plan(plan) for b, plan in v.parts},
           "hmgen_k": next((sum(m.mode == "shallow" for m in p) for b, p in v.parts if b.task == "g"), None),
           "batch_size": v.parts[0][0].input_ids.shape[0], "seq_len": {b.task: b.input_ids.shape[1] for b, _ in v.parts},
           "tokens_per_step": tokens, "flops_per_step": flops, "error": v.error,
           "step_times_s": v.times, "median_step_s": med, "iqr_step_s": _spread(v.times),
           "tokens_per_s": tokens / med if med else None, "achieved_flops_per_s": flops / med if med else None}
    row["mfu"] = flops / med / peak if (peak and med) else None
    row["peak_memory_bytes"] = v.resident_bytes() + max(v.extra_mem) if v.extra_mem else None
    row["saved_activation_bytes"] = None if v.error else v.saved_activation_bytes(device)
    base, ref = by_key.get((v.baseline, v.setting)), by_key.get((v.name, reference))
    ok = bool(base and base.times and v.times)
    row["speedup"] = statistics.median(base.times) / med if ok else None
    # Rounds pair the two timings under the same machine state; their spread is the noise.
    paired = [b / t for b, t in zip(base.times, v.times)] if ok else []
    row["speedup_iqr"], row["speedup_paired_median"] = _spread(paired), statistics.median(paired) if ok else None
    row["flops_speedup"] = step_flops(base) / flops if ok else None
    row["speedup_efficiency"] = row["speedup"] / row["flops_speedup"] if ok else None
    row["choice_speedup"] = statistics.median(ref.times) / med if (knob and ref and ref.times and med) else None
    return row


# ---------------------------------------------------------------------------------------------
# The entry point and its outputs
# ---------------------------------------------------------------------------------------------
def run_benchmark(preset: str = "cpu", params_path=None, batch_size: Optional[int] = None, steps: int = 10,
                  warmup: int = 3, compile: bool = False, precision: str = "auto", plans=None, out=None, *,
                  write: bool = True, figure: bool = True, progress: bool = True, **options) -> dict:
    """Time one training step of every selected plan (module docstring) -> the result dict.

    ``plans``: run names (a list or one comma-separated string), None = the whole grid: the
    params file's runs, else :data:`uvlm.core.config.DEFAULT_RUNS`. ``out``: a folder, or a ``.json`` path with
    the ``.png`` and ``.md`` beside it; None = <paths.figures>/bench/<device-slug>.json.
    ``options``: the other fields of :class:`BenchConfig` (compare, optimizer, sdpa, device,
    threads, n_text, seed).
    """
    if isinstance(plans, str):
        plans = [p.strip() for p in plans.split(",") if p.strip()]
    if isinstance(options.get("values"), str):  # "mask,rows" from the command line
        options["values"] = [v.strip() for v in options["values"].split(",") if v.strip()]
    if isinstance(options.get("hmgen_ks"), str):  # "1,2,3" from the command line
        options["hmgen_ks"] = _int_list(options["hmgen_ks"], "bench.hmgen_ks")
    raw = dict(preset=preset, params_path=None if params_path is None else str(params_path), batch_size=batch_size,
               steps=steps, warmup=warmup, compile=compile, precision=precision, plans=plans, **options)
    opts = build(BenchConfig, raw, prefix="bench")
    cfg = bench_config(opts.preset, opts.params_path, opts.sets)
    runs = grid_runs(cfg, opts.hmgen_ks)
    sweep = [sweep_name(k) for k in opts.hmgen_ks or []]
    names = select_runs(runs, None if opts.plans is None else opts.plans + sweep)
    dev = devices.resolve_device(opts.device, "bench.device")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    notes: list[str] = []
    settings = settings_of(opts, dev, notes)
    M = (cfg.world.image_size // cfg.tokenizer.downsample) ** 2
    vocab = Vocab(n_text=opts.n_text, codebook_size=cfg.tokenizer.codebook_size)
    n_system = len(cfg.world.system_prompt.split())
    longest = 3 + n_system + M + max(U_INSTRUCTION[1] + U_ANSWER[1] + 1, G_PROMPT[1])
    if longest > cfg.model.max_seq_len:
        raise ConfigError("model.max_seq_len", cfg.model.max_seq_len, f">= {longest} (the longest benchmark sequence)")
    name = devices.device_name(dev)
    peak = peak_bf16_flops(name, dev)

    variants = build_variants(cfg, opts, dev, runs, names, settings, vocab, M)
    measure(variants, dev, opts.steps, opts.warmup, opts.seed, tolerate=opts.compare is not None, progress=progress,
            chunk=opts.chunk)
    by_key = {(v.name, v.setting): v for v in variants}
    rows = [summarise(v, by_key, dev, name, peak, opts.compare, settings[0]) for v in variants]
    for v, row in zip(variants, rows):
        row["profile"] = profile_step(v, dev, row["median_step_s"]) if opts.profile and v.error is None else None
    if dev == "cpu":
        notes.append("peak_memory_bytes is not measured on CPU (the process's max RSS only grows, so it cannot be "
                     "split between variants); saved_activation_bytes (autograd's saved tensors) is")
    elif peak is None:
        notes.append(f"no bf16 peak is known for '{name}': mfu is null (add it to uvlm.perf.bench.PEAK_BF16_FLOPS)")
    else:
        notes.append("mfu = counted FLOPs per step / median step time / the card's bf16 dense peak, at any precision")
    result = {
        "format": FORMAT,
        "device": {"type": dev, "name": name, "slug": devices.device_slug(name), "torch": torch.__version__,
                   "cuda": torch.version.cuda, "threads": torch.get_num_threads(), "peak_bf16_flops": peak,
                   "python": platform.python_version()},
        "settings": {**dataclasses.asdict(opts), "preset": cfg.preset, "batch_size": opts.batch_size or cfg.train.batch_size,
                     "model": dataclasses.asdict(cfg.model), "params": variants[0].model.num_params(), "image_tokens": M, "vocab_size": vocab.size,
                     "system_tokens": n_system, "grad_clip": cfg.train.grad_clip,
                     "settings_run": [dataclasses.asdict(s) for s in settings],
                     "hmgen_k": {n: accel_settings(cfg, runs[n])[1].k for n in names if "hmgen" in runs[n].accel}},
        "variants": rows,
        "notes": notes,
    }
    if write:
        write_outputs(result, out_paths(out, cfg, result), figure)
    return result


def out_paths(out, cfg, result) -> dict:
    out = Path(cfg.paths.figures) / "bench" if out is None else Path(out)
    stem = out.with_suffix("") if out.suffix == ".json" else out / result["device"]["slug"]
    return {"json": stem.with_suffix(".json"), "png": stem.with_suffix(".png"), "md": stem.with_suffix(".md")}


def write_outputs(result: dict, paths: dict, figure: bool = True) -> dict:
    """The markdown table, the figure and the JSON (last, so it lists what exists), atomically."""
    from .bench_figures import plot_bench
    result["files"] = {k: str(p) for k, p in paths.items() if figure or k != "png"}
    write_text(paths["md"], markdown_table(result) + "\n")
    if figure:
        plot_bench(result, paths["png"])
    write_json(paths["json"], result)
    return result["files"]


def markdown_table(result: dict) -> str:
    """The result as a markdown table, one row per variant, headed by the device and settings."""
    from .bench_figures import markdown_table as render
    return render(result)


def _int_list(text: str, key: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(key, text, "comma-separated integers, e.g. 1,2,3") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.perf.bench", description=__doc__.split("\n")[0])
    helps = {"params_path": "a params.yaml: its model dims and run grid", "steps": "timed steps per variant",
             "compile": "torch.compile every model",
             "cuda_graphs": "with --compile on a GPU: CUDA graphs (torch.compile mode reduce-overhead)",
             "compare": f"run every plan under each value of: {list(KNOBS)}",
             "values": "with --compare: only these comma-separated values of the knob, e.g. mask,rows",
             "plans": "comma-separated run names (default: the whole grid)", "threads": "CPU threads (0: torch's)",
             "sets": "override one config key, e.g. model.d_model=768 (repeatable)",
             "hmgen_ks": "comma-separated K values: one extra HMGen G plan each",
             "profile": "profile one step per variant: busy time, kernel count, time per kernel kind"}
    for f in dataclasses.fields(BenchConfig):
        flags = ["--" + f.name.replace("_", "-")] + (["--params"] if f.name == "params_path" else [])
        if f.name == "sets":
            ap.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE", help=helps["sets"])
        elif f.type in (bool, "bool"):
            ap.add_argument(*flags, action="store_true", help=helps.get(f.name))
        elif "list" in str(f.type):
            ap.add_argument(*flags, type=str, default=None, help=helps.get(f.name))
        else:
            kind = int if "int" in str(f.type) else str
            ap.add_argument(*flags, type=kind, default=f.default, help=helps.get(f.name, f"default: {f.default}"),
                            choices=(f.metadata.get("rule") or {}).get("choices"))
    ap.add_argument("--out", help="output folder, or a .json path (default: figures/bench/<device>.json; the committed ones are in records/bench/)")
    ap.add_argument("--no-figure", action="store_true")
    ap.add_argument("--list-plans", action="store_true", help="print the runs and their layer plans, then exit")
    a = vars(ap.parse_args(argv))
    out, figure, list_plans = a.pop("out"), not a.pop("no_figure"), a.pop("list_plans")
    try:
        if list_plans:
            cfg = bench_config(a["preset"], a["params_path"], a["sets"])
            ks = _int_list(a["hmgen_ks"], "bench.hmgen_ks") if a["hmgen_ks"] else None
            for n, spec in grid_runs(cfg, ks).items():
                for task, plan in run_plans(cfg, spec).items():
                    print(f"{n} [{task.upper()}]\n  " + P.describe_plan(plan).replace("\n", "\n  "))
            return 0
        result = run_benchmark(out=out, figure=figure, **a)
    except UVLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(result) + "\n\nwrote " + ", ".join(result["files"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
