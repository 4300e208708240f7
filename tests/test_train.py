"""Training loop: determinism, exact resume, refusal on changed settings, NaN stop."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from uvlm.core.config import load_config
from uvlm.core.errors import CheckpointError, ConfigError, UVLMError
from uvlm.core.io import load_tensors
from uvlm.train.loop import train_run


def weights(run_dir: Path) -> dict:
    tensors, _ = load_tensors(run_dir / "final" / "model.safetensors")
    return tensors


def fresh_cfg(params, tmp_path, **over):
    cfg = load_config(params, over or None)
    return cfg


@pytest.mark.parametrize("run", ["ug_base", "ug_partial"])
def test_resume_is_bit_identical(tiny_world, tmp_path, run):
    cfg = load_config(tiny_world)
    full = train_run(cfg, run, 0, out_dir=tmp_path / "full", progress=False)
    part = train_run(cfg, run, 0, out_dir=tmp_path / "part", stop_after=5, progress=False)
    assert not part["finished"]
    done = train_run(cfg, run, 0, out_dir=tmp_path / "part", progress=False)
    assert done["finished"] and full["steps"] == done["steps"]
    a, b = weights(tmp_path / "full"), weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full["best"] == done["best"]


def test_a_finished_run_keeps_no_optimizer_state_and_is_reused(tiny_world, tmp_path):
    cfg = load_config(tiny_world)
    first = train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "last" / "optim.safetensors").exists()
    assert (tmp_path / "r" / "snapshots").is_dir()
    before = weights(tmp_path / "r")
    again = train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)
    assert again["finished"] and again["best"] == first["best"]
    after = weights(tmp_path / "r")
    assert all(torch.equal(before[k], after[k]) for k in before)
    train_run(cfg, "u_base", 5, out_dir=tmp_path / "other_seed", progress=False)
    assert not (tmp_path / "other_seed" / "snapshots").exists()  # the attention figure reads the first seed


def test_same_seed_same_result_other_seed_differs(tiny_world, tmp_path):
    cfg = load_config(tiny_world)
    train_run(cfg, "u_base", 0, out_dir=tmp_path / "a", progress=False)
    train_run(cfg, "u_base", 0, out_dir=tmp_path / "b", progress=False)
    train_run(cfg, "u_base", 1, out_dir=tmp_path / "c", progress=False)
    a, b, c = (weights(tmp_path / x) for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_with_changed_settings_refuses(tiny_world, tmp_path):
    cfg = load_config(tiny_world)
    train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", stop_after=3, progress=False)
    changed = load_config(tiny_world, {"train": {"lr": 0.5}})
    with pytest.raises(UVLMError, match="train.lr"):
        train_run(changed, "u_base", 0, out_dir=tmp_path / "r", progress=False)


def test_the_stage_trains_a_finished_run_of_other_settings_again_but_keeps_a_cut_one(tiny_world, tmp_path):
    """Run folders persist across `dvc repro`: a finished run (which DVC cached) of other settings
    is trained again, a cut one (not cached anywhere) is refused, never deleted."""
    from uvlm.train.loop import drop_superseded_run
    from uvlm.train.setup import run_dir
    cfg = load_config(tiny_world, {"paths": {"data": str(tmp_path)}})
    for sub in ("world", "tokenizer"):
        (tmp_path / sub).symlink_to(load_config(tiny_world).paths.data / sub)
    changed = load_config(tiny_world, {"paths": {"data": str(tmp_path)}, "train": {"lr": 0.002}})
    out = run_dir(cfg, "u_base", 0)
    train_run(cfg, "u_base", 0, stop_after=3, progress=False)
    assert not drop_superseded_run(changed, "u_base", 0) and (out / "last").exists()
    with pytest.raises(UVLMError, match=r"(?s)saved at step 3.*train.lr.*Put those values back"):
        train_run(changed, "u_base", 0, progress=False)
    train_run(cfg, "u_base", 0, progress=False)
    assert not drop_superseded_run(cfg, "u_base", 0)  # same settings: reused as it is
    assert drop_superseded_run(changed, "u_base", 0) and not out.exists()


def test_corrupt_checkpoint_is_named(tiny_world, tmp_path):
    cfg = load_config(tiny_world)
    train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", stop_after=3, progress=False)
    (tmp_path / "r" / "last" / "model" / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_world, tmp_path, monkeypatch):
    cfg = load_config(tiny_world)
    train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", stop_after=4, progress=False)
    kept = (tmp_path / "r" / "last" / "state.json").read_text()
    from uvlm.model import decoder as M
    real = M.UVLM.forward

    def poisoned(self, *a, **k):
        out = real(self, *a, **k)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(M.UVLM, "forward", poisoned)
    with pytest.raises(UVLMError, match="non-finite loss"):
        train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "last" / "state.json").read_text() == kept


def test_non_finite_loss_inside_a_log_block_never_reaches_a_checkpoint(tiny_world, tmp_path, monkeypatch):
    """Losses are read once per block of train.log_every steps; the block ends before every save."""
    cfg = load_config(tiny_world, {"train": {"log_every": 1000, "eval_every": 1000}})
    from uvlm.model import decoder as M
    real, calls = M.UVLM.forward, []

    def poisoned_from_step_6(self, *a, **k):
        out = real(self, *a, **k)
        calls.append(1)
        if len(calls) >= 6:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(M.UVLM, "forward", poisoned_from_step_6)
    with pytest.raises(UVLMError, match="non-finite loss nan at step 5"):
        train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)
    assert '"step": 4' in (tmp_path / "r" / "last" / "state.json").read_text()  # ckpt_every 4; step 8 never saved


class _InfGrad(torch.autograd.Function):
    """The identity forward; an inf gradient backward (the loss itself stays finite)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def test_inf_gradient_on_a_checkpoint_step_never_replaces_the_checkpoint(tiny_world, tmp_path, monkeypatch):
    """Clipping turns an inf gradient into NaN weights while the step's loss is finite: the
    gradient norm is checked before the save, so the checkpoint of step 4 stays the one kept."""
    cfg = load_config(tiny_world)
    train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", stop_after=4, progress=False)
    kept = (tmp_path / "r" / "last" / "model" / "model.safetensors").read_bytes()
    from uvlm.model import decoder as M
    real, calls = M.UVLM.forward, []

    def inf_grad_at_step_8(self, *a, **k):
        out = real(self, *a, **k)
        if self.training:
            calls.append(1)
            if len(calls) == 4:  # step 8 of 8: ckpt_every 4 and the run's end both save here
                out.loss = _InfGrad.apply(out.loss)
        return out

    monkeypatch.setattr(M.UVLM, "forward", inf_grad_at_step_8)
    with pytest.raises(UVLMError, match=r"non-finite gradient norm .* at step 7 .*checkpoint of step 4") as e:
        train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)
    assert "train.lr" in str(e.value)
    assert '"step": 4' in (tmp_path / "r" / "last" / "state.json").read_text()
    assert (tmp_path / "r" / "last" / "model" / "model.safetensors").read_bytes() == kept
    assert not (tmp_path / "r" / "final").exists()
    monkeypatch.setattr(M.UVLM, "forward", real)
    done = train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)  # the kept checkpoint resumes
    assert done["finished"] and all(torch.isfinite(w).all() for w in weights(tmp_path / "r").values())


