"""Out-of-fold predictions: no image is scored by a model that trained on it, a stopped job
leaves the run as it was, the audit says which predictions it ranks on."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from components.audit import predictions_note
from pipeline import audit, folds, jobs, store
from pipeline.cli import main
from pipeline.errors import PipelineError
from tests.conftest import write_synthetic_run

N = 24


@pytest.fixture
def trainable_run(tmp_path):
    """A 24-image run whose run.json records a tiny compact model's training settings."""
    run = write_synthetic_run(tmp_path / "data", n=N)
    meta = json.loads((run.path / "run.json").read_text())
    meta["model"] = {"arch": "compact", "input_size": 32,
                     "training": {"steps": 2, "batch_size": 8, "lr": 3e-3, "seed": 0}}
    (run.path / "run.json").write_text(json.dumps(meta))
    store.open_run.cache_clear()
    return store.get_run(run.id, run.data_dir)


def _digests(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_fold_assignment_is_seeded_and_balanced():
    a, b = folds.fold_assignment(23, 5, seed=3), folds.fold_assignment(23, 5, seed=3)
    assert a.tolist() == b.tolist()
    assert sorted(np.bincount(a).tolist()) == [4, 4, 5, 5, 5]
    assert a.tolist() != folds.fold_assignment(23, 5, seed=4).tolist()


@pytest.mark.slow
def test_each_image_is_scored_by_the_one_model_that_never_trained_on_it(trainable_run,
                                                                        monkeypatch):
    import pipeline.infer
    import pipeline.train

    trained, scored = [], []  # per fold model: the image ids it trained on, then scored
    real_train, real_predict = pipeline.train.train, pipeline.infer.predict

    def spy_train(ds, **kw):
        trained.append(set(ds.images["image_id"].to_numpy()[ds.indices("train")]))
        return real_train(ds, **kw)

    def spy_predict(model, info, ds, **kw):
        scored.append(set(ds.images["image_id"]))
        return real_predict(model, info, ds, **kw)

    monkeypatch.setattr(pipeline.train, "train", spy_train)
    monkeypatch.setattr(pipeline.infer, "predict", spy_predict)
    note = folds.run_folds(trainable_run.data_dir, trainable_run.id, 4, progress=False)

    oof, fold, saved = folds.read_oof(store.get_run(trainable_run.id, trainable_run.data_dir))
    ids = trainable_run.images["image_id"].to_numpy()
    assert saved == note and note["folds"] == 4 and note["steps"] == 2
    assert len(trained) == len(scored) == 4
    for f in range(4):
        assert scored[f] == set(ids[fold == f])  # fold f's model scored exactly fold f
        assert not scored[f] & trained[f]  # ...and trained on none of it
        assert scored[f] | trained[f] == set(ids)  # but on every other image
    assert oof.shape == trainable_run.prd.shape and np.isfinite(oof).all()
    view = folds.read_image_view(store.get_run(trainable_run.id, trainable_run.data_dir))
    assert view.shape == oof.shape and np.isfinite(view).all()  # the image view came with them


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cancel", "ctrl-c"])
def test_a_stopped_folds_job_leaves_the_run_unchanged(trainable_run, how):
    data_dir, before = trainable_run.data_dir, _digests(trainable_run.path)
    calls = []

    def on_progress(stage, fraction):
        calls.append(stage)
        if how == "ctrl-c" and stage.startswith("fold 3/"):
            raise KeyboardInterrupt

    def should_stop():
        return how == "cancel" and any(s.startswith("fold 3/") for s in calls)

    with pytest.raises(folds.Cancelled if how == "cancel" else KeyboardInterrupt):
        folds.run_folds(data_dir, trainable_run.id, 4, progress=False, on_progress=on_progress,
                        should_stop=should_stop)
    assert any(s.startswith("fold 2/") for s in calls)  # two fold models had been trained
    assert _digests(trainable_run.path) == before
    assert folds.read_oof(store.get_run(trainable_run.id, data_dir)) is None
    assert sorted(p.name for p in (data_dir / store.RUNS).iterdir()) == [trainable_run.id]
    assert jobs.running_jobs(data_dir) == []


def test_a_job_killed_between_its_renames_leaves_nothing_readable(synthetic_run, monkeypatch):
    run, n, a = synthetic_run, len(synthetic_run), len(synthetic_run.attributes)
    first = np.full((n, a), 0.25, np.float32)
    folds.write_oof(run, first, np.arange(n) % 3, {"folds": 3, "steps": 1})
    real_replace, renamed = folds.os.replace, []

    def dies_before_run_json(src, dst):
        if str(dst).endswith("run.json"):
            raise KeyboardInterrupt  # the process is stopped between two renames
        renamed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(folds.os, "replace", dies_before_run_json)
    with pytest.raises(KeyboardInterrupt):
        folds.write_oof(run, np.full((n, a), 0.75, np.float32), np.arange(n) % 4,
                        {"folds": 4, "steps": 1})
    assert len(renamed) == 2  # the new arrays are in place, the note still vouches for the old
    assert folds.read_oof(run) is None
    assert not [p for p in run.path.iterdir() if p.name.startswith(store.TMP_PREFIX)]


def test_the_audit_ranks_on_out_of_fold_predictions_once_saved(synthetic_run):
    run, n = synthetic_run, len(synthetic_run)
    before = audit.audit_run(run, top=None)
    assert before.attrs["predictions"].startswith("in-sample")
    assert "--folds 5" in predictions_note(before.attrs["predictions"], run.id)
    oof = np.clip(1.0 - run.prd, 0, 1)  # disagrees with the run's own model everywhere
    folds.write_oof(run, oof, folds.fold_assignment(n, 3), {"folds": 3, "steps": 7})
    after = audit.audit_run(run, top=None)
    assert after.attrs["predictions"].startswith("out-of-fold predictions (3 models, 7 steps")
    assert "no image was scored by a model that trained on it" in predictions_note(
        after.attrs["predictions"], run.id)
    rows, cols = after["index"].to_numpy(), after["attribute"].map(run.attributes.index)
    assert np.allclose(after["prd"], oof[rows, cols.to_numpy()])
    inside = audit.audit_run(run, top=None, predictions="in-sample")
    assert np.allclose(inside["prd"], run.prd[inside["index"],
                                              inside["attribute"].map(run.attributes.index)])


def test_asking_for_out_of_fold_predictions_a_run_lacks_names_the_command(synthetic_run):
    with pytest.raises(PipelineError, match=f"audit --run {synthetic_run.id} --folds 5"):
        audit.audit_run(synthetic_run, predictions="out-of-fold")


@pytest.mark.parametrize("k, message", [("1", "--folds must be a whole number of at least 2"),
                                        ("0", "--folds must be a whole number of at least 2"),
                                        ("61", "--folds 61 is more than the run's 60 images")])
def test_audit_with_a_bad_number_of_folds_exits_2_with_one_line(synthetic_run, capsys, k,
                                                                message):
    before = _digests(synthetic_run.path)
    code = main(["audit", "--run", synthetic_run.id, "--data-dir", str(synthetic_run.data_dir),
                 "--folds", k])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"error: {message}" or err.startswith(f"error: {message}")
    assert len(err.splitlines()) == 1
    assert _digests(synthetic_run.path) == before


def test_folds_of_a_run_without_training_settings_are_refused(synthetic_run):
    with pytest.raises(PipelineError, match="does not record how its model was trained"):
        folds.run_folds(synthetic_run.data_dir, synthetic_run.id, 3, progress=False)


@pytest.mark.slow
def test_audit_with_folds_saves_them_and_ranks_on_them(trainable_run, capsys):
    data_dir = str(trainable_run.data_dir)
    assert main(["audit", "--run", trainable_run.id, "--data-dir", data_dir, "--folds", "3",
                 "--steps", "1", "--top", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("out-of-fold predictions of 3 models (1 steps each) saved")
    assert "ranked on out-of-fold predictions (3 models, 1 steps" in out[1]
    assert len(out) == 3 + 4
    run = store.get_run(trainable_run.id, data_dir)
    assert json.loads((run.path / "run.json").read_text())["oof"]["folds"] == 3
    assert main(["audit", "--run", trainable_run.id, "--data-dir", data_dir]) == 0
    assert "ranked on out-of-fold predictions" in capsys.readouterr().out  # kept for later audits


def test_the_audit_tab_says_which_predictions_it_ranks_on(synthetic_run, monkeypatch):
    from callbacks.audit import show_audit

    monkeypatch.setenv("XRAE_DATA_DIR", str(synthetic_run.data_dir))
    _, _, source = show_audit(synthetic_run.id, 0)
    assert source.startswith("Ranked on in-sample predictions")
    assert f"audit --run {synthetic_run.id} --folds 5" in source
    n = len(synthetic_run)
    folds.write_oof(synthetic_run, synthetic_run.prd, folds.fold_assignment(n, 4),
                    {"folds": 4, "steps": 9, "created": "2026-11-29T11:00:00+00:00"})
    _, _, source = show_audit(synthetic_run.id, 1)  # the same Run object, memoised
    assert source.startswith("Ranked on out-of-fold predictions (4 models, 9 steps, 2026-11-29)")


def test_a_fine_tuned_run_trains_its_folds_with_its_parents_settings(trainable_run):
    child = write_synthetic_run(trainable_run.data_dir, n=N, seed=1)
    meta = json.loads((child.path / "run.json").read_text())
    meta |= {"parent_run": trainable_run.id, "retrained": {"epochs": 3},
             "model": {"arch": "compact", "input_size": 32,
                       "training": {"steps": 9, "batch_size": 8, "lr": 1e-4, "seed": 0}}}
    (child.path / "run.json").write_text(json.dumps(meta))
    store.open_run.cache_clear()
    child = store.get_run(child.id, child.data_dir)
    assert folds.fold_settings(child) == folds.fold_settings(trainable_run)
    assert folds.fold_settings(child)["steps"] == 2 and folds.fold_settings(child, 5)["steps"] == 5
