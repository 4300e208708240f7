"""The training command line (what `accelerate launch` starts) and the 1-vs-N-process log check."""
import csv
import json

import pytest

from uvlm.core.errors import ConfigError
from uvlm.core.io import read_json
from uvlm.train import cli as train_cli
from uvlm.train import ddp_check

TRAIN_FIELDS = ["step", "task", "loss", "lr", "step_time_s", "tokens_per_s", "flops_per_step"]


def test_cli_trains_a_run_and_the_check_compares_two(tiny_world, tmp_path, capsys):
    args = ["--params", tiny_world, "--run", "u_base", "--seed", "0", "--set", "train.device=cpu",
            "--set", "train.eval_every=2", "--no-progress"]
    assert train_cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["finished"] and summary["processes"] == 1 and summary["device"] == "cpu"
    for name in ("train_log.csv", "val_log.csv", "train_summary.json", "final"):
        assert (tmp_path / "a" / name).exists(), name

    assert train_cli.main(args + ["--out", str(tmp_path / "b")]) == 0
    assert ddp_check.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "check")]) == 0
    result = json.loads((tmp_path / "check.json").read_text())
    # Same seed, same process count, CPU: the same run twice.
    assert result["train_loss_smoothed"]["max_abs_diff"] == 0.0 and result["losses_agree"]
    assert set(result["val_loss"]) == {"val_loss_u"} and result["val_loss"]["val_loss_u"]["max_abs_diff"] == 0.0
    assert result["processes"] == [1, 1] and result["tokens_per_s_ratio"] > 0
    assert "losses agree" in (tmp_path / "check.md").read_text()


def test_bad_input_is_named(tiny_world, capsys):
    base = ["--params", tiny_world, "--seed", "0", "--no-progress"]
    assert train_cli.main(base + ["--run", "nope"]) == 2
    assert "'run'" in capsys.readouterr().err
    assert train_cli.main(base + ["--run", "u_base", "--set", "train.lr=-1"]) == 2
    assert "train.lr" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        train_cli.parse_sets(["lr=3e-4"])
    # A run's override is checked when the config loads, and named by the key that was set.
    assert train_cli.main(base + ["--run", "g_hmgen", "--set", "runs.g_hmgen.hmgen_fraction=0.9"]) == 2
    err = capsys.readouterr().err
    assert "runs.g_hmgen.hmgen_fraction" in err and "hmgen.k" not in err


def test_set_values_are_read_as_yaml():
    assert train_cli.parse_sets(["preset=gpu", "train.lr=3e-4", "train.seeds=[0, 1]", "train.compile=true",
                                 "model.d_model=768", "train.device=cuda"]) == {
        "preset": "gpu", "train": {"lr": 3e-4, "seeds": [0, 1], "compile": True, "device": "cuda"},
        "model": {"d_model": 768}}


def _write(path, fields, rows):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_check_keeps_one_row_per_step_and_the_slowest_process(tmp_path):
    """Each process of a multi-process run appends its own row per step."""
    for name, times in (("one", [(0.2,)] * 8), ("two", [(0.1, 0.12)] * 8)):
        d = tmp_path / name
        d.mkdir()
        rows = [{"step": s + 1, "task": "u", "loss": 3.0 - 0.1 * s, "lr": 1e-3, "step_time_s": t,
                 "tokens_per_s": 1000 / t, "flops_per_step": 1.0} for s, ts in enumerate(times) for t in ts]
        _write(d / "train_log.csv", TRAIN_FIELDS, rows)
        _write(d / "val_log.csv", ["step", "val_loss_u"], [{"step": 8, "val_loss_u": 2.5}] * len(times[0]))
    r = ddp_check.compare(tmp_path / "one", tmp_path / "two", window=4, skip=0)
    assert r["throughput"][1]["steps"] == 8 and r["throughput"][1]["median_step_time_s"] == 0.12
    assert r["tokens_per_s_ratio"] == pytest.approx(0.2 / 0.12)
    assert r["train_loss_smoothed"]["max_abs_diff"] == 0.0 and r["val_loss"]["val_loss_u"]["steps_compared"] == 1
    with pytest.raises(ConfigError, match="window"):
        ddp_check.compare(tmp_path / "one", tmp_path / "two", window=0)


def _run_dir(path, losses, val):
    path.mkdir()
    _write(path / "train_log.csv", TRAIN_FIELDS,
           [{"step": s + 1, "task": "u", "loss": x, "lr": 1e-3, "step_time_s": 0.1, "tokens_per_s": 1e4,
             "flops_per_step": 1.0} for s, x in enumerate(losses)])
    _write(path / "val_log.csv", ["step", "val_loss_u"], [{"step": len(losses), "val_loss_u": val}])
    return path


def test_the_noise_verdict_judges_the_gap_against_another_seed(tmp_path):
    one = _run_dir(tmp_path / "one", [3.0, 2.0, 1.0, 0.5], 0.50)
    two = _run_dir(tmp_path / "two", [3.0, 2.1, 1.1, 0.6], 0.58)      # 0.1 above one; val +0.08
    seed = _run_dir(tmp_path / "seed1", [3.0, 2.2, 1.2, 0.7], 0.60)   # another seed: 0.2 above; val +0.10
    r = ddp_check.compare(one, two, window=1, skip=0, tol=0.05, noise=seed)
    assert not r["losses_agree"]  # beyond the fixed tolerance ...
    assert r["losses_agree_within_noise"]  # ... but closer than two seeds are
    assert r["noise"][0]["train_loss_smoothed"]["max_abs_diff"] == pytest.approx(0.2)
    assert "within that seed's gaps, curve by curve: **yes**" in ddp_check.markdown(r)
    close = _run_dir(tmp_path / "close", [3.0, 2.05, 1.05, 0.55], 0.52)
    assert not ddp_check.compare(one, seed, window=1, skip=0, noise=close)["losses_agree_within_noise"]
    assert "noise" not in ddp_check.compare(one, two, window=1, skip=0)
    # Several seeds: the yardstick is the furthest of them, curve by curve.
    r = ddp_check.compare(one, seed, window=1, skip=0, noise=[close, two])
    assert r["noise_yardstick"]["train_loss_smoothed"] == pytest.approx(0.1)  # two's, not close's 0.05
    assert not r["losses_agree_within_noise"]  # seed1 is 0.2 away: further than either
    far = _run_dir(tmp_path / "far", [3.0, 2.3, 1.3, 0.8], 0.65)
    r = ddp_check.compare(one, two, window=1, skip=0, noise=[close, far])
    assert r["losses_agree_within_noise"] and "the largest of these 2 seeds' gaps" in ddp_check.markdown(r)
    out = tmp_path / "check"
    assert ddp_check.main([str(one), str(two), "--noise", str(close), str(far), "--out", str(out)]) == 0
    assert len(read_json(out.with_suffix(".json"))["noise_runs"]) == 2