def test_non_finite_first_step_says_nothing_is_kept(tiny_world, tmp_path, monkeypatch):
    cfg = load_config(tiny_world)
    from uvlm.model import decoder as M
    real = M.UVLM.forward

    def poisoned(self, *a, **k):
        out = real(self, *a, **k)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(M.UVLM, "forward", poisoned)
    with pytest.raises(UVLMError, match="at step 0") as e:
        train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)
    assert "No checkpoint exists" in str(e.value) and "is kept" not in str(e.value)
    assert "rather than train.lr" in str(e.value)


def test_non_finite_weights_are_never_saved_over_a_checkpoint(tiny_world, tmp_path):
    from uvlm.train.checkpoint import save_model_dir, save_training_state
    from uvlm.train.setup import build_model, vocab_for
    cfg = load_config(tiny_world)
    model = build_model(cfg, vocab_for(cfg)[0], cfg.run("u_base"), 0)
    save_training_state(tmp_path / "last", model, None, {"step": 1})
    save_model_dir(model, tmp_path / "best")
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    for save in (lambda: save_training_state(tmp_path / "last", model, None, {"step": 2}),
                 lambda: save_model_dir(model, tmp_path / "best")):
        with pytest.raises(CheckpointError, match="NaN or inf"):
            save()
    assert '"step": 1' in (tmp_path / "last" / "state.json").read_text()
    assert (tmp_path / "best" / "model.safetensors").exists()


