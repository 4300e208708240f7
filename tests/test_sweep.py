"""The synergy sweep: config, grid, learning-rate rule, gap arithmetic, resume, end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from uvlm.core.config import load_config
from uvlm.core.errors import CheckpointError, ConfigError
from uvlm.sweep.config import SweepConfig, lr_for, parse_size
from uvlm.sweep.plan import Job, job_overrides, prior_jobs, train_jobs
from uvlm.sweep.results import gap_frame, results_frame, summarise_gaps, zero_crossings
from uvlm.sweep.runner import _fits, schedule_order

from conftest import write_tiny_params


def _cfg(tmp_path, sweep: str = "", world: str = ""):
    return load_config(write_tiny_params(tmp_path, world + ("\nsweep:\n" + sweep if sweep else "")))


# ------------------------------------------------------------------ config

@pytest.mark.parametrize("sweep, key", [
    ("  sizes: ['16x1', 'big']", "sweep.sizes[1]"),
    ("  sizes: ['20x1']", "sweep.sizes[0]"),          # not a multiple of head_dim 8
    ("  sizes: ['16x1', '16x1']", "sweep.sizes"),
    ("  data_axis_size: '64x2'", "sweep.data_axis_size"),
    ("  prior_sizes: ['64x2']", "sweep.prior_sizes[0]"),
    ("  data_sizes: [32, 32]", "sweep.data_sizes"),
    ("  data_sizes: [1000]", "sweep.data_sizes[0]"),  # more than the tiny world's 64 examples
    ("  text_prior: []", "sweep.text_prior"),
    ("  lr_check_factors: [0]", "sweep.lr_check_factors"),
    ("  concurrency: 0", "sweep.concurrency"),
    ("  colour: red", "sweep.colour"),
])
def test_bad_sweep_values_name_their_key(tmp_path, sweep, key):
    with pytest.raises(ConfigError) as e:
        _cfg(tmp_path, sweep)
    assert key in str(e.value)


def test_parse_size():
    assert parse_size("512x8").name == "512x8" and parse_size("512x8").n_layers == 8
    with pytest.raises(ConfigError, match="WIDTHxDEPTH"):
        parse_size("512-8")


def test_lr_rule_scales_inversely_with_width():
    sw = SweepConfig(lr=1e-3, lr_ref_width=256, lr_exponent=1.0)
    assert lr_for(sw, 256) == pytest.approx(1e-3)
    assert lr_for(sw, 512) == pytest.approx(5e-4)
    assert lr_for(SweepConfig(lr=1e-3, lr_exponent=0.0), 4096) == pytest.approx(1e-3)


def test_model_overrides_keep_head_size_and_ffn_ratio():
    sw = SweepConfig(head_dim=64, ffn_ratio=2.75)
    m = sw.model_overrides(parse_size("640x12"))
    assert m["n_heads"] == 10 and m["n_kv_heads"] == 10 and m["ffn_hidden"] % 16 == 0
    assert abs(m["ffn_hidden"] / 640 - 2.75) < 0.05


# ------------------------------------------------------------------ grid

def test_grid_covers_each_axis_once(tmp_path):
    cfg = _cfg(tmp_path)  # the tiny preset's sweep
    jobs = train_jobs(cfg)
    ids = [j.id for j in jobs]
    assert len(ids) == len(set(ids))
    sw = cfg.sweep
    # size axis: 2 sizes x 2 seeds x 3 tasks, prior at one size: + 1 x 2 x 3
    size_axis = [j for j in jobs if j.data_n == max(sw.data_sizes) and j.lr_factor == 1.0]
    assert len(size_axis) == 2 * 2 * 3 + 2 * 3
    assert {j.size for j in size_axis if j.prior} == {"32x2"}
    data_axis = [j for j in jobs if j.data_n != max(sw.data_sizes)]
    assert {j.size for j in data_axis} == {sw.data_size_point().name} and not any(j.prior for j in data_axis)
    lr_check = [j for j in jobs if j.lr_factor != 1.0]
    assert {j.size for j in lr_check} == {"16x1", "32x2"} and {j.task for j in lr_check} == {"u", "g"}
    for j in lr_check:
        assert j.lr == pytest.approx(lr_for(sw, j.model_size.d_model) * j.lr_factor)
    assert [(p.size, p.seed) for p in prior_jobs(cfg)] == [("32x2", 0), ("32x2", 1)]


def test_step_matched_control_doubles_the_epochs_of_isolated_size_axis_runs(tmp_path):
    plain = train_jobs(_cfg(tmp_path))
    cfg = _cfg(tmp_path, "  step_matched: true")
    jobs = train_jobs(cfg)
    control = [j for j in jobs if j.epochs_factor != 1.0]
    assert [j for j in jobs if j.epochs_factor == 1.0] == plain  # the rest of the grid is unchanged
    sw = cfg.sweep
    assert len(control) == len(sw.sizes) * len(sw.seeds) * 2
    assert {j.task for j in control} == {"u", "g"} and not any(j.prior for j in control)
    assert all(j.data_n == max(sw.data_sizes) and j.id.endswith(f"-epx2-s{j.seed}") for j in control)
    assert job_overrides(cfg, control[0])["train"]["epochs"] == 2 * sw.epochs
    # A same-epochs job's stored form has no new field, so results stored before it still match.
    assert "epochs_factor" not in plain[0].to_dict() and Job.from_dict(plain[0].to_dict()) == plain[0]
    assert Job.from_dict(control[0].to_dict()) == control[0]


def test_no_prior_jobs_when_prior_level_is_off(tmp_path):
    cfg = _cfg(tmp_path, "  text_prior: [false]")
    assert prior_jobs(cfg) == [] and not any(j.prior for j in train_jobs(cfg))


def test_job_overrides_start_prior_runs_from_their_prior(tmp_path):
    cfg = _cfg(tmp_path)
    job = next(j for j in train_jobs(cfg) if j.prior)
    over = job_overrides(cfg, job)
    assert over["model"]["init_from"].endswith(f"priors/{job.size}/seed{job.seed}/model")
    assert over["train"]["train_samples"] == job.data_n and over["train"]["seeds"] == [job.seed]
    assert over["runs"]["sweep"] == {"task": job.task, "accel": "base"}
    load_config(write_tiny_params(tmp_path), over)  # a valid config


def test_user_overrides_reach_every_job_under_the_jobs_own_settings(tmp_path, monkeypatch):
    """A notebook's overrides (KEY=VALUE) apply to every job process; the job's own keys still win."""
    from uvlm.sweep import runner as sweep_runner
    from uvlm.sweep.job import job_config

    params = write_tiny_params(tmp_path)
    job = train_jobs(load_config(params))[0]
    cfg = job_config(params, job, sets=["world.n_val=12", "train.lr=0.5"])
    assert cfg.world.n_val == 12 and cfg.train.lr == job.lr
    seen = {}
    monkeypatch.setattr(sweep_runner, "run_processes", lambda commands, *a, **k: seen.update(commands))
    sweep_runner.run_jobs(params, [job], 1, 1e9, tmp_path / "logs", sets=["world.n_val=12"])
    assert seen[job.id][-2:] == ["--set", "world.n_val=12"]


def test_scheduler_runs_big_jobs_alone():
    small, big = Job("train", "u", "16x1", 8, False, 0, 1e-3), Job("train", "ug", "1024x12", 8, False, 0, 1e-3)
    assert schedule_order([small, big])[0] == big
    running = [small]
    assert _fits(small, running, concurrency=2, solo_params=1e6)
    assert not _fits(small, [small, small], 2, 1e6)
    assert not _fits(big, running, 2, 1e6)
    assert not _fits(small, [big], 2, 1e6)
    assert _fits(big, [], 2, 1e6)


# ------------------------------------------------------------------ gaps

def _frame(results):
    """The results' frame without the best-validation-loss rows (tested on their own)."""
    f = results_frame(results)
    return f[f.metric != "val_loss"]


