"""The training-step benchmark: every field for every plan, consistent ratios, its outputs,
and clear errors for bad input."""
import json
import math

import pytest
import torch

from uvlm.core import devices
from uvlm.core.config import DEFAULT_RUNS
from uvlm.core.errors import ConfigError, UVLMError
from uvlm.model.flops import count_flops
from uvlm.perf import bench

torch.set_num_threads(1)
TINY = dict(preset="tiny", steps=2, warmup=1, progress=False, device="cpu")  # CPU numbers: fields differ on GPU
FIELDS = ("name", "run", "task", "accel", "setting", "baseline", "device", "plans", "hmgen_k", "batch_size",
          "seq_len", "tokens_per_step", "flops_per_step", "step_times_s", "median_step_s", "iqr_step_s",
          "tokens_per_s", "achieved_flops_per_s", "mfu", "peak_memory_bytes", "saved_activation_bytes",
          "speedup", "speedup_iqr", "speedup_paired_median", "flops_speedup", "speedup_efficiency", "choice_speedup", "error")


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return bench.run_benchmark(out=out, **TINY), out


def test_every_plan_has_every_field(tiny_result):
    result, _ = tiny_result
    rows = {r["run"]: r for r in result["variants"]}
    assert list(rows) == list(DEFAULT_RUNS)
    for name, r in rows.items():
        assert set(FIELDS) <= set(r), name
        assert r["error"] is None and len(r["step_times_s"]) == 2
        assert r["device"] == result["device"]["name"]
        for key in ("median_step_s", "tokens_per_s", "flops_per_step", "speedup", "flops_speedup",
                    "speedup_efficiency", "saved_activation_bytes"):
            assert r[key] is not None and r[key] > 0, (name, key)
        assert r["mfu"] is None and r["peak_memory_bytes"] is None  # CPU: no peak, no allocator stats
    assert result["device"]["type"] == "cpu" and result["device"]["torch"] == torch.__version__
    assert rows["u_himix"]["baseline"] == "u_base" and rows["ug_himix_hmgen_sharepartial"]["baseline"] == "ug_base"
    assert rows["g_hmgen_k3"]["hmgen_k"] == 1  # tiny: 4 layers, K = max(1, round(0.15 * 4))


def test_ratios_are_consistent(tiny_result):
    result, _ = tiny_result
    rows = {r["run"]: r for r in result["variants"]}
    for name, r in rows.items():
        base = rows[r["baseline"]]
        assert r["speedup"] == pytest.approx(base["median_step_s"] / r["median_step_s"])
        assert r["flops_speedup"] == pytest.approx(base["flops_per_step"] / r["flops_per_step"])
        assert r["speedup_efficiency"] == pytest.approx(r["speedup"] / r["flops_speedup"])
        assert r["tokens_per_s"] == pytest.approx(r["tokens_per_step"] / r["median_step_s"])
    for base in ("u_base", "g_base", "ug_base"):
        assert rows[base]["speedup"] == rows[base]["flops_speedup"] == 1.0
    # the accelerators cut FLOPs, and activations with them
    for name in ("u_himix", "g_hmgen_k3", "ug_himix_hmgen_shareall"):
        assert rows[name]["flops_speedup"] > 1
        assert rows[name]["saved_activation_bytes"] < rows[rows[name]["baseline"]]["saved_activation_bytes"]
    # a unified step is one U step plus one G step
    assert rows["ug_base"]["flops_per_step"] == pytest.approx(rows["u_base"]["flops_per_step"]
                                                              + rows["g_base"]["flops_per_step"])


def test_json_markdown_and_figure_are_written(tiny_result):
    result, out = tiny_result
    files = result["files"]
    slug = result["device"]["slug"]
    assert files == {k: str(out / f"{slug}.{k}") for k in ("json", "png", "md")}
    saved = json.loads((out / f"{slug}.json").read_text())
    assert saved["variants"][0]["speedup"] == result["variants"][0]["speedup"]
    md = (out / f"{slug}.md").read_text()
    assert md.strip() == bench.markdown_table(result).strip()
    assert result["device"]["name"] in md
    for name in DEFAULT_RUNS:
        assert f"| {name} |" in md
    assert (out / f"{slug}.png").stat().st_size > 1000


