"""Before/after maps: a retrained run's maps start from its parent's, so unchanged images stay
where they sat and changed ones move; the displacement score says how far each image moved."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.before_after import (
    ParentMaps,
    displacement,
    moved_since,
    neighbour_scale,
    parent_rows,
    placement,
    starting_maps,
)
from pipeline.embed import embed, embed_all
from pipeline.store import get_run, write_run
from tests.conftest import write_synthetic_run


def _blobs(n=300, d=20, k=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, d))
    label = rng.integers(0, k, n)
    return centres, label, centres[label] + rng.normal(size=(n, d))


def test_a_child_started_from_its_parent_keeps_unchanged_images_and_moves_changed_ones():
    centres, label, x = _blobs()
    parent = embed(x, space="prd", seed=0)
    child_x = x + np.random.default_rng(1).normal(0, 0.1, x.shape)  # the model changed a little
    changed = np.arange(0, 300, 30)  # and sees these ten images as another kind altogether
    child_x[changed] = centres[(label[changed] + 1) % len(centres)] + 0.5
    child = embed(child_x, space="prd", seed=0, start=parent)

    moved = displacement(child, parent)
    unchanged = np.setdiff1d(np.arange(300), changed)
    assert np.median(moved[unchanged]) < 2.0  # within about two neighbour spacings
    assert np.median(moved[changed]) > 5 * np.median(moved[unchanged])
    # The same start and seed give the same map.
    assert np.array_equal(child, embed(child_x, space="prd", seed=0, start=parent))


def test_a_map_started_from_its_parent_lies_where_the_parents_lies():
    _, _, x = _blobs(n=120)
    parent = embed(x, space="fea", seed=0)[:, ::-1] + 50  # mirrored and moved
    child = embed(x, space="fea", seed=0, start=parent)
    assert np.abs(child.mean(axis=0) - parent.mean(axis=0)).max() < 1.0
    assert np.median(displacement(child, parent)) < 2.0


def test_an_identical_run_moved_nowhere(tmp_path):
    run = write_synthetic_run(tmp_path / "data", n=40)
    moved = moved_since(run, run)
    assert set(moved) == {"act", "fea", "prd"}
    for score in moved.values():
        assert score.shape == (40,) and np.array_equal(score, np.zeros(40, np.float32))


def test_images_the_parent_lacks_have_no_displacement_and_start_beside_their_neighbour(tmp_path):
    parent = write_synthetic_run(tmp_path / "data", n=40)
    ids = parent.images["image_id"].astype(str).to_numpy()
    assert parent_rows(np.r_[ids[[3, 1]], ["new"]], ids).tolist() == [3, 1, -1]

    child_ids = np.r_[ids, ["new"]]
    # A new image: image 7's labels, its features and probabilities nudged (within [0, 1]).
    prd7 = np.asarray(parent.prd)[7]
    new = {"act": np.asarray(parent.act)[7], "fea": np.asarray(parent.fea)[7] + 1e-3,
           "prd": prd7 + np.where(prd7 > 0.5, -1e-3, 1e-3)}
    arrays = {s: np.r_[np.asarray(getattr(parent, s)), new[s][None]] for s in new}
    starts = starting_maps(ParentMaps.of(parent), child_ids, arrays)
    for space in ("act", "fea", "prd"):
        assert np.array_equal(starts[space][:40], parent.emb(space))
    for space in ("fea", "prd"):
        assert np.array_equal(starts[space][40], parent.emb(space)[7])  # its nearest image
    same_labels = (np.asarray(parent.act) == np.asarray(parent.act)[7]).all(axis=1)
    assert any(np.array_equal(starts["act"][40], xy) for xy in parent.emb("act")[same_labels])

    images = parent.images.drop(columns=["index"], errors="ignore")
    images = images.iloc[list(range(40)) + [7]].reset_index(drop=True)
    images.loc[40, "image_id"] = "new"
    path = write_run(tmp_path / "data", attributes=parent.attributes, images=images,
                     act=arrays["act"], prd=arrays["prd"], fea=arrays["fea"], emb=starts,
                     meta={"parent_run": parent.id}, run_id="child")
    moved = moved_since(get_run(path.name, tmp_path / "data"), parent)
    assert np.isnan(moved["fea"][40]) and (moved["fea"][:40] == 0).all()


def test_a_parent_sharing_too_few_images_gives_fresh_maps(tmp_path):
    parent = write_synthetic_run(tmp_path / "data", n=40)
    arrays = {"act": parent.act, "fea": parent.fea, "prd": parent.prd}
    others = [f"other{i}" for i in range(40)]
    assert starting_maps(ParentMaps.of(parent), others, arrays) is None
    assert placement(ParentMaps.of(parent), None).startswith("fresh (too few")
    assert placement(ParentMaps.of(parent), {}) == f"initialised from parent {parent.id}"


def test_the_unit_of_movement_is_the_typical_distance_to_the_tenth_neighbour():
    grid = np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0)), -1).reshape(-1, 2)
    assert neighbour_scale(grid) == pytest.approx(2.0)  # 10th neighbour on a unit grid
    assert neighbour_scale(grid * 5) == pytest.approx(10.0)
    assert neighbour_scale(np.zeros((30, 2))) == 1.0


def test_embedding_from_a_parent_reports_progress_to_the_end():
    _, _, x = _blobs(n=60, d=5)
    act = (x[:, :4] > 0).astype(np.uint8)
    starts = {s: np.asarray(embed(x, space="prd"), np.float64) for s in ("act", "fea", "prd")}
    heard = []
    maps = embed_all(act, x, x, starts=starts, on_progress=lambda _, f: heard.append(f))
    assert set(maps) == {"act", "fea", "prd"}
    assert heard == sorted(heard) and heard[-1] == pytest.approx(1.0)


def test_a_large_runs_maps_fitted_on_a_sample_also_start_from_the_parent():
    from pipeline.reference import embed_maps

    _, label, x = _blobs(n=240, d=8)
    act = np.eye(6, dtype=np.uint8)[label]
    prd = np.clip(0.1 + 0.8 * act + np.random.default_rng(2).normal(0, 0.05, act.shape), 0, 1)
    parent, rows = embed_maps(act, x, prd, reference_n=120)
    assert len(rows) == 120  # t-SNE on a sample, the other images placed by transform
    starts = {s: np.asarray(v, np.float64) for s, v in parent.items()}
    child, _ = embed_maps(act, x, prd, reference_n=120, starts=starts)
    for space in ("fea", "prd"):
        assert np.median(displacement(child[space], parent[space])) < 2.0
