"""Label audit: wrong labels rank first, confidence is judged per attribute, fixed ones leave."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import audit, corrections
from pipeline.cli import main
from pipeline.errors import PipelineError

NAMES = ["Ring", "Halo", "High background", "Circ. Beamstop", "Wedge beamstop"]


def _noisy_labels(n=300, a=5, rate=0.05, seed=0):
    """True labels, features that cluster by them, a fair model, and labels with flips."""
    rng = np.random.default_rng(seed)
    true = (rng.random((n, a)) < 0.3).astype(np.uint8)
    fea = np.concatenate([true * 3.0, rng.normal(size=(n, 20))], axis=1)
    prd = np.clip(0.15 + 0.7 * true + rng.normal(0, 0.15, (n, a)), 0, 1)
    wrong = rng.random((n, a)) < rate
    act = np.where(wrong, 1 - true, true).astype(np.uint8)
    return act, prd, fea, wrong


def test_flipped_labels_rank_above_correct_ones():
    act, prd, fea, wrong = _noisy_labels()
    ranking = audit.rank_labels(act, prd, fea, [f"img{i}" for i in range(len(act))], NAMES,
                                top=None)
    k = int(wrong.sum())
    assert len(ranking) == act.size
    assert audit.precision_at_k(ranking, wrong, NAMES, k) >= 0.8  # random ranking: ~0.05
    assert ranking["score"].is_monotonic_decreasing


def test_unlabelled_high_background_like_image_88_is_the_top_suspect():
    act, prd, fea, _ = _noisy_labels(rate=0.0)
    j = NAMES.index("High background")
    neighbour_of_88 = np.flatnonzero(act[:, j] == 1)[0]
    fea[88], act[88, j], prd[88, j] = fea[neighbour_of_88], 0, 0.97  # the model sees it
    ranking = audit.rank_labels(act, prd, fea, [f"img{i}" for i in range(len(act))], NAMES,
                                weight=0.5)
    top = ranking.iloc[0]
    assert (top["image_id"], top["attribute"], top["label"]) == ("img88", "High background", 0)
    assert top["prd"] == pytest.approx(0.97)
    assert top["vote"] > 0.5


def test_a_shy_model_is_judged_against_its_own_typical_confidence():
    # Attribute 0: the model gives positives only ~0.3; attribute 1: positives get ~0.9.
    act = np.array([[1, 1]] * 10 + [[0, 0]] * 10, dtype=np.uint8)
    prd = np.array([[0.3, 0.9]] * 10 + [[0.05, 0.05]] * 10)
    prd[10] = [0.35, 0.35]  # a negative at 0.35 is confident for the shy attribute only
    confident = audit.confidently_other(act, prd)
    assert confident[10].tolist() == [True, False]
    assert confident.sum() == 1
    t_pos, t_neg = audit.confident_thresholds(act, prd)
    assert t_pos.tolist() == pytest.approx([0.3, 0.9])
    assert t_neg[1] == pytest.approx((0.95 * 9 + 0.65) / 10)


def test_score_is_the_weighted_doubt_of_model_and_neighbours():
    act = np.array([[1], [1], [1], [0]], dtype=np.uint8)
    prd = np.array([[0.9], [0.8], [0.7], [0.6]])
    fea = np.eye(4)
    nbr = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])  # image 3's neighbours are all labelled 1
    s = audit.audit_scores(act, prd, fea, nbr=nbr, weight=0.75, context=False)
    assert s["vote"][:, 0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert s["score"][3, 0] == pytest.approx(0.75 * 0.6 + 0.25 * 1.0)
    assert s["score"][0, 0] == pytest.approx(0.75 * 0.1)
    with pytest.raises(PipelineError, match="weight must lie in"):
        audit.audit_scores(act, prd, fea, nbr=nbr, weight=1.5)


def test_a_label_its_companion_attributes_contradict_is_suspected_by_the_context():
    # Halo always comes with Ring here, and the model cannot tell either (all PRD 0.5); image 7
    # is annotated Ring without Halo: only the other labels give that cell away.
    rng = np.random.default_rng(1)
    ring = (rng.random(200) < 0.4).astype(np.uint8)
    act = np.stack([ring, ring, rng.random(200) < 0.5], axis=1).astype(np.uint8)
    act[7] = [1, 0, 1]
    expected = audit.label_context(act, np.full(act.shape, 0.5), np.arange(200) % 5)
    assert expected[7, 1] > 0.6  # a Halo is expected where Ring is annotated
    scores = audit.audit_scores(act, np.full(act.shape, 0.5), np.eye(200)[:, :3], weight=1.0)
    top = np.unravel_index(np.argsort(-scores["score"], axis=None)[:2], act.shape)
    assert (7, 1) in set(zip(*top, strict=True)) or (7, 0) in set(zip(*top, strict=True))


def test_on_a_large_run_the_context_is_fitted_on_a_fixed_sample_and_still_finds_the_odd_label(
        monkeypatch):
    rng = np.random.default_rng(1)
    ring = (rng.random(400) < 0.4).astype(np.uint8)
    act = np.stack([ring, ring, rng.random(400) < 0.5], axis=1).astype(np.uint8)
    act[7] = [1, 0, 1]
    folds = np.arange(400) % 2
    monkeypatch.setattr(audit, "MAX_FIT_ROWS", 120)  # each fold's 200 fitting rows exceed it
    sampled = audit.label_context(act, np.full(act.shape, 0.5), folds)
    assert sampled[7, 1] > 0.6
    assert np.array_equal(sampled, audit.label_context(act, np.full(act.shape, 0.5), folds))
    monkeypatch.setattr(audit, "MAX_FIT_ROWS", 10_000)
    whole = audit.label_context(act, np.full(act.shape, 0.5), folds)
    assert not np.array_equal(sampled, whole)  # the cap did change what was fitted
    assert np.abs(sampled - whole).max() < 0.2


def _flipped_logistic_data(rate, n=3000, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    true = (rng.random(n) < 1 / (1 + np.exp(-3 * x[:, 0]))).astype(float)
    return x, np.where(rng.random(n) < rate, 1 - true, true)


def test_the_context_model_learns_about_the_share_of_labels_that_were_flipped():
    x, noisy = _flipped_logistic_data(rate=0.10)
    _, learned = audit.fit_flip_logistic(x, noisy)
    assert 0.06 < learned < 0.14
    x, clean = _flipped_logistic_data(rate=0.0)
    assert audit.fit_flip_logistic(x, clean)[1] < 0.03
    plain, none = audit.fit_flip_logistic(x, clean, flip=0.0)
    assert none == 0.0 and np.array_equal(plain, audit.fit_logistic(x, clean))


def test_flipped_labels_no_longer_flatten_what_the_context_model_expects():
    # A plain fit on labels with 10 % flipped hedges towards the middle; the flip-aware fit
    # keeps the slope the true labels have (3 on x[:, 0]), so clear cases stay clear.
    x, noisy = _flipped_logistic_data(rate=0.10)
    plain = audit.fit_logistic(x, noisy)
    aware, _ = audit.fit_flip_logistic(x, noisy)
    assert plain[0] < 2.0 < aware[0]


def test_a_label_never_takes_part_in_its_own_context_score():
    act, prd, _, _ = _noisy_labels(n=100)
    folds = np.arange(100) % 4
    before = audit.label_context(act, prd, folds)
    flipped = act.copy()
    flipped[10, 2] = 1 - flipped[10, 2]
    after = audit.label_context(flipped, prd, folds)
    assert after[10, 2] == pytest.approx(before[10, 2])  # fitted on the other folds only
    assert not np.allclose(after[folds != 2], before[folds != 2])  # they did learn from it


def test_corrected_labels_leave_the_audit_and_count_as_reviewed(synthetic_run):
    data_dir = synthetic_run.data_dir
    first = audit.audit_run(synthetic_run, top=1).iloc[0]
    dataset = synthetic_run.meta["dataset"]
    corrections.set_label(data_dir, dataset, first["image_id"], first["attribute"],
                          1 - first["label"], author="ana")

    labels = corrections.labels_in_force(synthetic_run)
    act, mask = labels.act, labels.corrected
    assert mask.sum() == 1
    assert act[first["index"], synthetic_run.attributes.index(first["attribute"])] != first["label"]
    after = audit.audit_run(synthetic_run, act=act, skip=mask, top=None)
    pairs = set(zip(after["image_id"], after["attribute"], strict=True))
    assert (first["image_id"], first["attribute"]) not in pairs
    assert len(after) == synthetic_run.act.size - 1


def test_audit_command_prints_the_top_rows(synthetic_run, capsys):
    data_dir = str(synthetic_run.data_dir)
    assert main(["audit", "--run", synthetic_run.id, "--data-dir", data_dir, "--top", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"run {synthetic_run.id}: 60 images")
    assert out[1].split()[:4] == ["index", "image_id", "attribute", "label"]
    assert len(out) == 2 + 5


def test_audit_of_a_missing_run_exits_2_with_a_message(tmp_path, capsys):
    assert main(["audit", "--run", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_audit_refuses_probabilities_with_nan():
    act, prd, fea, _ = _noisy_labels(n=20)
    prd[3, 1] = np.nan
    with pytest.raises(PipelineError, match="prd holds 1 NaN"):
        audit.rank_labels(act, prd, fea, range(20), NAMES)
    with pytest.raises(PipelineError, match=r"fea has shape \(19, 25\)"):
        audit.rank_labels(act, np.nan_to_num(prd), fea[:19], range(20), NAMES)


# ---------------------------------------------------------------- in the dashboard


@pytest.mark.browser
def test_clicking_an_audit_row_opens_the_image_and_selects_it_in_the_views(dash_duo, tmp_path,
                                                                          monkeypatch):
    from app import create_app
    from tests.conftest import write_synthetic_run
    from tests.test_retrain import click, component_props, open_audit_tab, wait_for_prop

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    run = write_synthetic_run(tmp_path / "data", n=60)
    top = audit.audit_run(run, top=1).iloc[0]
    dash_duo.start_server(create_app(tmp_path / "data"))
    open_audit_tab(dash_duo)
    dash_duo.wait_for_contains_text("#text-audit-summary", "0 labels corrected")
    dash_duo.wait_for_contains_text("#audit-table", top["image_id"])
    dash_duo.wait_for_contains_text("#text-audit-predictions", "Ranked on in-sample predictions")

    click(dash_duo, ".audit-open")
    row = int(top["index"])
    assert wait_for_prop(dash_duo, "store-detail-index", "data", row)
    assert component_props(dash_duo, "store-selection")["data"] == [row]
    dash_duo.wait_for_contains_text("#text-detail-title", f"#{row} · {top['image_id']}")
    assert dash_duo.get_logs() == []
