"""Load params.yaml, resolve its preset, and validate every section strictly.

Resolution order (later wins):
    1. dataclass defaults            (the ``cpu`` preset lives in the code)
    2. lib/uvlm/presets/<preset>.yaml (``gpu`` and ``tiny`` only list what differs)
    3. non-null values in params.yaml (``null`` there means "the preset's value")
    4. ``overrides`` passed in code    (tests, notebooks)

So ``dvc exp run -S preset=gpu`` switches scale, and ``-S train.lr=3e-4`` overrides
one key under any preset. Every section is a dataclass owned by the module that
uses it; this file only assembles them.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from .errors import ConfigError
from .schema import build, rule

PRESETS = ("cpu", "gpu", "tiny")
PRESET_DIR = Path(__file__).parents[1] / "presets"

# section name -> (module, dataclass). Imported lazily so a light module (say,
# the world generator) does not pull in torch just to read its config.
SECTIONS = {
    "paths": ("uvlm.core.config", "PathsConfig"),
    "world": ("uvlm.world.scenes", "WorldConfig"),
    "probe": ("uvlm.probe.model", "ProbeConfig"),
    "tokenizer": ("uvlm.tokens.vq", "VQConfig"),
    "model": ("uvlm.core.config", "ModelArgs"),
    "train": ("uvlm.train.config", "TrainConfig"),
    "eval": ("uvlm.eval.config", "EvalConfig"),
    "himix": ("uvlm.model.plans", "HimixConfig"),
    "hmgen": ("uvlm.model.plans", "HmgenConfig"),
    "attention": ("uvlm.core.config", "AttentionArgs"),
    "text_prior": ("uvlm.sweep.config", "TextPriorConfig"),
    "sweep": ("uvlm.sweep.config", "SweepConfig"),
}
TOP_LEVEL = ("preset", "seed", "runs")


@dataclass
class PathsConfig:
    """Where stages read and write. Relative paths resolve from the params file's folder."""
    data: str = "data"
    figures: str = "figures"


@dataclass
class ModelArgs:
    """The decoder's size. Vocabulary size comes from the tokenizers, not from here."""
    d_model: int = field(default=128, metadata=rule(ge=8))
    n_layers: int = field(default=8, metadata=rule(ge=1))
    n_heads: int = field(default=4, metadata=rule(ge=1))
    n_kv_heads: int = field(default=4, metadata=rule(ge=1))
    ffn_hidden: int = field(default=352, metadata=rule(ge=1))
    rope_theta: float = field(default=10000.0, metadata=rule(gt=0))
    max_seq_len: int = field(default=256, metadata=rule(ge=8))
    init_std: float = field(default=0.02, metadata=rule(gt=0))
    # A local Hugging Face LlamaForCausalLM directory to start the backbone from
    # (VILA-U starts from a pretrained LLM). Never downloaded.
    init_from: Optional[str] = None

    def validate(self, prefix: str) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"{prefix}.n_heads", self.n_heads, f"a divisor of model.d_model={self.d_model}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"{prefix}.n_kv_heads", self.n_kv_heads, f"a divisor of model.n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError(f"{prefix}.n_heads", self.n_heads, "a head size (d_model / n_heads) that is even, for RoPE")


@dataclass
class AttentionArgs:
    """The attention-allocation profile (docs/method.md §2)."""
    n_samples: int = field(default=64, metadata=rule(ge=1))
    run: str = "ug_base"            # a run of the grid, profiled at seed train.seeds[0]
    hf_model_path: Optional[str] = None  # or a local transformers decoder instead
    # auto: the GPU when there is one. The profile is a few forward passes, but on the CPU of a
    # GPU host at the gpu preset it took 70 s of a stage the pipeline waits on.
    device: str = field(default="auto", metadata=rule(choices=("auto", "cpu", "cuda")))


@dataclass
class RunSpec:
    """One entry of the run grid: what is trained and with which layer plan."""
    task: str = field(default="u", metadata=rule(choices=("u", "g", "ug")))
    accel: str = field(default="base", metadata=rule(choices=("base", "himix", "hmgen", "himix+hmgen")))
    share: str = field(default="all", metadata=rule(choices=("all", "partial")))
    hmgen_k: Optional[int] = field(default=None, metadata=rule(ge=0))
    # K as a fraction of depth, so a run keeps its meaning across presets of
    # different depth: K = max(1, round(fraction * n_layers)). Overrides hmgen_k.
    hmgen_fraction: Optional[float] = field(default=None, metadata=rule(gt=0, lt=1))
    himix_start_layer: Optional[int] = field(default=None, metadata=rule(ge=0))
    # Train for this many times train.epochs: an isolated baseline given as many optimizer steps
    # as a unified run (2.0 when both tasks have equal data) separates "the other task's data
    # helps" from "more steps help". Such a run is never the baseline of other runs.
    epochs_factor: Optional[float] = field(default=None, metadata=rule(gt=0))

    @property
    def steps_scale(self) -> float:
        return 1.0 if self.epochs_factor is None else float(self.epochs_factor)


