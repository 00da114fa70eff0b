"""The cross-space disagreement is stored with each run when it is written and read by the
dashboard; a run written before runs stored it still gets its score; the fast searches the
stored score is computed with find the same neighbours as a search of every pair of images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from callbacks.common import disagreement_scores, most_disagreeing
from pipeline.analyses import disagreement as dis
from pipeline.errors import PipelineError
from pipeline.neighbours import build_index
from pipeline.store import open_run
from pipeline.store.runs import DISAGREEMENT_FILE
from tests.conftest import write_synthetic_run


def clustered(n: int, seed: int = 0):
    """Labels in 12 clusters with 5 % of bits flipped (so each cluster's own label vector has
    dozens of exact copies), probabilities that follow them and 40-dimensional features."""
    rng = np.random.default_rng(seed)
    centres = rng.random((12, 17)) < 0.3
    which = rng.integers(0, 12, n)
    act = (centres[which] ^ (rng.random((n, 17)) < 0.05)).astype(np.uint8)
    prd = np.clip(0.15 + 0.7 * act + rng.normal(0, 0.2, act.shape), 0, 1).astype(np.float32)
    fea = (rng.normal(size=(12, 40))[which] + rng.normal(0, 0.7, (n, 40))).astype(np.float32)
    return act, fea, prd


def every_pair_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """The k nearest other points of each point from the full distance matrix, nearest first,
    the lower row first among equally near ones: the search the fast ones must reproduce."""
    points = np.asarray(points, dtype=np.float64)
    d = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1))
    np.fill_diagonal(d, np.inf)
    rows = np.arange(len(points))
    return np.stack([np.lexsort((rows, d[i]))[:k] for i in rows])


def every_pair_score(act, fea, prd, k: int) -> np.ndarray:
    """The disagreement score with every neighbourhood found from the full distance matrix."""
    index = build_index(fea)
    act, prd = np.asarray(act, np.float32), np.asarray(prd, np.float32)
    made = {"act": dis.Space(act, False), "fea": dis.Space(index.unit, True),
            "prd": dis.Space(prd, False)}
    found = {"act": every_pair_neighbours(act, k), "prd": every_pair_neighbours(prd, k),
             "fea": every_pair_neighbours(index.unit, k)}
    pairs = [(dis.agreement(x, y, made, found) + dis.agreement(y, x, made, found)) / 2
             for x, y in dis.PAIRS]
    return 1.0 - np.mean(pairs, axis=0)


def test_a_runs_searches_work_on_disk_in_its_draft_and_the_run_keeps_none_of_it(
        tmp_path, monkeypatch):
    from pipeline.store import RunDraft

    made, real = [], RunDraft.scratch

    def noted(self, shape, dtype):
        array = real(self, shape, dtype)
        made.append((Path(array.filename), self.path))
        return array

    monkeypatch.setattr(RunDraft, "scratch", noted)
    run = write_synthetic_run(tmp_path / "data", n=80)
    # FEA's reduced points and the two searches' layouts were files in the draft ...
    assert len(made) >= 3 and all(f.parent.parent == draft for f, draft in made)
    # ... which are gone, and the run is what the searches in memory give.
    assert not any(f.exists() for f, _ in made) and not list(run.path.glob(".*"))
    assert np.array_equal(run.disagreement, dis.disagreement(run.act, run.fea, run.prd)["score"])


def test_a_written_run_holds_the_score_the_dashboard_would_compute(tmp_path):
    run = write_synthetic_run(tmp_path / "data", n=80)
    assert (run.path / DISAGREEMENT_FILE).is_file()
    computed = dis.disagreement(run.act, run.fea, run.prd)["score"]
    assert np.array_equal(run.disagreement, computed)
    assert np.array_equal(disagreement_scores(run), computed)
    assert run.meta["timings"]["disagreement_s"] >= 0


def test_a_run_written_before_runs_stored_the_score_still_gets_it(tmp_path):
    written = write_synthetic_run(tmp_path / "data", n=80)
    older = tmp_path / "data" / "runs" / "older-run"
    shutil.copytree(written.path, older)
    (older / DISAGREEMENT_FILE).unlink()
    (older / "run.json").write_text((older / "run.json").read_text()
                                    .replace(written.id, "older-run"))
    run = open_run(str(older))
    assert run.disagreement is None
    assert np.array_equal(disagreement_scores(run), written.disagreement)
    # The filter to the most disagreeing 5 % keeps the same images as for the stored score.
    assert np.array_equal(most_disagreeing(run), most_disagreeing(written))


def test_a_stored_score_of_the_wrong_length_names_the_file(tmp_path):
    run = write_synthetic_run(tmp_path / "data", n=80)
    np.save(run.path / DISAGREEMENT_FILE, np.zeros(79, dtype=np.float32))
    open_run.cache_clear()
    with pytest.raises(PipelineError, match=DISAGREEMENT_FILE):
        open_run(str(run.path))


def test_label_neighbours_among_many_copies_are_those_of_a_full_search():
    act, _, _ = clustered(700)
    copies = np.unique(act, axis=0, return_counts=True)[1]
    assert copies.max() > 10  # more exact copies than neighbours: ties are the rule
    assert np.array_equal(dis.label_neighbours(act.astype(np.float32), 10),
                          every_pair_neighbours(act, 10))


def test_the_score_of_a_small_run_is_that_of_a_full_search():
    act, fea, prd = clustered(400, seed=1)
    found = dis.disagreement(act, fea, prd, k=10)["score"]
    assert np.allclose(found, every_pair_score(act, fea, prd, 10), atol=1e-6)


def test_the_score_of_a_larger_run_differs_from_a_full_search_only_by_float_rounding():
    # Stated tolerance: no image's score moves by more than one neighbour in one direction of
    # one pair (1/60 at k = 10), which only a tie broken by float rounding could cause, and
    # 99.5 % of the scores are the same.
    act, fea, prd = clustered(2500, seed=2)
    found = dis.disagreement(act, fea, prd, k=10)["score"]
    reference = every_pair_score(act, fea, prd, 10)
    assert np.abs(found - reference).max() <= 1 / 60 + 1e-6
    assert np.mean(np.isclose(found, reference, atol=1e-6)) >= 0.995


def test_the_list_shows_the_highest_scores_first_and_the_lower_row_among_equal_ones():
    from callbacks.analyses import highest

    score = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5, 0.7], dtype=np.float32)
    assert highest(score, 4).tolist() == [1, 3, 6, 2]
    assert highest(score, 10).tolist() == [1, 3, 6, 2, 5, 0, 4]


def test_the_score_taken_a_block_of_images_at_a_time_is_the_score_taken_at_once(monkeypatch):
    # Blocks bound the memory of large runs; every image's score must stay bit for bit.
    act, fea, prd = clustered(500, seed=5)
    at_once = dis.disagreement(act, fea, prd, k=10)
    monkeypatch.setattr(dis, "AGREEMENT_BLOCK", 37)  # blocks that do not divide the images
    in_blocks = dis.disagreement(act, fea, prd, k=10)
    for name, values in at_once.items():
        assert np.array_equal(in_blocks[name], values), name


def with_copies(act, fea, prd, rng):
    """The arrays with exact copies of some rows appended: ties in every space, which the
    searches break by row."""
    copies = rng.choice(len(act), len(act) // 10, replace=False)
    return (np.concatenate([act, act[copies]]), np.concatenate([fea, fea[copies]]),
            np.concatenate([prd, prd[copies]]))


@pytest.mark.parametrize("n_new", [1, 7, 150])
def test_neighbourhoods_extended_to_new_images_equal_a_search_of_every_image(n_new):
    rng = np.random.default_rng(4)
    act, fea, prd = with_copies(*clustered(600 + n_new, seed=3), rng)
    order = rng.permutation(len(act))  # copies among the old images and among the new ones
    act, fea, prd = act[order], fea[order], prd[order]
    n_old = len(act) - n_new
    parent = dis.neighbourhoods(act[:n_old], fea[:n_old], prd[:n_old])
    grown = dis.extended(parent, act, fea, prd)
    whole = dis.neighbourhoods(act, fea, prd, basis=parent.basis)
    assert np.array_equal(grown.found, whole.found)
    assert np.array_equal(grown.score, whole.score)
    assert grown.found.shape == (3, len(act), dis.DEFAULT_K)
    # And that search is the true one: every pair's distances, in the parent's basis.
    index = build_index(fea, parent.basis)
    for space, points in zip(dis.SPACE_ORDER, (act, index.unit, prd), strict=True):
        expected = every_pair_neighbours(np.asarray(points, np.float32), dis.DEFAULT_K)
        assert np.array_equal(whole.found[dis.SPACE_ORDER.index(space)], expected), space


def test_a_written_run_keeps_its_neighbourhoods_and_its_neighbour_search_uses_its_basis(
        tmp_path, monkeypatch):
    from pipeline import neighbours
    from pipeline.store.runs import BASIS_FILE, NEIGHBOURS_FILE

    run = write_synthetic_run(tmp_path / "data", n=120)
    assert run.neighbour_lists.shape == (3, 120, dis.DEFAULT_K)
    made = dis.neighbourhoods(run.act, run.fea, run.prd)
    assert np.array_equal(run.neighbour_lists, made.found)
    assert np.array_equal(run.fea_basis, made.basis)
    # A run written before runs kept them: the detail view and the audit search its features.
    older = tmp_path / "data" / "runs" / "older-run"
    shutil.copytree(run.path, older)
    for name in (NEIGHBOURS_FILE, BASIS_FILE):
        (older / name).unlink()
    (older / "run.json").write_text((older / "run.json").read_text().replace(run.id, "older-run"))
    searched = open_run(str(older))
    wanted = {row: neighbours.nearest_images(searched, row, 8) for row in (0, 57, 119)}
    graph = neighbours.run_neighbour_graph(searched, dis.DEFAULT_K)
    # This run's are read from its lists, without a search (the index of a million images takes
    # seconds to make): the same neighbours, a search's first k.
    monkeypatch.setattr(neighbours, "build_index", lambda *a, **k: pytest.fail("searched"))
    for row, nearest in wanted.items():
        assert neighbours.nearest_images(run, row, 8) == nearest
    assert np.array_equal(neighbours.run_neighbour_graph(run, dis.DEFAULT_K), graph)
    assert np.array_equal(neighbours.run_neighbour_graph(run, 4), graph[:, :4])
    # The analyses tab's pairs come from the stored lists, as a search would find them.
    pairs = dis.run_disagreement(run)
    searched = dis.disagreement(run.act, run.fea, run.prd, basis=run.fea_basis)
    for name, values in searched.items():
        assert np.array_equal(pairs[name], values), name


def test_stored_neighbour_lists_of_the_wrong_shape_name_the_file(tmp_path):
    from pipeline.store.runs import NEIGHBOURS_FILE

    run = write_synthetic_run(tmp_path / "data", n=80)
    np.save(run.path / NEIGHBOURS_FILE, np.zeros((3, 79, 10), np.int32))
    with pytest.raises(PipelineError, match=NEIGHBOURS_FILE):
        open_run.cache_clear()
        open_run(str(run.path))
