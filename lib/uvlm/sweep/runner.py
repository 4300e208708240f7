"""Schedule the sweep's jobs on one device: small ones side by side, big ones alone.

Each job is ``python -m uvlm.sweep.job`` in its own process (see :mod:`uvlm.core.process_pool`
for why). Jobs above ``solo_params`` parameters fill the GPU and run alone. On CPU, the
cores are split between the processes (``cores // concurrency`` threads each).
"""
from __future__ import annotations

import json
import sys

from uvlm.core.process_pool import raise_failures as _raise_failures
from uvlm.core.process_pool import run_processes
from uvlm.core.threads import cores_each
from .plan import Job


def schedule_order(jobs: list[Job]) -> list[Job]:
    """Largest first, so the long jobs start early and the small ones fill in behind."""
    return sorted(jobs, key=lambda j: (-j.approx_params() * (2 if j.task == "ug" else 1), j.id))


def run_jobs(params: str, jobs: list[Job], concurrency: int, solo_params: float, log_dir,
             progress: bool = True, poll_s: float = 0.5, sets=()) -> dict:
    """Run ``jobs`` (``python -m uvlm.sweep.job``), at most ``concurrency`` at a time.

    Returns {"done": [...ids], "failed": {id: log path}, "wall_s": seconds}. Failures do not
    stop the others; the caller decides what a failure means. ``sets``: ``KEY=VALUE`` overrides
    of ``params`` every job applies (``--set``).
    """
    threads = cores_each(concurrency)
    by_id = {j.id: j for j in schedule_order(jobs)}
    commands = {jid: [sys.executable, "-m", "uvlm.sweep.job", "--params", str(params),
                      "--job", json.dumps(j.to_dict()), "--threads", str(threads),
                      *[a for kv in sets for a in ("--set", kv)]] for jid, j in by_id.items()}

    def fits(jid: str, running: list[str]) -> bool:
        return _fits(by_id[jid], [by_id[k] for k in running], concurrency, solo_params)

    return run_processes(commands, concurrency, log_dir, fits=fits, progress=progress, desc="sweep jobs",
                         poll_s=poll_s)


def _fits(job: Job, running: list[Job], concurrency: int, solo_params: float) -> bool:
    if not running:
        return True
    if job.approx_params() > solo_params:
        return False  # a big job waits for the device to be free
    if any(j.approx_params() > solo_params for j in running):
        return False
    return len(running) < concurrency


def raise_failures(result: dict) -> None:
    _raise_failures(result, "sweep jobs")