# The paper's run grid, written once: params.yaml's `runs` is rendered from it (params_template.py),
# and a bare preset, with no params file, trains and benchmarks it.
DEFAULT_RUNS = {
    "u_base": {"task": "u", "accel": "base"},
    "g_base": {"task": "g", "accel": "base"},
    "ug_base": {"task": "ug", "accel": "base"},
    "u_himix": {"task": "u", "accel": "himix"},
    # The paper's K = 3 and K = 5 cost 0.85x and 0.75x = 1 - K/20: we keep those
    # depth fractions, so K scales with our depth.
    "g_hmgen_k3": {"task": "g", "accel": "hmgen", "hmgen_fraction": 0.15},
    "g_hmgen_k5": {"task": "g", "accel": "hmgen", "hmgen_fraction": 0.25},
    "ug_himix_hmgen_shareall": {"task": "ug", "accel": "himix+hmgen", "share": "all", "hmgen_fraction": 0.15},
    "ug_himix_hmgen_sharepartial": {"task": "ug", "accel": "himix+hmgen", "share": "partial",
                                    "hmgen_fraction": 0.15},
}


@dataclass
class Config:
    preset: str
    seed: int
    paths: PathsConfig
    world: object
    probe: object
    tokenizer: object
    model: ModelArgs
    train: object
    eval: object
    himix: object
    hmgen: object
    attention: AttentionArgs
    text_prior: object
    sweep: object
    runs: dict
    root: Path = Path(".")

    def run(self, name: str) -> RunSpec:
        if name not in self.runs:
            raise ConfigError("run", name, f"one of the runs in params.yaml: {sorted(self.runs)}")
        return self.runs[name]

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "root":
                continue
            if f.name == "runs":
                out["runs"] = {k: dataclasses.asdict(r) for k, r in v.items()}
            elif dataclasses.is_dataclass(v):
                out[f.name] = dataclasses.asdict(v)
            else:
                out[f.name] = v
        return out


def section_class(name: str):
    module, cls = SECTIONS[name]
    return getattr(importlib.import_module(module), cls)


def _drop_nulls(d):
    if isinstance(d, dict):
        return {k: _drop_nulls(v) for k, v in d.items() if v is not None}
    return d


def _merge(base: dict, over: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "runs":
            out[k] = _merge(out[k], v, f"{prefix}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_preset(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError("preset", name, f"one of {list(PRESETS)}")
    path = PRESET_DIR / f"{name}.yaml"
    return yaml.safe_load(path.read_text()) or {}


def set_keys(raw: dict, sets: dict) -> dict:
    """``raw`` with every leaf of ``sets`` written into it, as ``dvc exp run -S KEY=VALUE`` edits
    params.yaml: key by key, the run grid included (``runs.X.k=v`` changes one key of one run)."""
    out = copy.deepcopy(raw)
    for k, v in sets.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = set_keys(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(params_path="params.yaml", overrides: dict | None = None, sets: dict | None = None) -> Config:
    """Read, resolve and validate. Raises ConfigError naming the offending key.

    ``sets`` (from ``--set KEY=VALUE``, :func:`uvlm.train.cli.parse_sets`) edit the file's values
    key by key, as ``dvc exp run -S`` does; ``overrides`` replace a whole ``runs`` grid (a sweep
    job's one-run grid)."""
    params_path = Path(params_path).resolve()
    if not params_path.exists():
        raise FileNotFoundError(f"params file '{params_path}' does not exist")
    try:
        raw = yaml.safe_load(params_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(str(params_path), "(unreadable)", f"valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml", raw, "a mapping of sections")
    raw = _merge(_drop_nulls(set_keys(raw, sets or {})), _drop_nulls(overrides or {}))
    return resolve(raw, root=params_path.parent)


def resolve(raw: dict, root: Path = Path(".")) -> Config:
    known = set(SECTIONS) | set(TOP_LEVEL)
    for key in raw:
        if key not in known:
            raise ConfigError(key, raw[key], f"one of the known sections {sorted(known)}")
    preset = raw.get("preset", "cpu")
    merged = _merge(read_preset(preset), raw)
    seed = merged.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed", seed, "a non-negative integer")
    sections = {name: build(section_class(name), merged.get(name), prefix=name) for name in SECTIONS}
    runs_raw = merged.get("runs") or {}
    if not isinstance(runs_raw, dict):
        raise ConfigError("runs", runs_raw, "a mapping of run name -> {task, accel, ...}")
    runs = {name: build(RunSpec, spec, prefix=f"runs.{name}") for name, spec in runs_raw.items()}
    # From here on, paths are absolute, so notebooks work from any working directory.
    sections["paths"].data = (root / sections["paths"].data).resolve()
    sections["paths"].figures = (root / sections["paths"].figures).resolve()
    cfg = Config(preset=preset, seed=seed, runs=runs, root=root, **sections)
    _cross_check(cfg)
    return cfg


def _cross_check(cfg: Config) -> None:
    """Checks that span sections (each section validates itself)."""
    if cfg.attention.hf_model_path is None and cfg.runs and cfg.attention.run not in cfg.runs:
        raise ConfigError("attention.run", cfg.attention.run, f"one of the runs {sorted(cfg.runs)}")
    for i, n in enumerate(cfg.sweep.data_sizes):
        limit = min(cfg.world.n_u_train, cfg.world.n_g_train)
        if n > limit:
            raise ConfigError(f"sweep.data_sizes[{i}]", n, f"at most world.n_u_train / n_g_train = {limit}")
    check = getattr(importlib.import_module("uvlm.model.plans"), "check_run", None)
    if callable(check):
        for name, spec in cfg.runs.items():
            check(spec, cfg.model.n_layers, cfg.himix, cfg.hmgen, prefix=f"runs.{name}")
