"""Benchmark analogues of the paper's tables, every answer computed from the scene graph.

=============  ==============================================================
split          record fields
=============  ==============================================================
bench_gqa      scene, question, answer, kind (attribute|relation|count), transfer
bench_pope     scene, question, answer (yes|no), sampling
               (adversarial|popular|random), transfer
bench_mme      scene, question, answer, subtask, category (perception|reasoning),
               pair_id (one yes and one no question per image), transfer
bench_seed     scene, question, options (4 strings), answer_index, kind, transfer
=============  ==============================================================

``transfer`` is true when the scene or the question involves a (colour, shape)
combo that understanding training never showed (``World.unseen_by_u``). About
``p_transfer_test`` of the scenes are forced to contain one.

Questions come from the same builders as understanding training
(``world_language``), so a benchmark tests new scenes and new combos, not new
phrasings.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from . import language as L
from .scenes import World, stream

GQA_KINDS = {
    "attribute": (L.q_colour_of_shape, L.q_shape_of_colour, L.q_colour_at, L.q_shape_at,
                  L.q_size_of),
    "relation": (L.q_where, L.q_rel_colour, L.q_rel_shape),
    "count": (L.q_count_shape, L.q_count_colour, L.q_count_all),
}
POPE_SAMPLINGS = ("adversarial", "popular", "random")
MME_SUBTASKS = {  # subtask -> (category, builders)
    "existence": ("perception", (L.q_exists,)),
    "count": ("perception", (L.q_count_is,)),
    "position": ("perception", (L.q_position_is,)),
    "colour": ("perception", (L.q_colour_is,)),
    "comparison": ("reasoning", (L.q_more,)),
    "arithmetic": ("reasoning", (L.q_sum_is, L.q_total_is)),
}
MAX_TRIES = 200  # scenes drawn before a question kind is declared impossible in this world


def u_transfer(world: World, scene: dict, *texts: str) -> bool:
    """Scene or text involves a combo unseen by understanding training."""
    combos = set(world.scene_combos(scene))
    for t in texts:
        combos |= {(m["colour"], m["shape"]) for m in L.parse_prompt(t, world.cfg)}
    return world.touches_unseen(combos, "u")


def combo_popularity(scenes, world: World) -> list:
    """Combos sorted from most to least frequent in ``scenes`` (ties: world order)."""
    counts = Counter(c for s in scenes for c in ((o["colour"], o["shape"]) for o in s["objects"]))
    return sorted(world.combos, key=lambda c: -counts[c])


def _first(build_scene, make):
    """Draw scenes until ``make(scene)`` returns something; None if it never does."""
    for _ in range(MAX_TRIES):
        scene = build_scene()
        out = make(scene)
        if out is not None:
            return scene, out
    return None


def _try_builders(builders, scene, world, rng, want=None):
    for i in rng.permutation(len(builders)):
        qa = builders[i](scene, world, rng, want=want)
        if qa:
            return qa
    return None


def make_gqa(world: World, seed: int, n: int) -> list[dict]:
    rng = stream(seed, "bench_gqa")
    kinds, records = list(GQA_KINDS), []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        found = _first(lambda: world.sample_eval_scene(rng, "u"),
                       lambda s: _try_builders(GQA_KINDS[kind], s, world, rng))
        if found is None:
            continue
        scene, (q, a) = found
        records.append({"scene": scene, "question": q, "answer": a, "kind": kind,
                        "transfer": u_transfer(world, scene, q)})
    return records


def _pope_negative(scene, world, rng, sampling, popularity):
    absent = L.absent_combos(scene, world)
    if sampling == "adversarial":
        pool = L.near_misses(scene, world)
    elif sampling == "popular":
        # POPE: the most frequent objects (here combos) that are not in the image.
        pool = [c for c in popularity if c in absent][:3]
    else:
        pool = absent
    return L.pick(rng, pool)


def make_pope(world: World, seed: int, n: int, popularity: list) -> list[dict]:
    rng = stream(seed, "bench_pope")
    records = []
    for i in range(n):
        sampling = POPE_SAMPLINGS[i % 3]
        positive = (i // 3) % 2 == 0  # exactly balanced yes/no within each sampling

        def make(scene):
            if positive:
                return L.pick(rng, sorted(world.scene_combos(scene)))
            return _pope_negative(scene, world, rng, sampling, popularity)

        found = _first(lambda: world.sample_eval_scene(rng, "u"), make)
        if found is None:
            continue
        scene, combo = found
        q = L.exists_question(*combo)
        records.append({"scene": scene, "question": q, "answer": "yes" if positive else "no",
                        "sampling": sampling, "transfer": u_transfer(world, scene, q)})
    return records


def make_mme(world: World, seed: int, n: int) -> list[dict]:
    """n // 2 image pairs: each image gets one true and one false question of one subtask."""
    rng = stream(seed, "bench_mme")
    subtasks, records = list(MME_SUBTASKS), []
    for pair in range(n // 2):
        subtask = subtasks[pair % len(subtasks)]
        category, builders = MME_SUBTASKS[subtask]

        def make(scene):
            yes = _try_builders(builders, scene, world, rng, want=True)
            no = _try_builders(builders, scene, world, rng, want=False)
            return (yes, no) if yes and no else None

        found = _first(lambda: world.sample_eval_scene(rng, "u"), make)
        if found is None:
            continue
        scene, qas = found
        transfer = u_transfer(world, scene, qas[0][0], qas[1][0])
        for q, a in qas:
            records.append({"scene": scene, "question": q, "answer": a, "subtask": subtask,
                            "category": category, "pair_id": pair, "transfer": transfer})
    return records


def _seed_question(scene, world, rng, kind):
    """(question, answer, candidate distractors) of one multiple-choice kind, or None."""
    cfg = world.cfg
    if kind == "count":
        qa = _try_builders((L.q_count_shape, L.q_count_all), scene, world, rng)
        top = max(4, cfg.max_objects + 2)
        return qa and (qa[0], qa[1], [L.number(k) for k in range(top)])
    if kind == "colour":
        qa = _try_builders((L.q_colour_of_shape, L.q_colour_at), scene, world, rng)
        return qa and (qa[0], qa[1], list(cfg.colours))
    if kind == "shape":
        qa = _try_builders((L.q_shape_of_colour, L.q_shape_at), scene, world, rng)
        return qa and (qa[0], qa[1], list(cfg.shapes))
    qa = L.q_where(scene, world, rng)
    return qa and (qa[0], qa[1], list(L.all_positions(cfg.grid)))


def seed_kinds(world: World) -> list[str]:
    """Multiple-choice kinds with at least four distinct options in this world."""
    cfg = world.cfg
    kinds = ["count"]
    kinds += ["colour"] if len(cfg.colours) >= 4 else []
    kinds += ["shape"] if len(cfg.shapes) >= 4 else []
    kinds += ["position"] if cfg.grid * cfg.grid >= 4 else []
    return kinds


def make_seed(world: World, seed: int, n: int) -> list[dict]:
    rng = stream(seed, "bench_seed")
    kinds, records = seed_kinds(world), []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        found = _first(lambda: world.sample_eval_scene(rng, "u"),
                       lambda s: _seed_question(s, world, rng, kind))
        if found is None:
            continue
        scene, (q, answer, pool) = found
        distractors = [c for c in pool if c != answer]
        picked = [distractors[j] for j in rng.choice(len(distractors), size=3, replace=False)]
        index = int(rng.integers(4))
        options = picked[:index] + [answer] + picked[index:]
        records.append({"scene": scene, "question": q, "options": options,
                        "answer_index": index, "kind": kind,
                        "transfer": u_transfer(world, scene, q, *options)})
    return records


def make_benchmarks(world: World, seed: int, n: int, u_train_scenes) -> dict:
    """All four benchmark splits: name -> list of records."""
    popularity = combo_popularity(u_train_scenes, world)
    return {"bench_gqa": make_gqa(world, seed, n),
            "bench_pope": make_pope(world, seed, n, popularity),
            "bench_mme": make_mme(world, seed, n),
            "bench_seed": make_seed(world, seed, n)}


def transfer_rate(records) -> float:
    return float(np.mean([r["transfer"] for r in records])) if records else 0.0