def _result(task, seed, metrics: dict, size="16x1", prior=False, epochs_factor=1.0):
    job = Job("train", task, size, 64, prior, seed, 1e-3, epochs_factor=epochs_factor)
    tasks = [t for t in {"u": ["u"], "g": ["g"], "ug": ["u", "g"]}[task] if t in metrics]
    return job.id, {
        "settings": {"job": job.to_dict()}, "params": 1000, "train_time_s": 1.0,
        "best": {t: {"val_loss": 1.0} for t in tasks},
        "metrics": {t: {"in_dist": {m: {"value": v, "se": 0.01, "n": 100} for m, v in metrics[t].items()}}
                    for t in tasks}}


def test_gap_is_signed_so_that_positive_means_unified_helps():
    results = {}
    for seed, noise in enumerate((0.0, 0.01, -0.01)):
        for task, m in (("u", {"u": {"gqa_acc": 50.0 + noise}}), ("g", {"g": {"image_nll": 3.0 + noise}}),
                        ("ug", {"u": {"gqa_acc": 55.0 + 2 * noise}, "g": {"image_nll": 3.5 + 2 * noise}})):
            k, v = _result(task, seed, m)
            results[k] = v
    gaps = gap_frame(_frame(results))
    by = gaps.groupby(["task", "metric"]).gap.mean()
    assert by[("u", "gqa_acc")] == pytest.approx(5.0)     # higher accuracy: +
    assert by[("g", "image_nll")] == pytest.approx(-0.5)  # higher NLL: -
    summary = summarise_gaps(gaps).set_index("metric")
    assert summary.loc["gqa_acc", "verdict"] == "synergy" and summary.loc["gqa_acc", "n_seeds"] == 3
    assert summary.loc["image_nll", "verdict"] == "cost"
    assert summary.loc["gqa_acc", "ci_lo"] < 5.0 < summary.loc["gqa_acc", "ci_hi"]