def test_counted_flops_match_torchs_counter():
    """The benchmark's FLOPs per step are what torch counts on the same batch and plan."""
    cfg = bench.bench_config("tiny")
    runs = bench.grid_runs(cfg)
    from uvlm.tokens.sequences import Vocab
    from uvlm.model.decoder import UVLM
    from uvlm.train.setup import model_config, run_plans
    vocab = Vocab(150, cfg.tokenizer.codebook_size)
    gen = torch.Generator().manual_seed(0)
    for name in ("u_himix", "g_hmgen_k3"):
        spec = runs[name]
        (task, plan), = run_plans(cfg, spec).items()
        batch = bench.synthetic_batch(task, 3, 16, vocab, 19, gen)
        model = UVLM(model_config(cfg, vocab, spec))
        counted = count_flops(model, batch.input_ids, batch.labels, plan, loss_reduction="sum_per_sample")
        assert bench.batch_flops(model.config, plan, batch) == pytest.approx(counted["total"], rel=0.02)


def test_grid_from_a_params_file(tmp_path):
    from conftest import write_tiny_params
    result = bench.run_benchmark(params_path=write_tiny_params(tmp_path), plans="g_hmgen", write=False,
                                 steps=1, warmup=0, progress=False)
    assert [r["run"] for r in result["variants"]] == ["g_base", "g_hmgen"]  # the baseline comes along


def test_compare_runs_every_value_of_the_choice():
    result = bench.run_benchmark(plans=["u_himix"], compare="optimizer", write=False, **TINY)
    rows = result["variants"]
    assert [r["setting"]["optimizer"] for r in rows] == ["loop"] * 2 + ["foreach"] * 2 + ["fused"] * 2
    assert all(r["choice_speedup"] > 0 for r in rows)
    assert [r["choice_speedup"] for r in rows[:2]] == [1.0, 1.0]  # the reference
    assert "optimizer buys" in bench.markdown_table(result)


def test_compare_himix_kernels_same_flops_both_timed():
    result = bench.run_benchmark(plans=["u_himix"], compare="himix", write=False, **TINY)
    rows = {(r["run"], r["setting"]["himix"]): r for r in result["variants"]}
    # On CPU the flex kernel is left out (FlexAttention has no CPU backward), and the result says so.
    assert set(rows) == {(run, k) for run in ("u_base", "u_himix") for k in ("mask", "rows", "split")}
    assert any("'flex' left out" in n for n in result["notes"])
    for k in ("rows", "split"):
        assert rows[("u_himix", k)]["flops_per_step"] == rows[("u_himix", "mask")]["flops_per_step"]
    assert all(r["error"] is None and r["median_step_s"] > 0 for r in rows.values())
    assert rows[("u_himix", "mask")]["choice_speedup"] == 1.0 and rows[("u_himix", "split")]["choice_speedup"] > 0
    with pytest.raises(ConfigError, match=r"bench\.himix.*no CPU backward"):
        bench.run_benchmark(plans=["u_himix"], himix="flex", write=False, **TINY)


