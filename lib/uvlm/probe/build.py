"""Stage ``probe``: train the attribute probe that scores generated images.

Writes under ``out_dir`` (``data/probe``): ``probe.safetensors`` (weights, config and held-out
metrics in its metadata) and ``probe.json`` (the metrics and the config; the seconds taken are
returned, not written, so the output's hash changes only with the probe).

The probe trains on scenes it renders itself from the world's config and seed, never on a split
of stage ``data``. So it is a stage of its own beside ``data``: with stages side by side
(``python -m uvlm.pipeline.repro``) its training no longer delays the tokenizer and every
train stage behind it.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from uvlm.core.io import write_json


def probe_dir(cfg) -> Path:
    return cfg.paths.data / "probe"


def probe_path(cfg) -> Path:
    """The trained probe's weights, as later stages read them."""
    return probe_dir(cfg) / "probe.safetensors"


def build_probe(world_cfg, probe_cfg, seed: int, out_dir, progress: bool = True) -> dict:
    """Train the probe and write it into ``out_dir``; -> the probe.json summary."""
    from .model import save_probe, train_probe

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    probe, metrics = train_probe(world_cfg, probe_cfg, seed, progress=progress)
    save_probe(probe, out_dir / "probe.safetensors")
    metrics = {k: v for k, v in metrics.items() if k != "seconds"}
    summary = {"metrics": metrics, "config": dataclasses.asdict(probe_cfg), "seed": int(seed)}
    write_json(out_dir / "probe.json", summary)  # no timing: data/probe's hash is the probe's alone
    return summary | {"seconds": round(time.time() - t0, 2)}


def accuracy_table(metrics: dict):
    """The probe's held-out accuracy per attribute, as a pandas table."""
    import pandas as pd

    return pd.DataFrame([{"attribute": k, "held-out accuracy": round(metrics[k], 4)}
                         for k in ("occupancy", "shape", "colour", "size", "scene_exact")])