def test_step_matched_gap_compares_with_the_control_and_leaves_the_plain_gap_alone():
    results = {}
    for seed, d in enumerate((0.0, 0.01, -0.01)):
        for task, m, ef in (("u", {"u": {"answer_nll": 0.30 + d}}, 1.0), ("u", {"u": {"answer_nll": 0.20 + d}}, 2.0),
                            ("ug", {"u": {"answer_nll": 0.25 + d}}, 1.0)):
            k, v = _result(task, seed, m, epochs_factor=ef)
            results[k] = v
    frame = _frame(results)
    plain, matched = gap_frame(frame), gap_frame(frame, 2.0)
    assert len(plain) == len(matched) == 3  # one isolated partner per seed, not two
    assert plain.gap.mean() == pytest.approx(0.05) and matched.gap.mean() == pytest.approx(-0.05)


def test_report_adds_the_step_matched_table_figure_and_verdict(tmp_path):
    from uvlm.sweep.run import report
    cfg = _cfg(tmp_path, "  step_matched: true")
    results = {}
    for size in ("16x1", "32x2"):
        for seed, d in enumerate((0.0, 0.01)):
            for task, ef, u, g in (("u", 1.0, 50.0, None), ("g", 1.0, None, 3.0), ("u", 2.0, 52.0, None),
                                   ("g", 2.0, None, 2.9), ("ug", 1.0, 51.0, 2.95)):
                m = {k: {name: v + d} for k, name, v in (("u", "gqa_acc", u), ("g", "image_nll", g)) if v is not None}
                k, v = _result(task, seed, m, size=size, epochs_factor=ef)
                results[k] = v
    metrics = report(cfg, results, tmp_path / "out")
    assert (tmp_path / "out" / "synergy_step_matched.png").exists()
    table = (tmp_path / "out" / "step_matched.csv").read_text()
    assert "gqa_acc" in table and "image_nll" in table
    gaps = {(r["size"], r["metric"]): r["gap"] for r in metrics["step_matched"]}
    assert gaps[("16x1", "gqa_acc")] == pytest.approx(-1.0) and gaps[("32x2", "image_nll")] == pytest.approx(-0.05)
    assert "## Against step-matched isolated runs" in (tmp_path / "out" / "verdict.md").read_text()


def test_gap_within_seed_spread_is_not_a_verdict():
    results = {}
    for seed, d in enumerate((1.0, -1.0, 0.5)):
        for task, m in (("u", {"u": {"gqa_acc": 50.0}}), ("ug", {"u": {"gqa_acc": 50.0 + d}})):
            k, v = _result(task, seed, m)
            results[k] = v
    summary = summarise_gaps(gap_frame(_frame(results)))
    assert list(summary.verdict) == ["within noise"]


def test_zero_crossings_interpolate_in_log_x():
    assert zero_crossings([1e6, 1e8], [-1.0, 1.0]) == [pytest.approx(1e7)]
    assert zero_crossings([1, 2, 3], [0.0, 0.0, 0.0]) == []
    assert zero_crossings([1, 2], [1.0, 2.0]) == []


