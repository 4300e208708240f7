"""Schedule the sweep's jobs on one device: small ones side by side, big ones alone.

Each job is ``python -m uvlm.sweep_job`` in its own process (see :mod:`uvlm.process_pool`
for why). Jobs above ``solo_params`` parameters fill the GPU and run alone. On CPU, the
cores are split between the processes (``cores // concurrency`` threads each).
"""
from __future__ import annotations

import json
import sys

from .process_pool import raise_failures as _raise_failures
from .process_pool import run_processes
from .sweep_plan import Job
from .threads import available_cores


def schedule_order(jobs: list[Job]) -> list[Job]:
    """Largest first, so the long jobs start early and the small ones fill in behind."""
    return sorted(jobs, key=lambda j: (-j.approx_params() * (2 if j.task == "ug" else 1), j.id))


def run_jobs(params: str, jobs: list[Job], concurrency: int, solo_params: float, log_dir,
             progress: bool = True, poll_s: float = 0.5) -> dict:
    """Run ``jobs`` (``python -m uvlm.sweep_job``), at most ``concurrency`` at a time.

    Returns {"done": [...ids], "failed": {id: log path}, "wall_s": seconds}. Failures do not
    stop the others; the caller decides what a failure means.
    """
    # Split the host's cores between the processes: on CPU they do the work, on a GPU they
    # tokenise and launch kernels, and N processes of all-core thread pools thrash each other.
    threads = max(1, available_cores() // max(1, concurrency))
    by_id = {j.id: j for j in schedule_order(jobs)}
    commands = {jid: [sys.executable, "-m", "uvlm.sweep_job", "--params", str(params),
                      "--job", json.dumps(j.to_dict()), "--threads", str(threads)] for jid, j in by_id.items()}

    def fits(jid: str, running: list[str]) -> bool:
        return _fits(by_id[jid], {k: (None, by_id[k], None) for k in running}, concurrency, solo_params)

    return run_processes(commands, concurrency, log_dir, fits=fits, progress=progress, desc="sweep jobs",
                         poll_s=poll_s)


def _fits(job: Job, running: dict, concurrency: int, solo_params: float) -> bool:
    if not running:
        return True
    if job.approx_params() > solo_params:
        return False  # a big job waits for the device to be free
    if any(j.approx_params() > solo_params for _, j, _ in running.values()):
        return False
    return len(running) < concurrency


def raise_failures(result: dict) -> None:
    _raise_failures(result, "sweep jobs")