def test_config_overrides_k_sweep_and_profile():
    result = bench.run_benchmark(plans=["g_hmgen_k3"], hmgen_ks="1", sets=["model.d_model=48", "model.n_heads=2"],
                                 profile=True, write=False, **TINY)
    rows = {r["run"]: r for r in result["variants"]}
    assert list(rows) == ["g_base", "g_hmgen_k3", "g_hmgen_at_k1"]  # the sweep plan comes along
    assert result["settings"]["model"]["d_model"] == 48 and rows["g_hmgen_at_k1"]["hmgen_k"] == 1
    for r in rows.values():
        p = r["profile"]
        assert p["kernels"] > 0 and p["busy_s"] == pytest.approx(sum(p["by_kind_s"].values()))
        assert p["by_kind_s"]["gemm"] > 0 and p["top"]
    assert "Profile of one step" in bench.markdown_table(result)
    with pytest.raises(ConfigError, match=r"bench\.hmgen_ks\[0\].*K <= 1"):
        bench.run_benchmark(hmgen_ks=[2], write=False, **TINY)  # tiny: 4 layers hold one shallow layer
    with pytest.raises(ConfigError, match=r"bench\.sets"):
        bench.run_benchmark(sets=["d_model=48"], write=False, **TINY)


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match=r"bench\.plans\[1\].*nope.*u_himix"):
        bench.run_benchmark(plans=["u_himix", "nope"], write=False, **TINY)
    with pytest.raises(ConfigError, match=r"bench\.precision"):
        bench.run_benchmark(precision="fp16", write=False, **TINY)
    with pytest.raises(ConfigError, match=r"bench\.compare"):
        bench.run_benchmark(compare="everything", write=False, **TINY)
    assert bench.main(["--preset", "tiny", "--plans", "nope"]) == 2  # a message, no traceback
    with pytest.raises(ConfigError, match=r"bench\.cuda_graphs.*off a GPU"):
        bench.settings_of(bench.BenchConfig(compile=True, cuda_graphs=True), "cpu", [])
    with pytest.raises(ConfigError, match=r"bench\.cuda_graphs.*--compile"):
        bench.settings_of(bench.BenchConfig(compare="cuda_graphs"), "cuda", [])
    with pytest.raises(ConfigError, match=r"bench\.values\[1\].*'dense'.*'mask', 'rows', 'split'"):
        bench.settings_of(bench.BenchConfig(compare="himix", values=["rows", "dense"]), "cpu", [])
    with pytest.raises(ConfigError, match=r"bench\.values.*bench\.compare"):
        bench.settings_of(bench.BenchConfig(values=["rows"]), "cpu", [])
    picked = bench.settings_of(bench.BenchConfig(compare="himix", values=["rows", "MASK"]), "cpu", [])
    assert [s.himix for s in picked] == ["mask", "rows"]  # the knob's order: the reference first
    graphs = bench.settings_of(bench.BenchConfig(compile=True, compare="cuda_graphs"), "cuda", [])
    assert [s.cuda_graphs for s in graphs] == [False, True] and all(s.compile for s in graphs)


def test_out_of_memory_becomes_a_clear_error(monkeypatch):
    def oom(self, device):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(bench.Variant, "train_step", oom)
    with pytest.raises(UVLMError, match=r"does not fit.*grad_accum") as err:
        bench.run_benchmark(plans=["u_base"], write=False, **TINY)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_bf16_without_support_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    notes = []
    with pytest.warns(UserWarning, match="no bf16 support"):
        assert devices.resolve_precision("bf16", "cpu", "bench.precision", notes) == "fp32"
    assert notes and devices.resolve_precision("auto", "cpu", "bench.precision", []) == "fp32"


def test_gpu_peak_table():
    assert bench.peak_bf16_flops("NVIDIA H100 80GB HBM3", "cuda") == 989e12
    assert bench.peak_bf16_flops("NVIDIA H100 PCIe", "cuda") == 756e12
    assert bench.peak_bf16_flops("NVIDIA H200", "cuda") == 989e12
    assert bench.peak_bf16_flops("Some Future GPU", "cuda") is None
    assert bench.peak_bf16_flops("NVIDIA H100 80GB HBM3", "cpu") is None
    assert not math.isnan(bench.peak_bf16_flops("NVIDIA A100-SXM4-80GB", "cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_run_reports_memory_and_mfu(tmp_path):
    result = bench.run_benchmark(**{**TINY, "device": "cuda"}, plans=["u_himix"], out=tmp_path)
    for r in result["variants"]:
        assert r["peak_memory_bytes"] > r["saved_activation_bytes"] > 0
        assert (r["mfu"] is None) == (result["device"]["peak_bf16_flops"] is None)
    assert result["device"]["type"] == "cuda" and result["settings"]["settings_run"][0]["precision"] in ("bf16", "fp32")


def test_chunked_timing_queues_steps_and_says_so(tmp_path, monkeypatch):
    calls = []
    real = bench.Variant.train_step
    monkeypatch.setattr(bench.Variant, "train_step", lambda self, device: calls.append(self.name) or real(self, device))
    result = bench.run_benchmark(out=tmp_path, plans="u_himix", chunk=3, **TINY)
    rows = {r["run"]: r for r in result["variants"]}
    assert set(rows) == {"u_base", "u_himix"} and all(len(r["step_times_s"]) == 2 for r in rows.values())
    assert calls.count("u_himix") == 1 + 2 * 3  # one warm-up step, then 2 timings of 3 steps
    assert "3 steps queued back to back" in next(tmp_path.glob("*.md")).read_text()
