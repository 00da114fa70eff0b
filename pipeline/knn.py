"""Exact k-nearest-neighbour search (Euclidean), the one the tool uses wherever it needs exact
neighbours: the disagreement's PRD and FEA spaces, the FEA neighbour index, the affinities of
points placed on a t-SNE map.

Nearest means smallest Euclidean distance computed in float64 from the coordinates given, and
among equally near points the lower row: the answer does not depend on blocks, threads or
BLAS. It is found in three passes:

1. candidates: float32 scores of a block of nearby queries against a cell of nearby points
   by one matrix product (‖b‖² − 2a·b: the query's own ‖a‖² ranks nothing), and per query a
   short sorted list of the nearest seen so far (a numba kernel: a point scoring above the
   list's last is rejected by one comparison, which is nearly every point, so no row of
   distances is sorted or partitioned as scikit-learn's brute-force search does). The points
   are grouped in cells by a k-means; cells are visited nearest first, and a cell whose ball
   is too far from every query of the block for any of its points to enter a list is passed
   over without a product (most of them in clustered data). The cells are made for the first
   search of more than one block of queries; a few queries search tiles in row order.
2. the candidates ranked by their float64 distances. The list holds more than were asked for,
   and a bound on the float32 rounding shows whether any point left out could be nearer than
   the last one kept (checked per query).
3. the few queries where that cannot be shown (many points at one distance: exact copies)
   are searched again over every point in float64.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

from pipeline.errors import PipelineError
from pipeline.store.files import BLOCK_ROWS

CELL = 1024  # points in a cell (about): a block of queries is compared with a cell at once
TILE = 8192  # points compared at once before there are cells
QUERY_BLOCK = 128  # nearby queries searched together, by one thread
CHUNK = 64  # points whose scores are compared with a query's list at once
SPARE = 8  # candidates kept beyond the k asked for, so that rounding rarely forces pass 3
UNIT = 2.0**-24  # float32's unit roundoff
SAFE = 1e-9  # relative slack on float64 bounds (their own rounding is ~1e-16)
BUILD_BLOCK = 8192  # points centred at once while cells and layouts are made


class ExactIndex:
    """Points prepared for exact searches: kept as given (float32 or float64: the distances
    are computed from them in float64) and, for pass 1, centred in float32 with their
    squared norms beside them, in cells of nearby points, each with a ball holding it."""

    def __init__(self, points, clustered: bool = False, allocate=np.empty):
        """`allocate(shape, dtype)` makes the index's own arrays (by default in memory; a run's
        draft makes them on disk, pipeline.store.RunDraft.scratch)."""
        points = _finite(points, "points")
        if points.ndim != 2 or len(points) == 0:
            raise PipelineError(f"a neighbour search needs an N × d array of points, not "
                                f"{points.shape}")
        self.points = points
        self.centre = points.mean(axis=0, dtype=np.float64).astype(points.dtype)
        # Cells are made for the first search of many queries (seconds at a million points),
        # or at once for an index made to search every point (`clustered`); until then the
        # points lie in row order, in tiles (a search of one image is a fraction of a second
        # at a million points without them).
        self.clustered, self.allocate = clustered, allocate
        where = _cells(points, self.centre, CELL) if clustered else (np.arange(len(points)),
                                                                      TILE)
        self.layout = _layout(points, self.centre, *where, allocate)
        # The largest norm, for the rounding bound (float32 or float64 centring alike).
        self.reach = self.layout.reach * (1 + 1e-6)

    def _clustered(self) -> Layout:
        if not self.clustered:
            self.layout = _layout(self.points, self.centre,
                                  *_cells(self.points, self.centre, CELL), self.allocate)
            self.clustered = True
        return self.layout

    def __len__(self) -> int:
        return len(self.points)

    def query(self, k: int, queries=None) -> tuple[np.ndarray, np.ndarray]:
        """The k points nearest to each query (default: every point, itself included),
        nearest first and the lower row first among equally near: (distances, rows), each
        M × min(k, N), distances float64."""
        points = self.points
        queries = points if queries is None else _finite(queries, "queries")
        if queries.ndim != 2 or queries.shape[1] != points.shape[1]:
            raise PipelineError(f"queries of shape {queries.shape} do not match points of "
                                f"{points.shape[1]} dimensions")
        k = int(min(max(k, 1), len(points)))
        q32 = np.asarray(queries - self.centre, dtype=np.float32)
        square = np.empty((len(queries), k))
        rows = np.empty((len(queries), k), dtype=np.int64)
        # One layout for the whole search (another thread may make the cells meanwhile).
        layout = self._clustered() if len(queries) > QUERY_BLOCK else self.layout
        # Queries near each other are searched together: they can pass over the same cells.
        together = layout.order if queries is points else layout.by_cell(q32)

        def search(first: int) -> None:
            block = together[first:first + QUERY_BLOCK]
            score, found = self._candidates(layout, q32[block], k)
            square[block], rows[block] = _rerank(points, queries[block], found, k)
            unsure = block[~self._proven(score, square[block, -1], q32[block], UNIT)]
            if len(unsure):
                square[unsure], rows[unsure] = self._settle(layout, queries[unsure], k)

        firsts = range(0, len(queries), QUERY_BLOCK)
        if len(firsts) == 1:  # one block (the detail view's one image): no threads to start
            search(0)
            return np.sqrt(square), rows
        # Blocks go to one thread each, every thread's products on one BLAS thread: on a
        # shared machine a second BLAS thread waiting for a busy core made them 2–3× slower.
        threads = min(os.cpu_count() or 1, len(firsts))
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
            list(pool.map(search, firsts))
        return np.sqrt(square), rows

    def _candidates(self, layout: Layout, q: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Pass 1: per query the smallest scores ‖b‖² − 2a·b (more than k) and their rows, by
        (score, row), in q's precision (float32, or float64 in pass 3). In float32, cells are
        visited nearest first and passed over when their ball shows that none of their points
        can enter any query's list."""
        augmented = layout.augmented if q.dtype == np.float32 else self._wide(layout)
        q_aug = np.column_stack([-2 * q, np.ones(len(q), q.dtype)])
        room = min(k + max(SPARE, k // 4), len(self))
        score = np.full((len(q), room), np.inf, dtype=q.dtype)
        found = np.full((len(q), room), -1, dtype=np.int64)
        if q.dtype == np.float64:  # no cell passed over: the balls are of float32 points
            for cell in range(len(layout.starts) - 1):
                _visit(layout, cell, q_aug, augmented, score, found)
        else:
            lowest, slack = self._lowest_scores(layout, q)
            pending = np.argsort(lowest.min(axis=0), kind="stable")
            while len(pending):
                # A list's last score only falls: a cell passed over now stays passed over.
                reach = score[:, -1, None] + slack
                pending = pending[~(lowest[:, pending] > reach).all(axis=0)]
                if len(pending):
                    _visit(layout, pending[0], q_aug, augmented, score, found)
                    pending = pending[1:]
        return score, np.where(found >= 0, layout.order[np.maximum(found, 0)], -1)

    def _settle(self, layout: Layout, queries: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """Passes 3 and 4 for queries pass 2 could not settle (points closer together than
        float32 tells apart: a tight group, copies): pass 1 again in float64, then, for the
        few still unsettled (more copies at one distance than the list holds), every point."""
        q64 = queries.astype(np.float64) - self.centre.astype(np.float64)  # one rounding
        score, found = self._candidates(layout, q64, k)
        square, rows = _rerank(self.points, queries, found, k)
        left = np.flatnonzero(~self._proven(score, square[:, -1], q64, 2.0**-53))
        if len(left):
            square[left], rows[left] = _every_point(self.points, queries[left], k)
        return square, rows

    def _wide(self, layout: Layout) -> np.ndarray:
        """The layout's `augmented` in float64, made when first needed: most searches never
        need it (two threads may both make it: the same array, and no lock to keep the index
        picklable)."""
        if layout.wide is None:
            inside = self.points[layout.order].astype(np.float64) - self.centre.astype(np.float64)
            layout.wide = np.column_stack([inside, np.einsum("ij,ij->i", inside, inside)])
        return layout.wide

    def _lowest_scores(self, layout: Layout, q32: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Per query and cell, the lowest score ‖b − a‖² − ‖a‖² a point of the cell can have
        (from the distance to its ball), and per query the slack for float64 rounding."""
        q = q32.astype(np.float64)
        q_square = (q * q).sum(axis=1)
        balls, radii = layout.balls, layout.radii
        to_centre = q_square[:, None] + (balls**2).sum(axis=1) - 2 * q @ balls.T
        gap = np.maximum(np.sqrt(np.maximum(to_centre, 0)) - radii, 0)
        slack = SAFE * (np.sqrt(q_square) + self.reach + radii.max()) ** 2
        return gap**2 - q_square[:, None], slack[:, None]

    def _proven(self, score, kth, q, unit: float) -> np.ndarray:
        """Per query, whether no point left out of pass 1 can be as near as its k-th (squared
        distance `kth`). A point left out scored at least the list's last (or lay in a cell
        whose ball showed it would have), so its squared distance is at least that plus ‖a‖²
        less its score's rounding: float32 centring, norms and a product of d + 1 terms,
        at most (d + 4)·u·(‖a‖ + ‖b‖)², taken four times over. Only points within the k-th
        distance matter, and their ‖b‖ is at most ‖a‖ + √kth: near the query, not the
        farthest point's, which in a tight group of points would leave nothing proven."""
        if score.shape[1] >= len(self):  # the list holds every point
            return np.ones(len(score), dtype=bool)
        q_norm = np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64))
        near = q_norm + np.sqrt(kth) * (1 + SAFE) + SAFE
        bound = 4 * (q.shape[1] + 6) * unit * (q_norm + np.minimum(near, self.reach)) ** 2
        return score[:, -1].astype(np.float64) + q_norm**2 - bound > kth


def nearest_among(points, queries, candidates, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k nearest of its own candidate rows of `points` (M × C, −1 for none), by
    the order every search here ranks by: (float64 distance, row). Merging two exact answers
    (a query's k nearest among old points and among new ones) gives the exact answer over
    both, bit for bit as one search would."""
    points, queries = _finite(points, "points"), _finite(queries, "queries")
    candidates = np.ascontiguousarray(candidates, dtype=np.int64)
    if candidates.ndim != 2 or len(candidates) != len(queries) or candidates.max(
            initial=-1) >= len(points):
        raise PipelineError(f"candidates of shape {candidates.shape} do not name rows of "
                            f"{len(points)} points for {len(queries)} queries")
    square, rows = _rerank(points, queries, candidates, int(k))
    return np.sqrt(square), rows


def _cells(points: np.ndarray, centre: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A row order that puts the points (centred on `centre`, in float32) in cells of nearby
    rows, about `size` each, and where each cell starts (one more: the end): the clusters of a
    k-means (Lloyd's iterations on a sample, seeded), a cluster of more than twice `size` rows
    cut in pieces. Clusters follow the data's own groups, whose balls then leave out most
    other points."""
    n_cells = -(-len(points) // size)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(points), min(len(points), 40 * n_cells), replace=False)
    sample = _centred(points, picked, centre).astype(np.float64)
    centres = sample[rng.choice(len(sample), n_cells, replace=False)]
    for _ in range(15):
        nearest = _nearest_centre(sample, centres)
        counts = np.bincount(nearest, minlength=n_cells)
        sums = np.zeros_like(centres)
        np.add.at(sums, nearest, sample)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    cell = np.concatenate([
        _nearest_centre(_centred(points, slice(first, first + BUILD_BLOCK), centre), centres)
        for first in range(0, len(points), BUILD_BLOCK)])
    order = np.argsort(cell, kind="stable")
    ends = np.cumsum(np.bincount(cell, minlength=n_cells))
    starts = [start for first, last in zip(ends - np.bincount(cell, minlength=n_cells), ends,
                                           strict=True)
              for start in range(first, last, 2 * size)]
    return order, np.array([*starts, len(points)])


def _centred(points: np.ndarray, rows, centre: np.ndarray) -> np.ndarray:
    """Some rows of the points less the centre, in float32 (pass 1's coordinates)."""
    return np.asarray(points[rows] - centre, dtype=np.float32)


def _nearest_centre(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.argmin((centres**2).sum(axis=1) - 2 * np.asarray(x, np.float64) @ centres.T,
                     axis=1)


def _balls(inside: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's centre (float64) and the radius of a ball around it holding the cell."""
    centres = np.stack([inside[a:b].mean(axis=0, dtype=np.float64)
                        for a, b in zip(starts[:-1], starts[1:], strict=True)])
    radii = np.array([np.sqrt(((inside[a:b] - c) ** 2).sum(axis=1).max())
                      for a, b, c in zip(starts[:-1], starts[1:], centres, strict=True)])
    return centres, radii * (1 + SAFE) + SAFE


@dataclass
class Layout:
    """The points of pass 1 in some order, in cells (`starts`: where each begins, and the
    end), centred in float32 beside their squared norms (one product then gives a score:
    [b, ‖b‖²]·[−2a, 1], the factor −2 exact), and each cell's ball (centre, radius)."""

    order: np.ndarray
    starts: np.ndarray
    augmented: np.ndarray
    balls: np.ndarray
    radii: np.ndarray
    wide: np.ndarray | None = None  # `augmented` in float64, when pass 3 first needs it
    reach: float = 0.0  # the largest norm of a centred point, from float64 norms

    def by_cell(self, q32: np.ndarray) -> np.ndarray:
        """Query rows ordered by the cell whose ball's centre is nearest."""
        home = np.concatenate([_nearest_centre(q32[first:first + 8192], self.balls)
                               for first in range(0, len(q32), 8192)])
        return np.argsort(home, kind="stable")


def _layout(points: np.ndarray, centre: np.ndarray, order: np.ndarray, starts,
            allocate=np.empty) -> Layout:
    """A Layout of the points in `order`, cut at `starts` (or in tiles of that many), made a
    block of rows at a time: the float32 copies of every point at once, which it was made
    from before, took three times its size again (at a million 64-d features, 0.8 GB)."""
    if np.isscalar(starts):
        starts = np.array([*range(0, len(order), starts), len(order)])
    d = points.shape[1]
    augmented = allocate((len(order), d + 1), np.float32)
    reach = 0.0
    for first in range(0, len(order), BUILD_BLOCK):
        inside = _centred(points, order[first:first + BUILD_BLOCK], centre)
        norms = np.einsum("ij,ij->i", inside, inside, dtype=np.float64)
        augmented[first:first + len(inside), :d] = inside
        augmented[first:first + len(inside), d] = norms
        reach = max(reach, float(np.sqrt(norms.max())))
    return Layout(order, starts, augmented, *_balls(augmented[:, :d], starts), reach=reach)


def _visit(layout: Layout, cell: int, q_aug, augmented, score, found) -> None:
    first, last = layout.starts[cell], layout.starts[cell + 1]
    _keep_nearest(q_aug @ augmented[first:last].T, first, score, found)


def _finite(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    x = np.ascontiguousarray(x, dtype=x.dtype if x.dtype in (np.float32, np.float64)
                             else np.float64)
    blocks = [x] if x.ndim < 2 else (x[i:i + BLOCK_ROWS] for i in range(0, len(x), BLOCK_ROWS))
    if not all(np.isfinite(block).all() for block in blocks):  # no mask of every value
        raise PipelineError(f"a neighbour search's {name} hold values that are not finite")
    return x


@njit(cache=True, nogil=True)
def _keep_nearest(products, start, score, found):  # pragma: no cover (compiled)
    """Fold one tile into each query's sorted list: a point enters when its score is below
    the list's last (equal scores keep the earlier row, as rows come in ascending order).
    A chunk of CHUNK points none of which is below it is passed over after one count, a
    loop the compiler vectorises."""
    room, width = score.shape[1], products.shape[1]
    for r in range(products.shape[0]):
        row = products[r]
        worst = score[r, room - 1]
        for c0 in range(0, width, CHUNK):
            c1 = min(c0 + CHUNK, width)
            hits = np.int32(0)
            for j in range(c0, c1):
                hits += np.int32(row[j] < worst)
            if hits == 0:
                continue
            for j in range(c0, c1):
                if row[j] < worst:
                    _enter(score[r], found[r], row[j], start + j)
                    worst = score[r, room - 1]


@njit(cache=True, inline="always")
def _enter(score, found, v, j):  # pragma: no cover (compiled)
    p = score.shape[0] - 1
    while p > 0 and score[p - 1] > v:
        score[p] = score[p - 1]
        found[p] = found[p - 1]
        p -= 1
    score[p] = v
    found[p] = j


@njit(cache=True, inline="always")
def _square(a, b):  # pragma: no cover (compiled)
    """Squared Euclidean distance in float64, summed in coordinate order: the definition every
    pass ranks by."""
    total = 0.0
    for c in range(a.shape[0]):
        diff = np.float64(a[c]) - np.float64(b[c])
        total += diff * diff
    return total


@njit(cache=True, nogil=True)
def _rerank(points, queries, found, k):  # pragma: no cover (compiled)
    """Pass 2: each query's candidates in float64, the k nearest by (distance, row)."""
    square = np.full((found.shape[0], k), np.inf)
    rows = np.full((found.shape[0], k), -1, dtype=np.int64)
    for r in range(found.shape[0]):
        for c in range(found.shape[1]):
            j = found[r, c]
            if j >= 0:
                _insert(square[r], rows[r], _square(queries[r], points[j]), j)
    return square, rows


@njit(cache=True, inline="always")
def _insert(square, rows, d, j):  # pragma: no cover (compiled)
    """Put (d, j) into the sorted list (square, rows) if it comes before the last entry."""
    last = square.shape[0] - 1
    if d > square[last] or (d == square[last] and j > rows[last] and rows[last] >= 0):
        return
    p = last
    while p > 0 and (square[p - 1] > d or (square[p - 1] == d and rows[p - 1] > j)):
        square[p] = square[p - 1]
        rows[p] = rows[p - 1]
        p -= 1
    square[p] = d
    rows[p] = j


@njit(cache=True, nogil=True)
def _every_point(points, queries, k):  # pragma: no cover (compiled)
    """Pass 3: the k nearest of every point in float64, for queries pass 2 could not settle."""
    square = np.full((queries.shape[0], k), np.inf)
    rows = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for r in range(queries.shape[0]):
        for j in range(points.shape[0]):
            _insert(square[r], rows[r], _square(queries[r], points[j]), j)
    return square, rows
