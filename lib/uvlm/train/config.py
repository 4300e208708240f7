"""The ``train`` section of params.yaml (kept apart from train.py so reading a
config never imports the training loop)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from uvlm.core.errors import ConfigError
from uvlm.core.schema import rule


@dataclass
class TrainConfig:
    # Unified runs cover the union of the U and G sets for the same number of
    # epochs as the isolated runs (as in the paper), so they take more steps.
    epochs: float = field(default=3.0, metadata=rule(gt=0))
    # Early stopping on validation loss. null: train exactly ``epochs``. An integer: stop once
    # no task's validation loss has improved (by the relative ``min_delta``) for that many
    # consecutive evaluations, with ``max_epochs`` as the cap. A unified run trains on while
    # either task still improves, and keeps each task's best checkpoint. The learning-rate
    # schedule then spans the cap, so a run that stops early never reached the schedule's floor.
    patience: Optional[int] = field(default=None, metadata=rule(ge=1))
    # Relative: an evaluation improves when its loss is below best * (1 - min_delta). Relative,
    # because U's answer loss (~0.03 nats) and G's image-token loss (~3 nats) differ a hundredfold.
    min_delta: float = field(default=0.0, metadata=rule(ge=0, lt=1))
    max_epochs: Optional[float] = field(default=None, metadata=rule(gt=0))
    batch_size: int = field(default=32, metadata=rule(ge=1))
    grad_accum: int = field(default=1, metadata=rule(ge=1))
    # cpu value chosen by `python -m uvlm.train.hparam_sweep` (records/sweeps/hparams_cpu.md).
    lr: float = field(default=1e-3, metadata=rule(gt=0, le=1))
    min_lr_ratio: float = field(default=0.1, metadata=rule(ge=0, le=1))
    warmup_steps: int = field(default=30, metadata=rule(ge=0))
    weight_decay: float = field(default=0.1, metadata=rule(ge=0))
    beta1: float = field(default=0.9, metadata=rule(ge=0, lt=1))
    beta2: float = field(default=0.95, metadata=rule(ge=0, lt=1))
    grad_clip: float = field(default=1.0, metadata=rule(ge=0))
    # Fraction of unified steps that are U batches; null = proportional to the
    # two training-set sizes, so one epoch covers both sets exactly once.
    mix_ratio: Optional[float] = field(default=None, metadata=rule(gt=0, lt=1))
    loss_on: str = field(default="output", metadata=rule(choices=("output", "all")))
    # Train on the first N examples of each task's training split (null: all of it); the data
    # axis of the synergy sweep. Epochs count over these N, so fewer examples = fewer steps.
    train_samples: Optional[int] = field(default=None, metadata=rule(ge=1))
    eval_every: int = field(default=100, metadata=rule(ge=1))
    # Steps whose losses are read from the device together, in one host sync (train.py's
    # DeferredLog): reading every step would stop the host from queueing the next step while
    # the GPU runs this one. Each row of train_log.csv then shows its block's mean step time.
    log_every: int = field(default=25, metadata=rule(ge=1))
    val_batches: int = field(default=4, metadata=rule(ge=1))
    ckpt_every: int = field(default=200, metadata=rule(ge=1))
    # Training-time snapshots kept for the attention-evolution figure (first seed only).
    snapshots: int = field(default=4, metadata=rule(ge=0))
    seeds: list[int] = field(default_factory=lambda: [0])
    precision: str = field(default="auto", metadata=rule(choices=("auto", "fp32", "bf16")))
    compile: bool = False
    # With compile on a GPU: CUDA graphs (torch.compile's "reduce-overhead" mode), each step's
    # kernels replayed in one launch instead of hundreds, for a model too small to keep the GPU
    # busy between launches. Ignored, with a warning, on CPU.
    cuda_graphs: bool = False
    device: str = field(default="auto", metadata=rule(choices=("auto", "cpu", "cuda")))
    # GPUs to train on from a notebook (accelerate.notebook_launcher); >1 needs that many.
    # From a shell, `accelerate launch --num_processes N -m uvlm.train.cli` does the same.
    num_processes: int = field(default=1, metadata=rule(ge=1))
    # Seeds of one run trained at once, each in its own process on the one device (notebook 04
    # and the train stage). A model that leaves a GPU idle between host-bound steps gains most
    # (six small sweep jobs: 2.6x the throughput); the gpu preset's 22M model already keeps a
    # GPU nearly busy, and three seeds gave 1.05x eager and 1.4x compiled on an H200
    # (records/gpu/stage_timing/). On CPU the cores are split between them, which gains little.
    # Ignored when num_processes > 1.
    parallel_seeds: int = field(default=1, metadata=rule(ge=1, le=16))
    # torch CPU threads (0: every core this process may use, split between the processes of a
    # multi-GPU launch). Training owns the machine while
    # `dvc repro` runs it (stages run one at a time), and 2 threads ran 1.7-2.3x faster than 1 on
    # an idle 2-core machine; on a machine shared with other jobs, set 1 (see uvlm/core/threads.py).
    threads: int = field(default=0, metadata=rule(ge=0))

    @property
    def cap_epochs(self) -> float:
        """Epochs the schedule spans: the cap under early stopping, else ``epochs``."""
        return self.max_epochs if self.patience is not None else self.epochs

    def validate(self, prefix: str) -> None:
        if self.patience is not None and self.max_epochs is None:
            raise ConfigError(f"{prefix}.max_epochs", None, f"a number of epochs > 0: the cap that "
                              f"{prefix}.patience={self.patience} (early stopping) needs")
        if self.patience is None and self.max_epochs is not None:
            raise ConfigError(f"{prefix}.max_epochs", self.max_epochs, f"null while {prefix}.patience is null "
                              f"(without early stopping the run trains {prefix}.epochs)")
        if self.cuda_graphs and not self.compile:
            raise ConfigError(f"{prefix}.cuda_graphs", True, f"false, or true together with {prefix}.compile: true "
                              "(the graphs are torch.compile's)")
        if not self.seeds:
            raise ConfigError(f"{prefix}.seeds", self.seeds, "a non-empty list of integers")
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{prefix}.seeds", self.seeds, "distinct non-negative integers")
