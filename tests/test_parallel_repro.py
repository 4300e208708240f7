"""uvlm.pipeline.repro: the scheduler (with stand-in stages) and a whole toy DVC pipeline."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from uvlm.core.errors import ConfigError
from uvlm.pipeline.repro import parse_limits, schedule, stage_graph


class FakeStage:
    """A stage that finishes after ``ticks`` polls with exit code ``rc``."""

    def __init__(self, name, ticks, rc):
        self.name, self.left, self.rc = name, ticks, rc

    def poll(self):
        if self.left > 0:
            self.left -= 1
            return None
        return self.rc


class RunningSet:
    """Starts FakeStages of ``ticks`` polls and keeps the set of those still running, calling
    ``seen(running)`` after each start."""

    def __init__(self, ticks, seen):
        self.ticks, self.seen, self.running = ticks, seen, set()

    def __call__(self, name, side_by_side):
        self.running.add(name)
        self.seen(self.running)
        stage = FakeStage(name, self.ticks, 0)
        poll = stage.poll

        def tracked():
            rc = poll()
            if rc is not None:
                self.running.discard(name)
            return rc
        stage.poll = tracked
        return stage


def _run(order, needs, jobs, fail=(), **kw):
    """Every stage takes one poll; returns the exit codes and the stages in the order they started."""
    started = []

    def start(name, side_by_side):
        started.append(name)
        return FakeStage(name, 1, 1 if name in fail else 0)

    return schedule(order, needs, jobs, start, log=lambda m: None, poll_s=0, **kw), started


DIAMOND = (["data", "train@a", "train@b", "eval@a", "eval@b", "results"],
           {"data": set(), "train@a": {"data"}, "train@b": {"data"}, "eval@a": {"train@a"},
            "eval@b": {"train@b"}, "results": {"eval@a", "eval@b"}})


def test_every_stage_runs_once_after_what_it_needs():
    order, needs = DIAMOND
    done, started = _run(order, needs, jobs=2)
    assert done == {n: 0 for n in order}
    assert sorted(started) == sorted(order)
    for name in order:
        for dep in needs[name]:
            assert started.index(dep) < started.index(name)


def test_independent_stages_overlap_up_to_jobs():
    order = ["a", "b", "c", "d"]
    needs = {n: set() for n in order}
    for jobs in (3, 1):
        peak = []
        schedule(order, needs, jobs, RunningSet(3, lambda r: peak.append(len(r))), log=lambda m: None, poll_s=0)
        assert max(peak) == jobs


def test_a_failed_stage_stops_new_starts_and_its_dependents():
    order, needs = DIAMOND
    done, started = _run(order, needs, jobs=1, fail={"train@a"})
    assert done["train@a"] == 1
    assert "eval@a" not in done and "results" not in done
    assert started == ["data", "train@a"]


@pytest.mark.parametrize("jobs", [0, -1, 1.5])
def test_jobs_must_be_a_positive_integer(jobs):
    with pytest.raises(ConfigError, match="jobs"):
        schedule(["a"], {"a": set()}, jobs, lambda n, k: FakeStage(n, 0, 0))


def test_ready_stages_start_by_priority_then_in_order():
    order, needs = DIAMOND
    _, started = _run(order, needs, jobs=1, priority={"train@b": 5.0, "train@a": 3.0})
    assert started[:3] == ["data", "train@b", "train@a"]
    _, started = _run(order, needs, jobs=1)
    assert started[:3] == ["data", "train@a", "train@b"]


def test_a_group_limit_leaves_room_for_other_stages():
    order = ["train@a", "train@b", "train@c", "eval@x", "eval@y"]
    needs = {n: set() for n in order}
    peaks = {"train": 0, "all": 0}

    def seen(running):
        peaks["train"] = max(peaks["train"], sum(n.startswith("train") for n in running))
        peaks["all"] = max(peaks["all"], len(running))

    start = RunningSet(2, seen)
    done = schedule(order, needs, 4, start, log=lambda m: None, poll_s=0, limits={"train": 2})
    assert done == {n: 0 for n in order}
    assert peaks == {"train": 2, "all": 4}


def test_each_stage_hears_how_many_run_beside_it_and_reports_its_time():
    order, needs = DIAMOND
    sides, ends = {}, {}

    def start(name, side_by_side):
        sides[name] = side_by_side
        return FakeStage(name, 1, 0)

    schedule(order, needs, 3, start, log=lambda m: None, poll_s=0,
             finished=lambda n, rc, s: ends.__setitem__(n, (rc, s)))
    assert sides["data"] == 1 and sides["train@a"] == sides["train@b"] == 2 and sides["results"] == 1
    assert set(ends) == set(order) and all(rc == 0 and s >= 0 for rc, s in ends.values())


def test_limits_are_checked_against_the_pipeline_groups():
    order, _ = DIAMOND
    assert parse_limits(["train=3", "eval=1"], order) == {"train": 3, "eval": 1}
    for bad in ("train", "train=0", "train=x", "nosuch=2"):
        with pytest.raises(ConfigError, match="limit"):
            parse_limits([bad], order)


TOY = """stages:
  base:
    cmd: mkdir -p out && cp dep.txt out/base.txt
    deps:
      - dep.txt
    outs:
      - out/base.txt
  train:
    foreach: [a, b, c]
    do:
      cmd: cat out/base.txt > out/t_${item}.txt && echo ${item} >> out/t_${item}.txt
      deps:
        - out/base.txt
      outs:
        - out/t_${item}.txt
  final:
    cmd: cat out/t_a.txt out/t_b.txt out/t_c.txt > out/final.txt
    deps:
      - out/t_a.txt
      - out/t_b.txt
      - out/t_c.txt
    outs:
      - out/final.txt
