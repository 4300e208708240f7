"""Run many small jobs at once on one device, each in its own process.

Why processes: a 5M-parameter model cannot keep an H100 busy; its steps are bound by
Python and kernel-launch overhead on the host. Several such processes on one GPU
overlap one job's host work with another's kernels, so the device does several
small runs in little more than the time of one. Jobs above ``solo_params``
parameters do fill the GPU and run alone. On CPU, the cores are split between the
processes (``cores // concurrency`` threads each).

Each job writes its own result file; this scheduler only starts processes, shows a
progress bar and collects failures, so an interrupted sweep loses nothing but the
jobs in flight, and those resume from their last checkpoint.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import UVLMError
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
    from tqdm.auto import tqdm

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    # Split the host's cores between the processes: on CPU they do the work, on a GPU they
    # tokenise and launch kernels, and N processes of all-core thread pools thrash each other.
    threads = max(1, available_cores() // max(1, concurrency))
    queue = schedule_order(jobs)
    running: dict[str, tuple[subprocess.Popen, Job, object]] = {}
    done, failed = [], {}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    bar = tqdm(total=len(queue), desc="sweep jobs", disable=not progress, mininterval=2.0)
    try:
        while queue or running:
            while queue and _fits(queue[0], running, concurrency, solo_params):
                job = queue.pop(0)
                cmd = [sys.executable, "-m", "uvlm.sweep_job", "--params", str(params),
                       "--job", json.dumps(job.to_dict())]
                cmd += ["--threads", str(threads)]
                log = open(log_dir / f"{job.id}.log", "w")
                running[job.id] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), job, log)
            time.sleep(poll_s)
            for jid, (proc, job, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[jid]
                if proc.returncode == 0:
                    done.append(jid)
                else:
                    failed[jid] = str(log_dir / f"{jid}.log")
                bar.update(1)
                bar.set_postfix(failed=len(failed), refresh=False)
    finally:
        for proc, _, log in running.values():  # interrupted: stop the children, keep their checkpoints
            proc.terminate()
            log.close()
        bar.close()
    return {"done": done, "failed": failed, "wall_s": time.perf_counter() - t0}


def _fits(job: Job, running: dict, concurrency: int, solo_params: float) -> bool:
    if not running:
        return True
    if job.approx_params() > solo_params:
        return False  # a big job waits for the device to be free
    if any(j.approx_params() > solo_params for _, j, _ in running.values()):
        return False
    return len(running) < concurrency


def raise_failures(result: dict) -> None:
    if result["failed"]:
        lines = [f"  {jid}: see {path}" for jid, path in sorted(result["failed"].items())]
        tail = ""
        first = next(iter(sorted(result["failed"].values())))
        try:
            tail = "\n  last lines of the first log:\n    " + "\n    ".join(Path(first).read_text().splitlines()[-8:])
        except OSError:
            pass
        raise UVLMError(f"{len(result['failed'])} sweep job(s) failed (finished ones are kept; re-running "
                        "resumes):\n" + "\n".join(lines) + tail)
