"""End to end on a tiny world: a random tiny model through every benchmark and G metric."""
import json

import numpy as np
import pytest
import torch

from uvlm.core import config as C
from uvlm.core.errors import CheckpointError, MissingInputError
from uvlm.core.io import save_npz, write_json
from uvlm.core.schema import build

SEED = 0
N_U_TEST, N_G_TEST = 10, 8
RUNS = {"ug_mix": {"task": "ug", "accel": "himix+hmgen", "share": "partial"},
        "u_base": {"task": "u", "accel": "base"},
        "g_hmgen": {"task": "g", "accel": "hmgen"}}


def _cfg(root):
    sections = {
        "paths": {"data": "data", "figures": "figures"},
        "world": {"image_size": 16, "grid": 2, "max_objects": 2, "shapes": ["square", "circle", "triangle", "cross"],
                  "colours": ["red", "green", "blue", "yellow"], "n_transfer_combos": 1, "n_bench": 12,
                  "p_transfer_test": 0.5},
        "probe": {"steps": 2, "n_train": 8, "n_eval": 8, "width": 4, "feature_width": 2},
        "tokenizer": {"codebook_size": 16, "hidden_channels": 8, "code_dim": 4, "res_blocks": 0},
        "model": {"d_model": 16, "n_layers": 4, "n_heads": 2, "n_kv_heads": 2, "ffn_hidden": 32},
        "train": {"seeds": [SEED]},
        "eval": {"batch_size": 8, "n_gen": 6, "n_figure_samples": 3},
        "hmgen": {"k": 1},
    }
    built = {name: build(C.section_class(name), sections.get(name), prefix=name) for name in C.SECTIONS}
    built["paths"].data = (root / "data").resolve()
    built["paths"].figures = (root / "figures").resolve()
    runs = {k: build(C.RunSpec, v, prefix=f"runs.{k}") for k, v in RUNS.items()}
    return C.Config(preset="tiny", seed=SEED, runs=runs, root=root, **built)


