"""The scene world: determinism, split semantics, rendering and config errors."""
import hashlib
import json
import zipfile
from collections import Counter

import numpy as np
import pytest

from uvlm.core.errors import ConfigError, MissingInputError
from uvlm.core.schema import build
from uvlm.world.build import load_split, make_splits
from uvlm.world.language import detailed_caption, generation_prompt, parse_prompt
from uvlm.world.scenes import (SHAPES, World, WorldConfig, cell_box, object_diameter, render_scene,
                        render_scenes, stream)

TINY = dict(image_size=16, grid=2, max_objects=3, n_u_train=80, n_g_train=80, n_val=10,
            n_test=60, n_bench=24)


@pytest.fixture(scope="module")
def tiny():
    cfg = build(WorldConfig, TINY, prefix="world")
    world, splits = make_splits(cfg, seed=7)
    return cfg, world, splits


def _hashes(images):
    return {hashlib.sha1(im.tobytes()).hexdigest() for im in images}


def test_same_seed_same_records_and_images(tiny):
    cfg, _, splits = tiny
    _, again = make_splits(cfg, seed=7)
    assert json.dumps(again, sort_keys=True) == json.dumps(splits, sort_keys=True)
    a = render_scenes([r["scene"] for r in splits["g_test"]], cfg)
    b = render_scenes([r["scene"] for r in again["g_test"]], cfg)
    assert a.dtype == np.uint8 and a.shape == (60, 16, 16, 3) and np.array_equal(a, b)
    _, other = make_splits(cfg, seed=8)
    assert other["u_train"] != splits["u_train"]


def test_u_and_g_training_images_disjoint(tiny):
    cfg, _, splits = tiny
    u = render_scenes([r["scene"] for r in splits["u_train"]], cfg)
    g = render_scenes([r["scene"] for r in splits["g_train"]], cfg)
    assert not _hashes(u) & _hashes(g)
    assert not {r["scene"]["noise_seed"] for r in splits["u_train"]} & \
        {r["scene"]["noise_seed"] for r in splits["g_train"]}


def _combos(scene):
    return {(o["colour"], o["shape"]) for o in scene["objects"]}


def test_transfer_split_semantics(tiny):
    _, world, splits = tiny
    no_u, no_g = set(world.unseen_by_u), set(world.unseen_by_g)
    assert len(no_u) == len(no_g) == 2 and not no_u & no_g
    # Held-out combos use distinct colours and shapes.
    assert len({c for c, _ in no_u | no_g}) == 4 and len({s for _, s in no_u | no_g}) == 4
    for r in splits["u_train"] + splits["u_val"]:
        assert not _combos(r["scene"]) & no_u and not r["transfer"]
        words = (r["instruction"] + " " + r["answer"]).split()
        assert not set(zip(words, words[1:])) & no_u, "U training text names a held-out combo"
    for r in splits["g_train"] + splits["g_val"]:
        assert not _combos(r["scene"]) & no_g and not r["transfer"]
    for name, unseen in (("u_test", no_u), ("g_test", no_g)):
        recs = splits[name]
        assert 0.15 < np.mean([r["transfer"] for r in recs]) < 0.6
        for r in recs:
            assert r["transfer"] == bool(_combos(r["scene"]) & unseen)


def test_transfer_split_off():
    cfg = build(WorldConfig, dict(TINY, transfer_split=False), prefix="world")
    world, splits = make_splits(cfg, seed=1)
    assert world.unseen_by_u == [] and world.unseen_by_g == []
    assert not any(r["transfer"] for recs in splits.values() for r in recs)


def test_prompts_name_every_object_and_underspecify(tiny):
    cfg, _, splits = tiny
    omitted_size = omitted_pos = total = 0
    for r in splits["g_train"]:
        objs = r["scene"]["objects"]
        mentions = parse_prompt(r["prompt"], cfg)
        assert Counter((m["colour"], m["shape"]) for m in mentions) == \
            Counter((o["colour"], o["shape"]) for o in objs)
        for m in mentions:
            assert any(o["colour"] == m["colour"] and o["shape"] == m["shape"]
                       and m["size"] in (None, o["size"])
                       and m["cell"] in (None, tuple(o["cell"])) for o in objs)
        omitted_size += sum(m["size"] is None for m in mentions)
        omitted_pos += sum(m["cell"] is None for m in mentions)
        total += len(mentions)
    assert 0.3 < omitted_size / total < 0.7 and 0.3 < omitted_pos / total < 0.7


