"""pipeline.metrics against cases computed by hand, including every 0/0 rule of its docstring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import (
    OUTCOMES,
    average_precision,
    counts,
    evaluate,
    format_ap_table,
    group_summary,
    jaccard,
    outcomes,
    scores,
)

# 4 images × 3 attributes. Attribute 0: TP, FP, FN, TN once each. Attribute 1: never labelled,
# never predicted (all TN). Attribute 2: labelled everywhere, predicted on images 0 and 1.
ACT = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]], np.uint8)
PRD = np.array([[0.9, 0.1, 0.8], [0.7, 0.2, 0.6], [0.3, 0.0, 0.4], [0.2, 0.4, 0.1]])


def test_outcomes_name_tp_fp_fn_tn_per_image_and_attribute():
    codes = outcomes(ACT, PRD)
    assert [OUTCOMES[c] for c in codes[:, 0]] == ["TP", "FP", "FN", "TN"]
    assert [OUTCOMES[c] for c in codes[:, 2]] == ["TP", "TP", "FN", "FN"]


def test_a_probability_equal_to_the_threshold_counts_as_predicted():
    assert OUTCOMES[outcomes([[1]], [[0.5]], 0.5)[0, 0]] == "TP"


def test_counts_and_scores_by_hand():
    c = counts(ACT, PRD)
    assert c["TP"].tolist() == [1, 0, 2] and c["FP"].tolist() == [1, 0, 0]
    assert c["FN"].tolist() == [1, 0, 2] and c["TN"].tolist() == [1, 4, 0]
    s = scores(c["TP"], c["FP"], c["FN"], c["TN"])
    assert s["accuracy"].tolist() == [0.5, 1.0, 0.5]
    assert s["precision"][0] == 0.5 and s["precision"][2] == 1.0
    assert s["recall"][0] == 0.5 and s["recall"][2] == 0.5
    assert s["f1"][0] == 0.5 and s["f1"][2] == pytest.approx(2 / 3)


def test_zero_over_zero_is_undefined_but_f1_only_when_nothing_was_labelled_or_predicted():
    s = scores(tp=0, fp=0, fn=0, tn=4)  # attribute 1 above
    assert s["accuracy"] == 1.0
    assert math.isnan(s["precision"]) and math.isnan(s["recall"]) and math.isnan(s["f1"])
    s = scores(tp=0, fp=0, fn=3, tn=1)  # labelled, never predicted
    assert math.isnan(s["precision"]) and s["recall"] == 0 and s["f1"] == 0
    s = scores(tp=0, fp=2, fn=0, tn=2)  # predicted, never labelled
    assert s["precision"] == 0 and math.isnan(s["recall"]) and s["f1"] == 0
    assert math.isnan(scores(0, 0, 0, 0)["accuracy"])


def test_average_precision_by_hand_and_undefined_without_positives():
    ap = average_precision(ACT, PRD)
    # attribute 0 ranked 0.9(+) 0.7(−) 0.3(+) 0.2(−): AP = (1/1 + 2/3) / 2
    assert ap[0] == pytest.approx(5 / 6)
    assert math.isnan(ap[1])
    assert ap[2] == 1.0  # every image is positive: precision is 1 at each rank


def test_map_averages_only_the_defined_aps():
    result = evaluate(ACT, PRD)
    assert result["mAP"] == pytest.approx((5 / 6 + 1.0) / 2)
    assert result["macro_precision"] == pytest.approx(0.75)  # (0.5 + 1) / 2, attribute 1 skipped
    assert result["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_jaccard_by_hand_and_one_when_both_sets_are_empty():
    act = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    prd = np.array([[0, 0.9, 0.9], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1]])
    assert jaccard(act, prd).tolist() == pytest.approx([1 / 3, 1.0, 0.0])


def test_exact_match_needs_every_attribute_right():
    result = evaluate(ACT, PRD)
    # image 0: [1,0,1] vs [T,F,T] matches; the others each miss at least one attribute
    assert result["exact_match"] == 0.25
    assert result["jaccard"] == pytest.approx((1 + 1 / 2 + 0 + 0) / 4)


def test_group_summary_pools_counts_over_all_image_attribute_pairs():
    summary = group_summary(ACT, PRD)
    overall = summary["overall"]
    assert (overall["TP"], overall["FP"], overall["FN"], overall["TN"]) == (3, 1, 3, 5)
    assert overall["accuracy"] == pytest.approx(8 / 12)
    assert overall["precision"] == pytest.approx(3 / 4) and overall["recall"] == 0.5
    assert summary["n_images"] == 4
    assert summary["per_attribute"]["TP"] == [1, 0, 2]


def test_threshold_moves_outcomes():
    assert counts(ACT, PRD, threshold=0.25)["TP"].tolist() == [2, 0, 3]


def test_empty_group_has_undefined_scores_not_a_crash():
    summary = group_summary(np.zeros((0, 3)), np.zeros((0, 3)))
    assert summary["n_images"] == 0 and math.isnan(summary["overall"]["accuracy"])
    assert math.isnan(evaluate(np.zeros((0, 3)), np.zeros((0, 3)))["exact_match"])


def test_ap_table_shows_undefined_as_a_dash_and_ends_with_map():
    table = format_ap_table(["a", "never", "c"], evaluate(ACT, PRD))
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["attribute", "AP"]
    assert lines[2].split()[1] == "–"  # attribute "never" has no AP
    assert lines[-1].split() == ["mAP", f"{(5 / 6 + 1) / 2:.3f}"]
