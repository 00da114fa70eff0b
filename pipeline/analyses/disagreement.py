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
pipeline.store.write_run), so the dashboard only reads it, and with it what it was made from:
each image's neighbour lists in the three spaces (neighbours.npy) and the feature basis of FEA
(fea_basis.npy). `add` extends those (`extended`): the old images keep their basis, and only
old × new and new × all pairs are searched, so adding a day's images costs in proportion to
them, not to the square of the run (on 2 cores, 100,000 + 10,000 images: 6.3 s against 13.0 s
for every pair; 1,000,000 + 10,000: 67 s against about 300 s). run_scores computes the score,
once per process, for a run written before runs stored it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.errors import PipelineError
from pipeline.knn import ExactIndex, nearest_among
from pipeline.neighbours import FeatureIndex, build_index, without_self
from pipeline.store import Run, open_run
from pipeline.store.files import BLOCK_ROWS, SPACES

DEFAULT_K = 10
PAIRS = (("act", "fea"), ("act", "prd"), ("fea", "prd"))
SPACE_ORDER = SPACES  # the order of a run's stored neighbour lists: act, fea, prd
SLACK = 1e-6  # distances equal up to float rounding count as within the radius
AGREEMENT_BLOCK = 8192  # images whose neighbours' distances are taken at once (≤ 16 MB in FEA)
# Images whose neighbours are searched at once: a search's candidates, distances and rows take
# about 200 bytes an image, which for every image at once would grow with the run.
SEARCH_BLOCK = BLOCK_ROWS