def test_gradient_accumulation_matches_one_batch(tiny_world, tmp_path):
    """Micro-batches (row slices) add up to the whole batch's gradient: the loss is summed per
    sample and divided by the whole batch's target count."""
    for accum in (1, 2):
        cfg = load_config(tiny_world, {"train": {"grad_accum": accum}})
        train_run(cfg, "ug_base", 0, out_dir=tmp_path / f"accum{accum}", progress=False)
    a, b = weights(tmp_path / "accum1"), weights(tmp_path / "accum2")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)


def test_compiled_training_runs_and_tracks_eager(tiny_world, tmp_path):
    """train.compile: static batch shapes and a fixed LM-head budget, so the unified HiMix +
    HMGen run compiles once per plan and learns what the eager run learns."""
    import csv
    import torch._dynamo
    torch._dynamo.reset()
    for compiled in (False, True):
        cfg = load_config(tiny_world, {"train": {"compile": compiled}})
        train_run(cfg, "ug_partial", 0, out_dir=tmp_path / f"c{compiled}", progress=False)
    losses = {c: [float(r["loss"]) for r in csv.DictReader((tmp_path / f"c{c}" / "train_log.csv").open())]
              for c in (False, True)}
    assert len(losses[True]) == len(losses[False])
    for a, b in zip(losses[False], losses[True]):
        assert abs(a - b) < 1e-3 * max(1.0, abs(a)), (a, b)


def test_cuda_graphs_need_compile_and_are_skipped_on_cpu(tiny_world):
    from uvlm.train.loop import cuda_graphs_on
    with pytest.raises(ConfigError, match=r"train\.cuda_graphs.*train\.compile: true"):
        load_config(tiny_world, {"train": {"cuda_graphs": True}})
    cfg = load_config(tiny_world, {"train": {"compile": True, "cuda_graphs": True}})
    with pytest.warns(UserWarning, match="CUDA graphs need a GPU"):
        assert cuda_graphs_on(cfg.train, "cpu") is False
    assert cuda_graphs_on(cfg.train, "cuda") is True
    assert cuda_graphs_on(load_config(tiny_world).train, "cuda") is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_graph_training_tracks_compiled_training(tiny_world, tmp_path):
    """Replayed graphs compute the compiled step: same losses, every plan of a unified run."""
    import csv
    import torch._dynamo
    torch._dynamo.reset()
    for graphs in (False, True):
        cfg = load_config(tiny_world, {"train": {"compile": True, "cuda_graphs": graphs, "device": "cuda",
                                                 "precision": "fp32"}})
        train_run(cfg, "ug_partial", 0, out_dir=tmp_path / f"g{graphs}", progress=False)
    losses = {g: [float(r["loss"]) for r in csv.DictReader((tmp_path / f"g{g}" / "train_log.csv").open())]
              for g in (False, True)}
    assert len(losses[True]) == len(losses[False]) > 2
    for a, b in zip(losses[False], losses[True]):
        assert abs(a - b) < 1e-3 * max(1.0, abs(a)), (a, b)