# ------------------------------------------------------------------ pieces a job uses

def test_figure_clips_only_the_intervals_of_points_that_lost_a_seed():
    import pandas as pd

    from uvlm.sweep.figures import _short, _ylim
    full = pd.DataFrame({"gap": [0.1, -0.05], "ci_lo": [0.0, -0.1], "ci_hi": [0.2, 0.0], "n_seeds": [3, 3]})
    assert _ylim(full) is None
    lost = pd.concat([full, pd.DataFrame({"gap": [0.02], "ci_lo": [-5.0], "ci_hi": [5.0], "n_seeds": [2]})])
    lo, hi = _ylim(lost)
    assert -0.2 < lo < -0.1 and 0.2 < hi < 0.3  # the full-seed intervals, padded; not +-5
    assert (_short(2.2e7), _short(3100), _short(5.0)) == ("22M", "3.1k", "5")


def test_train_samples_takes_a_prefix(tiny_world):
    from uvlm.train.setup import load_task_data, vocab_for
    cfg = load_config(tiny_world, {"train": {"train_samples": 10}})
    vocab, tok = vocab_for(cfg)
    data = load_task_data(cfg, cfg.run("ug_base"), tok, vocab)
    assert len(data["u"]["train"]) == 10 and len(data["g"]["train"]) == 10
    assert len(data["u"]["val"]) == cfg.world.n_val
    with pytest.raises(ConfigError, match="train.train_samples"):
        bad = load_config(tiny_world, {"train": {"train_samples": 10_000}})
        load_task_data(bad, bad.run("u_base"), tok, vocab)


def test_text_prior_sees_no_image_and_seeds_a_run(tiny_world, tmp_path):
    from uvlm.tokens.sequences import BOI
    from uvlm.train.setup import build_model, vocab_for
    from uvlm.train.text_prior import text_split, train_text_prior
    cfg = load_config(tiny_world, {"text_prior": {"epochs": 0.5}})
    vocab, tok = vocab_for(cfg)
    split = text_split(cfg, tok, "train")
    assert int((split.input_ids >= vocab.image_token_start).sum()) == 0 and int((split.input_ids == BOI).sum()) == 0
    summary = train_text_prior(cfg, seed=0, lr=1e-3, out_dir=tmp_path / "prior")
    assert math.isfinite(summary["val_text_loss"]) and summary["steps"] >= 1
    run_cfg = load_config(tiny_world, {"model": {"init_from": str(tmp_path / "prior" / "model")}})
    model = build_model(run_cfg, vocab, run_cfg.run("ug_base"), seed=3)
    from uvlm.model.decoder import UVLM
    prior = UVLM.from_pretrained(tmp_path / "prior" / "model")
    assert all(np.allclose(model.state_dict()[k], v) for k, v in prior.state_dict().items())
    wrong = load_config(tiny_world, {"model": {"init_from": str(tmp_path / "prior" / "model"), "d_model": 64,
                                               "ffn_hidden": 128}})
    with pytest.raises(CheckpointError, match="d_model"):
        build_model(wrong, vocab, wrong.run("u_base"), seed=0)


def test_seed_changes_initialisation(tiny_world):
    from uvlm.train.setup import build_model, vocab_for
    cfg = load_config(tiny_world)
    vocab, _ = vocab_for(cfg)
    a, b = (build_model(cfg, vocab, cfg.run("u_base"), seed=s).tok_emb.weight for s in (0, 1))
    assert not np.allclose(a.detach(), b.detach())


# ------------------------------------------------------------------ end to end

SMALL = """
sweep:
  sizes: ["16x1"]
  seeds: [0, 1]
  data_sizes: [32, 64]
  text_prior: [false, true]
  prior_sizes: ["16x1"]
  lr_check_factors: [2.0]
"""


