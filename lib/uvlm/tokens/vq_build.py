"""Stage `tokenizer`: train the VQ tokenizer on the world's training images, encode every split.

Reads   <world_dir>/world.json and <world_dir>/<split>.npz  (made by stage `data`)
Writes  <out_dir>/vq.safetensors   the tokenizer (config in its metadata)
        <out_dir>/codes.npz        {split: int16 codes (N, h, w)} for every image split
        <out_dir>/metrics.json     reconstruction and codebook metrics on held-out images

Downstream stages read codes.npz and never run the encoder again.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from uvlm.core.devices import machine
from uvlm.core.errors import MissingInputError
from uvlm.core.io import load_npz, read_json, save_npz, write_json
from .sequences import CODES_META
from .vq import VQConfig, cpu_threads, evaluate_vq, load_vq, save_vq, train_vq
from .vq_figures import save_reconstruction_figure

DATA_STAGE = "data"
# Returned by build_tokenizer (the notebook commits them in figures/metrics), never written into
# data/tokenizer, whose hash must not change with the clock or the host.
HOST_KEYS = ("train_seconds", "machine")
MAX_EVAL_IMAGES = 2000  # enough for stable metrics; keeps the probe pass short on CPU


def world_splits(world_dir) -> dict[str, Path]:
    """{split name: npz path} for every image split of the world, in a fixed order."""
    world_dir = Path(world_dir)
    meta = read_json(world_dir / "world.json", stage=DATA_STAGE)
    names = _listed_splits(meta) or sorted(p.stem for p in world_dir.glob("*.npz"))
    if not names:
        raise MissingInputError(world_dir / "u_train.npz", DATA_STAGE)
    paths = {name: world_dir / f"{name}.npz" for name in names}
    for path in paths.values():
        if not path.exists():
            raise MissingInputError(path, DATA_STAGE)
    return paths


def _listed_splits(meta) -> list[str]:
    """Split names from world.json's ``splits`` entry (a mapping or a list), if it has one."""
    splits = meta.get("splits") if isinstance(meta, dict) else None
    if isinstance(splits, dict):
        return list(splits)
    if isinstance(splits, list):
        return [s["name"] if isinstance(s, dict) else str(s) for s in splits]
    return []


def train_split_names(names) -> list[str]:
    return [n for n in names if n.endswith("train")]


def eval_split_names(names) -> list[str]:
    """Held-out images for metrics: validation splits, else test splits (never benchmarks)."""
    for key in ("val", "test"):
        found = [n for n in names if key in n and not n.startswith("bench")]
        if found:
            return found
    return []


def _images(path: Path) -> np.ndarray:
    arrays = load_npz(path, stage=DATA_STAGE)
    if "images" not in arrays:
        raise MissingInputError(f"{path}::images", DATA_STAGE)
    return arrays["images"]


def _subsample(images: np.ndarray, limit: int) -> np.ndarray:
    # Evenly spaced rows: deterministic and spread over the whole split.
    if len(images) <= limit:
        return images
    return images[np.linspace(0, len(images) - 1, limit).astype(int)]


def build_tokenizer(vq_cfg: VQConfig, seed: int, world_dir, out_dir, probe=None,
                    progress: bool = True) -> dict:
    """Train, evaluate and save the tokenizer; encode every world split. Returns the metrics.

    ``probe``: an attribute probe (``uvlm.probe.model.load_probe``) or None; with a probe, the
    metrics also hold the fraction of grid cells whose predicted attributes survive the
    encode-decode round trip.
    """
    out_dir = Path(out_dir)
    paths = world_splits(world_dir)
    train_names = train_split_names(paths)
    if not train_names:
        raise MissingInputError(Path(world_dir) / "u_train.npz", DATA_STAGE)
    eval_names = eval_split_names(paths)
    train_images = np.concatenate([_images(paths[n]) for n in train_names])
    if eval_names:
        held_out = np.concatenate([_images(paths[n]) for n in eval_names])
    else:  # no held-out split: report training-image metrics, and say so
        held_out = train_images
    held_out = _subsample(held_out, MAX_EVAL_IMAGES)

    model, train_metrics = train_vq(vq_cfg, train_images, seed, progress=progress)
    with cpu_threads(vq_cfg.threads):
        eval_metrics = evaluate_vq(model, held_out, probe=probe)
        save_vq(model, out_dir / "vq.safetensors")
        codes = {}
        for name, path in paths.items():
            codes[name] = model.encode(_images(path)).astype(np.int16)  # codebook_size <= 32768
    # What the codes were made from, checked where they are read (uvlm.tokens.sequences.check_codes_match).
    made_from = {"world": read_json(Path(world_dir) / "world.json", stage=DATA_STAGE).get("fingerprint"),
                 "codebook_size": vq_cfg.codebook_size, "seed": seed}
    save_npz(out_dir / "codes.npz", **codes, **{CODES_META: np.array(json.dumps(made_from, sort_keys=True))})

    metrics = {
        "seed": seed,
        "image_size": int(train_images.shape[1]),
        "codebook_size": vq_cfg.codebook_size,
        "downsample": vq_cfg.downsample,
        **eval_metrics,
        **train_metrics,
        "train_splits": train_names,
        "eval_splits": eval_names or train_names,
        "encoded_splits": {name: int(len(c)) for name, c in codes.items()},
        "made_from": made_from,
        "machine": machine(),
        "config": dataclasses.asdict(vq_cfg),
    }
    # Written last: marks the stage complete. Without the training time, so data/tokenizer's hash
    # changes only when the tokenizer does; the caller gets the time with the metrics.
    write_json(out_dir / "metrics.json", {k: v for k, v in metrics.items() if k not in HOST_KEYS})
    return metrics


def save_tokenizer_figure(world_dir, tokenizer_dir, path, n: int = 8) -> Path:
    """Originals (top) vs reconstructions (bottom) of ``n`` held-out images, saved to ``path``."""
    paths = world_splits(world_dir)
    names = eval_split_names(paths) or train_split_names(paths)
    images = _subsample(_images(paths[names[0]]), n)
    model = load_vq(Path(tokenizer_dir) / "vq.safetensors")
    return save_reconstruction_figure(model, images, path, n=n,
                                      title=f"VQ tokenizer on '{names[0]}' images")
