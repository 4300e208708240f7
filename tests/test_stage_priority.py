"""uvlm.pipeline.priority: duration estimates, critical paths and the durations history."""
from __future__ import annotations

import pytest

from uvlm.pipeline.priority import critical_paths, estimate_seconds, group, load_history, record_duration

ORDER = ["data", "train@a", "train@b", "eval@a", "eval@b", "attention", "results"]
NEEDS = {"data": set(), "train@a": {"data"}, "train@b": {"data"}, "eval@a": {"train@a"},
         "eval@b": {"train@b"}, "attention": {"train@a"}, "results": {"eval@a", "eval@b", "attention"}}


def test_group_is_the_foreach_prefix():
    assert group("train@u_base") == "train" and group("results") == "results"


def test_estimates_fall_back_from_own_time_to_group_median_to_everyone():
    est = estimate_seconds(["train@a", "train@new", "eval@a", "results"],
                           {"train@a": 100.0, "train@b": 200.0, "eval@a": 40.0, "junk": "x"})
    assert est == {"train@a": 100.0, "train@new": 150.0, "eval@a": 40.0, "results": 100.0}
    assert estimate_seconds(["a", "b"], {}) == {"a": 1.0, "b": 1.0}


def test_critical_path_is_own_time_plus_the_longest_chain_behind():
    sec = {"data": 10, "train@a": 100, "train@b": 200, "eval@a": 40, "eval@b": 30, "attention": 80, "results": 5}
    cp = critical_paths(ORDER, NEEDS, sec)
    assert cp["results"] == 5
    assert cp["eval@a"] == 45 and cp["attention"] == 85
    assert cp["train@a"] == 100 + 85          # through attention, the longer of its two chains
    assert cp["train@b"] == 200 + 35
    assert cp["data"] == 10 + 235
    # Without history every stage counts 1 s: the path is the number of stages still ahead.
    depth = critical_paths(ORDER, NEEDS, dict.fromkeys(ORDER, 1.0))
    assert depth["data"] == 4 and depth["train@a"] == 3 and depth["results"] == 1


def test_history_round_trip_and_damage(tmp_path):
    path = tmp_path / "logs" / "stage_seconds.json"
    assert load_history(path) == {}
    record_duration(path, "train@a", 12.345)
    record_duration(path, "data", 3)
    record_duration(path, "train@a", 20)
    assert load_history(path) == {"data": 3.0, "train@a": 20.0}
    assert [p.name for p in path.parent.iterdir()] == ["stage_seconds.json"]  # no temp files left
    path.write_text("{not json")
    assert load_history(path) == {}
    path.write_text("[1, 2]")
    assert load_history(path) == {}


@pytest.mark.parametrize("bad", [0, -5, None])
def test_non_positive_durations_are_ignored(bad):
    assert estimate_seconds(["a", "b"], {"a": bad, "b": 4.0}) == {"a": 4.0, "b": 4.0}
