"""Which ready stage to start first: the one with the longest chain of work still behind it.

With several stages side by side, the order in which ready stages start decides when the last
one ends. A stage's *critical path* is its own duration plus the longest critical path among the
stages that need it; starting the longest first keeps the pipeline's tail short (the rule
build tools such as ninja use). Durations come from earlier runs, kept in a small JSON history
(stage -> seconds); a stage never timed takes the median of its foreach group's timed stages
(``train@new_run`` the median of ``train@*``), else of all timed stages, else 1 s, so that
without any history the rule falls back to the number of stages still ahead.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from uvlm.core.io import read_json, write_json


def group(stage: str) -> str:
    """A foreach stage's group (``train`` for ``train@u_base``); a plain stage is its own group."""
    return stage.split("@", 1)[0]


def estimate_seconds(stages: list[str], history: dict[str, float]) -> dict[str, float]:
    """Each stage's expected duration: its own timing, else its group's median, else everyone's."""
    timed = {s: float(t) for s, t in history.items() if isinstance(t, (int, float)) and t > 0}
    overall = statistics.median(timed.values()) if timed else 1.0
    by_group: dict[str, list[float]] = {}
    for s, t in timed.items():
        by_group.setdefault(group(s), []).append(t)
    return {s: timed.get(s, statistics.median(by_group[group(s)]) if group(s) in by_group else overall)
            for s in stages}


def critical_paths(order: list[str], needs: dict[str, set[str]], seconds: dict[str, float]) -> dict[str, float]:
    """Each stage's duration plus the longest critical path among the stages that need it."""
    needed_by: dict[str, list[str]] = {s: [] for s in order}
    for s in order:
        for dep in needs[s]:
            if dep in needed_by:
                needed_by[dep].append(s)
    memo: dict[str, float] = {}

    def path(s: str) -> float:  # recursion is fine: a pipeline is a few stages deep
        if s not in memo:
            memo[s] = seconds[s] + max((path(k) for k in needed_by[s]), default=0.0)
        return memo[s]

    return {s: path(s) for s in order}


def load_history(path) -> dict[str, float]:
    """Stage durations of earlier runs; an absent or unreadable file is no history."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except Exception:  # a damaged history only costs the ordering, never the run
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def record_duration(path, stage: str, seconds: float) -> None:
    """Store one stage's latest duration (atomically: an interrupted write keeps the old file)."""
    history = load_history(path)
    history[stage] = round(float(seconds), 1)
    write_json(path, dict(sorted(history.items())))
