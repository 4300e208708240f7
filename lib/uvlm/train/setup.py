"""Everything a run needs before its first step: vocabulary, data, plans, model.

Shared by training, evaluation and profiling so that they agree on what a run is.
"""
from __future__ import annotations

import dataclasses

from uvlm.core.errors import CheckpointError, ConfigError, UVLMError
from uvlm.model import plans as P
from uvlm.tokens.sequences import Vocab, check_codes_match, load_split, load_text_tokenizer, read_codes

TASK_SPLITS = {"u": ("u_train", "u_val"), "g": ("g_train", "g_val")}


def tasks_of(spec) -> tuple[str, ...]:
    return ("u", "g") if spec.task == "ug" else (spec.task,)


def vocab_for(cfg):
    """(Vocab, text tokenizer) from the data and tokenizer stages' outputs."""
    world_dir = cfg.paths.data / "world"
    tokenizer = load_text_tokenizer(world_dir)
    vocab = Vocab(n_text=len(tokenizer), codebook_size=cfg.tokenizer.codebook_size)
    check_codes_match(cfg.paths.data, vocab.codebook_size)
    codes = read_codes(cfg.paths.data / "tokenizer", "u_val")
    if codes.size and int(codes.max()) >= vocab.codebook_size:
        raise UVLMError(f"data/tokenizer/codes.npz holds codes up to {int(codes.max())} but "
                        f"tokenizer.codebook_size={vocab.codebook_size}: re-run `dvc repro tokenizer`")
    return vocab, tokenizer


def load_task_data(cfg, spec, tokenizer, vocab) -> dict:
    """{task: {"train": TokenizedSplit, "val": TokenizedSplit}} for the run's tasks."""
    out = {}
    for task in tasks_of(spec):
        tr, va = TASK_SPLITS[task]
        kw = dict(tokenizer=tokenizer, vocab=vocab, system_prompt=cfg.world.system_prompt,
                  loss_on=cfg.train.loss_on)
        train = load_split(cfg.paths.data, task, tr, **kw)
        n = cfg.train.train_samples
        if n is not None:
            if n > len(train):
                raise ConfigError("train.train_samples", n, f"at most the {len(train)} examples of {tr} "
                                  f"(world.n_{task}_train)")
            train = train.head(n)
        out[task] = {"train": train, "val": load_split(cfg.paths.data, task, va, **kw)}
        for name, split in ((tr, train), (va, out[task]["val"])):
            check_fits(split, cfg.model.max_seq_len, cfg.paths.data / "world" / f"{name}.jsonl")
    return out


def check_fits(split, max_seq_len: int, source) -> None:
    """Every sequence of ``split`` fits the model's position table: checked when the data is
    loaded, so a short model.max_seq_len is named before any step instead of by a forward pass."""
    longest = int(split.lengths.max()) if len(split) else 0
    if longest > max_seq_len:
        raise ConfigError("model.max_seq_len", max_seq_len,
                          f"at least {longest}, the longest sequence of '{source}' (image codes included)")


def accel_settings(cfg, spec):
    """The run's HiMix/HMGen settings: the global sections, with the run's own overrides."""
    himix, hmgen = cfg.himix, cfg.hmgen
    if spec.himix_start_layer is not None:
        himix = dataclasses.replace(himix, start_layer=spec.himix_start_layer)
    if spec.hmgen_fraction is not None:
        hmgen = dataclasses.replace(hmgen, k=P.hmgen_k_of(spec.hmgen_fraction, cfg.model.n_layers))
    elif spec.hmgen_k is not None:
        hmgen = dataclasses.replace(hmgen, k=spec.hmgen_k)
    return himix, hmgen


def stage_settings(cfg, run_name: str) -> dict:
    """Everything train@RUN computes from, beyond its data: the run's entry, the model, the
    training section and, only where the run's plan uses them, its resolved HiMix/HMGen settings.

    The ``params`` stage writes this per run (``data/settings/RUN.json``) and train@RUN depends on
    that file instead of whole params sections, so a knob re-runs exactly the runs it changes:
    ``himix.start_layer`` leaves the base and HMGen-only runs up to date, and a preset edit
    re-runs every run whose resolved values moved.
    """
    spec = cfg.run(run_name)
    himix, hmgen = accel_settings(cfg, spec)
    out = {"run": run_name, "spec": dataclasses.asdict(spec), "world_seed": cfg.seed,
           "codebook_size": cfg.tokenizer.codebook_size,
           "model": dataclasses.asdict(cfg.model), "train": dataclasses.asdict(cfg.train)}
    if "himix" in spec.accel:
        out["himix"] = dataclasses.asdict(himix)
    if "hmgen" in spec.accel:
        out["hmgen"] = dataclasses.asdict(hmgen)
    return out


