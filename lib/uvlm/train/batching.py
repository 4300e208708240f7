"""Deterministic batch order as a pure function of the step.

Nothing here keeps state between steps, so a resumed run recomputes exactly the
batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import math

import numpy as np


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def batch_indices(n: int, batch_size: int, k: int, seed: int) -> np.ndarray:
    """The k-th batch of an endless sequence of shuffled epochs (last partial batch dropped)."""
    per_epoch = max(1, n // batch_size)
    epoch, j = divmod(k, per_epoch)
    perm = _rng(seed, epoch).permutation(n)
    return perm[j * batch_size:(j + 1) * batch_size] if n >= batch_size else perm


def steps_for(n: int, batch_size: int, epochs: float) -> int:
    return max(1, math.ceil(epochs * n / batch_size))


def task_schedule(steps: dict[str, int], seed: int) -> list[str]:
    """Interleave single-task batches: a seeded shuffle with exact per-task counts."""
    order = [t for t, n in sorted(steps.items()) for _ in range(n)]
    return [order[i] for i in _rng(seed, 7919).permutation(len(order))]


def unified_steps(n_u: int, n_g: int, batch_size: int, epochs: float, mix_ratio: float | None) -> dict:
    su, sg = steps_for(n_u, batch_size, epochs), steps_for(n_g, batch_size, epochs)
    if mix_ratio is None:
        return {"u": su, "g": sg}
    total = su + sg
    u = min(total - 1, max(1, round(total * mix_ratio)))
    return {"u": u, "g": total - u}


class Schedule:
    """Which task and which rows each step trains on."""

    def __init__(self, sizes: dict[str, int], batch_size: int, epochs: float, seed: int,
                 mix_ratio: float | None = None):
        self.sizes, self.batch_size, self.seed = sizes, batch_size, seed
        if len(sizes) == 1:
            (task, n), = sizes.items()
            self.tasks = [task] * steps_for(n, batch_size, epochs)
        else:
            counts = unified_steps(sizes["u"], sizes["g"], batch_size, epochs, mix_ratio)
            self.tasks = task_schedule(counts, seed)
        # k-th batch of each task at each step, precomputed once (cheap: a list of ints).
        seen = {t: 0 for t in sizes}
        self._k = []
        for t in self.tasks:
            self._k.append(seen[t])
            seen[t] += 1

    def __len__(self) -> int:
        return len(self.tasks)

    def at(self, step: int) -> tuple[str, np.ndarray]:
        task = self.tasks[step]
        seed = self.seed * 2 + (0 if task == "u" else 1)
        return task, batch_indices(self.sizes[task], self.batch_size, self._k[step], seed)