@dataclass(frozen=True)
class Space:
    """Points of one space and how far apart two of them are."""

    points: np.ndarray  # N × d: labels (uint8), unit feature vectors, probabilities
    cosine: bool

    def distance(self, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
        """Distance of each row to each of its `others` (rows: N, others: N × k)."""
        a = np.asarray(self.points[rows], dtype=np.float32)[:, None, :]
        b = np.asarray(self.points[others], dtype=np.float32)
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
    return without_self(label_nearest(points, k + 1), np.arange(len(points)), k)


def label_nearest(points: np.ndarray, k: int, queries=None, copies=None) -> np.ndarray:
    """For each query label vector (by default each point's own), the k rows of `points`
    nearest to it (len(queries) × k, k ≤ len(points)), nearest first and, among equally near
    ones, lowest row first: exact, searched between distinct vectors (a run of 100,000 images
    has thousands), each standing for its copies (`copies`: _copies(points), when the caller
    asks of the same points many times)."""
    distinct, counts, members, starts = _copies(points) if copies is None else copies
    if queries is None:
        asked, q_members, q_starts = distinct, members, starts
    else:
        asked, _, q_members, q_starts = _copies(queries)
    distinct, asked = distinct.astype(np.float64), asked.astype(np.float64)
    found = np.empty((len(q_members), k), dtype=np.int64)
    block = max(1, 2**22 // len(distinct))  # distances of `block` vectors at a time: ≤ 32 MB
    for first in range(0, len(asked), block):
        d = _distances(asked[first:first + block], distinct)
        for u, (row, edge) in enumerate(zip(d, _edges(d, counts, k), strict=True), first):
            found[q_members[q_starts[u]:q_starts[u + 1]]] = _nearest_rows(
                row, edge, members, starts, k)
    return found


def _copies(points) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of `points`, how many copies each has, the rows of all copies grouped
    by distinct row (ascending within a group) and where each group starts."""
    points = np.asarray(points)
    if points.shape[1] < 63 and ((points == 0) | (points == 1)).all():
        # Labels of 0 and 1: each row one whole number, which sorts far faster than rows do
        # (np.unique over rows: 0.8 s for 340,000 images of 17 attributes).
        keys = points.astype(np.int64) @ (np.int64(1) << np.arange(points.shape[1]))
        _, first, which, counts = np.unique(keys, return_index=True, return_inverse=True,
                                            return_counts=True)
        distinct = points[first]
    else:
        distinct, which, counts = np.unique(points, axis=0, return_inverse=True,
                                            return_counts=True)
    members = np.argsort(which.ravel(), kind="stable")
    return distinct, counts, members, np.concatenate([[0], np.cumsum(counts)])


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


def spaces(act, fea, prd, k: int, basis=None, out=None, allocate=np.empty
           ) -> tuple[dict[str, Space], dict[str, np.ndarray], FeatureIndex]:
    """The three spaces, each image's k nearest neighbours in each (in `out`, 3 × N × k int32,
    when given, e.g. an array of a run's draft on disk), and the FEA index (its basis given,
    or fitted to these features). Searched SEARCH_BLOCK images at a time: what each search
    holds besides its points does not grow with the run; `allocate(shape, dtype)` makes the
    searches' points (a run's draft: on disk, pipeline.store.RunDraft.scratch)."""
    made, index = _made(act, fea, prd, basis, clustered=True, allocate=allocate)
    n = len(index.unit)
    found = np.empty((len(SPACE_ORDER), n, k), np.int32) if out is None else out
    prd_index = ExactIndex(made["prd"].points, clustered=True, allocate=allocate)
    label_copies = _copies(made["act"].points)
    for first in range(0, n, SEARCH_BLOCK):
        rows = np.arange(first, min(first + SEARCH_BLOCK, n))
        act_found = label_nearest(made["act"].points, k + 1, made["act"].points[rows],
                                  copies=label_copies)
        prd_found = prd_index.query(k + 1, made["prd"].points[rows])[1]
        found[SPACE_ORDER.index("act"), rows] = without_self(act_found, rows, k)
        found[SPACE_ORDER.index("fea"), rows] = index.nearest(rows, k)
        found[SPACE_ORDER.index("prd"), rows] = without_self(prd_found, rows, k)
    return made, dict(zip(SPACE_ORDER, found, strict=True)), index


def _made(act, fea, prd, basis, clustered: bool = False, allocate=np.empty
          ) -> tuple[dict[str, Space], FeatureIndex]:
    index = build_index(fea, basis, clustered, allocate)
    return {"act": Space(np.asarray(act), False),
            "fea": Space(index.unit, True),
            "prd": Space(np.asarray(prd, dtype=np.float32), False)}, index


def agreement(x: str, y: str, made: dict[str, Space], found: dict[str, np.ndarray],
              rows=None) -> np.ndarray:
    """Per image (of `rows`, by default all), the share of its nearest neighbours in x that lie
    within its k-NN radius in y. A block of images at a time: the neighbours' points of all at
    once (N × k × d) would be 200 MB at 100,000 images in FEA, and grow with every image."""
    rows = np.arange(len(found[x])) if rows is None else np.asarray(rows)
    shares = np.empty(len(rows))
    for first in range(0, len(rows), AGREEMENT_BLOCK):
        block = rows[first:first + AGREEMENT_BLOCK]
        radius = made[y].distance(block, found[y][block]).max(axis=1)
        shares[first:first + len(block)] = (
            made[y].distance(block, found[x][block]) <= radius[:, None] + SLACK).mean(axis=1)
    return shares


def _scores(made: dict[str, Space], found: dict[str, np.ndarray], rows=None
            ) -> dict[str, np.ndarray]:
    """The score (in [0, 1]) and each pair's agreement of each image of `rows` (default: all)
    from the neighbourhoods; each image's from its own lists alone."""
    pairs = {f"{x}-{y}": (agreement(x, y, made, found, rows)
                          + agreement(y, x, made, found, rows)) / 2 for x, y in PAIRS}
    score = 1.0 - np.mean(list(pairs.values()), axis=0)
    return {"score": score.astype(np.float32), **{p: v.astype(np.float32)
                                                   for p, v in pairs.items()}}


def _k(n: int, k: int) -> int:
    if n < 3:
        raise PipelineError(f"neighbourhoods need at least 3 images, the run has {n}")
    return int(min(max(k, 1), n - 1))


def disagreement(act, fea, prd, k: int = DEFAULT_K, basis=None) -> dict[str, np.ndarray]:
    """Per image: the disagreement score (N, in [0, 1]) and each pair's agreement (N each)."""
    made, found, _ = spaces(act, fea, prd, _k(len(np.asarray(act)), k), basis)
    return _scores(made, found)


@dataclass(frozen=True)
class Neighbourhoods:
    """What a run stores of its neighbourhoods: each image's k nearest other images in each
    space (3 × N × k, in SPACE_ORDER), the feature basis FEA's were found in
    (pipeline.neighbours.fit_basis) and the disagreement score they give (N)."""

    found: np.ndarray
    basis: np.ndarray
    score: np.ndarray


