"""The training loop: one run of the grid at one seed, through accelerate.

The same code runs on CPU, one GPU (bf16 autocast) or several GPUs
(``accelerate launch``). Batches are single-task; unified runs interleave U and
G batches (uvlm.train.batching). Every ``ckpt_every`` steps the whole state is saved
atomically, so a killed run resumes and, on CPU, ends bit-identical to an
uninterrupted one.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
import warnings
from pathlib import Path

import torch

from uvlm.core import devices
from uvlm.core.errors import ConfigError, UVLMError
from uvlm.core.io import write_json, write_text
from uvlm.model import plans as P
from .batching import Schedule
from .checkpoint import (diff_settings, read_training_state, restore_optimizer, save_model_dir,
                         save_training_state)
from .setup import build_model, load_task_data, run_dir, run_plans, stage_settings, vocab_for



def device_and_precision(train_cfg) -> tuple[str, str]:
    """(device, precision) of a training run, by the rule of every stage (uvlm.core.devices)."""
    device = devices.resolve_device(train_cfg.device, "train.device", " (the gpu preset needs a GPU; use preset=cpu here)")
    return device, devices.resolve_precision(train_cfg.precision, device, "train.precision")


def cuda_graphs_on(tc, device: str) -> bool:
    """Whether training replays CUDA graphs: train.cuda_graphs (which validation ties to
    train.compile) on a GPU."""
    if not tc.cuda_graphs:
        return False
    if device != "cuda":
        warnings.warn("train.cuda_graphs=true on CPU: CUDA graphs need a GPU, training runs without them")
        return False
    return True


def lr_at(step: int, total: int, tc) -> float:
    """Linear warmup then cosine decay to ``min_lr_ratio * lr``."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = (step - tc.warmup_steps) / max(1, total - tc.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * cos)


def make_optimizer(model, tc, device: str) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"fused": True} if device == "cuda" else {}
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), **kwargs)


def run_settings(cfg, run_name: str, seed: int) -> dict:
    """What a resumed run must share with the checkpoint it resumes from: the stage's resolved
    settings (``train.setup.stage_settings``, one definition of what a run computes from) and the
    seed, less the training keys that change how, not what, it computes."""
    settings = stage_settings(cfg, run_name)
    # grad_accum among them, so that a run stopped by an out-of-memory error resumes with more
    # accumulation.
    for volatile in ("seeds", "ckpt_every", "snapshots", "device", "compile", "cuda_graphs", "val_batches", "threads", "log_every",
                     "grad_accum", "num_processes", "parallel_seeds"):
        settings["train"].pop(volatile)
    return settings | {"seed": seed}


def checkpoint_settings(cfg, run_name: str, seed: int) -> dict:
    """What a checkpoint records and a resume compares: :func:`run_settings` and the inputs, the
    world's fingerprint and the codebook the codes were made with, so a checkpoint trained on
    another world's codes is never resumed on these."""
    from uvlm.tokens.sequences import codes_made_from
    return run_settings(cfg, run_name, seed) | {"inputs": codes_made_from(cfg.paths.data / "tokenizer")}


