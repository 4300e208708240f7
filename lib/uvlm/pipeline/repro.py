"""`dvc repro` with independent stages running side by side.

`dvc repro` runs one stage at a time, but most of a stage's time here is host work (papermill,
imports, set-up, compilation, scoring) while a GPU sits idle, and the per-run branches of the
pipeline (train@RUN -> eval@RUN) do not depend on each other. DVC supports launching several
`dvc repro` processes on independent stages at once (its read-write locks guard each stage's
inputs and outputs); this module does that for the whole graph: every stage runs through its own
`dvc repro --single-item STAGE` as soon as all stages it depends on have finished, at most
``jobs`` at a time. A plain `dvc repro` at the end confirms that nothing is left to run, so the
result is what `dvc repro` itself would leave: the same outputs, dvc.lock and run cache.

    python -m uvlm.pipeline.repro --jobs 3            # the whole pipeline
    python -m uvlm.pipeline.repro --jobs 3 results    # only what `results` needs

    python -m uvlm.pipeline.repro --jobs 5 --limit train=3   # at most 3 train stages at once

Which ready stage starts first: the one with the longest critical path (uvlm.pipeline.priority), from
the durations of earlier runs kept in ``--history``; every stage that ran adds its time there.
``--limit GROUP=N`` caps one group of stages (``train`` for every ``train@RUN``) below ``jobs``:
the train stages share one GPU, which three of them already fill, while evaluations, which mostly
wait on the host, can run beside them.

Each stage's output goes to ``--log-dir/<stage>.log``; a failed stage stops the scheduling of new
ones and prints its log's tail. A stage sees UVLM_PARALLEL_STAGES = the number of stages running
when it started, so its CPU thread pools take that share of the cores
(uvlm.core.threads.available_cores): a stage that starts alone gets every core.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from uvlm.core.errors import ConfigError
from uvlm.core.threads import PARALLEL_STAGES_ENV
from .priority import critical_paths, estimate_seconds, group, load_history, record_duration

# DVC refuses a stage whose files another process holds at that instant; such a start is retried.
LOCK_MESSAGES = ("Unable to acquire lock", "is busy, it is being blocked by")
LOCK_RETRIES = 5
# What DVC prints for a stage that was already up to date: no duration to learn from.
SKIPPED_MESSAGE = "didn't change, skipping"


def stage_graph(repo_dir=".", targets=None) -> tuple[list[str], dict[str, set[str]]]:
    """The pipeline's stages in dvc.yaml order and, for each, the stages it depends on.

    With ``targets``, only those stages and everything upstream of them.
    """
    from dvc.repo import Repo

    with Repo(str(repo_dir)) as repo:
        graph = repo.index.graph  # an edge u -> v: stage u depends on stage v
        order = [s.addressing for s in repo.index.stages if getattr(s, "cmd", None)]
        needs = {name: set() for name in order}
        for u, v in graph.edges:
            if u.addressing in needs and v.addressing in needs:
                needs[u.addressing].add(v.addressing)
    if targets:
        unknown = [t for t in targets if t not in needs]
        if unknown:
            raise ConfigError("targets", unknown, f"stages of dvc.yaml: {order}")
        keep, todo = set(), list(targets)
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo.extend(needs[name])
        order = [n for n in order if n in keep]
        needs = {n: needs[n] for n in order}
    return order, needs


def check_jobs(jobs) -> None:
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError("jobs", jobs, "an integer >= 1")


def parse_limits(specs: list[str], order: list[str]) -> dict[str, int]:
    """``["train=3"]`` -> {"train": 3}; a group must name stages of the pipeline."""
    groups = sorted({group(n) for n in order})
    limits = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not value.isdigit() or int(value) < 1:
            raise ConfigError("limit", spec, "GROUP=N with N an integer >= 1, e.g. train=3")
        if name not in groups:
            raise ConfigError("limit", spec, f"a group of stages, one of {groups}")
        limits[name] = int(value)
    return limits


def schedule(order: list[str], needs: dict[str, set[str]], jobs: int,
             start: Callable[[str, int], subprocess.Popen], log: Callable[[str], None] = print,
             poll_s: float = 0.2, priority: Optional[dict[str, float]] = None,
             limits: Optional[dict[str, int]] = None,
             finished: Optional[Callable[[str, int, float], None]] = None) -> dict[str, int]:
    """Run every stage once all it needs has finished, at most ``jobs`` at a time and at most
    ``limits[group]`` of one group. Ready stages start highest ``priority`` first, then in
    ``order``. ``start(stage, side_by_side)`` launches it, told how many stages run once this
    round's starts are made; ``finished(stage, rc, seconds)`` hears of each end.
    Returns each finished stage's exit code; after a failure no new stage starts, and the
    running ones are waited for."""
    check_jobs(jobs)
    priority, limits = priority or {}, limits or {}
    rank = {n: (-priority.get(n, 0.0), i) for i, n in enumerate(order)}
    t0, done, running, began, failed = time.monotonic(), {}, {}, {}, False
    while True:
        for name, proc in list(running.items()):
            rc = proc.poll()
            if rc is not None:
                del running[name]
                done[name] = rc
                failed = failed or rc != 0
                now = time.monotonic()
                if finished is not None:
                    finished(name, rc, now - began[name])
                log(f"[{now - t0:6.0f} s] {'done' if rc == 0 else f'FAILED (exit {rc})'}: {name}")
        ready = sorted((n for n in order if n not in done and n not in running
                        and all(done.get(d) == 0 for d in needs[n])), key=rank.__getitem__)
        batch: list[str] = []
        for name in ready:
            if failed or len(running) + len(batch) >= jobs:
                break
            g = group(name)
            if g in limits and sum(group(n) == g for n in [*running, *batch]) >= limits[g]:
                continue
            batch.append(name)
        side_by_side = len(running) + len(batch)
        for name in batch:
            began[name] = time.monotonic()
            running[name] = start(name, side_by_side)
            log(f"[{began[name] - t0:6.0f} s] start: {name} ({len(running)} running)")
        if not running:
            return done
        time.sleep(poll_s)


class StageRunner:
    """Starts `dvc repro --single-item STAGE` with its output in ``log_dir/STAGE.log``, retrying a
    start that DVC refused because another stage held a lock at that instant."""

    def __init__(self, log_dir: Path, dvc: str = "dvc"):
        self.log_dir, self.dvc = Path(log_dir), dvc
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []

    def log_path(self, stage: str) -> Path:
        return self.log_dir / f"{stage.replace('/', '_')}.log"

    def ran(self, stage: str) -> bool:
        """Whether the stage's command ran (DVC did not find it up to date)."""
        log = self.log_path(stage)
        return log.exists() and SKIPPED_MESSAGE not in log.read_text(errors="replace")

    def __call__(self, stage: str, side_by_side: int = 1) -> subprocess.Popen:
        # A shell loop, so that a lock retry does not hold up the scheduler.
        log = self.log_path(stage)
        pattern = "|".join(LOCK_MESSAGES)
        script = (f'for i in $(seq {LOCK_RETRIES + 1}); do "$0" repro --single-item "$1" > "$2" 2>&1; rc=$?; '
                  f'[ $rc -eq 0 ] || ! grep -qE "{pattern}" "$2" || [ $i -gt {LOCK_RETRIES} ] && exit $rc; '
                  f'sleep $i; done')
        env = {**os.environ, PARALLEL_STAGES_ENV: str(max(1, side_by_side))}
        proc = subprocess.Popen(["bash", "-c", script, self.dvc, stage, str(log)], env=env,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.pipeline.repro", description=__doc__.split("\n")[0])
    ap.add_argument("targets", nargs="*", help="stages to bring up to date (default: all)")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="stages at once (default 2)")
    ap.add_argument("--limit", action="append", default=[], metavar="GROUP=N",
                    help="at most N stages of GROUP at once, e.g. train=3 (repeatable)")
    ap.add_argument("--log-dir", default="notebooks/executed/logs", help="one log per stage (default %(default)s)")
    ap.add_argument("--history", default=None,
                    help="stage durations of earlier runs, updated by this one (default LOG_DIR/stage_seconds.json)")
    a = ap.parse_args(argv)
    try:
        check_jobs(a.jobs)
        order, needs = stage_graph(".", a.targets)
        limits = parse_limits(a.limit, order)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    history = Path(a.history) if a.history else Path(a.log_dir) / "stage_seconds.json"
    priority = critical_paths(order, needs, estimate_seconds(order, load_history(history)))
    runner = StageRunner(Path(a.log_dir))

    def finished(stage: str, rc: int, seconds: float) -> None:
        if rc == 0 and runner.ran(stage):
            record_duration(history, stage, seconds)

    def interrupted(signum, frame):  # stop the stages too; a cut train stage resumes next time
        runner.stop()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    capped = "".join(f", at most {n} {g}" for g, n in limits.items())
    print(f"{len(order)} stages, {a.jobs} at a time{capped}; longest critical path first "
          f"(durations: {history}); logs in {a.log_dir}/", flush=True)
    t0 = time.monotonic()
    done = schedule(order, needs, a.jobs, runner, log=lambda m: print(m, flush=True),
                    priority=priority, limits=limits, finished=finished)
    bad = [n for n, rc in done.items() if rc != 0]
    print(f"{len(done) - len(bad)} of {len(order)} stages done in {time.monotonic() - t0:.0f} s", flush=True)
    for name in bad:
        tail = runner.log_path(name).read_text(errors="replace").splitlines()[-30:]
        print(f"\n--- {name} failed; the end of {runner.log_path(name)}:\n" + "\n".join(tail), flush=True)
    if bad:
        return 1
    # What `dvc repro` would still run: nothing, unless a stage changed while this ran.
    return subprocess.call(["dvc", "repro", *a.targets])


if __name__ == "__main__":
    sys.exit(main())
