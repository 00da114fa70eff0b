"""Cross-space disagreement: how much an image's neighbourhood in the label space (ACT), the
feature space (FEA) and the prediction space (PRD) differ. It turns the case of images close in
FEA but apart in PRD (Huang et al., IEEE VIS 2020, case 1) into a number per image.

Agreement of space X with space Y for an image is the share of its k nearest neighbours in X
that lie within its k-th-neighbour distance in Y. Measured against a radius rather than as a
set overlap, ties count fairly: in ACT, hundreds of images can share one label vector, and any
of them is as near as the k chosen ones. Two spaces agree on an image by the mean of X→Y and
Y→X; its disagreement is 1 − the mean agreement over the three pairs of spaces, from 0 (the
three neighbourhoods coincide) to 1 (they share no image).

Distances: Euclidean on labels (ACT) and on probabilities (PRD); on features, the tool's one
definition of nearness (pipeline.neighbours: cosine on the first principal components).

Every search is exact. Among images equally near, the lower row numbers are the neighbours:
in ACT, where such ties are the rule, the score is then the same whatever the search. ACT is
searched between distinct label vectors (a run of 100,000 images has thousands), PRD and
FEA by the tool's exact search (pipeline.knn: float32 matrix products for candidates, float64
distances to rank them, clusters of points passed over when their bounds allow; at 110,000
images 19× (FEA) and 1.5× (PRD) faster than scikit-learn's brute-force search, which the
score used before, and the whole score 3.3×: benchmarks/knn.py). An approximate index (the
Annoy that openTSNE bundles) was tried and left: at 20,000 images it found 75 % (PRD) and
53 % (FEA) of the true neighbours with 10 trees, and at 50 trees (98 %, 94 %) it was no faster
than the exact search.

Runs of up to STORED_UP_TO images store the score when they are written (disagreement.npy,
pipeline.store.write_run), so the dashboard only reads it; run_scores computes it, once per
process, for a run written before runs stored it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.errors import PipelineError
from pipeline.knn import ExactIndex
from pipeline.neighbours import build_index, without_self
from pipeline.store import Run, open_run

DEFAULT_K = 10
PAIRS = (("act", "fea"), ("act", "prd"), ("fea", "prd"))
SLACK = 1e-6  # distances equal up to float rounding count as within the radius
AGREEMENT_BLOCK = 8192  # images whose neighbours' distances are taken at once (≤ 16 MB in FEA)


@dataclass(frozen=True)
class Space:
    """Points of one space and how far apart two of them are."""

    points: np.ndarray  # N × d float32
    cosine: bool

    def distance(self, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
        """Distance of each row to each of its `others` (rows: N, others: N × k)."""
        a, b = self.points[rows][:, None, :], self.points[others]
        if self.cosine:
            return 1.0 - (a * b).sum(axis=-1)  # points are unit vectors
        return np.sqrt(((a - b) ** 2).sum(axis=-1))


def euclidean_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """Each point's k nearest other points (N × k), nearest first and, among equally near
    ones, lowest row first (pipeline.knn's exact search)."""
    found = ExactIndex(points).query(k + 1)[1]
    return without_self(found, np.arange(len(points)), k)


def label_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """Each point's k nearest other points (N × k), nearest first and, among equally near ones,
    lowest row first: exact, searched between distinct rows, each standing for its copies."""
    distinct, which, counts = np.unique(points, axis=0, return_inverse=True, return_counts=True)
    distinct = distinct.astype(np.float64)
    members = np.argsort(which.ravel(), kind="stable")  # rows of each distinct vector, ascending
    starts = np.concatenate([[0], np.cumsum(counts)])
    found = np.empty((len(points), k), dtype=np.int64)
    block = max(1, 2**22 // len(distinct))  # distances of `block` vectors at a time: ≤ 32 MB
    for first in range(0, len(distinct), block):
        d = _distances(distinct[first:first + block], distinct)
        for u, (row, edge) in enumerate(zip(d, _edges(d, counts, k + 1), strict=True), first):
            mine = members[starts[u]:starts[u + 1]]
            nearest = _nearest_rows(row, edge, members, starts, k + 1)
            found[mine] = without_self(np.tile(nearest, (len(mine), 1)), mine, k)
    return found


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a) × len(b)) by one matrix product; exact for labels, whose
    squared distances are whole numbers."""
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0))


def _edges(d: np.ndarray, counts: np.ndarray, want: int) -> np.ndarray:
    """Per row of d, the distance within which `want` rows (counting copies) first lie: found
    among the `want` nearest vectors, which hold at least `want` rows between them."""
    m = min(want, d.shape[1])
    part = np.argpartition(d, m - 1, axis=1)[:, :m]
    near = np.take_along_axis(d, part, axis=1)
    order = np.argsort(near, axis=1, kind="stable")
    held = np.cumsum(counts[np.take_along_axis(part, order, axis=1)], axis=1)
    reach = np.argmax(held >= want, axis=1)
    return np.take_along_axis(near, order, axis=1)[np.arange(len(d)), reach]


def _nearest_rows(d: np.ndarray, edge: float, members, starts, want: int) -> np.ndarray:
    """The `want` rows nearest to a vector whose distances to the distinct vectors are d, by
    (distance, row): the rows of every vector within `edge`, at most `want` of each (the
    lowest)."""
    near = np.flatnonzero(d <= edge)
    taken = np.minimum(starts[near + 1] - starts[near], want)
    first = np.repeat(np.cumsum(taken) - taken, taken)  # where each vector's part begins
    rows = members[np.repeat(starts[near], taken) + np.arange(taken.sum()) - first]
    dist = np.repeat(d[near], taken)
    return rows[np.lexsort((rows, dist))][:want]


def spaces(act, fea, prd, k: int) -> tuple[dict[str, Space], dict[str, np.ndarray]]:
    """The three spaces and each image's k nearest neighbours in each."""
    act = np.asarray(act, dtype=np.float32)
    prd = np.ascontiguousarray(prd, dtype=np.float32)
    index = build_index(fea)
    found = {"act": label_neighbours(act, k), "prd": euclidean_neighbours(prd, k),
             "fea": index.nearest(np.arange(len(index.unit)), k)}
    made = {"act": Space(act, False), "fea": Space(index.unit, True), "prd": Space(prd, False)}
    return made, found


