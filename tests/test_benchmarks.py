"""Benchmark answers are checked against an independent reading of the scene graph."""
import re
from collections import Counter

import pytest

from uvlm.world.benchmarks import POPE_SAMPLINGS, combo_popularity, make_benchmarks
from uvlm.world.scenes import World, WorldConfig, stream

N = 150
# Written out by hand (not taken from the library) so the oracle is independent.
POSITIONS = {"top left": (0, 0), "top center": (0, 1), "top right": (0, 2),
             "middle left": (1, 0), "center": (1, 1), "middle right": (1, 2),
             "bottom left": (2, 0), "bottom center": (2, 1), "bottom right": (2, 2)}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six"]
SINGULAR = {"squares": "square", "circles": "circle", "triangles": "triangle", "crosses": "cross"}


@pytest.fixture(scope="module")
def bench():
    cfg = WorldConfig(n_bench=N)
    world = World(cfg, seed=3)
    rng = stream(3, "u_train")
    u_train = [world.sample_scene(rng, "u") for _ in range(300)]
    return world, make_benchmarks(world, 3, N, u_train), u_train


def _objs(scene, **match):
    return [o for o in scene["objects"] if all(o[k] == v for k, v in match.items())]


def _one(scene, **match):
    found = _objs(scene, **match)
    assert len(found) == 1, f"referent {match} is not unique in {scene['objects']}"
    return found[0]


def _left(a, b, rel):
    (ra, ca), (rb, cb) = a["cell"], b["cell"]
    return {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}[rel]


def yn(b):
    return "yes" if b else "no"


def oracle(scene, q):
    """The answer to any benchmark question, read directly from the scene graph."""
    if m := re.fullmatch(r"what (colour|shape) is the object (left of|right of|above|below) "
                         r"the (\w+) (\w+) \?", q):
        anchor = _one(scene, colour=m[3], shape=m[4])
        hits = [o for o in scene["objects"] if o is not anchor and _left(o, anchor, m[2])]
        assert len(hits) == 1
        return hits[0][m[1]]
    if m := re.fullmatch(r"what (colour|shape) is the object at the (.+) \?", q):
        return _one(scene, cell=list(POSITIONS[m[2]]))[m[1]]
    if m := re.fullmatch(r"what colour is the (\w+) \?", q):
        return _one(scene, shape=m[1])["colour"]
    if m := re.fullmatch(r"what shape is the (\w+) object \?", q):
        return _one(scene, colour=m[1])["shape"]
    if m := re.fullmatch(r"what size is the (\w+) (\w+) \?", q):
        return _one(scene, colour=m[1], shape=m[2])["size"]
    if m := re.fullmatch(r"is the object at the (.+) (\w+) \?", q):
        return yn(_one(scene, cell=list(POSITIONS[m[1]]))["colour"] == m[2])
    if m := re.fullmatch(r"is there an? (\w+) (\w+) \?", q):
        return yn(bool(_objs(scene, colour=m[1], shape=m[2])))
    if q == "how many objects are there ?":
        return NUMBERS[len(scene["objects"])]
    if m := re.fullmatch(r"how many (\w+) objects are there \?", q):
        return NUMBERS[len(_objs(scene, colour=m[1]))]
    if m := re.fullmatch(r"how many (\w+) are there \?", q):
        return NUMBERS[len(_objs(scene, shape=SINGULAR[m[1]]))]
    if m := re.fullmatch(r"is the total number of objects (\w+) \?", q):
        return yn(NUMBERS[len(scene["objects"])] == m[1])
    if m := re.fullmatch(r"is the number of (\w+) plus (\w+) equal to (\w+) \?", q):
        n = len(_objs(scene, shape=SINGULAR[m[1]])) + len(_objs(scene, shape=SINGULAR[m[2]]))
        return yn(NUMBERS[n] == m[3])
    if m := re.fullmatch(r"is the number of (\w+) (\w+) \?", q):
        return yn(NUMBERS[len(_objs(scene, shape=SINGULAR[m[1]]))] == m[2])
    if m := re.fullmatch(r"where is the (\w+) (\w+) \?", q):
        cell = tuple(_one(scene, colour=m[1], shape=m[2])["cell"])
        return next(p for p, c in POSITIONS.items() if c == cell)
    if m := re.fullmatch(r"is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+) \?", q):
        a, b = _one(scene, colour=m[1], shape=m[2]), _one(scene, colour=m[4], shape=m[5])
        return yn(_left(a, b, m[3]))
    if m := re.fullmatch(r"is the (\w+) (\w+) at the (.+) \?", q):
        return yn(tuple(_one(scene, colour=m[1], shape=m[2])["cell"]) == POSITIONS[m[3]])
    if m := re.fullmatch(r"are there more (\w+) objects than (\w+) objects \?", q):
        return yn(len(_objs(scene, colour=m[1])) > len(_objs(scene, colour=m[2])))
    if m := re.fullmatch(r"are there more (\w+) than (\w+) \?", q):
        a, b = (len(_objs(scene, shape=SINGULAR[m[i]])) for i in (1, 2))
        return yn(a > b)
    raise AssertionError(f"oracle does not know the question {q!r}")


