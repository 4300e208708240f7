"""The jobs of the synergy sweep, and the config each one trains under.

One job = one training run (U-only, G-only or unified) at one model size, data size,
text-prior level, learning rate and seed; or one text prior to train before them.
The grid is not a full product, to stay within a GPU budget:

* size axis: every size, at the largest data size, at every text-prior level
  (``true`` only at ``prior_sizes``);
* data axis: every data size at ``data_axis_size``, no prior;
* learning-rate check: isolated runs at the smallest and largest size, first seed,
  at ``lr * factor`` for each ``lr_check_factors``;
* step-matched control (``step_matched``): isolated runs on the size axis (no prior) for
  twice the epochs. A unified run takes a U and a G step per isolated step, so its backbone
  gets twice the updates; against this control a gain cannot come from the extra steps.

A job is a pure function of params.yaml and these fields, so its result can be
reused exactly when they are unchanged (see :func:`job_settings`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .config import ModelSize, lr_for, parse_size

TASKS = ("u", "g", "ug")
STEP_MATCHED_FACTOR = 2.0  # a unified run's steps / an isolated run's (equal U and G data)
RUN_NAME = "sweep"


@dataclass(frozen=True)
class Job:
    kind: str        # "train" | "prior"
    task: str        # u | g | ug ("text" for a prior)
    size: str        # WIDTHxDEPTH
    data_n: int      # training examples per task
    prior: bool      # start from the text prior
    seed: int
    lr: float
    lr_factor: float = 1.0  # lr / the rule's lr (1 except for the learning-rate check)
    epochs_factor: float = 1.0  # epochs / sweep.epochs (2 for the step-matched control)

    @property
    def id(self) -> str:
        tag = "tp" if self.prior else "np"
        lr = "" if self.lr_factor == 1.0 else f"-lrx{self.lr_factor:g}"
        ep = "" if self.epochs_factor == 1.0 else f"-epx{self.epochs_factor:g}"
        return f"{self.task}-{self.size}-n{self.data_n}-{tag}{lr}{ep}-s{self.seed}"

    @property
    def model_size(self) -> ModelSize:
        return parse_size(self.size)

    def approx_params(self) -> float:
        """Non-embedding parameters, 12 L d^2 (for scheduling only; results count exactly)."""
        s = self.model_size
        return 12.0 * s.n_layers * s.d_model ** 2

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["epochs_factor"] == 1.0:
            del d["epochs_factor"]  # so results stored before the field existed stay reusable
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        return cls(**d)


def prior_jobs(cfg) -> list[Job]:
    """Text priors to train: one per prior size and seed, when the prior level is on."""
    sw = cfg.sweep
    if True not in sw.text_prior or cfg.text_prior.source != "world":
        return []
    n = max(sw.data_sizes)
    return [Job("prior", "text", s.name, n, True, seed, lr_for(sw, s.d_model) * cfg.text_prior.lr_scale)
            for s in sw.model_sizes() if s.name in sw.prior_size_names() for seed in sw.seeds]


def train_jobs(cfg) -> list[Job]:
    sw = cfg.sweep
    n_max = sw.size_axis_n()
    jobs: dict[str, Job] = {}

    def add(task, size: ModelSize, n, prior, seed, factor=1.0, epochs_factor=1.0):
        j = Job("train", task, size.name, n, prior, seed, lr_for(sw, size.d_model) * factor, factor, epochs_factor)
        jobs.setdefault(j.id, j)

    for size in sw.model_sizes():
        for prior in sw.text_prior:
            if prior and size.name not in sw.prior_size_names():
                continue
            for seed in sw.seeds:
                for task in TASKS:
                    add(task, size, n_max, prior, seed)
    point = sw.data_size_point()
    for n in sorted(sw.data_sizes):
        for seed in sw.seeds:
            for task in TASKS:
                add(task, point, n, False, seed)
    for size in sw.lr_check_points():
        for factor in sw.lr_check_factors:
            for task in ("u", "g"):
                add(task, size, n_max, False, sw.seeds[0], factor)
    if sw.step_matched:
        for size in sw.model_sizes():
            for seed in sw.seeds:
                for task in ("u", "g"):
                    add(task, size, n_max, False, seed, epochs_factor=STEP_MATCHED_FACTOR)
    return list(jobs.values())


def sweep_dir(cfg) -> Path:
    return cfg.paths.data / "sweep"


def prior_dir(cfg, size: str, seed: int) -> Path:
    return cfg.paths.data / "priors" / size / f"seed{seed}"


def job_dir(cfg, job: Job) -> Path:
    if job.kind == "prior":
        return prior_dir(cfg, job.size, job.seed)
    return sweep_dir(cfg) / "jobs" / job.id


def isolated_steps(job: Job, sweep) -> int:
    """An isolated job's steps: all of them, or the cap under early stopping."""
    epochs = sweep.max_epochs if sweep.patience is not None else sweep.epochs
    return max(1, math.ceil(epochs * job.epochs_factor * job.data_n / sweep.batch_size))


def job_overrides(cfg, job: Job) -> dict:
    """The params.yaml overrides under which ``job`` trains (on top of the preset)."""
    sw = cfg.sweep
    steps = isolated_steps(job, sw)
    model = sw.model_overrides(job.model_size)
    if job.kind == "train" and job.prior:
        model["init_from"] = (str(prior_dir(cfg, job.size, job.seed) / "model")
                              if cfg.text_prior.source == "world" else cfg.text_prior.source)
    train = {"lr": job.lr, "epochs": sw.epochs * job.epochs_factor, "batch_size": sw.batch_size, "train_samples": job.data_n,
             "seeds": [job.seed], "snapshots": 0,
             # Four validation points per task-epoch budget pick the best checkpoint; warm-up is
             # a fixed share of the run so that short data-axis runs are not all warm-up.
             "eval_every": max(1, steps // 4), "ckpt_every": max(1, steps // 2),
             "warmup_steps": max(1, round(0.05 * steps))}
    if sw.patience is not None:
        # Converged jobs: one evaluation per epoch of the job's data, the preset's warm-up (at
        # most an epoch), and the cap in place of a budget.
        epoch = max(1, math.ceil(job.data_n / sw.batch_size))
        train.update({"patience": sw.patience, "max_epochs": sw.max_epochs * job.epochs_factor,
                      "eval_every": epoch, "ckpt_every": 2 * epoch,
                      "warmup_steps": min(cfg.train.warmup_steps, epoch)})
    return {"model": model, "train": train, "eval": {"n_gen": sw.n_gen},
            "runs": {RUN_NAME: {"task": job.task if job.kind == "train" else "u", "accel": "base"}},
            "attention": {"run": RUN_NAME}}


def job_settings(cfg_job, job: Job) -> dict:
    """What a stored result must share with the job to be reused: the job and every section
    its training and evaluation read, in the JSON form a result file stores them in."""
    out = {"job": job.to_dict(), "world_seed": cfg_job.seed}
    for name in ("world", "tokenizer", "model", "train", "eval"):
        out[name] = dataclasses.asdict(getattr(cfg_job, name))
    for volatile in ("threads", "device", "num_processes", "compile", "grad_accum", "parallel_seeds"):
        out["train"].pop(volatile, None)
    out["eval"].pop("threads", None)
    out["eval"].pop("device", None)
    if job.prior:
        out["text_prior"] = dataclasses.asdict(cfg_job.text_prior)
    return json.loads(json.dumps(out, default=str))  # paths become strings, as when read back
