"""torch's intra-op CPU thread count, set for one block of work and then restored.

Every CPU-heavy stage takes a ``threads`` key. 1 is the default on purpose: on a
shared 2-core machine, two OpenMP threads that wait on each other were measured
4-100x slower than one, while on an idle machine two threads gained at most ~1.5x.
"""
from __future__ import annotations

import contextlib
import os


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run the block with ``n`` threads (0: every core this process may use; None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, n or available_cores()))
    try:
        yield
    finally:
        torch.set_num_threads(before)