def test_static_target_budget_leaves_the_summed_loss_unchanged():
    from uvlm.model.decoder import UVLM, UVLMConfig
    from uvlm.train.loop import static_target_budget
    cfg = UVLMConfig(vocab_size=64, image_token_start=32, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)
    model = UVLM(cfg, seed=0)
    ids = torch.randint(6, 64, (3, 20))
    labels = torch.full_like(ids, -100)
    labels[0, 15:], labels[1, 12:], labels[2, 18:] = ids[0, 15:], ids[1, 12:], ids[2, 18:]
    sizes = model.host_sizes(ids, labels, model.vanilla_plan())
    budget = static_target_budget(sizes, slice(0, 3), 8)
    assert budget[1] == 24 > sizes[1]
    exact = model(ids, labels=labels, loss_reduction="sum_per_sample", host_sizes=sizes).loss
    bounded = model(ids, labels=labels, loss_reduction="sum_per_sample", host_sizes=budget).loss
    torch.testing.assert_close(exact, bounded)


def test_log_block_size_changes_only_the_step_times(tiny_world, tmp_path):
    import csv
    for every in (1, 7):
        cfg = load_config(tiny_world, {"train": {"log_every": every}})
        train_run(cfg, "ug_base", 0, out_dir=tmp_path / f"every{every}", progress=False)
    a, b = weights(tmp_path / "every1"), weights(tmp_path / "every7")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = {every: list(csv.DictReader((tmp_path / f"every{every}" / "train_log.csv").open())) for every in (1, 7)}
    assert len(rows[1]) == len(rows[7]) > 7
    for r1, r7 in zip(rows[1], rows[7]):
        assert {k: r1[k] for k in ("step", "task", "loss", "lr")} == {k: r7[k] for k in ("step", "task", "loss", "lr")}
        assert float(r7["step_time_s"]) > 0


def test_unknown_run_names_the_grid(tiny_world):
    cfg = load_config(tiny_world)
    with pytest.raises(ConfigError, match="run"):
        train_run(cfg, "no_such_run", 0, progress=False)


def test_cuda_request_without_cuda_is_clear(tiny_world):
    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    cfg = load_config(tiny_world, {"train": {"device": "cuda"}})
    with pytest.raises(ConfigError, match="train.device"):
        train_run(cfg, "u_base", 0, progress=False)


def test_train_log_has_rates_and_flops(tiny_world, tmp_path):
    import csv
    cfg = load_config(tiny_world)
    train_run(cfg, "ug_base", 0, out_dir=tmp_path / "r", progress=False)
    rows = list(csv.DictReader((tmp_path / "r" / "train_log.csv").open()))
    assert {r["task"] for r in rows} == {"u", "g"}
    assert all(float(r["tokens_per_s"]) > 0 and float(r["flops_per_step"]) > 0 for r in rows)


def test_flops_per_step_do_not_depend_on_where_a_run_resumed(tiny_world, tmp_path):
    import csv
    cfg = load_config(tiny_world)
    full = train_run(cfg, "ug_base", 0, out_dir=tmp_path / "full", progress=False)
    for cut in (3, 5):
        train_run(cfg, "ug_base", 0, out_dir=tmp_path / "part", stop_after=cut, progress=False)
    train_run(cfg, "ug_base", 0, out_dir=tmp_path / "part", progress=False)
    flops = [[r["flops_per_step"] for r in csv.DictReader((tmp_path / d / "train_log.csv").open())]
             for d in ("full", "part")]
    assert len(flops[0]) == full["steps"] and flops[0] == flops[1]
    summaries = [json.loads((tmp_path / d / "train_summary.json").read_text()) for d in ("full", "part")]
    assert summaries[0]["flops_total"] == summaries[1]["flops_total"]


def test_short_max_seq_len_is_named_when_the_data_loads(tiny_world, tmp_path):
    cfg = load_config(tiny_world, {"model": {"max_seq_len": 16}})
    with pytest.raises(ConfigError, match=r"model.max_seq_len.*u_train.jsonl"):
        train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "last").exists()