def test_sizes_and_fields(bench):
    _, b, _ = bench
    assert {len(v) for v in b.values()} == {N}
    for name, fields in [("bench_gqa", {"scene", "question", "answer", "kind", "transfer"}),
                         ("bench_pope", {"scene", "question", "answer", "sampling", "transfer"}),
                         ("bench_mme", {"scene", "question", "answer", "subtask", "category",
                                        "pair_id", "transfer"}),
                         ("bench_seed", {"scene", "question", "options", "answer_index", "transfer"})]:
        for r in b[name]:
            assert fields <= set(r)


@pytest.mark.parametrize("name", ["bench_gqa", "bench_pope", "bench_mme"])
def test_open_and_yes_no_answers_match_scene(bench, name):
    _, b, _ = bench
    for r in b[name]:
        assert oracle(r["scene"], r["question"]) == r["answer"], r["question"]


def test_gqa_kinds_balanced(bench):
    kinds = Counter(r["kind"] for r in bench[1]["bench_gqa"])
    assert set(kinds) == {"attribute", "relation", "count"} and min(kinds.values()) >= N // 3 - 1


def test_pope_negatives_absent_and_adversarial_near_miss(bench):
    world, b, u_train = bench
    popular = combo_popularity(u_train, world)
    pope = b["bench_pope"]
    assert abs(sum(r["answer"] == "yes" for r in pope) / len(pope) - 0.5) < 0.05
    for sampling in POPE_SAMPLINGS:
        assert sum(r["sampling"] == sampling for r in pope) >= N // 3 - 1
    for r in pope:
        colour, shape = re.fullmatch(r"is there an? (\w+) (\w+) \?", r["question"]).groups()
        present = {(o["colour"], o["shape"]) for o in r["scene"]["objects"]}
        assert ((colour, shape) in present) == (r["answer"] == "yes")
        if r["answer"] == "no" and r["sampling"] == "adversarial":
            assert any(colour == c or shape == s for c, s in present), "not a near miss"
        if r["answer"] == "no" and r["sampling"] == "popular":
            absent = [c for c in popular if c not in present]
            assert (colour, shape) in absent[:3], "not among the most popular absent combos"


def test_mme_pairs_one_yes_one_no(bench):
    pairs = {}
    for r in bench[1]["bench_mme"]:
        pairs.setdefault(r["pair_id"], []).append(r)
    assert len(pairs) == N // 2
    for recs in pairs.values():
        assert len(recs) == 2
        assert sorted(r["answer"] for r in recs) == ["no", "yes"]
        assert recs[0]["scene"] == recs[1]["scene"] and recs[0]["subtask"] == recs[1]["subtask"]
        cat = {"existence": "perception", "count": "perception", "position": "perception",
               "colour": "perception", "comparison": "reasoning", "arithmetic": "reasoning"}
        assert recs[0]["category"] == cat[recs[0]["subtask"]]
    assert {r["subtask"] for r in bench[1]["bench_mme"]} == set(cat)


def test_seed_exactly_one_correct_option(bench):
    for r in bench[1]["bench_seed"]:
        opts = r["options"]
        assert len(opts) == 4 and len(set(opts)) == 4
        truth = oracle(r["scene"], r["question"])
        assert [o == truth for o in opts].count(True) == 1
        assert opts[r["answer_index"]] == truth
    kinds = Counter(r["kind"] for r in bench[1]["bench_seed"])
    assert set(kinds) == {"count", "colour", "shape", "position"}
    positions = Counter(r["answer_index"] for r in bench[1]["bench_seed"])
    assert len(positions) == 4  # the right answer is not always in one slot


def test_transfer_flag_and_rate(bench):
    world, b, _ = bench
    unseen = set(world.unseen_by_u)
    assert unseen
    for name, recs in b.items():
        rate = sum(r["transfer"] for r in recs) / len(recs)
        assert 0.15 < rate < 0.6, (name, rate)
        for r in recs:
            in_scene = any((o["colour"], o["shape"]) in unseen for o in r["scene"]["objects"])
            # An MME pair is scored together (acc+), so it shares one flag.
            partners = [p for p in recs if name == "bench_mme" and p["pair_id"] == r["pair_id"]]
            words = " ".join(p["question"] for p in partners or [r]).split()
            in_text = any((a, c) in unseen for a, c in zip(words, words[1:]))
            assert r["transfer"] == (in_scene or in_text)


def test_deterministic(bench):
    world, b, u_train = bench
    again = make_benchmarks(World(world.cfg, 3), 3, N, u_train)
    assert again == b


def test_understanding_training_answers_match_scene(bench):
    """The training families use the same builders; their answers are right too."""
    from uvlm.world.language import understanding_sample

    world = bench[0]
    rng = stream(5, "check")
    families = Counter()
    for _ in range(400):
        scene = world.sample_scene(rng, "u")
        s = understanding_sample(scene, world, rng)
        families[s["family"]] += 1
        if s["family"] != "caption":
            assert oracle(scene, s["instruction"]) == s["answer"], s
    assert set(families) == {"caption", "attribute", "existence", "count", "spatial", "comparison"}
    assert 0.4 < families["caption"] / 400 < 0.6
