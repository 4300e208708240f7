"""Stage ``data``: write the scene world's splits, benchmarks and text tokenizer.

Layout under ``out_dir`` (``data/world``):

- ``world.json``: resolved config, vocabulary, transfer combos, counts;
- ``<split>.jsonl`` + ``<split>.npz`` (``{"images": uint8 (N, H, W, 3)}``), line i <-> row i:
  ``u_train u_val u_test``: {scene, instruction, answer, family, transfer};
  ``g_train g_val g_test``: {scene, prompt, transfer};
  ``bench_gqa bench_pope bench_mme bench_seed``: see ``benchmarks.py``;
- ``text_tokenizer/`` (HF tokenizer dir).

The attribute probe that scores images is stage ``probe`` (``probe_build.py``).

Train and val splits hold only combos their task may see (val is in-distribution);
test and benchmark splits force a held-out combo into ``p_transfer_test`` of scenes
and flag those records ``transfer``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from uvlm.core.errors import MissingInputError
from uvlm.core.io import load_npz, read_json, save_npz, write_json, write_text
from uvlm.core.threads import available_cores
from . import language as L
from .benchmarks import make_benchmarks, u_transfer
from .scenes import FAMILIES, World, WorldConfig, render_scenes, stream

U_SPLITS = ("u_train", "u_val", "u_test")
G_SPLITS = ("g_train", "g_val", "g_test")
BENCH_SPLITS = ("bench_gqa", "bench_pope", "bench_mme", "bench_seed")
ALL_SPLITS = U_SPLITS + G_SPLITS + BENCH_SPLITS


def g_transfer(world: World, scene: dict, prompt: str) -> bool:
    """Prompt names a combo unseen by generation training."""
    combos = {(m["colour"], m["shape"]) for m in L.parse_prompt(prompt, world.cfg)}
    return world.touches_unseen(combos, "g")


def make_u_split(world: World, seed: int, name: str, n: int) -> list[dict]:
    rng, held_out = stream(seed, name), name.endswith("test")
    records = []
    for _ in range(n):
        scene = world.sample_eval_scene(rng, "u") if held_out else world.sample_scene(rng, "u")
        s = L.understanding_sample(scene, world, rng, training=not held_out)
        records.append({"scene": scene, **s,
                        "transfer": u_transfer(world, scene, s["instruction"], s["answer"])})
    return records


def make_g_split(world: World, seed: int, name: str, n: int) -> list[dict]:
    rng, held_out = stream(seed, name), name.endswith("test")
    records = []
    for _ in range(n):
        scene = world.sample_eval_scene(rng, "g") if held_out else world.sample_scene(rng, "g")
        prompt = L.generation_prompt(scene, world.cfg, rng)
        records.append({"scene": scene, "prompt": prompt,
                        "transfer": g_transfer(world, scene, prompt)})
    return records


def make_splits(world_cfg: WorldConfig, seed: int) -> tuple[World, dict]:
    """All records of every split (no images): name -> list of dicts."""
    world = World(world_cfg, seed)
    c = world_cfg
    sizes = {"u_train": c.n_u_train, "u_val": c.n_val, "u_test": c.n_test,
             "g_train": c.n_g_train, "g_val": c.n_val, "g_test": c.n_test}
    splits = {name: make_u_split(world, seed, name, sizes[name]) for name in U_SPLITS}
    splits.update({name: make_g_split(world, seed, name, sizes[name]) for name in G_SPLITS})
    u_train_scenes = [r["scene"] for r in splits["u_train"]]
    splits.update(make_benchmarks(world, seed, c.n_bench, u_train_scenes))
    return world, splits


def split_texts(name: str, records) -> list[str]:
    """Every string of a split that the model reads or writes."""
    keys = ("instruction", "answer", "prompt", "question")
    texts = [r[k] for r in records for k in keys if k in r]
    return texts + [o for r in records for o in r.get("options", [])]


def _stats(name: str, records) -> dict:
    out = {"n": len(records), "n_transfer": int(sum(r["transfer"] for r in records))}
    for key in ("family", "kind", "sampling", "subtask"):
        if records and key in records[0]:
            out[key] = dict(sorted(Counter(r[key] for r in records).items()))
    if records and "answer" in records[0] and name.startswith("bench"):
        out["answers_yes"] = int(sum(r["answer"] == "yes" for r in records))
    return out


def _image_hashes(images: np.ndarray) -> set:
    return {hashlib.sha1(im.tobytes()).hexdigest() for im in images}


def _write_split(out_dir: Path, name: str, records, images) -> None:
    write_text(out_dir / f"{name}.jsonl",
               "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    # Uncompressed: deflating noisy-background images is single-threaded and slow. On the gpu
    # preset's H100 host, 8000 images of 64 px took 8.1 s against 0.07 s, so the two training
    # splits cost 16 s of a 71 s `data` stage, for a 3.4x smaller file. Reading back is faster
    # too: 0.06 s against 0.45 s (records/bench/host-costs-nvidia-h100.txt).
    save_npz(out_dir / f"{name}.npz", compress=False, images=images)


def build_world(world_cfg: WorldConfig, seed: int, out_dir, progress: bool = True) -> dict:
    """Write every output of stage ``data`` into ``out_dir``; -> the world.json summary."""
    from tqdm.auto import tqdm

    from .text_tokenizer import UNK_ID, build_text_tokenizer, save_text_tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    world, splits = make_splits(world_cfg, seed)
    t_records = time.time() - t0

    images = {}
    workers = available_cores()  # the images do not depend on it (render_scenes)
    for name in tqdm(ALL_SPLITS, desc=f"render splits ({workers} processes)", mininterval=5, disable=not progress):
        images[name] = render_scenes([r["scene"] for r in splits[name]], world_cfg, workers)
        _write_split(out_dir, name, splits[name], images[name])
    overlap = len(_image_hashes(images["u_train"]) & _image_hashes(images["g_train"]))
    if overlap:
        raise RuntimeError(f"{overlap} images shared by u_train and g_train; they must be disjoint")
    t_render = time.time() - t0 - t_records

    tok = build_text_tokenizer(world_cfg)
    texts = [t for name in ALL_SPLITS for t in split_texts(name, splits[name])]
    texts.append(world_cfg.system_prompt)
    unk = sum(ids.count(UNK_ID) for ids in tok(texts, add_special_tokens=False)["input_ids"])
    if unk:
        raise RuntimeError(f"{unk} <unk> tokens in generated text: the vocabulary misses a word")
    save_text_tokenizer(tok, out_dir / "text_tokenizer")

    summary = {
        "seed": int(seed),
        "world": dataclasses.asdict(world_cfg),
        "system_prompt": world_cfg.system_prompt,
        "image_size": world_cfg.image_size,
        "vocab": {"shapes": list(world_cfg.shapes), "colours": list(world_cfg.colours),
                  "sizes": list(world_cfg.sizes), "positions": list(L.all_positions(world_cfg.grid)),
                  "families": [f for f in FAMILIES if world_cfg.u_family_weights.get(f, 0) > 0],
                  "text_vocab_size": len(tok)},
        "transfer_combos": {"unseen_by_u": [list(c) for c in world.unseen_by_u],
                            "unseen_by_g": [list(c) for c in world.unseen_by_g]},
        "combo_prior": [[c, s, round(float(p), 5)] for (c, s), p in zip(world.combos, world.prior)],
        "splits": {name: _stats(name, splits[name]) for name in ALL_SPLITS},
        "u_g_train_shared_images": overlap,
        "unk_tokens": unk,
    }
    # Derived files (the tokenizer's codes) record this and are checked against it when read, so
    # codes of another world (another seed, another size) are named instead of trained on.
    summary["fingerprint"] = content_fingerprint(out_dir, ALL_SPLITS)
    # Timings stay out of data/world: its hash must change only when the world does, or a re-run
    # after a comment-only edit would re-run every stage downstream. The caller gets them.
    write_json(out_dir / "world.json", summary)
    return summary | {"seconds": {"records": round(t_records, 2), "render": round(t_render, 2),
                                  "total": round(time.time() - t0, 2)}}


def content_fingerprint(out_dir: Path, names) -> str:
    """A short hash of the world's split files (records and images): equal worlds, equal prints."""
    h = hashlib.sha256()
    for name in names:
        for suffix in (".jsonl", ".npz"):
            h.update(f"{name}{suffix}".encode())
            h.update((Path(out_dir) / f"{name}{suffix}").read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- readers for later stages

def load_world_info(world_dir) -> dict:
    return read_json(Path(world_dir) / "world.json", stage="data")


def load_records(world_dir, split: str) -> list[dict]:
    from uvlm.core.io import read_jsonl
    return read_jsonl(Path(world_dir) / f"{split}.jsonl", stage="data")


def load_split(world_dir, split: str) -> tuple[list[dict], np.ndarray]:
    """(records, images uint8 (N, H, W, 3)) of one split; row i <-> record i."""
    records = load_records(world_dir, split)
    images = load_npz(Path(world_dir) / f"{split}.npz", stage="data")["images"]
    if len(images) != len(records):
        raise MissingInputError(Path(world_dir) / f"{split}.npz", "data")
    return records, images


def world_config_from_info(info: dict) -> WorldConfig:
    """The WorldConfig a world.json was built with (no validation needed: it was valid)."""
    return WorldConfig(**info["world"])
