"""uvlm.perf.stage_timing: a train stage timed per setting, in a scratch root that leaves the project's runs alone."""
import json

import pytest

from uvlm.core.config import load_config
from uvlm.core.errors import ConfigError, MissingInputError
from uvlm.perf import stage_timing

FAST = ("train.device=cpu", "train.eval_every=2", "train.seeds=[0, 1]", "train.parallel_seeds=2")


def test_times_a_stage_with_seeds_side_by_side(tiny_world, tmp_path):
    project_runs = load_config(tiny_world).paths.data / "runs" / "u_base"
    before = sorted(p.name for p in project_runs.glob("*")) if project_runs.exists() else None
    rows = stage_timing.time_stage(tiny_world, ["u_base"], ["eager", "eager"], tmp_path / "t", sets=FAST)
    assert [(r["setting"], r["repeat"], r["seed"]) for r in rows] == [
        ("eager", 0, 0), ("eager", 0, 1), ("eager", 1, 0), ("eager", 1, 1)]
    for r in rows:
        assert r["stage_s"] > 0 and r["setup_s"] >= 0 and r["train_time_s"] > 0 and r["mean_step_ms"] > 0
        assert set(r["best_val"]) == {"u"}
    # the same run, same seeds, on CPU: the repetition trains the same model
    assert rows[0]["best_val"] == rows[2]["best_val"] and rows[1]["best_val"] == rows[3]["best_val"]
    assert json.loads((tmp_path / "t" / "stage_timing.json").read_text()) == rows
    assert "| eager | 1 | 1 |" in (tmp_path / "t" / "stage_timing.md").read_text()
    assert (tmp_path / "t" / "data" / "runs" / "u_base" / "logs" / "seed1.log").exists()  # a child process's log
    after = sorted(p.name for p in project_runs.glob("*")) if project_runs.exists() else None
    assert after == before  # the project's own runs are untouched


def test_bad_input_is_named(tiny_world, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--settings"):
        stage_timing.time_stage(tiny_world, ["u_base"], ["fast"], tmp_path / "a")
    assert stage_timing.main(["--params", tiny_world, "--runs", "nope", "--out", str(tmp_path / "b")]) == 2
    assert "'run'" in capsys.readouterr().err
    with pytest.raises(MissingInputError, match="dvc repro data"):
        stage_timing.scratch_data(tmp_path / "empty", tmp_path / "c")
