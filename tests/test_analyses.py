"""The analyses behind the dashboard's questions, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analyses.cooccurrence import cell_rows, conditional_errors
from pipeline.analyses.disagreement import disagreement
from pipeline.analyses.uncertainty import bootstrap_intervals, differ
from pipeline.errors import PipelineError


def tiny_run():
    """Six images, two attributes. Attribute 1 (B) is missed on two of the three images that
    also carry A, and on none of the two that carry B alone."""
    act = np.array([[1, 1], [1, 1], [1, 1], [0, 1], [0, 1], [1, 0]])
    prd = np.array([[.9, .2], [.8, .3], [.9, .9], [.1, .8], [.2, .7], [.1, .1]])
    return act, prd


def test_conditional_error_of_a_tiny_run_matches_the_hand_count():
    act, prd = tiny_run()
    table = conditional_errors(act, prd, 0.5, "fn")
    # B missed on 2 of the 3 images carrying A, on 0 of the 2 without A: +2/3.
    assert table["with_i"][0, 1] == pytest.approx(2 / 3)
    assert table["without_i"][0, 1] == pytest.approx(0.0)
    assert table["change"][0, 1] == pytest.approx(2 / 3)
    assert (table["n_with"][0, 1], table["errors_with"][0, 1]) == (3, 2)
    # A missed on 1 of its 4 images (row 5); of the 3 carrying B, none is missed.
    assert table["own"].tolist() == pytest.approx([1 / 4, 2 / 5])
    assert table["with_i"][1, 0] == pytest.approx(0.0)
    assert table["without_i"][1, 0] == pytest.approx(1.0)
    assert np.isnan(table["change"][0, 0]) and np.isnan(table["change"][1, 1])
    assert cell_rows(act, prd, 0.5, 0, 1, "fn").tolist() == [0, 1]
    assert cell_rows(act, prd, 0.5, 0, 0, "fn").tolist() == [5]  # the diagonal: wrong on A


def test_false_alarms_and_a_subset_of_the_run():
    act, prd = tiny_run()
    table = conditional_errors(act, prd, 0.5, "fp", rows=[3, 4, 5])
    # Within rows 3-5, A is absent on 3 and 4 and not predicted there; B is absent on 5 only.
    assert table["own"].tolist() == pytest.approx([0.0, 0.0])
    assert table["with_i"][0, 1] == pytest.approx(0.0)  # row 5: carries A, lacks B, no alarm
    assert np.isnan(table["without_i"][0, 1])  # rows 3 and 4 lack A but carry B: none counted
    with pytest.raises(PipelineError, match="unknown error kind"):
        conditional_errors(act, prd, 0.5, "both")


def test_the_disagreement_score_is_zero_for_identical_spaces():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(150, 12))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    # Unit vectors around their mean: Euclidean and cosine nearness agree, so the three spaces
    # hold the same neighbourhoods.
    points = np.concatenate([points, -points]).astype(np.float32)
    found = disagreement(points, points, points, k=8)
    assert np.allclose(found["score"], 0.0)


def test_an_image_whose_feature_neighbours_disagree_scores_higher():
    rng = np.random.default_rng(1)
    act = np.repeat(np.eye(4), 30, axis=0)  # four label groups of 30 images
    prd = np.clip(act + rng.normal(0, 0.05, act.shape), 0, 1)
    fea = np.concatenate([act * 5, rng.normal(0, 0.1, (120, 6))], axis=1)
    fea[0] = fea[40]  # image 0 (group A) looks, to the model, like an image of group B
    found = disagreement(act, fea, prd, k=10)
    # Within a group, neighbours are picked among look-alikes at random in each space, so
    # every image disagrees a little; image 0 disagrees most, by far.
    others = np.delete(found["score"], 0)
    assert found["score"][0] > 0.7 and found["score"][0] > others.max() + 0.1


def test_bootstrap_intervals_cover_the_true_value_in_at_least_93_of_200_groups():
    rng = np.random.default_rng(7)
    p_label, p_hit, p_alarm = 0.3, 0.8, 0.1  # true recall 0.8, true precision below
    true_recall = p_hit
    true_precision = p_label * p_hit / (p_label * p_hit + (1 - p_label) * p_alarm)
    covered = {"recall": 0, "precision": 0}
    for g in range(200):
        act = rng.random((150, 3)) < p_label
        said = np.where(act, rng.random(act.shape) < p_hit, rng.random(act.shape) < p_alarm)
        found = bootstrap_intervals(act, said.astype(float), 0.5, n_boot=1000, seed=g)
        for name, truth in (("recall", true_recall), ("precision", true_precision)):
            low, high = found["overall"][name]
            covered[name] += low <= truth <= high
    assert covered["recall"] >= 186 and covered["precision"] >= 186, covered


def test_groups_differ_only_beyond_their_intervals():
    assert differ((0.1, 0.2), (0.3, 0.4)) and not differ((0.1, 0.35), (0.3, 0.4))
    assert not differ((float("nan"), 0.2), (0.3, 0.4))


def test_a_group_shown_again_gets_its_intervals_unchanged_by_what_a_caller_did_with_them():
    rng = np.random.default_rng(3)
    act = rng.random((200, 4)) < 0.4
    prd = np.where(act, rng.random(act.shape) < 0.8, rng.random(act.shape) < 0.1).astype(float)
    first = bootstrap_intervals(act, prd, 0.5)
    kept = first["overall"]["recall"]
    first["overall"]["recall"] = (0.0, 0.0)  # a caller writing into its copy
    assert bootstrap_intervals(act, prd, 0.5)["overall"]["recall"] == kept
    fewer = bootstrap_intervals(act[:150], prd[:150], 0.5)
    assert fewer["n_images"] == 150 and fewer["overall"]["recall"] != kept