def _write_world(cfg):
    from uvlm.world import language as L
    from uvlm.world.benchmarks import make_benchmarks, u_transfer
    from uvlm.probe.model import save_probe, train_probe
    from uvlm.world.text_tokenizer import build_text_tokenizer, save_text_tokenizer
    from uvlm.tokens.vq import init_model, save_vq
    from uvlm.world.scenes import World, render_scenes, stream

    wc = cfg.world
    world = World(wc, SEED)
    rng = stream(SEED, "test")
    splits = make_benchmarks(world, SEED, 12, [world.sample_scene(rng, "u") for _ in range(20)])
    u_test = []
    for _ in range(N_U_TEST):
        scene = world.sample_eval_scene(rng, "u")
        s = L.understanding_sample(scene, world, rng, training=False)
        u_test.append({"scene": scene, **s, "transfer": u_transfer(world, scene, s["instruction"], s["answer"])})
    g_test = []
    for _ in range(N_G_TEST):
        scene = world.sample_eval_scene(rng, "g")
        g_test.append({"scene": scene, "prompt": L.generation_prompt(scene, wc, rng),
                       "transfer": world.touches_unseen(world.scene_combos(scene), "g")})
    splits.update({"u_test": u_test, "g_test": g_test})

    wdir, tdir = cfg.paths.data / "world", cfg.paths.data / "tokenizer"
    wdir.mkdir(parents=True)
    save_text_tokenizer(build_text_tokenizer(wc), wdir / "text_tokenizer")
    probe, _ = train_probe(wc, cfg.probe, SEED, progress=False)
    (cfg.paths.data / "probe").mkdir(parents=True)
    save_probe(probe, cfg.paths.data / "probe" / "probe.safetensors")
    vq = init_model(cfg.tokenizer, SEED)
    with torch.no_grad():  # spread the codebook so that decoded images depend on the codes
        vq.quantizer.codebook.copy_(torch.randn(vq.quantizer.codebook.shape, generator=torch.Generator().manual_seed(0)))
    save_vq(vq, tdir / "vq.safetensors")
    codes = {}
    for name, recs in splits.items():
        (wdir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        images = render_scenes([r["scene"] for r in recs], wc)
        save_npz(wdir / f"{name}.npz", images=images)
        codes[name] = vq.encode(images).astype(np.int16)
    codes["u_val"] = codes["u_test"]
    save_npz(tdir / "codes.npz", **codes)
    return splits


def _write_run(cfg, run, tasks):
    from uvlm.train.setup import build_model, vocab_for
    vocab, _ = vocab_for(cfg)
    out = cfg.paths.data / "runs" / run / f"seed{SEED}"
    model = build_model(cfg, vocab, cfg.run(run), SEED)
    for t in tasks:
        model.save_pretrained(out / f"best_{t}")
    write_json(out / "train_summary.json", {"steps": 40, "best": {t: {"val_loss": 1.5, "step": 20} for t in tasks}})


@pytest.fixture(scope="module", autouse=True)
def _two_threads():
    """This module's tests run with 2 threads, and leave the count as they found it: a count left
    behind changes the rounding of every later test's matmuls."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cfg = _cfg(root)
    splits = _write_world(cfg)
    _write_run(cfg, "ug_mix", "ug")
    _write_run(cfg, "g_hmgen", "g")
    return cfg, splits


def test_evaluate_unified_run_end_to_end(setup):
    from uvlm.eval.evaluate import evaluate_run
    cfg, splits = setup
    threads = torch.get_num_threads()
    m = evaluate_run(cfg, "ug_mix", SEED, progress=False)
    assert torch.get_num_threads() == threads  # eval.threads applies inside the call only
    path = cfg.paths.data / "evals" / "ug_mix" / f"seed{SEED}" / "metrics.json"
    assert json.loads(path.read_text())["run"] == "ug_mix"
    assert m["checkpoints"]["u"]["step"] == 20 and m["checkpoints"]["g"]["dir"] == "best_g"
    u, g = m["u"], m["g"]
    n_t = sum(r["transfer"] for r in splits["bench_gqa"])
    assert u["gqa"]["all"]["n"] == len(splits["bench_gqa"]) and u["gqa"]["transfer"]["n"] == n_t
    for bench in ("gqa", "pope", "seed"):
        for subset in ("all", "in_dist", "transfer"):
            acc = u[bench][subset]["acc"]
            assert acc is None or 0 <= acc <= 100
    assert 0 <= u["mme"]["all"]["perception"] <= u["mme"]["all"]["perception_max"]
    assert u["u_test"]["all"]["nll"] > 0
    gen = g["generation"]["all"]
    assert gen["n"] == 6 and gen["fd"] > 0 and gen["fd_recon_floor"] > 0 and gen["fd"] != gen["fd_recon_floor"]
    assert 0 <= gen["attr_acc"] <= 100
    assert g["nll"]["all"]["nll"] > 0 and g["nll"]["all"]["n_tokens"] == N_G_TEST * 16
    assert set(m["table"]) == {"all", "in_dist", "transfer"} and m["table"]["all"]["GQA"] == u["gqa"]["all"]["acc"]
    assert m["timing"]["total_s"] > 0
    with np.load(path.parent / "samples.npz", allow_pickle=False) as z:
        assert z["images"].shape == (3, 16, 16, 3) and z["images"].dtype == np.uint8
        assert z["prompts"][0] == splits["g_test"][0]["prompt"]


def test_evaluation_is_deterministic(setup):
    from uvlm.eval.evaluate import evaluate_run
    cfg, _ = setup
    a = evaluate_run(cfg, "g_hmgen", SEED, out_path=cfg.paths.data / "a.json", progress=False)
    b = evaluate_run(cfg, "g_hmgen", SEED, out_path=cfg.paths.data / "b.json", progress=False)
    assert "u" not in a and a["g"] == b["g"]


def test_exact_match_agrees_with_greedy_decoding(setup):
    """The teacher-forced criterion equals free-running greedy decoding, item by item."""
    from uvlm.eval import scoring as S
    from uvlm.eval.evaluate import EvalContext, _qa_split, batched
    from uvlm.model.decoder import UVLM
    from uvlm.train.setup import run_plans
    cfg, _ = setup
    ctx = EvalContext(cfg)
    recs, codes = ctx.split("bench_pope")
    plan = run_plans(cfg, cfg.run("ug_mix"))["u"]  # HiMix: logits of text rows only
    model = UVLM.from_pretrained(cfg.paths.data / "runs" / "ug_mix" / f"seed{SEED}" / "best_u")
    split = _qa_split(ctx, [(r["question"], r["answer"]) for r in recs], codes)
    first = [int((split.labels[i] != -100).nonzero()[0]) for i in range(len(split))]
    # Wire the model to answer: <last question word> -> "yes" -> <eos>, so "yes" items are
    # right and "no" items wrong (both cases get checked).
    last_q = {int(split.input_ids[i, f - 1]) for i, f in enumerate(first)}
    yes, eos, d = ctx.token_id("yes"), 2, model.config.d_model
    with torch.no_grad():
        for tok in last_q:
            model.tok_emb.weight[tok] = torch.eye(d)[0]
        model.tok_emb.weight[yes] = torch.eye(d)[1]
        model.lm_head.weight[yes] = 20 * torch.eye(d)[0]
        model.lm_head.weight[eos] = 20 * torch.eye(d)[1]
    exact = batched(model, split, plan, ctx, S.answer_stats)["exact"]
    assert 0 < exact.sum() < len(exact)
    for i, f in enumerate(first):
        seq = split.input_ids[i, :f].tolist()
        gold = split.input_ids[i, f:int(split.lengths[i])].tolist()
        with torch.no_grad():
            for _ in range(len(gold)):
                seq.append(int(model(torch.tensor([seq]), plan=plan).logits[0, -1].argmax()))
        assert (seq[f:] == gold) == bool(exact[i])


def test_aggregate_over_seeds_and_table(setup):
    from uvlm.eval.evaluate import evaluate_seeds, table_frame
    cfg, _ = setup
    res = evaluate_seeds(cfg, "g_hmgen", out_path=cfg.paths.figures / "metrics" / "g_hmgen.json", progress=False)
    assert res["aggregate"]["g"]["generation"]["all"]["fd"]["n"] == 1
    committed = json.loads((cfg.paths.figures / "metrics" / "g_hmgen.json").read_text())
    assert committed["machine"]["cpu"] and committed["machine"]["cores"] >= 1  # scores depend on the host
    df = table_frame(res)
    assert "FID" in df.columns and "GQA" not in df.columns


def test_missing_checkpoint_names_the_stage(setup):
    from uvlm.eval.evaluate import evaluate_run
    cfg, _ = setup
    with pytest.raises(MissingInputError, match="train@u_base"):
        evaluate_run(cfg, "u_base", SEED, progress=False)
    run = cfg.paths.data / "runs" / "u_base" / f"seed{SEED}"
    write_json(run / "train_summary.json", {"steps": 1, "best": {"u": {"step": 1, "val_loss": 1.0}}})
    with pytest.raises(MissingInputError, match="best_u"):
        evaluate_run(cfg, "u_base", SEED, progress=False)
    (run / "best_u").mkdir()
    (run / "best_u" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="train@u_base"):
        evaluate_run(cfg, "u_base", SEED, progress=False)


def test_notebook_is_stored_clean_with_a_parameters_cell():
    import nbformat
    from pathlib import Path
    nb = nbformat.read(Path(__file__).parents[1] / "notebooks" / "05_eval.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert 'params_path = "params.yaml"' in code[0].source and 'run = "u_base"' in code[0].source
    assert all(not c.outputs and c.execution_count is None for c in code)