def test_out_of_memory_message_suggests_accumulation(tmp_path):
    from uvlm.train.loop import out_of_memory
    from uvlm.train.config import TrainConfig

    err = out_of_memory(TrainConfig(grad_accum=2), 32, "u_base", 0, tmp_path)
    assert "train.grad_accum=4" in str(err) and "resumes" in str(err)


def test_more_processes_than_gpus_is_named(tiny_world):
    from uvlm.train.loop import launch_run

    cfg = load_config(tiny_world, {"train": {"num_processes": 64}})
    with pytest.raises(ConfigError, match="train.num_processes"):
        launch_run(cfg, "u_base", 0)


def test_parallel_seeds_train_the_same_runs_as_one_after_another(tiny_world, tmp_path):
    import yaml

    from uvlm.train.setup import run_dir
    from uvlm.train.loop import launch_seeds

    # The seed processes read a params file: the tiny project's, with its own run name so that
    # its folders are new, and one thread per process on both paths so the weights are identical.
    doc = yaml.safe_load(Path(tiny_world).read_text())
    doc["runs"]["u_par"] = {"task": "u", "accel": "base"}
    doc["train"] = {"seeds": [0, 1], "threads": 1, "parallel_seeds": 2}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    cfg = load_config(str(params))
    seq = [train_run(cfg, "u_par", s, out_dir=tmp_path / f"seq{s}", progress=False) for s in (0, 1)]
    par = launch_seeds(cfg, "u_par", str(params), progress=False)
    assert [p["seed"] for p in par] == [0, 1] and all(p["finished"] for p in par)
    assert [p["steps"] for p in par] == [p["steps"] for p in seq]
    for s in (0, 1):
        a, b = weights(tmp_path / f"seq{s}"), weights(run_dir(cfg, "u_par", s))
        assert all(torch.equal(a[k], b[k]) for k in a), s
    assert (run_dir(cfg, "u_par", 0).parent / "logs" / "seed1.log").exists()


def test_a_failed_seed_process_is_reported_with_its_log(tiny_world, tmp_path):
    from uvlm.train.loop import launch_seeds

    cfg = load_config(tiny_world, {"train": {"seeds": [0, 1], "parallel_seeds": 2}})
    # The processes read tiny_world's params, which has no run 'u_missing': both fail, and the
    # error names each one's log rather than a bare exit code.
    cfg.runs["u_missing"] = cfg.runs["u_base"]
    with pytest.raises(UVLMError, match=r"seeds of u_missing: 2 failed[\s\S]*seed0.log[\s\S]*u_missing"):
        launch_seeds(cfg, "u_missing", tiny_world, progress=False)


def test_epochs_factor_trains_a_run_for_that_many_more_steps(tiny_world, tmp_path):
    import yaml
    runs = yaml.safe_load(Path(tiny_world).read_text())["runs"]  # an override's runs: replaces the grid
    cfg = load_config(tiny_world, {"runs": {**runs, "u_long": {"task": "u", "accel": "base", "epochs_factor": 2.0}}})
    base = train_run(cfg, "u_base", 0, out_dir=tmp_path / "base", progress=False)
    longer = train_run(cfg, "u_long", 0, out_dir=tmp_path / "long", progress=False)
    assert longer["steps"] == 2 * base["steps"]


def _stopping(tiny_world, **train):
    return load_config(tiny_world, {"train": {"patience": 1, "max_epochs": 4.0, **train}})


