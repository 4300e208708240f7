"""Run commands as child processes, a few at a time, on one machine.

Why processes: a model of a few million parameters cannot keep a GPU busy; its steps are
bound by Python and kernel launches on the host. Several such processes on one GPU
overlap one's host work with another's kernels (measured on an H200: six 22M jobs at
once gave 2.6x the throughput of one at a time, ``records/gpu/sweep/concurrency.json``).
The sweep's jobs and the seeds of one training run both go through here.

Each command writes its own results; this pool only starts processes, shows a progress
bar and collects failures, so an interruption loses only the work in flight, and the
commands resume from their last checkpoint when run again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from .errors import UVLMError


def _die_with_parent(parent: int) -> None:
    """In the child, before exec (Linux): take SIGTERM when the pool's process dies.

    A pool killed from outside (a time limit on `dvc repro`, a notebook kernel shut down)
    runs no cleanup, and its children would otherwise train on as orphans; a resumed run
    would then start a second process on the same job's checkpoints.
    """
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the pool died before prctl took effect
        os._exit(1)


def run_processes(commands: dict[str, list[str]], concurrency: int, log_dir, *,
                  fits: Callable[[str, list[str]], bool] | None = None, progress: bool = True,
                  desc: str = "jobs", poll_s: float = 0.5) -> dict:
    """Run ``commands`` ({key: argv}) in their order, at most ``concurrency`` at a time.

    ``fits(key, running_keys)`` may hold a command back further (the sweep runs big jobs
    alone). Each command's output goes to ``log_dir/KEY.log``. Returns {"done": [...keys],
    "failed": {key: log path}, "wall_s": seconds}; a failure does not stop the others.
    """
    from tqdm.auto import tqdm

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = list(commands)
    running: dict[str, tuple[subprocess.Popen, object]] = {}
    done, failed = [], {}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    pid = os.getpid()
    tie = (lambda: _die_with_parent(pid)) if sys.platform.startswith("linux") else None
    t0 = time.perf_counter()
    bar = tqdm(total=len(queue), desc=desc, disable=not progress, mininterval=2.0)

    def may_start(key: str) -> bool:
        if not running:
            return True  # never deadlock: an idle pool always takes the next command
        return len(running) < concurrency and (fits is None or fits(key, list(running)))

    try:
        while queue or running:
            while queue and may_start(queue[0]):
                key = queue.pop(0)
                log = open(log_dir / f"{key}.log", "w")
                running[key] = (subprocess.Popen(commands[key], stdout=log, stderr=subprocess.STDOUT, env=env,
                                                 preexec_fn=tie), log)
            time.sleep(poll_s)
            for key, (proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[key]
                if proc.returncode == 0:
                    done.append(key)
                else:
                    failed[key] = str(log_dir / f"{key}.log")
                bar.update(1)
                bar.set_postfix(failed=len(failed), refresh=False)
    finally:
        for proc, log in running.values():  # interrupted: stop the children, keep their checkpoints
            proc.terminate()
            log.close()
        bar.close()
    return {"done": done, "failed": failed, "wall_s": time.perf_counter() - t0}


def raise_failures(result: dict, what: str = "jobs") -> None:
    """One error naming every failed command's log, with the last lines of the first."""
    if not result["failed"]:
        return
    lines = [f"  {key}: see {path}" for key, path in sorted(result["failed"].items())]
    tail = ""
    first = next(iter(sorted(result["failed"].values())))
    try:
        tail = "\n  last lines of the first log:\n    " + "\n    ".join(Path(first).read_text().splitlines()[-8:])
    except OSError:
        pass
    raise UVLMError(f"{what}: {len(result['failed'])} failed (finished ones are kept; re-running "
                    "resumes):\n" + "\n".join(lines) + tail)
