"""Words of the scene world: captions, generation prompts, questions and answers.

All text is lower case with punctuation as separate whitespace-separated tokens,
so a word-level tokenizer covers it exactly. Every sentence comes from a template
in ``TEMPLATES`` filled with config words, so :func:`vocabulary` can enumerate
every word any generator can emit without sampling.

Question builders share one signature, ``build(scene, world, rng, want=None)``,
returning ``(question, answer)`` or ``None`` when the scene does not support the
question (e.g. no uniquely named object). ``want`` asks a yes/no builder for a
true (``True``) or false (``False``) statement; open builders ignore it. The
benchmarks (``benchmarks.py``) call the same builders as understanding training,
so they test held-out scenes and combos, not unseen phrasings.
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from .scenes import FAMILIES, World, WorldConfig

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen", "nineteen", "twenty")
PLURALS = {"square": "squares", "circle": "circles", "triangle": "triangles",
           "cross": "crosses", "diamond": "diamonds", "ring": "rings"}
ROW_WORDS = {1: ["middle"], 2: ["top", "bottom"], 3: ["top", "middle", "bottom"],
             4: ["top", "upper", "lower", "bottom"]}
COL_WORDS = {1: ["center"], 2: ["left", "right"], 3: ["left", "center", "right"],
             4: ["far left", "left", "right", "far right"]}
RELATIONS = ("left of", "right of", "above", "below")

TEMPLATES = {
    "caption_instruction": ["describe the image in detail .",
                            "what is in this image ? describe every object ."],
    "caption_count_one": "there is one object .",
    "caption_count": "there are {n} objects .",
    "object": "{article} {size} {colour} {shape} at the {position}",
    "prompt": ["{objects} .", "a picture of {objects} .", "an image with {objects} .",
               "a scene showing {objects} ."],
    "join": "{a} , {b} and {c}",
    "colour_of_shape": "what colour is the {shape} ?",
    "shape_of_colour": "what shape is the {colour} object ?",
    "colour_at": "what colour is the object at the {position} ?",
    "shape_at": "what shape is the object at the {position} ?",
    "size_of": "what size is the {colour} {shape} ?",
    "colour_is": "is the object at the {position} {colour} ?",
    "exists": "is there {article} {colour} {shape} ?",
    "count_shape": "how many {shapes} are there ?",
    "count_colour": "how many {colour} objects are there ?",
    "count_all": "how many objects are there ?",
    "count_is": "is the number of {shapes} {n} ?",
    "where": "where is the {colour} {shape} ?",
    "position_is": "is the {colour} {shape} at the {position} ?",
    "relation": "is the {colour} {shape} {relation} the {colour2} {shape2} ?",
    "rel_colour": "what colour is the object {relation} the {colour} {shape} ?",
    "rel_shape": "what shape is the object {relation} the {colour} {shape} ?",
    "more_shapes": "are there more {shapes} than {shapes2} ?",
    "more_colours": "are there more {colour} objects than {colour2} objects ?",
    "sum_is": "is the number of {shapes} plus {shapes2} equal to {n} ?",
    "total_is": "is the total number of objects {n} ?",
    "answers": "yes no",
}


def number(n: int) -> str:
    return NUMBER_WORDS[n]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def position_phrase(cell, grid: int) -> str:
    row, col = ROW_WORDS[grid][cell[0]], COL_WORDS[grid][cell[1]]
    if row == "middle" and col == "center":
        return "center"
    return f"{row} {col}"


def all_positions(grid: int) -> dict:
    """phrase -> (row, col) for every cell."""
    return {position_phrase((r, c), grid): (r, c) for r in range(grid) for c in range(grid)}


def object_phrase(obj: dict, grid: int, size: bool = True, position: bool = True) -> str:
    words = ([obj["size"]] if size else []) + [obj["colour"], obj["shape"]]
    text = f"{article(words[0])} {' '.join(words)}"
    return f"{text} at the {position_phrase(obj['cell'], grid)}" if position else text


def detailed_caption(scene: dict, grid: int) -> str:
    """The dense understanding answer: every object, fully specified, in reading order."""
    objs = scene["objects"]
    head = (TEMPLATES["caption_count_one"] if len(objs) == 1
            else TEMPLATES["caption_count"].format(n=number(len(objs))))
    return " ".join([head] + [object_phrase(o, grid) + " ." for o in objs])


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return f"{' , '.join(parts[:-1])} and {parts[-1]}"


def generation_prompt(scene: dict, cfg: WorldConfig, rng: np.random.Generator) -> str:
    """An underspecified prompt: colour and shape always, size / position sometimes."""
    order = rng.permutation(len(scene["objects"]))
    parts = [object_phrase(scene["objects"][i], cfg.grid,
                           size=rng.random() >= cfg.p_omit_size,
                           position=rng.random() >= cfg.p_omit_position) for i in order]
    templates = TEMPLATES["prompt"]
    return templates[int(rng.integers(len(templates)))].format(objects=_join(parts))


def parse_prompt(text: str, cfg: WorldConfig) -> list[dict]:
    """Objects a prompt or caption mentions: [{colour, shape, size|None, cell|None}]."""
    toks = text.split()
    positions = sorted(all_positions(cfg.grid).items(), key=lambda kv: -len(kv[0]))
    found = []
    for i, tok in enumerate(toks):
        if tok not in cfg.shapes or i == 0 or toks[i - 1] not in cfg.colours:
            continue
        mention = {"colour": toks[i - 1], "shape": tok, "size": None, "cell": None}
        if i >= 2 and toks[i - 2] in cfg.sizes:
            mention["size"] = toks[i - 2]
        if toks[i + 1:i + 3] == ["at", "the"]:
            rest = " ".join(toks[i + 3:i + 6])
            for phrase, cell in positions:
                if rest == phrase or rest.startswith(phrase + " "):
                    mention["cell"] = cell
                    break
        found.append(mention)
    return found


# ---------------------------------------------------------------- question builders

def _yes(b: bool) -> str:
    return "yes" if b else "no"


def pick(rng, items):
    return items[int(rng.integers(len(items)))] if items else None


def _want(rng, want):
    return bool(rng.random() < 0.5) if want is None else want


def _unique(scene, key):
    """Objects whose value of ``key`` (a function) is unique in the scene."""
    counts = Counter(key(o) for o in scene["objects"])
    return [o for o in scene["objects"] if counts[key(o)] == 1]


def _combo(o):
    return (o["colour"], o["shape"])


def _holds(a, rel, b) -> bool:
    (ra, ca), (rb, cb) = a["cell"], b["cell"]
    return {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}[rel]


def _near_count(rng, n: int) -> int:
    return pick(rng, [m for m in (n - 1, n + 1) if 0 <= m < len(NUMBER_WORDS)])


def q_colour_of_shape(scene, world, rng, want=None):
    o = pick(rng, _unique(scene, lambda o: o["shape"]))
    return o and (TEMPLATES["colour_of_shape"].format(shape=o["shape"]), o["colour"])


def q_shape_of_colour(scene, world, rng, want=None):
    o = pick(rng, _unique(scene, lambda o: o["colour"]))
    return o and (TEMPLATES["shape_of_colour"].format(colour=o["colour"]), o["shape"])


def q_colour_at(scene, world, rng, want=None):
    o = pick(rng, scene["objects"])
    pos = position_phrase(o["cell"], world.cfg.grid)
    return TEMPLATES["colour_at"].format(position=pos), o["colour"]


def q_shape_at(scene, world, rng, want=None):
    o = pick(rng, scene["objects"])
    pos = position_phrase(o["cell"], world.cfg.grid)
    return TEMPLATES["shape_at"].format(position=pos), o["shape"]


def q_size_of(scene, world, rng, want=None):
    o = pick(rng, _unique(scene, _combo)) if len(world.cfg.sizes) > 1 else None
    return o and (TEMPLATES["size_of"].format(colour=o["colour"], shape=o["shape"]), o["size"])


def q_colour_is(scene, world, rng, want=None):
    o, truth = pick(rng, scene["objects"]), _want(rng, want)
    others = [c for c in world.cfg.colours if c != o["colour"]]
    colour = o["colour"] if truth else pick(rng, others)
    if colour is None:
        return None
    pos = position_phrase(o["cell"], world.cfg.grid)
    return TEMPLATES["colour_is"].format(position=pos, colour=colour), _yes(truth)


def exists_question(colour: str, shape: str) -> str:
    return TEMPLATES["exists"].format(article=article(colour), colour=colour, shape=shape)


def absent_combos(scene, world, task: str = "all") -> list:
    """Combos not in the scene; ``task`` keeps only those that task may name in training."""
    present = world.scene_combos(scene)
    allowed = world.allowed(task)
    return [c for c, ok in zip(world.combos, allowed) if ok and c not in present]


def near_misses(scene, world, task: str = "all") -> list:
    """Absent combos one attribute away from a present object (POPE's adversarial negatives)."""
    present = world.scene_combos(scene)
    return [c for c in absent_combos(scene, world, task)
            if any(c[0] == p[0] or c[1] == p[1] for p in present)]


def q_exists(scene, world, rng, want=None, task: str = "all"):
    truth = _want(rng, want)
    if truth:
        combo = _combo(pick(rng, scene["objects"]))
    else:
        # In training (task="u") negatives never name a combo U must not see.
        absent = absent_combos(scene, world, task)
        pool = near_misses(scene, world, task) if rng.random() < 0.5 else absent
        combo = pick(rng, pool or absent)
        if combo is None:
            return None
    return exists_question(*combo), _yes(truth)


def _count(scene, key, value) -> int:
    return sum(o[key] == value for o in scene["objects"])


def q_count_shape(scene, world, rng, want=None):
    pool = [o["shape"] for o in scene["objects"]] if rng.random() < 0.6 else world.cfg.shapes
    shape = pick(rng, pool)
    return (TEMPLATES["count_shape"].format(shapes=PLURALS[shape]),
            number(_count(scene, "shape", shape)))


def q_count_colour(scene, world, rng, want=None):
    pool = [o["colour"] for o in scene["objects"]] if rng.random() < 0.6 else world.cfg.colours
    colour = pick(rng, pool)
    return TEMPLATES["count_colour"].format(colour=colour), number(_count(scene, "colour", colour))


def q_count_all(scene, world, rng, want=None):
    return TEMPLATES["count_all"], number(len(scene["objects"]))


def q_count_is(scene, world, rng, want=None):
    shape, truth = pick(rng, world.cfg.shapes), _want(rng, want)
    n = _count(scene, "shape", shape)
    shown = n if truth else _near_count(rng, n)
    return TEMPLATES["count_is"].format(shapes=PLURALS[shape], n=number(shown)), _yes(truth)


def q_where(scene, world, rng, want=None):
    o = pick(rng, _unique(scene, _combo))
    return o and (TEMPLATES["where"].format(colour=o["colour"], shape=o["shape"]),
                  position_phrase(o["cell"], world.cfg.grid))


def q_position_is(scene, world, rng, want=None):
    o, truth = pick(rng, _unique(scene, _combo)), _want(rng, want)
    if o is None:
        return None
    cells = list(all_positions(world.cfg.grid).values())
    cell = tuple(o["cell"]) if truth else pick(rng, [c for c in cells if c != tuple(o["cell"])])
    if cell is None:
        return None
    return (TEMPLATES["position_is"].format(colour=o["colour"], shape=o["shape"],
                                            position=position_phrase(cell, world.cfg.grid)),
            _yes(truth))


def q_relation(scene, world, rng, want=None):
    truth, named = _want(rng, want), _unique(scene, _combo)
    triples = [(a, rel, b) for a in named for b in named if a is not b
               for rel in RELATIONS if _holds(a, rel, b) == truth]
    t = pick(rng, triples)
    if t is None:
        return None
    a, rel, b = t
    return (TEMPLATES["relation"].format(colour=a["colour"], shape=a["shape"], relation=rel,
                                         colour2=b["colour"], shape2=b["shape"]), _yes(truth))


def _relation_target(scene, rng):
    """(anchor, relation, the single object standing in that relation to it) or None."""
    options = []
    for a in _unique(scene, _combo):
        for rel in RELATIONS:
            hits = [b for b in scene["objects"] if b is not a and _holds(b, rel, a)]
            if len(hits) == 1:
                options.append((a, rel, hits[0]))
    return pick(rng, options)


def q_rel_colour(scene, world, rng, want=None):
    t = _relation_target(scene, rng)
    return t and (TEMPLATES["rel_colour"].format(relation=t[1], colour=t[0]["colour"],
                                                 shape=t[0]["shape"]), t[2]["colour"])


def q_rel_shape(scene, world, rng, want=None):
    t = _relation_target(scene, rng)
    return t and (TEMPLATES["rel_shape"].format(relation=t[1], colour=t[0]["colour"],
                                                shape=t[0]["shape"]), t[2]["shape"])


def q_more(scene, world, rng, want=None):
    truth = _want(rng, want)
    key = "shape" if rng.random() < 0.5 else "colour"
    values = world.cfg.shapes if key == "shape" else world.cfg.colours
    counts = {v: _count(scene, key, v) for v in values}
    pairs = [(a, b) for a in values for b in values
             if a != b and counts[a] + counts[b] > 0 and (counts[a] > counts[b]) == truth]
    pair = pick(rng, pairs)
    if pair is None:
        return None
    if key == "shape":
        q = TEMPLATES["more_shapes"].format(shapes=PLURALS[pair[0]], shapes2=PLURALS[pair[1]])
    else:
        q = TEMPLATES["more_colours"].format(colour=pair[0], colour2=pair[1])
    return q, _yes(truth)


def q_sum_is(scene, world, rng, want=None):
    shapes = world.cfg.shapes
    if len(shapes) < 2:
        return None
    a, b = (shapes[i] for i in rng.choice(len(shapes), size=2, replace=False))
    truth = _want(rng, want)
    n = _count(scene, "shape", a) + _count(scene, "shape", b)
    shown = n if truth else _near_count(rng, n)
    return (TEMPLATES["sum_is"].format(shapes=PLURALS[a], shapes2=PLURALS[b], n=number(shown)),
            _yes(truth))


def q_total_is(scene, world, rng, want=None):
    truth, n = _want(rng, want), len(scene["objects"])
    shown = n if truth else _near_count(rng, n)
    return TEMPLATES["total_is"].format(n=number(shown)), _yes(truth)


FAMILY_BUILDERS = {
    "attribute": (q_colour_of_shape, q_shape_of_colour, q_colour_at, q_shape_at, q_size_of,
                  q_colour_is),
    "existence": (q_exists,),
    "count": (q_count_shape, q_count_colour, q_count_all, q_count_is),
    "spatial": (q_where, q_position_is, q_relation, q_rel_colour, q_rel_shape),
    "comparison": (q_more, q_sum_is, q_total_is),
}


def caption_sample(scene, grid, rng) -> tuple[str, str]:
    instr = pick(rng, TEMPLATES["caption_instruction"])
    return instr, detailed_caption(scene, grid)


def understanding_sample(scene: dict, world: World, rng: np.random.Generator,
                         training: bool = True) -> dict:
    """One (instruction, answer, family) drawn with the configured family weights.

    With ``training`` no text names a combo held out of understanding training.
    """
    weights = world.cfg.u_family_weights
    fams = [f for f in FAMILIES if weights.get(f, 0) > 0]
    p = np.array([weights[f] for f in fams], float)
    family = fams[int(rng.choice(len(fams), p=p / p.sum()))]
    if family != "caption":
        for i in rng.permutation(len(FAMILY_BUILDERS[family])):
            build = FAMILY_BUILDERS[family][i]
            qa = (build(scene, world, rng, task="u" if training else "all")
                  if build is q_exists else build(scene, world, rng))
            if qa:
                return {"instruction": qa[0], "answer": qa[1], "family": family}
    instr, answer = caption_sample(scene, world.cfg.grid, rng)
    return {"instruction": instr, "answer": answer, "family": "caption"}


# ---------------------------------------------------------------- vocabulary

def vocabulary_texts(cfg: WorldConfig) -> list[str]:
    """Every string whose words together cover everything the generators can emit."""
    texts = [cfg.system_prompt, " ".join(NUMBER_WORDS), "a an at the"]
    for t in TEMPLATES.values():
        for s in (t if isinstance(t, list) else [t]):
            texts.append(re.sub(r"\{[a-z0-9_]+\}", " ", s))
    texts += list(cfg.shapes) + [PLURALS[s] for s in cfg.shapes] + list(cfg.colours)
    texts += list(cfg.sizes) + list(RELATIONS) + list(all_positions(cfg.grid))
    return texts
