"""Shared fixtures: a tiny world + tokenizer built once per test session."""
from __future__ import annotations

import textwrap

import pytest
import torch

torch.set_num_threads(1)

TINY_RUNS = """
runs:
  u_base: {task: u, accel: base}
  g_base: {task: g, accel: base}
  ug_base: {task: ug, accel: base}
  u_himix: {task: u, accel: himix}
  g_hmgen: {task: g, accel: hmgen, hmgen_k: 1}
  ug_partial: {task: ug, accel: himix+hmgen, share: partial, hmgen_k: 1}
attention:
  run: ug_base
"""


@pytest.fixture(autouse=True)
def _no_leaked_global_state():
    """Put back torch's thread count and the HiMix kernel after every test: either, left changed
    by one test, changed the rounding of later ones (a torch.equal of two code paths passed alone
    and failed after test_evaluate had set 2 threads)."""
    from uvlm.model import attention as attention_ops
    threads, kernel = torch.get_num_threads(), attention_ops.himix_kernel()
    yield
    torch.set_num_threads(threads)
    attention_ops._himix_kernel[0] = kernel


def write_tiny_params(root, extra: str = "") -> str:
    path = root / "params.yaml"
    path.write_text(textwrap.dedent(f"""
        preset: tiny
        paths:
          data: {root / 'data'}
          figures: {root / 'figures'}
    """) + TINY_RUNS + extra)
    return str(path)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """params path of a tiny project whose data, probe and tokenizer stages have run."""
    from uvlm.core.config import load_config
    from uvlm.probe.model import load_probe
    from uvlm.probe.build import build_probe, probe_dir, probe_path
    from uvlm.tokens.vq_build import build_tokenizer
    from uvlm.world.build import build_world

    root = tmp_path_factory.mktemp("tiny")
    params = write_tiny_params(root)
    cfg = load_config(params)
    build_world(cfg.world, cfg.seed, cfg.paths.data / "world", progress=False)
    build_probe(cfg.world, cfg.probe, cfg.seed, probe_dir(cfg), progress=False)
    probe = load_probe(probe_path(cfg))
    build_tokenizer(cfg.tokenizer, cfg.seed, cfg.paths.data / "world", cfg.paths.data / "tokenizer", probe=probe)
    return params