def run_plans(cfg, spec) -> dict:
    """{task: per-layer plan} for the run's tasks."""
    himix, hmgen = accel_settings(cfg, spec)
    return P.build_plans(spec.task, spec.accel, cfg.model.n_layers, himix, hmgen, spec.share)


def model_config(cfg, vocab, spec):
    from uvlm.model.decoder import UVLMConfig
    m = cfg.model
    sets = P.required_proj_sets(spec.task, spec.accel, spec.share)
    return UVLMConfig(d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads, n_kv_heads=m.n_kv_heads,
                      ffn_hidden=m.ffn_hidden, rope_theta=m.rope_theta, max_seq_len=m.max_seq_len,
                      init_std=m.init_std, vocab_size=vocab.size, image_token_start=vocab.image_token_start,
                      image_proj_sets=list(sets))


def build_model(cfg, vocab, spec, seed: int):
    """A fresh model for the run, or the backbone of a local HF Llama if model.init_from is set."""
    import torch

    from uvlm.model.decoder import UVLM
    torch.manual_seed(seed)
    mcfg = model_config(cfg, vocab, spec)
    if cfg.model.init_from and is_uvlm_checkpoint(cfg.model.init_from):
        return load_uvlm_backbone(cfg.model.init_from, mcfg)
    if cfg.model.init_from:
        from uvlm.model.hf_import import load_llama_backbone
        model = load_llama_backbone(cfg.model.init_from, codebook_size=vocab.codebook_size)
        if model.config.vocab_size != vocab.size:
            raise CheckpointError(f"model.init_from='{cfg.model.init_from}' has a text vocabulary that does not "
                                  "match data/world/text_tokenizer; start from scratch or retokenise")
        for name in mcfg.image_proj_sets:
            model.add_image_projections(name)
        return model
    return UVLM(mcfg, seed=seed)  # the seed fixes the initialisation as well as the batch order


def is_uvlm_checkpoint(path) -> bool:
    """True for a directory written by ``UVLM.save_pretrained`` (e.g. a text prior)."""
    import json
    from pathlib import Path

    cfg_file = Path(path) / "config.json"
    if not cfg_file.exists():
        return False
    try:
        return "image_token_start" in json.loads(cfg_file.read_text())
    except json.JSONDecodeError:
        return False


def load_uvlm_backbone(path, mcfg):
    """A UVLM checkpoint (a text prior, say) as the start of a run whose config is ``mcfg``.

    Only the shape must agree; the run's image projection sets are added as copies of the
    text projections, as for a Hugging Face backbone.
    """
    from uvlm.model.decoder import UVLM
    model = UVLM.from_pretrained(path, image_proj_sets=mcfg.image_proj_sets)
    got = model.config
    for key in ("vocab_size", "image_token_start", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim"):
        if getattr(got, key) != getattr(mcfg, key):
            raise CheckpointError(f"model.init_from='{path}' has {key}={getattr(got, key)} but this run needs "
                                  f"{getattr(mcfg, key)}; train the prior at the run's size")
    return model


def run_dir(cfg, run_name: str, seed: int):
    """Where stage train@RUN writes one seed's checkpoints and logs."""
    return cfg.paths.data / "runs" / run_name / f"seed{seed}"


def load_trained(cfg, run_name: str, seed: int, which: str):
    """A trained model dir of a run (``best_u``, ``best_g``, ``final`` or ``snapshots/stepN``)."""
    from uvlm.core.errors import MissingInputError
    from uvlm.model.decoder import UVLM
    path = run_dir(cfg, run_name, seed) / which
    if not path.exists():
        raise MissingInputError(path, f"train@{run_name}")
    return UVLM.from_pretrained(path)
