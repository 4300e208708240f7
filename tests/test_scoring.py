"""Metric arithmetic on hand-made answer sheets: every expected number is worked out by hand."""
import math

import numpy as np
import pytest
import torch

from uvlm.eval import scoring as S

IGN = S.IGNORE


# ---------------------------------------------------------------- from logits

def _logits_with_argmax(argmax_rows, V=6, high=5.0):
    """(B, L, V) logits whose argmax at position t is argmax_rows[b][t]."""
    B, L = len(argmax_rows), len(argmax_rows[0])
    lg = torch.zeros(B, L, V)
    for b, row in enumerate(argmax_rows):
        for t, tok in enumerate(row):
            lg[b, t, tok] = high
    return lg


def test_exact_match_is_teacher_forced_argmax_on_every_answer_token():
    # Labels aligned with inputs; answer targets at positions 3, 4 (the last is <eos>=2).
    labels = torch.tensor([[IGN, IGN, IGN, 4, 2],
                           [IGN, IGN, IGN, 4, 2],
                           [IGN, IGN, IGN, 4, 2],
                           [IGN, IGN, 5, 2, IGN]])   # shorter answer, right-padded
    # logits at t predict t + 1: positions 2, 3 must argmax to 4, 2.
    lg = _logits_with_argmax([[0, 0, 4, 2, 0],     # both right
                              [0, 0, 4, 3, 0],     # answer right, does not stop (<eos> wrong)
                              [0, 0, 1, 2, 0],     # first answer token wrong
                              [0, 5, 2, 0, 0]])    # right; the padded tail does not matter
    st = S.answer_stats(lg, labels)
    assert st["exact"].tolist() == [True, False, False, True]
    assert st["n_tokens"].tolist() == [2, 2, 2, 2]
    assert st["n_correct"].tolist() == [2, 1, 1, 2]
    # Log-likelihood of the gold tokens, by hand: right = 5 - log(e^5 + 5), wrong = 0 - log(e^5 + 5).
    z = math.log(math.exp(5) + 5)
    assert st["logprob"][0] == pytest.approx(2 * (5 - z))
    assert st["logprob"][1] == pytest.approx((5 - z) + (0 - z))


def test_exact_match_false_for_a_row_without_targets():
    labels = torch.full((1, 4), IGN)
    st = S.answer_stats(torch.zeros(1, 4, 3), labels)
    assert st["exact"].tolist() == [False] and st["n_tokens"].tolist() == [0]


def test_first_answer_margin_reads_the_position_before_the_first_target():
    labels = torch.tensor([[IGN, IGN, 7, 2], [IGN, 8, 2, IGN]])
    lg = torch.zeros(2, 4, 10)
    lg[0, 1, 7], lg[0, 1, 8] = 3.0, 1.0    # row 0: first target at 2 -> logits at 1
    lg[1, 0, 7], lg[1, 0, 8] = 0.5, 2.0    # row 1: first target at 1 -> logits at 0
    lg[0, 2, 8] = 100.0                    # later positions are ignored
    m = S.first_answer_margin(lg, labels, pos_id=7, neg_id=8)
    assert m.tolist() == [2.0, -1.5]


def test_image_token_nll_skips_text_and_eoi_targets():
    start = 10
    labels = torch.tensor([[IGN, IGN, 11, 12, 4], [IGN, 13, 4, IGN, IGN]])  # 4 = <eoi>, a text id
    lg = torch.zeros(2, 5, 14)  # uniform logits: every target costs log(14)
    lg[0, 1, 11] = 50.0         # a sure hit costs ~0
    total, count = S.image_token_nll(lg, labels, start)
    assert count.tolist() == [2, 1]
    assert total[0] == pytest.approx(math.log(14), abs=1e-6)
    assert total[1] == pytest.approx(math.log(14))


# ---------------------------------------------------------------- perfect sheets