def test_early_stopping_stops_when_validation_stalls(tiny_world, tmp_path):
    # min_delta 0.99: no evaluation after the first can improve by 99%, so with patience 1 the run
    # stops at its second evaluation, far below the cap of 4 epochs.
    cfg = _stopping(tiny_world, min_delta=0.99)
    s = train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)
    ev = cfg.train.eval_every
    assert s["finished"] and s["stopped_early"]
    assert s["steps"] == s["stopped_step"] == 2 * ev < s["cap_steps"]
    assert s["best"]["u"]["step"] == ev  # never a best beyond what the run trained
    assert (tmp_path / "r" / "best_u").is_dir() and (tmp_path / "r" / "final").is_dir()
    import csv
    rows = list(csv.DictReader((tmp_path / "r" / "val_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [ev, 2 * ev]
    assert all(float(r["val_se_u"]) > 0 for r in rows)  # the item noise of each evaluation


def test_without_patience_the_run_trains_to_its_end(tiny_world, tmp_path):
    cfg = load_config(tiny_world, {"train": {"epochs": 2.0}})
    s = train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", progress=False)
    assert not s["stopped_early"] and s["steps"] == s["cap_steps"]
    assert s["best"]["u"]["step"] <= s["steps"]


def test_early_stopping_resumes_where_it_would_have_stopped(tiny_world, tmp_path):
    cfg = _stopping(tiny_world, min_delta=0.99)
    full = train_run(cfg, "u_base", 0, out_dir=tmp_path / "full", progress=False)
    part = train_run(cfg, "u_base", 0, out_dir=tmp_path / "part", stop_after=cfg.train.eval_every, progress=False)
    assert not part["finished"]
    done = train_run(cfg, "u_base", 0, out_dir=tmp_path / "part", progress=False)
    assert done["stopped_early"] and done["steps"] == full["steps"] and done["best"] == full["best"]
    a, b = weights(tmp_path / "full"), weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A stopped run is finished: calling it again trains nothing more.
    again = train_run(cfg, "u_base", 0, out_dir=tmp_path / "part", progress=False)
    assert again["steps"] == full["steps"] and again["stopped_early"]
    assert not (tmp_path / "part" / "last" / "optim.safetensors").exists()


def test_a_unified_run_trains_on_while_either_task_improves():
    from uvlm.train.loop import EarlyStop
    stop = EarlyStop(["g", "u"], patience=2, min_delta=0.01)
    best = {"u": float("inf"), "g": float("inf")}
    for u, g in [(1.0, 3.0), (0.9, 3.1), (0.8, 3.2), (0.7, 3.3)]:  # U improves, G is stale from the 2nd
        for t, v in (("u", u), ("g", g)):
            if stop.update(t, v, best[t]):
                best[t] = v
        assert not stop.done
    for _ in range(2):  # now U stalls too (0.699 is within the 1% min_delta of 0.7)
        stop.update("u", 0.699, best["u"])
        stop.update("g", 3.4, best["g"])
    assert stop.done and stop.stale == {"u": 2, "g": 5}
    assert not EarlyStop(["u"], None, 0.0, {"u": 99}).done  # no patience: never stops


@pytest.mark.parametrize("train, key", [({"patience": 3}, "train.max_epochs"),
                                        ({"max_epochs": 4.0}, "train.max_epochs"),
                                        ({"patience": 0, "max_epochs": 4.0}, "train.patience"),
                                        ({"min_delta": 1.0}, "train.min_delta")])
def test_early_stopping_settings_are_checked(tiny_world, train, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(tiny_world, {"train": train})


def test_a_checkpoint_of_another_worlds_codes_is_never_resumed(tiny_world, tmp_path):
    """A run cut on one world, resumed on another world's codes (another seed, same settings
    otherwise), is refused, naming the world's fingerprint."""
    import shutil

    from conftest import write_tiny_params
    from uvlm.tokens.vq_build import build_tokenizer
    from uvlm.world.build import build_world
    cfg = load_config(tiny_world)
    train_run(cfg, "u_base", 0, out_dir=tmp_path / "r", stop_after=4, progress=False)
    other = load_config(write_tiny_params(tmp_path, "seed: 1\n"))
    build_world(other.world, other.seed, other.paths.data / "world", progress=False)
    build_tokenizer(other.tokenizer, other.seed, other.paths.data / "world", other.paths.data / "tokenizer",
                    progress=False)
    other.seed = cfg.seed  # only the inputs differ, not the settings
    shutil.copytree(tmp_path / "r", tmp_path / "r2")
    with pytest.raises(UVLMError, match=r"inputs\.world: checkpoint '\w+' != now '\w+'"):
        train_run(other, "u_base", 0, out_dir=tmp_path / "r2", progress=False)