def neighbourhoods(act, fea, prd, k: int = DEFAULT_K, basis=None, lists=None,
                   allocate=np.empty) -> Neighbourhoods:
    """A run's Neighbourhoods, every search over all its images; `lists(shape)`, when given,
    makes the array the neighbour lists are written into (a run's draft: on disk), and
    `allocate` the searches' own arrays (spaces)."""
    k = _k(len(np.asarray(act)), k)
    shape = (len(SPACE_ORDER), len(np.asarray(act)), k)
    out = np.empty(shape, np.int32) if lists is None else lists(shape)
    made, found, index = spaces(act, fea, prd, k, basis, out, allocate)
    return Neighbourhoods(out, index.basis, _scores(made, found)["score"])


def extended(parent: Neighbourhoods, act, fea, prd) -> Neighbourhoods:
    """The Neighbourhoods of a run whose first rows are the images `parent` describes, in the
    same order, and whose other rows are new (`add`), in the parent's basis: exactly what
    neighbourhoods(act, fea, prd, k, parent.basis) finds, without searching every pair again.

    An old image's k nearest among all images are the k nearest of its old neighbours and its k
    nearest among the new images (by distance, then row: new rows come after every old one);
    a new image's are searched among all. The cost grows with old × new, not all²: the old
    images are searched against the new ones only.
    """
    n_old, k = parent.found.shape[1], parent.found.shape[2]
    n = len(np.asarray(act))
    if n <= n_old:
        raise PipelineError(f"a run extended from {n_old} images must have more, not {n}")
    made, index = _made(act, fea, prd, parent.basis)
    found, changed = {}, np.zeros(n_old, dtype=bool)
    new_rows = np.arange(n_old, n)
    for space, old in zip(SPACE_ORDER, parent.found, strict=True):
        points = made[space].points
        if space == "act":
            among_new = label_nearest(points[n_old:], min(k, n - n_old), points[:n_old])
            of_new = label_nearest(points, k + 1, points[n_old:])
        else:
            among_new = ExactIndex(points[n_old:]).query(k, points[:n_old])[1]
            of_new = (index.search if space == "fea" else ExactIndex(points)).query(
                k + 1, points[n_old:])[1]
        candidates = np.hstack([old, among_new + n_old])
        merged = nearest_among(points, points[:n_old], candidates, k)[1]
        changed |= (merged != old).any(axis=1)
        found[space] = np.vstack([merged, without_self(of_new, new_rows, k)])
    # An old image whose three lists are as they were keeps its score; the others are scored
    # anew (at 1,000,000 + 10,000 images, most keep theirs).
    again = np.concatenate([np.flatnonzero(changed), new_rows])
    score = np.concatenate([np.asarray(parent.score, dtype=np.float32),
                            np.empty(n - n_old, dtype=np.float32)])
    score[again] = _scores(made, found, again)["score"]
    return Neighbourhoods(_stacked(found), parent.basis, score)


def _stacked(found: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([found[s] for s in SPACE_ORDER]).astype(np.int32)


def stored(run: Run) -> Neighbourhoods | None:
    """The neighbourhoods stored with a run; None for a run written before runs stored them."""
    if run.neighbour_lists is None or run.disagreement is None or run.fea_basis is None:
        return None
    return Neighbourhoods(np.asarray(run.neighbour_lists), run.fea_basis,
                          np.asarray(run.disagreement))


# Every pair searched on 2 cores: 12–20 s at 110,000 images; at 1,000,000, 5 minutes and 2.5 GB
# for features in tight clusters, 24 minutes for looser ones (benchmarks/RESULTS.md). A beamline
# day at most; a larger run made by `add` extends its parent's instead (old × new images).
STORED_UP_TO = 1_000_000


def to_store(act, fea, prd, lists=None, allocate=np.empty) -> Neighbourhoods | None:
    """What a run stores when it is written (k = DEFAULT_K; `lists` and `allocate` as for
    neighbourhoods);
    None for a run too small to have neighbourhoods (fewer than 3 images) or larger than
    STORED_UP_TO."""
    if not 3 <= len(np.asarray(act)) <= STORED_UP_TO:
        return None
    return neighbourhoods(act, fea, prd, lists=lists, allocate=allocate)


@lru_cache(maxsize=4)
def _run_disagreement(run_path: str, k: int) -> dict[str, np.ndarray]:
    run = open_run(run_path)
    lists = run.neighbour_lists
    if lists is not None and lists.shape[2] == k:  # stored: no search, only the agreements
        made, _ = _made(run.act, run.fea, run.prd, run.fea_basis)
        found = _scores(made, dict(zip(SPACE_ORDER, np.asarray(lists), strict=True)))
    else:
        found = disagreement(run.act, run.fea, run.prd, k, run.fea_basis)
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