def test_sweep_end_to_end_then_resumes_without_work(tiny_world, tmp_path):
    from uvlm.sweep.run import report, run_priors, run_sweep, stored_results
    from uvlm.sweep.job import finished
    params = tmp_path / "params.yaml"
    base = open(tiny_world).read()
    params.write_text(base + SMALL)
    priors = run_priors(str(params), progress=False)
    assert priors["n_priors"] == 2
    ran = run_sweep(str(params), progress=False)
    cfg = load_config(str(params))
    assert ran["run"]["n_jobs"] == len(train_jobs(cfg)) == 12 + 6 + 2
    for res in ran["results"].values():
        assert res["params"] > 0 and res["device_name"]
        for subsets in res["metrics"].values():
            for metrics in subsets.values():
                assert all(v["value"] is None or math.isfinite(v["value"]) for v in metrics.values())
    metrics = report(cfg, ran["results"], tmp_path / "out")
    assert metrics["n_train_jobs"] == 20 and metrics["size_axis"]
    verdict = (tmp_path / "out" / "verdict.md").read_text()
    assert "Size axis, with the text prior" in verdict and "Learning-rate rule" in verdict
    for name in ("synergy_vs_params.png", "synergy_vs_data.png", "lr_check.png", "synergy_vs_params.csv"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    json.dumps(metrics, default=str)
    # Every job is reused by a second call: nothing is trained again.
    again = run_sweep(str(params), progress=False)
    assert again["run"]["n_reused"] == again["run"]["n_jobs"] and not again["run"]["done"]
    # A changed setting makes the affected jobs stale, and only those.
    params.write_text(base + SMALL.replace("data_sizes: [32, 64]", "data_sizes: [16, 64]"))
    changed = load_config(str(params))
    stale = [j for j in train_jobs(changed) if not finished(str(params), j)]
    assert stale and all(j.data_n == 16 for j in stale)
    results, missing = stored_results(changed)
    assert sorted(missing) == sorted(j.id for j in stale)
    partial = report(changed, results, tmp_path / "partial", missing=missing)
    assert partial["missing_jobs"] and "Incomplete sweep" in (tmp_path / "partial" / "verdict.md").read_text()


def test_pool_children_die_with_a_killed_pool(tmp_path):
    """A pool killed from outside (no cleanup runs) must not leave its jobs training on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux-only")
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    pool = ("import sys; from uvlm.core.process_pool import run_processes; "
            f"run_processes({{'a': [sys.executable, '-c', {child!r}]}}, 1, {str(tmp_path / 'logs')!r}, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", pool])
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child_pid, signal.SIGKILL)
    pytest.fail("the job process outlived its killed pool")


def test_the_best_validation_loss_is_a_gap_metric_of_each_task():
    results = {}
    for task, best in (("u", {"u": 0.09}), ("ug", {"u": 0.03, "g": 3.0}), ("g", {"g": 3.1})):
        k, v = _result(task, 0, {})
        v["best"] = {t: {"val_loss": x, "step": 10} for t, x in best.items()}
        results[k] = v
    gaps = gap_frame(results_frame(results)).set_index("task")
    assert gaps.loc["u", "gap"] == pytest.approx(0.06) and gaps.loc["g", "gap"] == pytest.approx(0.1)
    assert set(gaps.metric) == {"val_loss"}


def test_converged_jobs_evaluate_each_epoch_and_cap_at_max_epochs(tmp_path):
    from uvlm.sweep.plan import job_overrides, train_jobs
    cfg = _cfg(tmp_path, "  patience: 3\n  max_epochs: 5.0\n  size_axis_data: 32\n  lr_check_sizes: [\"32x2\"]")
    jobs = train_jobs(cfg)
    size_axis = {j.data_n for j in jobs if j.size == "32x2" and j.lr_factor == 1.0}  # 16x1 is the data axis
    assert size_axis == {32}  # the size axis runs at size_axis_data, not at the largest data size
    assert {j.size for j in jobs if j.lr_factor != 1.0} == {"32x2"}
    job = next(j for j in jobs if j.task == "u" and j.data_n == 64)
    tr = job_overrides(cfg, job)["train"]
    epoch = -(-64 // cfg.sweep.batch_size)
    assert tr["patience"] == 3 and tr["max_epochs"] == 5.0 and tr["eval_every"] == epoch


@pytest.mark.parametrize("lines, key", [("  patience: 3", "sweep.patience"),
                                        ("  size_axis_data: 7", "sweep.size_axis_data"),
                                        ("  lr_check_sizes: [\"99x9\"]", "sweep.lr_check_sizes")])
def test_converged_sweep_settings_are_checked(tmp_path, lines, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(tmp_path, lines)