def test_detailed_caption_is_complete(tiny):
    cfg, _, splits = tiny
    captions = [r for r in splits["u_train"] if r["family"] == "caption"]
    assert len(captions) > 20
    for r in captions:
        mentions = parse_prompt(r["answer"], cfg)
        assert [(m["colour"], m["shape"], m["size"], m["cell"]) for m in mentions] == \
            [(o["colour"], o["shape"], o["size"], tuple(o["cell"])) for o in r["scene"]["objects"]]
        assert r["answer"] == detailed_caption(r["scene"], cfg.grid)


def test_objects_stay_inside_their_cells():
    cfg = WorldConfig(jitter=100.0)  # jitter is clamped to the cell's slack
    world, rng = World(cfg, 0), stream(0, "cells")
    for _ in range(200):
        for o in world.sample_scene(rng)["objects"]:
            x0, y0, side = cell_box(o["cell"], cfg)
            r = object_diameter(o["size"], cfg) / 2
            x, y = o["xy"]
            assert x0 <= x - r and x + r <= x0 + side and y0 <= y - r and y + r <= y0 + side


def test_render_shows_each_shape_and_colour_differently():
    cfg = WorldConfig(shapes=list(SHAPES), background_noise=0.0, colour_jitter=0, jitter=0.0)
    world, rng = World(cfg, 0), np.random.default_rng(0)
    base = {"background": 100, "noise_seed": 1}
    imgs = [render_scene({**base, "objects": [world.place(rng, "red", s, "large", (1, 1))]}, cfg)
            for s in SHAPES]
    assert len(_hashes(imgs)) == len(SHAPES)
    red, blue = (render_scene({**base, "objects": [world.place(rng, c, "circle", "large", (1, 1))]},
                              cfg) for c in ("red", "blue"))
    centre = cfg.image_size // 2
    assert red[centre, centre, 0] > 180 and blue[centre, centre, 2] > 180


def test_one_prompt_many_images(tiny):
    """G is a distribution: equal prompts come with different pictures."""
    cfg, world, _ = tiny
    rng = stream(0, "dist")
    scene = world.sample_scene(rng)
    prompt = generation_prompt(scene, cfg, rng)
    jittered = {"background": scene["background"], "noise_seed": 5,
                "objects": [world.place(rng, o["colour"], o["shape"], o["size"], o["cell"])
                            for o in scene["objects"]]}
    assert not np.array_equal(render_scene(scene, cfg), render_scene(jittered, cfg))
    assert prompt.endswith(" .")


