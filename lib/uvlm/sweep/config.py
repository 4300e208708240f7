"""The ``sweep`` and ``text_prior`` sections of params.yaml: where synergy appears.

The sweep trains U-only, G-only and unified baselines over model size, training-set
size and a text-prior factor, and measures the *synergy gap* (unified minus
isolated) per task. Sizes are written ``WIDTHxDEPTH`` (``"512x8"``), so a whole list
can be swapped from the command line:

    dvc exp run -S 'sweep.sizes=["256x6","512x8"]'

Learning rate follows one documented rule across sizes (see :func:`lr_for`) and is
checked at the two ends of the size range by the sweep itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from uvlm.core.errors import ConfigError
from uvlm.core.schema import rule

SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True)
class ModelSize:
    """One point of the size axis: width and depth; heads and FFN follow the house rule."""
    d_model: int
    n_layers: int

    @property
    def name(self) -> str:
        return f"{self.d_model}x{self.n_layers}"


def parse_size(text: str, key: str = "sweep.sizes") -> ModelSize:
    m = SIZE_PATTERN.match(str(text))
    if not m:
        raise ConfigError(key, text, "a size written WIDTHxDEPTH, e.g. '512x8'")
    return ModelSize(int(m.group(1)), int(m.group(2)))


@dataclass
class SweepConfig:
    """The scale / data / text-prior sweep of the unified baseline (a GPU experiment)."""
    # Off at the cpu preset: the sweep is meant for one GPU (about 25 min at the gpu preset);
    # at cpu scale it would double `make repro`. The stage then writes a note saying so.
    enabled: bool = False
    # Model sizes, WIDTHxDEPTH. Heads: width / head_dim; FFN: ffn_ratio * width (multiple of 16).
    sizes: list[str] = field(default_factory=lambda: ["64x2", "96x4", "128x6", "192x8"])
    head_dim: int = field(default=32, metadata=rule(ge=2))
    ffn_ratio: float = field(default=2.75, metadata=rule(gt=0))
    # Training examples per task (first N of u_train / g_train). The size axis uses the
    # largest; the data axis runs every entry at ``data_axis_size``.
    data_sizes: list[int] = field(default_factory=lambda: [500, 1000, 2000])
    data_axis_size: Optional[str] = None  # null: the smallest of ``sizes``
    # Levels of the text-prior factor. [false] = off; [false, true] runs both.
    text_prior: list[bool] = field(default_factory=lambda: [False])
    # Sizes at which text_prior=true runs (null: all); it runs on the size axis only.
    prior_sizes: Optional[list[str]] = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: float = field(default=3.0, metadata=rule(gt=0))
    # Early stopping for every job (train.patience's rule, train.min_delta's threshold): null
    # trains ``epochs``; an integer stops a job after that many evaluations (one per epoch of its
    # data) without improvement, ``max_epochs`` being the cap. So every data size is trained to
    # convergence rather than for a fixed budget, which favours small data sets.
    patience: Optional[int] = field(default=None, metadata=rule(ge=1))
    max_epochs: Optional[float] = field(default=None, metadata=rule(gt=0))
    # Examples per task of the size axis, the learning-rate check and the step-matched control
    # (null: the largest of ``data_sizes``); one of ``data_sizes``.
    size_axis_data: Optional[int] = field(default=None, metadata=rule(ge=1))
    batch_size: int = field(default=32, metadata=rule(ge=1))
    # Learning-rate rule: lr = lr * (lr_ref_width / width) ** lr_exponent (see lr_for).
    lr: float = field(default=1e-3, metadata=rule(gt=0, le=1))
    lr_ref_width: int = field(default=128, metadata=rule(ge=1))
    lr_exponent: float = field(default=1.0, metadata=rule(ge=0, le=2))
    # The rule is checked with isolated runs at lr * factor, first seed, at ``lr_check_sizes``
    # (null: the smallest and largest of ``sizes``).
    lr_check_factors: list[float] = field(default_factory=lambda: [0.5, 2.0])
    lr_check_sizes: Optional[list[str]] = None
    # Control for the unified run's extra optimizer steps: isolated runs at every size (largest
    # data size, no prior) trained for twice the epochs, i.e. as many steps as the unified run.
    step_matched: bool = False
    # Jobs trained at once on one device; jobs above solo_params parameters run alone.
    concurrency: int = field(default=1, metadata=rule(ge=1, le=32))
    solo_params: float = field(default=5.0e7, metadata=rule(gt=0))
    n_gen: int = field(default=64, metadata=rule(ge=1))  # images sampled per G evaluation
    keep_checkpoints: bool = False  # True keeps every job's model dirs (large at 200M)

    def validate(self, prefix: str) -> None:
        if not self.sizes:
            raise ConfigError(f"{prefix}.sizes", self.sizes, "a non-empty list of WIDTHxDEPTH sizes")
        parsed = [parse_size(s, f"{prefix}.sizes[{i}]") for i, s in enumerate(self.sizes)]
        names = [p.name for p in parsed]
        if len(set(names)) != len(names):
            raise ConfigError(f"{prefix}.sizes", self.sizes, "distinct sizes")
        for i, p in enumerate(parsed):
            if p.d_model % self.head_dim or (p.d_model // self.head_dim) < 1:
                raise ConfigError(f"{prefix}.sizes[{i}]", self.sizes[i],
                                  f"a width that is a multiple of sweep.head_dim={self.head_dim}")
        if self.head_dim % 2:
            raise ConfigError(f"{prefix}.head_dim", self.head_dim, "an even head size (RoPE)")
        point = self.data_axis_size
        if point is not None and parse_size(point, f"{prefix}.data_axis_size").name not in names:
            raise ConfigError(f"{prefix}.data_axis_size", point, f"one of sweep.sizes {names}")
        for i, v in enumerate(self.prior_sizes or []):
            if parse_size(v, f"{prefix}.prior_sizes[{i}]").name not in names:
                raise ConfigError(f"{prefix}.prior_sizes[{i}]", v, f"one of sweep.sizes {names}")
        if not self.data_sizes or any(n < 1 for n in self.data_sizes) or len(set(self.data_sizes)) != len(self.data_sizes):
            raise ConfigError(f"{prefix}.data_sizes", self.data_sizes, "distinct positive integers")
        if not self.text_prior or len(set(self.text_prior)) != len(self.text_prior):
            raise ConfigError(f"{prefix}.text_prior", self.text_prior, "[false], [true] or [false, true]")
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{prefix}.seeds", self.seeds, "distinct non-negative integers")
        for i, v in enumerate(self.lr_check_sizes or []):
            if parse_size(v, f"{prefix}.lr_check_sizes[{i}]").name not in names:
                raise ConfigError(f"{prefix}.lr_check_sizes[{i}]", v, f"one of sweep.sizes {names}")
        if self.size_axis_data is not None and self.size_axis_data not in self.data_sizes:
            raise ConfigError(f"{prefix}.size_axis_data", self.size_axis_data, f"one of sweep.data_sizes {self.data_sizes}")
        if (self.patience is None) != (self.max_epochs is None):
            raise ConfigError(f"{prefix}.max_epochs" if self.patience is not None else f"{prefix}.patience",
                              self.max_epochs if self.patience is not None else self.patience,
                              "set together with sweep.patience (both null: no early stopping)")
        if any(f <= 0 for f in self.lr_check_factors):
            raise ConfigError(f"{prefix}.lr_check_factors", self.lr_check_factors, "positive numbers")

    # -- derived ----------------------------------------------------------------------------------
    def model_sizes(self) -> list[ModelSize]:
        return sorted((parse_size(s) for s in self.sizes), key=lambda s: (s.d_model, s.n_layers))

    def size_axis_n(self) -> int:
        return self.size_axis_data if self.size_axis_data is not None else max(self.data_sizes)

    def lr_check_points(self) -> list[ModelSize]:
        if self.lr_check_sizes is not None:
            return [parse_size(s) for s in self.lr_check_sizes]
        ends = self.model_sizes()
        return list({ends[0].name: ends[0], ends[-1].name: ends[-1]}.values())

    def data_size_point(self) -> ModelSize:
        return parse_size(self.data_axis_size) if self.data_axis_size else self.model_sizes()[0]

    def prior_size_names(self) -> set[str]:
        sizes = self.prior_sizes if self.prior_sizes is not None else self.sizes
        return {parse_size(s).name for s in sizes}

    def model_overrides(self, size: ModelSize) -> dict:
        """The ``model`` section of one size: heads of ``head_dim``, FFN of ``ffn_ratio``."""
        heads = size.d_model // self.head_dim
        ffn = max(16, int(round(self.ffn_ratio * size.d_model / 16)) * 16)
        return {"d_model": size.d_model, "n_layers": size.n_layers, "n_heads": heads, "n_kv_heads": heads,
                "ffn_hidden": ffn}


def lr_for(sweep: SweepConfig, d_model: int) -> float:
    """The sweep's learning-rate rule: ``lr * (lr_ref_width / d_model) ** lr_exponent``.

    Why 1/width: with Adam, the update of a hidden weight matrix moves each output by
    about lr * fan_in, so keeping that move constant across widths needs lr ~ 1/width
    (the hidden-layer rule of muP, Yang et al. 2021). The sweep checks it at both ends of
    the size range rather than trusting it.
    """
    return sweep.lr * (sweep.lr_ref_width / d_model) ** sweep.lr_exponent


@dataclass
class TextPriorConfig:
    """The text prior: the backbone first trained on the world's text alone (no images)."""
    # "world": train on the captions, questions and answers of u_train and the prompts of
    # g_train. Or a local Hugging Face Llama directory, which then stands in for the prior
    # (its tokenizer must match data/world/text_tokenizer).
    source: str = "world"
    epochs: float = field(default=4.0, metadata=rule(gt=0))
    batch_size: int = field(default=64, metadata=rule(ge=1))
    lr_scale: float = field(default=1.0, metadata=rule(gt=0))  # times the sweep's lr rule
    warmup_steps: int = field(default=20, metadata=rule(ge=0))
