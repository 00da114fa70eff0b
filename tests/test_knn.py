"""The tool's exact nearest-neighbour search finds what a search of every pair finds: the same
neighbours, nearest first and the lower row first among equally near ones, whatever the
copies, ties, queries or k."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from pipeline import knn
from pipeline.analyses.disagreement import euclidean_neighbours
from pipeline.errors import PipelineError
from pipeline.knn import ExactIndex


def every_pair(points, k: int, queries=None):
    """(distances, rows) of each query's k nearest points from the full distance matrix, by
    (distance, row): the answer the search must give."""
    points = np.asarray(points, np.float64)
    queries = points if queries is None else np.asarray(queries, np.float64)
    square = ((queries[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1)
    rows = np.arange(len(points))
    order = np.stack([np.lexsort((rows, s))[:k] for s in square])
    return np.sqrt(np.take_along_axis(square, order, axis=1)), order


def test_neighbours_of_points_with_many_ties_are_those_of_every_pair():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 3, (600, 4)).astype(np.float32)  # 81 places: ties everywhere
    distances, rows = ExactIndex(points).query(12)
    expected_d, expected_rows = every_pair(points, 12)
    assert np.array_equal(rows, expected_rows)
    assert np.allclose(distances, expected_d)


def test_continuous_points_in_many_dimensions_match_scikit_learn():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(3000, 64)).astype(np.float32)
    points[100:130] = points[7]  # exact copies, more than the candidate list holds
    distances, rows = ExactIndex(points).query(11)
    theirs_d, theirs_rows = NearestNeighbors(algorithm="brute").fit(points).kneighbors(
        points, n_neighbors=11)
    assert np.allclose(distances, theirs_d, atol=1e-5)
    # Neighbours may differ only where scikit-learn broke a tie: which copy of point 7.
    same = np.arange(len(points))
    same[100:130] = 7
    assert np.array_equal(same[rows], same[theirs_rows])
    assert rows[7].tolist() == [7, *range(100, 110)]  # the copies by row, the point itself first


def test_an_index_made_in_cells_from_the_start_finds_what_every_pair_finds():
    # More points than one block of the layout's making (knn.BUILD_BLOCK), with copies, as
    # the disagreement searches them (clustered: in cells at once, queried a block at a time).
    rng = np.random.default_rng(5)
    points = (rng.normal(size=(20_000, 6)) + rng.integers(0, 4, (20_000, 1)) * 3).astype(
        np.float32)
    points[9_000:9_040] = points[17_000]
    index = ExactIndex(points, clustered=True)
    assert index.clustered and len(index.layout.starts) > 2
    queries = points[np.r_[0:40, 8_995:9_045, 16_995:17_005]]
    distances, rows = index.query(15, queries)
    expected_d, expected_rows = every_pair(points, 15, queries)
    assert np.array_equal(rows, expected_rows)
    assert np.allclose(distances, expected_d)
    assert np.array_equal(ExactIndex(points).query(15, queries)[1], rows)  # cells made later


def test_queries_that_are_not_points_and_float64_coordinates():
    rng = np.random.default_rng(2)
    points, queries = rng.random((900, 17)), rng.random((700, 17))
    index = ExactIndex(points)
    distances, rows = index.query(30, queries)
    expected_d, expected_rows = every_pair(points, 30, queries)
    assert np.array_equal(rows, expected_rows)
    assert np.allclose(distances, expected_d, rtol=0, atol=1e-12)
    assert len(index) == 900
    fresh = ExactIndex(points)  # a few queries first: searched before there are cells
    assert np.array_equal(fresh.query(30, queries[:3])[1], expected_rows[:3])
    assert not fresh.clustered and index.clustered


def test_copies_beyond_the_candidate_list_are_settled_by_a_search_of_every_point(monkeypatch):
    rng = np.random.default_rng(3)
    points = rng.random((400, 5)).astype(np.float32)
    points[50:90] = points[3]  # 41 copies, k + SPARE = 13 candidates
    settled = []
    every_point = knn._every_point

    def spy(points, queries, k):
        settled.append(len(queries))
        return every_point(points, queries, k)

    monkeypatch.setattr(knn, "_every_point", spy)
    _, rows = ExactIndex(points).query(5)
    assert sum(settled) >= 41  # each copy's own query
    assert np.array_equal(rows, every_pair(points, 5)[1])
    assert rows[60].tolist() == [3, 50, 51, 52, 53]


def test_k_as_large_as_the_run_gives_every_other_point():
    rng = np.random.default_rng(4)
    points = rng.random((7, 3)).astype(np.float32)
    points[5] = points[1]
    others = euclidean_neighbours(points, 6)  # k = n − 1
    assert others.shape == (7, 6)
    assert all(sorted(row) == [j for j in range(7) if j != i] for i, row in enumerate(others))
    assert others[1, 0] == 5 and others[5, 0] == 1  # a copy is nearest
    distances, rows = ExactIndex(points).query(50)  # more than there are: all of them
    assert rows.shape == (7, 7)
    assert np.array_equal(rows, every_pair(points, 7)[1])


def test_a_search_of_values_that_are_not_finite_is_refused():
    points = np.ones((5, 3))
    points[2, 1] = np.nan
    with pytest.raises(PipelineError, match="not finite"):
        ExactIndex(points).query(2)
    with pytest.raises(PipelineError, match="do not match"):
        ExactIndex(np.ones((5, 3))).query(2, np.ones((2, 4)))


def test_cells_far_from_a_query_are_passed_over_and_the_answer_stays_exact(monkeypatch):
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 10, (12, 6))
    points = (centres[rng.integers(0, 12, 6000)] + rng.normal(0, 0.3, (6000, 6)))
    points[::500] = points[1]  # a few copies among them
    monkeypatch.setattr(knn, "CELL", 150)  # small cells, as a large run has: within groups
    index = ExactIndex(points.astype(np.float32))
    compared = []
    keep = knn._keep_nearest

    def spy(products, start, score, found):
        compared.append(products.size)
        return keep(products, start, score, found)

    monkeypatch.setattr(knn, "_keep_nearest", spy)
    distances, rows = index.query(9)
    assert sum(compared) < 0.5 * len(points) ** 2  # most pairs were never computed
    expected_d, expected_rows = every_pair(index.points, 9)
    assert np.array_equal(rows, expected_rows)
    assert np.allclose(distances, expected_d)


def test_points_closer_together_than_float32_tells_apart_are_ranked_in_float64(monkeypatch):
    rng = np.random.default_rng(6)
    points = rng.normal(0, 1e-3, (800, 3))
    points[400:] += 1000.0  # two tight groups far apart: float32 scores cannot rank within
    settled = []
    every_point = knn._every_point
    monkeypatch.setattr(knn, "_every_point",
                        lambda p, q, k: settled.append(len(q)) or every_point(p, q, k))
    distances, rows = ExactIndex(points).query(6)
    expected_d, expected_rows = every_pair(points, 6)
    assert np.array_equal(rows, expected_rows)
    assert np.allclose(distances, expected_d, rtol=1e-9, atol=0)
    assert sum(settled) < 40  # settled by float64 products, not by a search of every point