@pytest.mark.parametrize("override, key", [
    ({"shapes": ["square", "hexagon"]}, "world.shapes[1]"),
    ({"colours": ["red", "mauve"]}, "world.colours[1]"),
    ({"sizes": ["small", "huge"]}, "world.sizes[1]"),
    ({"max_objects": 10}, "world.max_objects"),
    ({"grid": 2, "max_objects": 5}, "world.max_objects"),
    ({"min_objects": 3, "max_objects": 2}, "world.min_objects"),
    ({"n_u_train": -5}, "world.n_u_train"),
    ({"image_size": -1}, "world.image_size"),
    ({"image_size": 12, "grid": 3}, "world.image_size"),
    ({"n_transfer_combos": 3}, "world.n_transfer_combos"),
    ({"shapes": ["square", "square"]}, "world.shapes[1]"),
    ({"background_levels": [100, 300]}, "world.background_levels[1]"),
    ({"u_family_weights": {"caption": 1.0, "poetry": 1.0}}, "world.u_family_weights.poetry"),
    ({"u_family_weights": {"caption": -1.0}}, "world.u_family_weights.caption"),
    ({"p_omit_size": 1.5}, "world.p_omit_size"),
    ({"colour": ["red"]}, "world.colour"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        build(WorldConfig, override, prefix="world")
    assert e.value.key == key
    assert key in str(e.value)


def test_defaults_are_valid():
    assert build(WorldConfig, {}, prefix="world") == WorldConfig()


def test_missing_split_names_stage(tmp_path):
    with pytest.raises(MissingInputError) as e:
        load_split(tmp_path, "u_train")
    assert e.value.stage == "data"


def test_build_world_writes_every_output(tmp_path):
    from uvlm.world.text_tokenizer import load_text_tokenizer
    from uvlm.world.build import ALL_SPLITS, build_world, load_records, load_world_info
    from uvlm.world.figures import plot_world_samples, summary_tables

    cfg = build(WorldConfig, TINY, prefix="world")
    summary = build_world(cfg, 7, tmp_path, progress=False)
    timing = summary.pop("seconds")  # returned to the caller, never written into data/world
    assert set(timing) == {"records", "render", "total"}
    assert load_world_info(tmp_path) == json.loads(json.dumps(summary))
    for name in ALL_SPLITS:
        records, images = load_split(tmp_path, name)
        assert images.shape == (len(records), 16, 16, 3) and images.dtype == np.uint8
        assert summary["splits"][name]["n"] == len(records) > 0
        assert np.array_equal(images[0], render_scene(records[0]["scene"], cfg))
        with zipfile.ZipFile(tmp_path / f"{name}.npz") as z:  # stored, not deflated: see _write_split
            assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    assert set(load_records(tmp_path, "u_test")[0]) == {"scene", "instruction", "answer",
                                                          "family", "transfer"}
    assert set(load_records(tmp_path, "g_test")[0]) == {"scene", "prompt", "transfer"}
    assert summary["unk_tokens"] == 0 and summary["u_g_train_shared_images"] == 0
    assert len(load_text_tokenizer(tmp_path / "text_tokenizer")) == summary["vocab"]["text_vocab_size"]
    assert not (tmp_path / "probe.safetensors").exists()  # stage probe's, beside this one
    plot_world_samples(tmp_path, tmp_path / "samples.png", n=3)
    assert (tmp_path / "samples.png").stat().st_size > 1000
    tables = summary_tables(summary)
    assert len(tables["splits"]) == len(ALL_SPLITS) and len(tables["transfer_combos"]) == 4


def test_rendering_in_processes_gives_the_same_images(monkeypatch):
    import uvlm.world.scenes as W

    cfg = WorldConfig(image_size=16)
    world = World(cfg, 0)
    rng = W.stream(0, "render-test")
    scenes = [world.sample_scene(rng) for _ in range(13)]
    monkeypatch.setattr(W, "RENDER_CHUNK", 5)  # three chunks over two processes
    assert np.array_equal(W.render_scenes(scenes, cfg, workers=2), W.render_scenes(scenes, cfg))


def test_parallel_rendering_works_from_a_script_on_stdin():
    """Workers must not re-run the caller's __main__ (here: stdin, which has no file)."""
    import subprocess
    import sys
    script = ("import numpy as np, uvlm.world.scenes as W\n"
              "cfg = W.WorldConfig(image_size=16); world = W.World(cfg, 0); rng = W.stream(0, 'stdin')\n"
              "scenes = [world.sample_scene(rng) for _ in range(9)]\n"
              "W.RENDER_CHUNK = 4\n"
              "assert np.array_equal(W.render_scenes(scenes, cfg, workers=2), W.render_scenes(scenes, cfg))\n"
              "print('same')\n")
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "same" in done.stdout, done.stderr


class _SlowClock:
    """time.time / perf_counter jumping 1000 s per call: every measured duration changes."""

    def __init__(self):
        import time
        self._time, self.now = time, 1e6

    def time(self):
        self.now += 1000.0
        return self.now

    perf_counter = time

    def __getattr__(self, name):
        return getattr(self._time, name)


def _file_hashes(folder):
    from pathlib import Path
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_timings_stay_out_of_the_cached_outputs(tiny_world, tmp_path, monkeypatch):
    """data/world, data/probe and data/tokenizer hash the same when only the clock differs, so a
    re-run of `data` after a comment-only edit leaves every later stage up to date."""
    from uvlm.probe import model as probe
    from uvlm.probe import build as probe_build
    from uvlm.tokens import vq
    from uvlm.world import build as world_build
    from uvlm.core.config import load_config
    from uvlm.probe.build import build_probe
    from uvlm.tokens.vq_build import build_tokenizer

    for module in (world_build, probe, probe_build, vq):
        monkeypatch.setattr(module, "time", _SlowClock())
    cfg = load_config(tiny_world)
    world = world_build.build_world(cfg.world, cfg.seed, tmp_path / "world", progress=False)
    summary = build_probe(cfg.world, cfg.probe, cfg.seed, tmp_path / "probe", progress=False)
    metrics = build_tokenizer(cfg.tokenizer, cfg.seed, tmp_path / "world", tmp_path / "tokenizer",
                              probe=probe.load_probe(tmp_path / "probe" / "probe.safetensors"), progress=False)
    assert world["seconds"]["total"] >= 1000 and summary["seconds"] >= 1000 and metrics["train_seconds"] >= 1000
    assert metrics["machine"]["cpu"]  # reported with the committed metrics, kept out of data/tokenizer
    assert "machine" not in json.loads((tmp_path / "tokenizer" / "metrics.json").read_text())
    for name in ("world", "probe", "tokenizer"):
        assert _file_hashes(tmp_path / name) == _file_hashes(cfg.paths.data / name), name
