"""The audit's image view: radial features see a sharp ring, the trees never score an image with
its own labels, the view lifts flipped labels the CNN cannot see, and it is saved with the run's
out-of-fold predictions whole or not at all."""

from __future__ import annotations

import numpy as np
import pytest

from components.audit import predictions_note
from pipeline import audit, folds, image_view, store
from pipeline.cli import main
from pipeline.errors import PipelineError


def _ring_image(radius: float | None, size=128, centre=(64.0, 64.0), seed=0) -> np.ndarray:
    """Counts falling off as a power of the distance from the centre, with a 1-px ring."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - centre[0], yy - centre[1])
    image = 1e4 / (1 + r) ** 2
    if radius is not None:
        image += 50.0 * np.exp(-0.5 * ((r - radius) / 0.8) ** 2)
    return rng.poisson(image + 5.0).astype(np.float32)


def test_a_sharp_ring_stands_out_in_the_peak_of_its_own_ring():
    plain = image_view.radial_features(_ring_image(None), (64.0, 64.0))
    ringed = image_view.radial_features(_ring_image(40.0), (64.0, 64.0))
    rings = image_view.RINGS
    edges = np.geomspace(image_view.INNER_PX, np.hypot(128, 128), rings + 1)
    k = int(np.digitize(40.0, edges) - 1)
    peaks_plain, peaks_ringed = plain[2 * rings:], ringed[2 * rings:]
    assert peaks_ringed[k] > peaks_plain[k] + 0.3
    assert peaks_ringed[k] == pytest.approx(np.nanmax(peaks_ringed))
    mean = plain[:rings]
    assert mean[2] > mean[10] > mean[16]  # the intensity falls off outwards


def test_rings_beyond_a_beam_centre_off_the_detector_are_missing_not_zero():
    centre = (-100.0, 64.0)  # left of the image: no pixel lies within 100 px of it
    features = image_view.radial_features(_ring_image(None, centre=centre), centre)
    mean = features[: image_view.RINGS]
    edges = np.geomspace(image_view.INNER_PX, np.hypot(128, 128), image_view.RINGS + 1)
    assert np.isnan(mean[edges[1:] < 100]).all()
    assert np.isfinite(mean[edges[:-1] > 110]).all()


def _features_and_labels(n=200, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 6))
    act = np.stack([features[:, 0] > 0, features[:, 1] + features[:, 2] > 0.5],
                   axis=1).astype(np.uint8)
    return features, act


def test_no_image_is_scored_by_trees_that_saw_its_labels():
    features, act = _features_and_labels()
    fold = np.arange(len(act)) % 4
    view = image_view.out_of_fold_view(features, act, fold)
    flipped = act.copy()
    flipped[fold == 2] ^= 1  # every label of fold 2 changes
    again = image_view.out_of_fold_view(features, flipped, fold)
    assert np.array_equal(view[fold == 2], again[fold == 2])
    assert not np.allclose(view[fold != 2], again[fold != 2])
    # Learned from the features alone, the view separates the classes it never saw.
    assert view[act[:, 0] == 1, 0].mean() > view[act[:, 0] == 0, 0].mean() + 0.5


def test_a_feature_no_fitting_image_has_is_left_out_not_an_error():
    features, act = _features_and_labels()
    features[:, 5] = np.nan
    view = image_view.out_of_fold_view(features, act, np.arange(len(act)) % 3)
    assert np.isfinite(view).all()


def _flips_the_cnn_cannot_see(n=600, seed=1):
    """Attribute 0: the model's probability is noise, the image view knows the truth."""
    rng = np.random.default_rng(seed)
    true = (rng.random((n, 3)) < 0.3).astype(np.uint8)
    prd = np.clip(0.15 + 0.7 * true + rng.normal(0, 0.15, true.shape), 0.01, 0.99)
    prd[:, 0] = rng.uniform(0.2, 0.4, n)
    view = np.full(true.shape, 0.5)
    view[:, 0] = np.where(true[:, 0] == 1, 0.8, 0.2) + rng.normal(0, 0.05, n)
    wrong = rng.random(true.shape) < 0.05
    return np.where(wrong, 1 - true, true).astype(np.uint8), prd, np.clip(view, 0, 1), wrong


def test_the_image_view_lifts_flips_the_models_probability_misses():
    act, prd, view, wrong = _flips_the_cnn_cannot_see()
    fold = np.arange(len(act)) % 5
    k = int(wrong[:, 0].sum())

    def caught(expected):  # wrong labels of attribute 0 among its k most suspect
        top = np.argsort(-np.abs(act[:, 0] - expected[:, 0]), kind="stable")[:k]
        return wrong[top, 0].mean()

    without = caught(audit.label_context(act, prd, fold))
    with_view = caught(audit.label_context(act, prd, fold, view=view))
    assert with_view >= 0.7 > 0.3 >= without


def test_the_view_is_saved_with_the_out_of_fold_predictions_and_ranked_on(synthetic_run):
    run, n, a = synthetic_run, len(synthetic_run), len(synthetic_run.attributes)
    fold = folds.fold_assignment(n, 3)
    folds.write_oof(run, run.prd, fold, {"folds": 3, "steps": 7})
    assert folds.read_image_view(run) is None  # saved before the view existed
    source = audit.audit_run(run).attrs["predictions"]
    assert "image view" not in source
    assert predictions_note(source, run.id).endswith(f"audit --run {run.id} --image-view")
    view = np.full((n, a), 0.3, np.float32)
    folds.write_oof(run, run.prd, fold, {"folds": 3, "steps": 7}, image_view=view)
    assert np.array_equal(folds.read_image_view(run), view)
    source = audit.audit_run(run).attrs["predictions"]
    assert source.endswith("and the image view")
    assert "--image-view" not in predictions_note(source, run.id)
    np.save(run.path / folds.OOF_IMAGE, np.full((n, a), 0.9, np.float32))  # not what it vouched
    assert folds.read_image_view(run) is None
    assert folds.read_oof(run) is not None  # the predictions themselves still hold


def test_a_run_without_out_of_fold_predictions_gets_no_image_view(synthetic_run, capsys):
    with pytest.raises(PipelineError, match="no out-of-fold predictions"):
        folds.add_image_view(synthetic_run.data_dir, synthetic_run.id)
    assert main(["audit", "--run", synthetic_run.id, "--image-view",
                 "--data-dir", str(synthetic_run.data_dir)]) == 2
    assert "--folds 5" in capsys.readouterr().err
    assert folds.read_image_view(store.get_run(synthetic_run.id, synthetic_run.data_dir)) is None


def test_older_out_of_fold_predictions_get_their_image_view_from_the_command_line(
        synthetic_run, capsys):
    run, n = synthetic_run, len(synthetic_run)
    fold = folds.fold_assignment(n, 3)
    folds.write_oof(run, run.prd, fold, {"folds": 3, "steps": 7, "fold_seed": 0})
    assert main(["audit", "--run", run.id, "--image-view", "--data-dir",
                 str(run.data_dir)]) == 0
    assert "out-of-fold predictions (3 models, 7 steps" in capsys.readouterr().out
    run = store.get_run(run.id, run.data_dir)
    oof, kept, note = folds.read_oof(run)
    assert np.array_equal(kept, fold) and (note["folds"], note["steps"]) == (3, 7)
    view = folds.read_image_view(run)
    assert view.shape == run.prd.shape and np.isfinite(view).all()
    assert audit.audit_run(run).attrs["predictions"].endswith("and the image view")
