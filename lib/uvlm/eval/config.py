"""The ``eval`` section of params.yaml (apart from evaluate.py, so reading a config
never imports the evaluation code)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from uvlm.core.schema import rule


@dataclass
class EvalConfig:
    # Rows per forward pass (and per generation batch).
    batch_size: int = field(default=64, metadata=rule(ge=1))
    # Generated images for the FID-style metric and attribute accuracy: the first
    # n_gen prompts of g_test (fewer if g_test is smaller). A Fréchet distance needs >= 2.
    n_gen: int = field(default=200, metadata=rule(ge=2))
    # Sampling of image tokens. top_k null = the full codebook; cfg_scale null = no
    # classifier-free guidance.
    temperature: float = field(default=1.0, metadata=rule(gt=0))
    top_k: Optional[int] = field(default=None, metadata=rule(ge=1))
    cfg_scale: Optional[float] = field(default=None, metadata=rule(gt=0))
    # Generated images (with their prompts) kept per run for figures.
    n_figure_samples: int = field(default=8, metadata=rule(ge=0))
    # Cap on items per benchmark split (null = all); for quick looks and tests.
    max_items: Optional[int] = field(default=None, metadata=rule(ge=1))
    device: str = field(default="auto", metadata=rule(choices=("auto", "cpu", "cuda")))
    # CPU threads while evaluating (null = leave torch's setting). Evaluation runs many
    # small ops (one token per decoding step, batches of ~100-token rows with d = 128):
    # with 2 threads they were never faster here, and on a loaded 2-core machine 4-15x
    # slower than with 1, as the threads wait on each other.
    threads: Optional[int] = field(default=1, metadata=rule(ge=1))