def test_perfect_answer_sheet_scores_100_everywhere():
    n = 12
    gold = np.array([True, False] * (n // 2))
    sampling = np.array(S.POPE_SAMPLINGS * (n // 3))
    pope = S.pope_scores(gold, gold, sampling)
    for s in S.POPE_SAMPLINGS:
        assert pope[s]["acc"] == 100 and pope[s]["f1"] == 100
    assert pope["acc"] == 100 and pope["f1"] == 100

    subtasks = {"existence": "perception", "count": "perception", "comparison": "reasoning"}
    names = np.repeat(list(subtasks), 4)
    mme = S.mme_scores(np.ones(12, bool), names, [subtasks[s] for s in names],
                       np.arange(12) // 2, subtasks)
    assert mme["perception"] == 400 and mme["reasoning"] == 200
    assert all(v["score"] == 200 for v in mme["subtasks"].values())

    lp = np.full((5, 4), -9.0)
    ans = np.array([0, 1, 2, 3, 1])
    lp[np.arange(5), ans] = -1.0
    assert S.multiple_choice(lp, np.ones((5, 4)), ans)["acc"] == 100
    assert S.accuracy(np.ones(7, bool))["acc"] == 100


# ---------------------------------------------------------------- known mixes

def test_pope_with_a_known_confusion_matrix():
    # adversarial: tp=3 fn=1 fp=2 tn=2 -> acc 5/8, P 3/5, R 3/4, F1 2/3
    gold = [1, 1, 1, 1, 0, 0, 0, 0]
    pred = [1, 1, 1, 0, 1, 1, 0, 0]
    # random: all right (4 items) -> acc 100, F1 100
    gold += [1, 0, 1, 0]
    pred += [1, 0, 1, 0]
    sampling = ["adversarial"] * 8 + ["random"] * 4
    out = S.pope_scores(np.array(pred, bool), np.array(gold, bool), sampling)
    adv = out["adversarial"]
    assert adv["acc"] == pytest.approx(62.5)
    assert adv["precision"] == pytest.approx(60.0)
    assert adv["recall"] == pytest.approx(75.0)
    assert adv["f1"] == pytest.approx(200 / 3)
    assert adv["yes_ratio"] == pytest.approx(62.5)
    assert out["popular"]["n"] == 0 and out["popular"]["acc"] is None
    # Means over the samplings present only.
    assert out["acc"] == pytest.approx((62.5 + 100) / 2)
    assert out["f1"] == pytest.approx((200 / 3 + 100) / 2)


def test_pope_f1_zero_when_model_never_says_yes():
    out = S.binary_scores(np.zeros(4, bool), np.array([1, 0, 1, 0], bool))
    assert out["acc"] == 50 and out["f1"] == 0 and out["precision"] == 0


def test_mme_acc_and_acc_plus_per_pair():
    # existence: pairs 0 (both right), 1 (one right) -> acc 75, acc+ 50 -> 125
    # count: pairs 2 (none right), 3 (both right) -> acc 50, acc+ 50 -> 100
    # comparison (reasoning): pair 4 (one right) -> acc 50, acc+ 0 -> 50
    correct = [1, 1, 1, 0, 0, 0, 1, 1, 0, 1]
    subtask = ["existence"] * 4 + ["count"] * 4 + ["comparison"] * 2
    category = ["perception"] * 8 + ["reasoning"] * 2
    pair = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    out = S.mme_scores(np.array(correct, bool), subtask, category, pair)
    assert out["subtasks"]["existence"]["acc"] == 75 and out["subtasks"]["existence"]["acc_plus"] == 50
    assert out["subtasks"]["count"]["score"] == 100
    assert out["perception"] == 225 and out["reasoning"] == 50
    assert out["perception_max"] == 400 and out["reasoning_max"] == 200


def test_mme_category_is_none_when_a_subtask_has_no_items():
    subtasks = {"existence": "perception", "count": "perception"}
    out = S.mme_scores(np.array([1, 1], bool), ["existence"] * 2, ["perception"] * 2, [0, 0], subtasks)
    assert out["subtasks"]["count"]["score"] is None and out["perception"] is None


def test_multiple_choice_sum_versus_length_normalised():
    # Item 0: option 1 has the best sum (-2 over 1 token) but option 2 the best mean (-3 over 4 = -0.75).
    lp = np.array([[-5.0, -2.0, -3.0, -9.0],
                   [-1.0, -4.0, -4.0, -4.0],
                   [-3.0, -3.0, -8.0, -8.0]])   # tie -> first option
    nt = np.array([[1, 1, 4, 1], [2, 2, 2, 2], [1, 1, 1, 1]])
    out = S.multiple_choice(lp, nt, answer_index=[1, 0, 1], groups={"kind": ["a", "a", "b"]})
    assert out["acc"] == pytest.approx(200 / 3)
    assert out["acc_norm"] == pytest.approx(100 / 3)
    assert out["by_kind"] == {"a": {"acc": 100.0, "n": 2}, "b": {"acc": 0.0, "n": 1}}


def test_token_scores_and_empty_sets():
    out = S.token_scores([True, False], [2, 3], [2, 1], [-1.0, -4.0])
    assert out["exact_match"] == 50 and out["token_acc"] == 60 and out["nll"] == 1.0
    empty = S.token_scores([], [], [], [])
    assert empty["exact_match"] is None and empty["nll"] is None and empty["n"] == 0


def test_subsets_split_on_transfer_flag():
    recs = [{"transfer": False}, {"transfer": True}, {"transfer": False}]
    out = S.by_subset(recs, lambda correct: S.accuracy(correct), correct=np.array([1, 0, 0], bool))
    assert out["all"] == {"acc": pytest.approx(100 / 3), "n": 3}
    assert out["in_dist"] == {"acc": 50.0, "n": 2}
    assert out["transfer"] == {"acc": 0.0, "n": 1}


def test_accuracy_by_group():
    out = S.accuracy([1, 0, 1, 1], groups={"kind": ["count", "count", "relation", "relation"]})
    assert out["by_kind"]["count"] == {"acc": 50.0, "n": 2}
    assert out["by_kind"]["relation"] == {"acc": 100.0, "n": 2}


# ---------------------------------------------------------------- seeds

def test_aggregate_seeds_arithmetic():
    a = {"run": "u_base", "u": {"gqa": {"acc": 50.0, "n": 10}, "mme": {"reasoning": None}},
         "only_a": 1.0, "flag": True, "k": None}
    b = {"run": "u_base", "u": {"gqa": {"acc": 60.0, "n": 10}, "mme": {"reasoning": 100.0}}, "flag": True}
    c = {"run": "u_base", "u": {"gqa": {"acc": 70.0, "n": 10}, "mme": {"reasoning": 120.0}}, "flag": False}
    out = S.aggregate_seeds([a, b, c])
    assert out["run"] == "u_base"
    assert out["u"]["gqa"]["acc"] == {"mean": 60.0, "std": pytest.approx(10.0), "n": 3}
    assert out["u"]["gqa"]["n"] == {"mean": 10.0, "std": 0.0, "n": 3}
    assert out["u"]["mme"]["reasoning"]["mean"] == 110.0 and out["u"]["mme"]["reasoning"]["n"] == 2
    assert out["only_a"] == {"mean": 1.0, "std": None, "n": 1}
    assert out["flag"] == [True, True, False]
    assert out["k"] is None
    with pytest.raises(ValueError):
        S.aggregate_seeds([])


def test_table_reads_paper_columns_per_subset():
    m = {"u": {"gqa": {"all": {"acc": 40.0}, "transfer": {"acc": 10.0}},
               "pope": {"all": {"adversarial": {"acc": 70.0}, "f1": 66.0}}}}
    t = S.table(m)
    assert t["all"]["GQA"] == 40.0 and t["transfer"]["GQA"] == 10.0 and t["in_dist"]["GQA"] is None
    assert t["all"]["POPE-A"] == 70.0 and t["all"]["POPE-F1"] == 66.0
    assert t["all"]["FID"] is None and set(t["all"]) == set(S.COLUMNS)
