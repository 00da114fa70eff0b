"""The one accessor of the labels in force: annotated labels with the corrections applied."""

from __future__ import annotations

import numpy as np

from pipeline import corrections


def test_a_correction_changes_the_labels_in_force_and_an_undo_restores_them(synthetic_run):
    run, data_dir = synthetic_run, synthetic_run.data_dir
    before = corrections.labels_in_force(run)
    assert np.array_equal(before.act, run.act) and not before.corrected.any()
    assert corrections.labels_in_force(run) is before  # memoised while nothing changes

    image_id, attribute = run.images["image_id"].iloc[7], run.attributes[2]
    flipped = 1 - int(run.act[7, 2])
    corrections.set_label(data_dir, run.meta["dataset"], image_id, attribute, flipped,
                          author="ana")
    after = corrections.labels_in_force(run)
    assert after.version > before.version
    assert after.act[7, 2] == flipped and after.corrected[7, 2]
    assert after.corrected.sum() == 1 and (after.act != run.act).sum() == 1
    assert not after.act.flags.writeable  # shared by every request: nobody may edit it

    corrections.undo(data_dir, run.meta["dataset"], image_id, attribute, author="ana")
    undone = corrections.labels_in_force(run)
    assert np.array_equal(undone.act, run.act) and not undone.corrected.any()


def test_an_unreadable_database_gives_the_annotated_labels_and_says_why(synthetic_run):
    corrections.db_path(synthetic_run.data_dir).write_bytes(b"not a database" * 100)
    labels = corrections.labels_in_force(synthetic_run)
    assert np.array_equal(labels.act, synthetic_run.act) and not labels.corrected.any()
    assert "corrections.sqlite" in labels.problem