def agreement(x: str, y: str, made: dict[str, Space], found: dict[str, np.ndarray]) -> np.ndarray:
    """Per image, the share of its nearest neighbours in x that lie within its k-NN radius in y.
    A block of images at a time: the neighbours' points of all at once (N × k × d) would be
    200 MB at 100,000 images in FEA, and grow with every image."""
    n = len(found[x])
    shares = np.empty(n)
    for first in range(0, n, AGREEMENT_BLOCK):
        rows = np.arange(first, min(first + AGREEMENT_BLOCK, n))
        radius = made[y].distance(rows, found[y][rows]).max(axis=1)
        shares[rows] = (made[y].distance(rows, found[x][rows]) <= radius[:, None] + SLACK
                        ).mean(axis=1)
    return shares


def disagreement(act, fea, prd, k: int = DEFAULT_K) -> dict[str, np.ndarray]:
    """Per image: the disagreement score (N, in [0, 1]) and each pair's agreement (N each)."""
    n = len(np.asarray(act))
    if n < 3:
        raise PipelineError(f"neighbourhoods need at least 3 images, the run has {n}")
    k = int(min(max(k, 1), n - 1))
    made, found = spaces(act, fea, prd, k)
    pairs = {f"{x}-{y}": (agreement(x, y, made, found) + agreement(y, x, made, found)) / 2
             for x, y in PAIRS}
    score = 1.0 - np.mean(list(pairs.values()), axis=0)
    return {"score": score.astype(np.float32), **{p: v.astype(np.float32)
                                                   for p, v in pairs.items()}}


STORED_UP_TO = 250_000  # the exact searches grow as N²: a minute at 110,000, hours at 1,000,000


def scores_to_store(act, fea, prd) -> np.ndarray | None:
    """The score a run stores when it is written (k = DEFAULT_K); None for a run too small to
    have neighbourhoods (fewer than 3 images) or larger than STORED_UP_TO."""
    if not 3 <= len(np.asarray(act)) <= STORED_UP_TO:
        return None
    return disagreement(act, fea, prd)["score"]


@lru_cache(maxsize=4)
def _run_disagreement(run_path: str, k: int) -> dict[str, np.ndarray]:
    run = open_run(run_path)
    found = disagreement(run.act, run.fea, run.prd, k)
    for values in found.values():
        values.flags.writeable = False
    return found


def run_disagreement(run: Run, k: int = DEFAULT_K) -> dict[str, np.ndarray]:
    """disagreement of a run, score and pairs, computed once per process, run and k."""
    return _run_disagreement(str(run.path), int(k))


def run_scores(run: Run) -> np.ndarray:
    """Each image's disagreement score (k = DEFAULT_K): the one stored with the run, or, for a
    run written before runs stored it, computed once per process (seconds to minutes)."""
    stored = run.disagreement
    return stored if stored is not None else run_disagreement(run)["score"]
