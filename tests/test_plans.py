"""Layer plans: placement, sharing, and impossible plans that must name their key."""
from types import SimpleNamespace

import pytest

from uvlm.core.errors import ConfigError
from uvlm.core.schema import build
from uvlm.model.plans import (HimixConfig, HmgenConfig, LayerMode, build_plan, build_plans, check_run,
                        describe_plan, max_shallow_layers, plan_proj_sets, required_proj_sets, shallow_layers)


@pytest.mark.parametrize("n_layers,k,placement,expected", [
    (6, 1, "alternate", [3]),
    (6, 2, "alternate", [2, 4]),
    (8, 3, "alternate", [2, 4, 6]),
    (12, 3, "alternate", [4, 6, 8]),
    (32, 3, "alternate", [14, 16, 18]),
    (32, 5, "alternate", [12, 14, 16, 18, 20]),
    (8, 3, "center", [3, 4, 5]),
    (8, 0, "alternate", []),
])
def test_shallow_placement(n_layers, k, placement, expected):
    assert shallow_layers(n_layers, k, placement) == expected


@pytest.mark.parametrize("n_layers", range(1, 20))
@pytest.mark.parametrize("placement", ["alternate", "center"])
def test_shallow_placement_invariants(n_layers, placement):
    for k in range(max_shallow_layers(n_layers, placement) + 1):
        s = shallow_layers(n_layers, k, placement)
        assert len(s) == k and len(set(s)) == k
        assert all(2 <= i <= n_layers - 2 for i in s)  # layers 0, 1 and the last stay full
        if placement == "alternate":
            assert all(b - a == 2 for a, b in zip(s, s[1:]))  # a full layer between shallow ones
    with pytest.raises(ConfigError) as e:
        shallow_layers(n_layers, max_shallow_layers(n_layers, placement) + 1, placement)
    assert e.value.key == "hmgen.k"


def test_base_plans():
    for task in "ug":
        assert build_plan(task, "base", 4) == [LayerMode("full")] * 4


@pytest.mark.parametrize("share,himix_set,hmgen_set", [("all", "img", "img"), ("partial", "u", "g")])
def test_unified_plans_and_sharing(share, himix_set, hmgen_set):
    plans = build_plans("ug", "himix+hmgen", 8, HimixConfig(start_layer=2), HmgenConfig(k=3), share)
    u, g = plans["u"], plans["g"]
    assert u == [LayerMode("full")] * 2 + [LayerMode("himix", himix_set)] * 6
    assert [i for i, m in enumerate(g) if m.mode == "shallow"] == [2, 4, 6]
    assert all(m.image_proj == hmgen_set for m in g if m.mode == "full")
    assert plan_proj_sets(u) + plan_proj_sets(g) == [himix_set, hmgen_set]
    assert set(required_proj_sets("ug", "himix+hmgen", share)) == {himix_set, hmgen_set}


def test_unified_run_with_one_accelerator_keeps_the_other_task_on_base():
    plans = build_plans("ug", "himix", 6)
    assert plans["g"] == [LayerMode("full")] * 6
    assert all(m.mode == "himix" for m in plans["u"])
    plans = build_plans("ug", "hmgen", 6, hmgen=HmgenConfig(k=2))
    assert plans["u"] == [LayerMode("full")] * 6
    assert sum(m.mode == "shallow" for m in plans["g"]) == 2
    assert list(build_plans("g", "hmgen", 6)) == ["g"]


def test_required_proj_sets():
    assert required_proj_sets("u", "base") == []
    assert required_proj_sets("u", "himix") == ["img"]
    assert required_proj_sets("ug", "himix+hmgen", "partial") == ["u", "g"]


@pytest.mark.parametrize("call,key", [
    (lambda: build_plan("g", "hmgen", 6, hmgen_k=3), "hmgen.k"),
    (lambda: build_plan("u", "himix", 6, himix_start_layer=6), "himix.start_layer"),
    (lambda: build_plan("g", "himix", 6), "run.accel"),
    (lambda: build_plan("u", "hmgen", 6), "run.accel"),
    (lambda: build_plan("u", "himix", 6, share="partial"), "run.share"),
    (lambda: build_plan("u", "base", 6, share="partial"), "run.share"),
    (lambda: build_plan("u", "turbo", 6), "run.accel"),
    (lambda: build_plan("g", "hmgen", 6, hmgen_placement="random"), "hmgen.placement"),
    (lambda: build_plans("u", "hmgen", 6), "run.accel"),
    (lambda: build_plans("g", "himix", 6), "run.accel"),
    (lambda: build_plans("u", "himix+hmgen", 6), "run.accel"),
    (lambda: build_plans("x", "base", 6), "run.task"),
    (lambda: required_proj_sets("ug", "hmgen", "partial"), "run.share"),
])
def test_impossible_plans_name_the_key(call, key):
    with pytest.raises(ConfigError) as e:
        call()
    assert e.value.key == key


def test_check_run_names_keys_under_the_run():
    spec = SimpleNamespace(task="g", accel="hmgen", share="all", hmgen_k=9, himix_start_layer=None)
    with pytest.raises(ConfigError) as e:
        check_run(spec, 8, HimixConfig(), HmgenConfig(), prefix="runs.g_hmgen")
    assert e.value.key == "runs.g_hmgen.hmgen_k"
    spec = SimpleNamespace(task="g", accel="hmgen", share="all", hmgen_k=None, himix_start_layer=None)
    with pytest.raises(ConfigError) as e:
        check_run(spec, 8, HimixConfig(), HmgenConfig(k=9), prefix="runs.g_hmgen")
    assert e.value.key == "hmgen.k"
    spec = SimpleNamespace(task="u", accel="himix", share="partial", hmgen_k=None, himix_start_layer=None)
    with pytest.raises(ConfigError) as e:
        check_run(spec, 8, HimixConfig(), HmgenConfig(), prefix="runs.x")
    assert e.value.key == "runs.x.share"
    check_run(SimpleNamespace(task="ug", accel="himix+hmgen", share="partial", hmgen_k=3, himix_start_layer=1),
              8, HimixConfig(), HmgenConfig(), prefix="runs.y")


def test_sections_from_params():
    assert build(HmgenConfig, {"k": 3, "placement": "center"}, prefix="hmgen") == HmgenConfig(3, "center")
    with pytest.raises(ConfigError) as e:
        build(HmgenConfig, {"placement": "random"}, prefix="hmgen")
    assert e.value.key == "hmgen.placement"
    with pytest.raises(ConfigError) as e:
        build(HimixConfig, {"start_layer": -1}, prefix="himix")
    assert e.value.key == "himix.start_layer"


def test_describe_plan():
    text = describe_plan(build_plan("g", "himix+hmgen", 6, hmgen_k=2, share="partial"))
    assert "full     layers [0, 1, 3, 5] (image Q/K/V from set 'g')" in text
    assert "shallow  layers [2, 4]" in text
    text = describe_plan(build_plan("u", "himix", 6, himix_start_layer=1))
    assert "full     layers [0]" in text and "himix    layers [1, 2, 3, 4, 5] (image K/V from set 'img')" in text