class CsvLog:
    """An append-only CSV that ``dvc plots`` can draw; truncated to the resume step.

    Only the main process writes (``enabled``): every process sees the same reduced
    numbers, and several writers would repeat each row once per GPU.
    """

    def __init__(self, path, fields, resume_step: int | None, enabled: bool = True):
        self.path, self.fields, self.enabled = Path(path), fields, enabled
        if not enabled:
            return
        rows = []
        if resume_step is not None and self.path.exists():
            rows = [r for r in csv.DictReader(self.path.open()) if int(r["step"]) <= resume_step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        write_text(self.path, buf.getvalue())

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({k: row.get(k, "") for k in self.fields})


class DeferredLog:
    """Rows of ``train_log.csv`` whose loss is still on the device, written a block at a time.

    Reading a loss (``float(loss)``) makes the host wait until the GPU has finished the step;
    doing it every step means the host never queues step n + 1 while the GPU runs step n,
    and a small model's step then costs host time PLUS device time. So the losses of a block
    of steps are fetched in one sync. Each row's step time is the block's wall time over its
    steps (on a CPU, where every op is synchronous, that is the per-step time averaged).

    Each row also carries the step's gradient norm: an inf gradient leaves the loss finite
    (the loss is computed before the update) but turns every weight NaN once clipped, so the
    loss alone would let a poisoned step reach a checkpoint.
    """

    def __init__(self, log: CsvLog, who: str, last_good: Path, tc=None):
        self.log, self.who, self.last_good, self.tc = log, who, last_good, tc
        self.rows: list[dict] = []
        self.losses: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []
        self.restart_clock()

    def __len__(self) -> int:
        return len(self.rows)

    def restart_clock(self) -> None:
        self.t0 = time.perf_counter()

    def add(self, row: dict, loss: torch.Tensor, grad_norm: torch.Tensor | None = None) -> None:
        self.rows.append(row)
        self.losses.append(loss)
        self.norms.append(torch.zeros_like(loss) if grad_norm is None else grad_norm.detach().float().reshape(()))

    def flush(self) -> float:
        """Fetch the block's losses and gradient norms (one host sync), check them, write the
        rows -> the last loss."""
        losses, norms = torch.stack([torch.stack(self.losses).float(), torch.stack(self.norms).to(
            self.losses[0].device)]).tolist()
        dt = (time.perf_counter() - self.t0) / len(losses)
        for row, loss, norm in zip(self.rows, losses, norms):
            if not math.isfinite(loss):
                raise non_finite_error(self.who, "loss", loss, row, self.last_good, self.tc)
            if not math.isfinite(norm):
                raise non_finite_error(self.who, "gradient norm", norm, row, self.last_good, self.tc)
            tokens = row.pop("tokens")
            self.log.write(row | {"loss": f"{loss:.5f}", "step_time_s": f"{dt:.4f}",
                                  "tokens_per_s": f"{tokens / dt:.0f}"})
        self.rows, self.losses, self.norms = [], [], []
        self.restart_clock()
        return losses[-1]


def non_finite_error(who: str, what: str, value: float, row: dict, last: Path, tc) -> UVLMError:
    """The run stops: say which step, what is really kept on disk, and what to try."""
    step = row["step"] - 1  # 0-based, as lr_at counts
    try:
        kept = read_training_state(last)
    except UVLMError:
        kept = None
    if kept is None:
        keep = (f"No checkpoint exists in '{last}' yet (the first is written at step "
                f"{tc.ckpt_every if tc else '?'}), so a new start begins from step 0.")
    else:
        keep = (f"The checkpoint of step {kept['step']} in '{kept['_dir']}' is kept (nothing later was "
                "saved); a resume starts there and, with the same settings, meets the same values again.")
    if step == 0:
        advice = ("It happened at the first step, before the learning rate acted: look at the inputs "
                  "(the data, model.init_from) rather than train.lr.")
    elif tc is not None:
        advice = (f"Lower train.lr (now {tc.lr:g}) or raise train.warmup_steps (now {tc.warmup_steps}); "
                  f"either changes the run's settings, so delete '{last.parent}' to start over.")
    else:
        advice = "Lower train.lr or raise train.warmup_steps, then start the run over."
    return UVLMError(f"{who} non-finite {what} {value} at step {step} ({row['task']} batch). Stopped. "
                     f"{keep} {advice}")


def static_target_budget(sizes: tuple, rows: slice, per_row: int) -> tuple:
    """``host_sizes`` with the loss-target count replaced by a bound fixed per task (rows x the
    most targets any row has), so a compiled model's shapes do not change from batch to batch.
    The rows past the real targets have target -100 and add exactly zero to a summed loss."""
    counts, _, prefix = sizes
    return counts, (rows.stop - rows.start) * per_row, prefix


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A CPU batch tensor on ``device`` without waiting for the GPU: a non-blocking copy from
    ordinary (pageable) memory is staged by the driver at once and queued on the stream.
    Pinning every batch first costs more than it saves (PyTorch's pin_memory guide)."""
    return t.to(device, non_blocking=torch.device(device).type == "cuda")


class EarlyStop:
    """Per-task patience on validation loss (``train.patience``, relative ``train.min_delta``).

    A task is stale once its loss has not improved for ``patience`` consecutive evaluations; the
    run stops when every task is stale, so a unified run trains on while either task improves.
    ``patience`` None never stops. The counts travel in the checkpoint, so a resumed run stops
    where an uninterrupted one would.
    """

    def __init__(self, tasks, patience: int | None, min_delta: float, stale: dict | None = None):
        self.patience, self.min_delta = patience, min_delta
        self.stale = {t: 0 for t in tasks} | dict(stale or {})

    def improves(self, loss: float, best: float) -> bool:
        return loss < best * (1.0 - self.min_delta) if math.isfinite(best) else True

    def update(self, task: str, loss: float, best: float) -> bool:
        """Record one evaluation of ``task`` -> whether it is a new best."""
        better = self.improves(loss, best)
        self.stale[task] = 0 if better else self.stale[task] + 1
        return better

    @property
    def done(self) -> bool:
        return self.patience is not None and all(n >= self.patience for n in self.stale.values())


@torch.no_grad()
def validation_loss(model, split, plan, batch_size: int, n_batches: int, accelerator,
                    with_se: bool = False):
    """Mean output-token loss over the first ``n_batches`` batches of a val split (fixed order).

    ``with_se``: also its standard error over the items (a ratio estimator: per-item loss sums
    over per-item target counts), which says how far apart two checkpoints must be to differ.
    """
    model.eval()
    total, count = 0.0, 0
    sums, counts = [], []
    for b in range(n_batches):
        idx = list(range(b * batch_size, min(len(split), (b + 1) * batch_size)))
        if not idx:
            break
        batch = split.batch(idx)
        ids, labels = batch["input_ids"].to(accelerator.device), batch["labels"].to(accelerator.device)
        with accelerator.autocast():
            out = model(ids, labels=labels, plan=plan, loss_reduction="sum_per_sample")
        per_item = out.loss.float().reshape(len(idx), -1).sum(1)
        n_items = (labels[:, 1:] != -100).sum(1)
        total += float(per_item.sum())
        count += int(n_items.sum())
        if with_se:
            sums.append(per_item.cpu())
            counts.append(n_items.cpu().float())
    model.train()
    mean = total / max(1, count)
    if not with_se:
        return mean
    s, c = torch.cat(sums).double(), torch.cat(counts).double()
    se = float(((s - mean * c) ** 2).sum().sqrt() / c.sum()) if len(s) > 1 else float("nan")
    return mean, se


def train_run(cfg, run_name: str, seed: int, out_dir=None, stop_after: int | None = None,
              progress: bool = True) -> dict:
    """Train one run at one seed; resume from ``out_dir/last`` if it exists.

    ``stop_after`` ends the loop after that many steps (as if the process were
    killed right after a checkpoint); the next call resumes.
    """
    from uvlm.core.threads import cores_per_process, cpu_threads

    with cpu_threads(cfg.train.threads or cores_per_process()):
        return _train_run(cfg, run_name, seed, out_dir, stop_after, progress)


def launch_run(cfg, run_name: str, seed: int) -> dict:
    """Train from a notebook on ``train.num_processes`` GPUs through accelerate's own launcher.

    One process: a plain call. Several: ``accelerate.notebook_launcher`` forks one process
    per GPU (so CUDA must not be initialised in the notebook before this call); the summary
    is read back from what rank 0 wrote.
    """
    n = cfg.train.num_processes
    if n == 1:
        return train_run(cfg, run_name, seed)
    available = torch.cuda.device_count()
    if available < n:
        raise ConfigError("train.num_processes", n, f"at most the {available} CUDA device(s) of this machine")
    from accelerate import notebook_launcher

    from uvlm.core.io import read_json
    notebook_launcher(train_run, args=(cfg, run_name, seed), num_processes=n)
    return read_json(run_dir(cfg, run_name, seed) / "train_summary.json", stage=f"train@{run_name}")


def launch_seeds(cfg, run_name: str, params_path: str = "params.yaml", progress: bool = True,
                 sets: tuple[str, ...] = ()) -> list[dict]:
    """Train ``run_name`` at every seed of ``train.seeds``; return their summaries in that order.

    With ``train.parallel_seeds`` > 1 (and one process per run), that many seeds train at once,
    each as ``python -m uvlm.train.cli`` reading ``params_path`` with the ``KEY=VALUE``
    overrides ``sets``, so ``cfg`` must be that file's config with those overrides; their logs
    go to ``<run dir>/logs``. Otherwise the seeds train one after another through
    :func:`launch_run`. Either way a finished seed is reused and a cut one resumes.
    """
    tc = cfg.train
    for seed in tc.seeds:
        drop_superseded_run(cfg, run_name, seed)
    k = min(tc.parallel_seeds, len(tc.seeds))
    if k <= 1 or tc.num_processes > 1:
        return [launch_run(cfg, run_name, seed) for seed in tc.seeds]
    import sys

    from uvlm.core.io import read_json
    from uvlm.core.process_pool import raise_failures, run_processes
    from uvlm.core.threads import cores_each

    threads = tc.threads or cores_each(k)
    commands = {f"seed{seed}": [sys.executable, "-m", "uvlm.train.cli", "--params", str(params_path),
                                "--run", run_name, "--seed", str(seed), "--no-progress",
                                *[a for kv in sets for a in ("--set", kv)],
                                "--set", f"train.threads={threads}"] for seed in tc.seeds}
    logs = run_dir(cfg, run_name, tc.seeds[0]).parent / "logs"
    result = run_processes(commands, k, logs, progress=progress, desc=f"{run_name}: {len(commands)} seeds, {k} at once")
    raise_failures(result, f"seeds of {run_name}")
    return [read_json(run_dir(cfg, run_name, seed) / "train_summary.json", stage=f"train@{run_name}")
            for seed in tc.seeds]


def drop_superseded_run(cfg, run_name: str, seed: int) -> bool:
    """Delete the run folder of a FINISHED run whose settings differ from ``cfg``'s -> whether it did.

    The train stage keeps its folders across re-runs (``persist`` in dvc.yaml) so that a cut
    stage resumes. A finished run of other settings is what the stage last produced, and so is
    in DVC's cache; training it again under the new settings loses nothing. A cut run of other
    settings is left alone, and :func:`train_run` refuses it by name: that work is not cached.
    """
    import shutil

    out = run_dir(cfg, run_name, seed)
    state = read_training_state(out / "last")
    finished = (state is not None and (out / "train_summary.json").exists()
                and not (Path(state["_dir"]) / "optim.safetensors").exists())
    if not finished or not diff_settings(state["settings"], checkpoint_settings(cfg, run_name, seed)):
        return False
    print(f"[{run_name}/seed{seed}] '{out}' holds a finished run of other settings (DVC cached it when the "
          "stage finished): training it again")
    shutil.rmtree(out)
    return True


def _train_run(cfg, run_name, seed, out_dir, stop_after, progress) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from tqdm.auto import tqdm

    t_setup = time.perf_counter()
    spec = cfg.run(run_name)
    tc = cfg.train
    out = Path(out_dir) if out_dir else run_dir(cfg, run_name, seed)
    out.mkdir(parents=True, exist_ok=True)
    device, precision = device_and_precision(tc)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=spec.accel != "base")]
    acc = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if precision == "bf16" else "no",
                      kwargs_handlers=handlers)
    torch.manual_seed(seed)

    vocab, tokenizer = vocab_for(cfg)
    data = load_task_data(cfg, spec, tokenizer, vocab)
    plans = run_plans(cfg, spec)
    model = build_model(cfg, vocab, spec, seed)
    opt = make_optimizer(model, tc, device)
    sizes = {t: len(d["train"]) for t, d in data.items()}
    schedule = Schedule(sizes, tc.batch_size, tc.cap_epochs * spec.steps_scale, seed, tc.mix_ratio)
    total = len(schedule)
    settings = checkpoint_settings(cfg, run_name, seed)

    start, best = 0, {t: {"val_loss": float("inf"), "step": None} for t in data}
    stopper = EarlyStop(sorted(data), tc.patience, tc.min_delta)
    stopped_early = False
    state = read_training_state(out / "last")
    if state is not None:
        changed = diff_settings(state["settings"], settings)
        if changed:
            raise UVLMError(f"refusing to resume '{out}' (saved at step {state['step']}): its settings or inputs "
                            "differ from params.yaml and data/:\n  " + "\n  ".join(changed) + "\nPut those values back to resume it, or "
                            f"delete '{out}' to start this run over.")
        from uvlm.model.decoder import UVLM
        model.load_state_dict(UVLM.from_pretrained(Path(state["_dir"]) / "model").state_dict())
        stopped_early = bool(state.get("stopped_early", False))
        if state["step"] < total and not stopped_early:  # a finished run's checkpoint holds no optimizer state
            restore_optimizer(state["_dir"], opt)
        start, best = state["step"], state["best"]
        stopper = EarlyStop(sorted(data), tc.patience, tc.min_delta, state.get("stale"))
        acc.print(f"[{run_name}/seed{seed}] resuming at step {start}/{total}")

    model, opt = acc.prepare(model, opt)
    graphs = cuda_graphs_on(tc, device)
    if tc.compile:
        # Static shapes: batches keep their split's length and the LM head a fixed row budget
        # (static_target_budget), so each layer plan compiles once. Dynamic lengths crash the
        # compiled backward (torch 2.13, CPU: a stride assertion), and a varying target count
        # would recompile on every batch.
        model = torch.compile(model, dynamic=False, mode="reduce-overhead" if graphs else None)
    raw = acc.unwrap_model(model, keep_torch_compile=False)  # validation and saving: the plain module
    # The most loss targets one row of each task has: the compiled model's LM-head budget.
    budgets = ({t: int((d["train"].labels[:, 1:] != -100).sum(1).max()) for t, d in data.items()}
               if tc.compile else {})
    # Snapshots feed the attention-evolution figure, which reads the first seed only.
    snaps = tc.snapshots if seed == tc.seeds[0] else 0
    snap_steps = {round(i * total / (snaps + 1)) for i in range(1, snaps + 1)}
    log = CsvLog(out / "train_log.csv", ["step", "task", "loss", "lr", "step_time_s", "tokens_per_s",
                                         "flops_per_step"], start if state else None,
                 acc.is_main_process)
    vlog = CsvLog(out / "val_log.csv", ["step"] + [f"val_{k}_{t}" for t in sorted(data) for k in ("loss", "se")],
                  start if state else None, acc.is_main_process)
    flops_cache: dict = {}
    world, rank = acc.num_processes, acc.process_index
    bar = tqdm(range(start, total), desc=f"{run_name}/seed{seed}", disable=not (progress and acc.is_main_process),
               mininterval=5.0, initial=start, total=total)
    rows = DeferredLog(log, f"[{run_name}/seed{seed}]", out / "last", tc)
    model.train()
    end = total if stop_after is None else min(total, start + stop_after)
    if stopped_early:  # the checkpoint is of a run that had already stopped: nothing left to train
        end = start
    t_run = time.perf_counter()
    setup_s = t_run - t_setup  # data, model, device: a fixed cost every stage pays once per seed
    for step in bar:
        if step >= end:
            break
        task, idx = schedule.at(step)
        idx = idx[rank::world]  # each process trains on its share of the global batch
        batch = data[task]["train"].batch(idx, static=tc.compile)
        # Everything the host needs to know about the batch comes from its CPU copy, so no
        # line of the step waits for the GPU (see DeferredLog).
        # Micro-batches are row slices (views): indexing a GPU tensor with a CPU index tensor
        # would copy the index over and wait for it.
        chunks = [slice(int(c[0]), int(c[-1]) + 1) for c in torch.arange(len(idx)).chunk(tc.grad_accum)]
        sizes = [raw.host_sizes(batch["input_ids"][c], batch["labels"][c], plans[task]) for c in chunks]
        if tc.compile:
            sizes = [static_target_budget(s, c, budgets[task]) for s, c in zip(sizes, chunks)]
        n_local = float((batch["labels"][:, 1:] != -100).sum())
        ids, labels = to_device(batch["input_ids"], acc.device), to_device(batch["labels"], acc.device)
        # torch.full, not torch.tensor(n, device=...): the latter is a blocking copy, i.e. a sync.
        n_tok = acc.reduce(torch.full((), n_local, device=acc.device), "sum")
        lr = lr_at(step, total, tc)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), device=acc.device)
        try:
            for chunk, size in zip(chunks, sizes):
                if graphs:
                    # A new step: the graphs' outputs of the last one are dead (the loss was
                    # copied out), so each plan's graph is a root and replays, never re-records.
                    torch.compiler.cudagraph_mark_step_begin()
                with acc.autocast():
                    o = model(ids[chunk], labels=labels[chunk], plan=plans[task], loss_reduction="sum_per_sample",
                              host_sizes=size)
                loss = o.loss.sum() * world / n_tok
                acc.backward(loss)
                loss_sum = loss_sum + loss.detach().float() / world
        except torch.cuda.OutOfMemoryError as e:
            raise out_of_memory(tc, len(idx), run_name, seed, out) from e
        if tc.grad_clip > 0:
            grad_norm = acc.clip_grad_norm_(model.parameters(), tc.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        opt.step()
        opt.zero_grad(set_to_none=True)
        # Keyed by everything the count reads, so a step's FLOPs depend on its batch alone, never
        # on which batch of that shape came first (that moved flops_total after a resume).
        key = (task, tuple(ids.shape), *flops_inputs(raw.config, batch))
        if key not in flops_cache:
            flops_cache[key] = batch_flops(raw.config, plans[task], batch, world)
        done = step + 1
        rows.add({"step": done, "task": task, "lr": f"{lr:.3e}", "tokens": ids.numel() * world,
                  "flops_per_step": f"{flops_cache[key]:.4e}"}, acc.reduce(loss_sum, "sum"), grad_norm)
        evaluate = done % tc.eval_every == 0 or done == total
        snapshot = acc.is_main_process and done in snap_steps
        checkpoint = acc.is_main_process and (done % tc.ckpt_every == 0 or done == total or done == end)
        # A block ends before anything is saved, so a non-finite loss or gradient is caught
        # before it reaches a checkpoint; the first step is its own block (it carries compilation).
        if evaluate or snapshot or checkpoint or done == start + 1 or len(rows) >= tc.log_every:
            last = rows.flush()
            bar.set_postfix(task=task, loss=f"{last:.3f}", refresh=False)
        if evaluate:
            row = {"step": done}
            for t in sorted(data):
                # The uncompiled module: validation is a handful of no-grad batches, not worth
                # an inference graph's compile.
                v, se = validation_loss(raw, data[t]["val"], plans[t], tc.batch_size, tc.val_batches, acc,
                                        with_se=True)
                row[f"val_loss_{t}"] = f"{v:.5f}"
                row[f"val_se_{t}"] = f"{se:.5f}"
                # Every process sees the same validation loss, so all of them agree on stopping.
                if stopper.update(t, v, best[t]["val_loss"]) and acc.is_main_process:
                    best[t] = {"val_loss": v, "step": done}
                    save_model_dir(raw, out / f"best_{t}")
            vlog.write(row)
            if stopper.done and done < total:
                stopped_early, end = True, done
                checkpoint = acc.is_main_process
        if snapshot:
            save_model_dir(raw, out / "snapshots" / f"step{done:06d}")
        if checkpoint:
            save_training_state(out / "last", raw, opt if done < total and not stopped_early else None,
                                {"step": done, "best": best, "settings": settings, "stale": stopper.stale,
                                 "stopped_early": stopped_early})
        if evaluate or snapshot or checkpoint:
            rows.restart_clock()  # validation and saving are not step time
        if stopped_early:
            break
    bar.close()
    wall = time.perf_counter() - t_run
    finished = end == total or stopped_early
    # steps: what the run trained; cap_steps: what the schedule allowed. A best checkpoint in the
    # last evaluation before the cap means the cap, not convergence, ended the run (the results
    # stage flags it).
    summary = {"run": run_name, "seed": seed, "steps": end, "cap_steps": total, "stopped_step": end,
               "stopped_early": stopped_early, "eval_every": tc.eval_every, "patience": tc.patience,
               "finished": finished,
               "device": device, "precision": precision, "processes": world,
               "best": best, "setup_s_this_call": setup_s, "wall_time_s_this_call": wall}
    if acc.is_main_process and finished:
        save_model_dir(raw, out / "final")
        write_json(out / "train_summary.json", summary | train_log_stats(out / "train_log.csv"))
    acc.wait_for_everyone()
    acc.end_training()  # shuts the process group down cleanly under `accelerate launch`
    return summary


def out_of_memory(tc, per_process: int, run_name: str, seed: int, out: Path) -> UVLMError:
    """A readable replacement for a raw CUDA OOM trace: what to change, and that work is safe."""
    torch.cuda.empty_cache()
    accum = tc.grad_accum * 2
    return UVLMError(
        f"[{run_name}/seed{seed}] a batch of {per_process} sequences per process does not fit in GPU "
        f"memory with train.grad_accum={tc.grad_accum}. Set train.grad_accum={accum} (same global "
        f"batch, half the activations; e.g. `dvc exp run -S train.grad_accum={accum}`) or lower "
        f"train.batch_size. The last checkpoint in '{out / 'last'}' is kept; the run resumes from it.")


def flops_inputs(model_cfg, batch) -> tuple[int, int]:
    """(image tokens per row, loss targets in the batch): what ``batch_flops`` reads besides the
    batch's shape."""
    ids = batch["input_ids"]
    return int((ids[0] >= model_cfg.image_token_start).sum()), int((batch["labels"] != -100).sum())


def batch_flops(model_cfg, plan, batch, world: int) -> float:
    """Counted training FLOPs of one global batch under ``plan`` (forward + backward)."""
    from uvlm.model.flops import plan_flops
    ids = batch["input_ids"]
    n_img, targets = flops_inputs(model_cfg, batch)
    T = ids.shape[1] - n_img
    loss_tokens = targets / ids.shape[0]
    per = plan_flops(model_cfg, plan, T=T, M=n_img, loss_tokens=loss_tokens, backward=True)
    return float(per["total"]) * ids.shape[0] * world


def train_log_stats(path) -> dict:
    rows = list(csv.DictReader(Path(path).open()))
    if not rows:
        return {}
    times = [float(r["step_time_s"]) for r in rows]
    # The first steps include warm-up (allocation, compilation); skip them for rates.
    steady = rows[min(len(rows) - 1, 5):]
    return {"train_time_s": sum(times),
            "mean_step_time_s": sum(float(r["step_time_s"]) for r in steady) / len(steady),
            "tokens_per_s": sum(float(r["tokens_per_s"]) for r in steady) / len(steady),
            "flops_total": sum(float(r["flops_per_step"]) for r in rows)}