"""


@pytest.fixture
def toy_repo(tmp_path, monkeypatch):
    if shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists():
        pytest.skip("dvc is not installed")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text(TOY)
    (repo / "dep.txt").write_text("v1\n")
    monkeypatch.chdir(repo)
    return repo


def test_stage_graph_reads_dvc_yaml(toy_repo):
    order, needs = stage_graph(toy_repo)
    assert order == ["base", "train@a", "train@b", "train@c", "final"]
    assert needs["train@b"] == {"base"} and needs["final"] == {"train@a", "train@b", "train@c"}
    order, needs = stage_graph(toy_repo, ["train@b"])
    assert order == ["base", "train@b"]
    with pytest.raises(ConfigError, match="train@z"):
        stage_graph(toy_repo, ["train@z"])


def test_the_whole_toy_pipeline_matches_dvc_repro(toy_repo):
    """Run side by side, then `dvc status` finds nothing to do and the outputs are complete."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-m", "uvlm.pipeline.repro", "--jobs", "3", "--log-dir", "logs"],
                         cwd=toy_repo, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Data and pipelines are up to date" in run.stdout
    assert "5 of 5 stages done in" in run.stdout
    assert (toy_repo / "out" / "final.txt").read_text() == "v1\na\nv1\nb\nv1\nc\n"
    assert sorted(p.name for p in (toy_repo / "logs").iterdir()) == [
        "base.log", "final.log", "stage_seconds.json", "train@a.log", "train@b.log", "train@c.log"]
    status = subprocess.run(["dvc", "status"], cwd=toy_repo, capture_output=True, text=True)
    assert "up to date" in status.stdout
    history = json.loads((toy_repo / "logs" / "stage_seconds.json").read_text())
    assert sorted(history) == ["base", "final", "train@a", "train@b", "train@c"]
    # A second run finds every stage up to date: skipped stages teach it no durations.
    (toy_repo / "logs" / "stage_seconds.json").write_text(json.dumps({"base": 99.0}))
    again = subprocess.run([sys.executable, "-m", "uvlm.pipeline.repro", "--jobs", "2", "--limit", "train=1",
                            "--log-dir", "logs"], cwd=toy_repo, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "at most 1 train" in again.stdout
    assert json.loads((toy_repo / "logs" / "stage_seconds.json").read_text()) == {"base": 99.0}


def test_cli_names_bad_jobs_and_unknown_stages(toy_repo):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for args, key in ((["--jobs", "0"], "jobs"), (["nosuch"], "targets"), (["--limit", "nosuch=2"], "limit")):
        run = subprocess.run([sys.executable, "-m", "uvlm.pipeline.repro", *args], cwd=toy_repo, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2
        assert f"config key '{key}'" in run.stderr
