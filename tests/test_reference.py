"""New points placed on a rebuilt map (pipeline.reference.rebuild + place), in this process."""

from __future__ import annotations

import numpy as np

from pipeline.reference import place, place_blocks, rebuild, reference_inputs


def _clusters(n_per: int = 60, k: int = 5, dims: int = 6, seed: int = 0):
    """k well-separated clusters in `dims` dimensions, and each point's cluster."""
    rng = np.random.default_rng(seed)
    which = np.repeat(np.arange(k), n_per)
    return rng.normal(0, 0.3, (k * n_per, dims)) + 8 * np.eye(k, dims)[which], which


def _map_of(which: np.ndarray, seed: int = 0) -> np.ndarray:
    """A stand-in map: each cluster a blob about its own point of a circle (radius 40)."""
    angle = 2 * np.pi * which / (which.max() + 1)
    rng = np.random.default_rng(seed)
    return 40 * np.c_[np.cos(angle), np.sin(angle)] + rng.normal(0, 2, (len(which), 2))


def test_placed_points_land_among_their_clusters_reference_points():
    x, which = _clusters()
    coords = _map_of(which)
    embedding, prepare_new = rebuild(x, coords, space="prd")
    new = x[::10] + np.random.default_rng(1).normal(0, 0.05, x[::10].shape)
    placed = place(embedding, prepare_new(new))
    centres = np.stack([coords[which == c].mean(0) for c in range(5)])
    nearest = np.argmin(np.linalg.norm(placed[:, None] - centres[None], axis=2), axis=1)
    assert (nearest == which[::10]).all()


def test_a_map_moved_elsewhere_places_its_new_points_moved_alike():
    # openTSNE centres the reference before placing; the placed points must come back to the
    # map's own frame, or they sit off by the map's centre beside every old point.
    x, which = _clusters()
    coords = _map_of(which) + [300.0, -120.0]
    new = x[::7] + np.random.default_rng(2).normal(0, 0.05, x[::7].shape)
    here = place(*_rebuilt(x, coords, new))
    there = place(*_rebuilt(x, coords + [-1000.0, 500.0], new))
    np.testing.assert_allclose(there - here, np.tile([-1000.0, 500.0], (len(new), 1)), atol=0.05)
    centres = np.stack([coords[which == c].mean(0) for c in range(5)])
    nearest = np.argmin(np.linalg.norm(here[:, None] - centres[None], axis=2), axis=1)
    assert (nearest == which[::7]).all()


def test_placing_the_same_points_twice_gives_the_same_coordinates_bit_for_bit():
    x, which = _clusters(seed=3)
    coords = _map_of(which, seed=3)
    new = x[::5] + 0.1
    first, second = place(*_rebuilt(x, coords, new)), place(*_rebuilt(x, coords, new))
    assert np.array_equal(first, second)


def _rebuilt(x, coords, new):
    embedding, prepare_new = rebuild(x, coords, space="prd")
    return embedding, prepare_new(new)


def test_placing_again_on_the_same_map_gives_the_same_coordinates():
    x, which = _clusters(seed=4)
    embedding, new = _rebuilt(x, _map_of(which, seed=4) + [50.0, 0.0], x[::6] + 0.1)
    assert np.array_equal(place(embedding, new), place(embedding, new))


def test_rows_prepared_a_block_at_a_time_are_those_prepared_at_once():
    # Large maps prepare the points they place a chunk at a time, so that memory stays flat;
    # the points (and so the map) must be exactly those of preparing them all at once.
    rng = np.random.default_rng(5)
    features = rng.normal(size=(400, 64)).astype(np.float32)
    labels = (rng.random((400, 17)) < 0.3).astype(np.uint8)
    rows = np.sort(rng.choice(400, 250, replace=False))
    for space, x in (("fea", features), ("act", labels), ("prd", labels * np.float32(0.9))):
        others = reference_inputs(x[:150], space, seed=2)[1]
        whole = others(x[rows])
        blocks = list(others.blocks(x, rows, size=33))
        assert [len(b) for b in blocks] == [33] * 7 + [19]
        np.testing.assert_allclose(np.concatenate(blocks), whole, rtol=1e-12, atol=1e-12)
        if space != "fea":  # no matrix product: the same bits
            assert np.array_equal(np.concatenate(blocks), whole), space


def test_points_placed_block_by_block_land_where_they_land_placed_at_once():
    x, which = _clusters(seed=6)
    embedding, new = _rebuilt(x, _map_of(which, seed=6), x[::4] + 0.1)
    at_once = place(embedding, new, chunk=20)
    in_blocks = place_blocks(embedding, (new[i : i + 20] for i in range(0, len(new), 20)))
    assert np.array_equal(in_blocks, at_once)
    assert place_blocks(embedding, iter([])).shape == (0, 2)
