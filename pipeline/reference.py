"""Maps of large runs, and new points placed on existing maps: openTSNE on a reference sample
(stratified by label combination), every other point placed by TSNEEmbedding.transform.

A run records its reference rows (reference_rows.npy); with them and the run's own arrays the
reference embedding is rebuilt later, so images added to a run land on the same map while every
old point keeps its coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from openTSNE import TSNEEmbedding
from openTSNE.affinity import Affinities, PerplexityBasedNN, joint_probabilities_nn
from scipy import sparse
from sklearn.decomposition import PCA

from pipeline import cluster
from pipeline.before_after import onto
from pipeline.embed import (
    ACT_JITTER,
    MIN_TSNE_POINTS,
    PCA_DIMS,
    _jobs,
    as_coords,
    fit_tsne,
    gradient_method,
    prepare,
)
from pipeline.errors import PipelineError
from pipeline.knn import ExactIndex

REFERENCE_N = 50_000  # t-SNE proper on at most this many points; the rest are placed
TRANSFORM_CHUNK = 5_000  # points placed per task: independent of each other, so any cut is exact
# openTSNE's default number of transform steps. Fewer cost quality for little time: 10,000 points
# placed on a 50,000-point map kept 0.074 of their 10 nearest neighbours after 250 steps, 0.070
# after 100 and 0.053 after 50, and 100 saved under a second a map (benchmarks/RESULTS.md).
TRANSFORM_ITER = 250
REFERENCE_FILE = "reference_rows.npy"
PREPARE_CHUNK = 50_000  # rows prepared at a time when a whole array is (Others.__call__)


def choose_reference(act: np.ndarray, n_ref: int = REFERENCE_N, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a sample of `n_ref` rows (all rows when there are no more),
    stratified by label combination: each combination keeps its share, and at least one row."""
    act = np.asarray(act)
    n = len(act)
    if n <= n_ref:
        return np.arange(n)
    _, group, counts = np.unique(act, axis=0, return_inverse=True, return_counts=True)
    group = group.ravel()
    take = _quotas(counts, n_ref)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(group == g), k, replace=False)
              for g, k in enumerate(take) if k]
    return np.sort(np.concatenate(chosen))


def _quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Whole-number shares of `total` in proportion to `counts`, at least 1 each where possible,
    by largest remainder."""
    exact = counts * total / counts.sum()
    take = np.minimum(counts, np.maximum(1, np.floor(exact).astype(int)))
    while take.sum() > total:  # many rare combinations: trim the largest groups
        take[np.argmax(take)] -= 1
    room = np.flatnonzero(take < counts)
    spare = total - take.sum()
    if spare > 0:
        order = room[np.argsort(-(exact[room] - take[room]), kind="stable")]
        take[order[:spare]] += 1
    return take


def reference_inputs(x_ref: np.ndarray, space: str, seed: int = 0) -> tuple[np.ndarray, Others]:
    """What t-SNE sees of the reference rows (exactly embed.prepare's), and how any other rows
    are prepared the same way (the PCA fitted on the reference, fresh jitter)."""
    x_ref = np.asarray(x_ref, dtype=np.float64)
    if space == "fea" and x_ref.shape[1] > PCA_DIMS and len(x_ref) > PCA_DIMS:
        pca = PCA(n_components=PCA_DIMS, random_state=seed)
        return pca.fit_transform(x_ref), Others(space, seed, pca)
    return prepare(x_ref, space, seed), Others(space, seed)


class Others:
    """Rows other than the reference's, prepared for placing as the reference's were: FEA by
    the reference's PCA, ACT with a jitter of its own (never the reference's stream), PRD as
    they are; in float64, as openTSNE takes them."""

    def __init__(self, space: str, seed: int, pca: PCA | None = None):
        self.space, self.seed, self.pca = space, seed, pca

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """All of `x` prepared (e.g. the images added to a run)."""
        x = np.asarray(x)
        width = self.pca.n_components_ if self.pca is not None else x.shape[1]
        blocks = list(self.blocks(x, np.arange(len(x))))
        return np.concatenate(blocks) if blocks else np.zeros((0, width))

    def blocks(self, x: np.ndarray, rows: np.ndarray, size: int = PREPARE_CHUNK
               ) -> Iterator[np.ndarray]:
        """x[rows] prepared, `size` rows at a time and in order: the values of self(x[rows]),
        with no copy of more than `size` rows of x (a float64 copy of a million 704-d rows
        alone would be 5.6 GB)."""
        noise = np.random.default_rng(self.seed + 1 + len(rows)) if self.space == "act" else None
        for start in range(0, len(rows), size):
            part = np.asarray(x[rows[start : start + size]], np.float64)
            if self.pca is not None:
                yield self.pca.transform(part)
            elif noise is not None:  # one stream for all blocks, drawn in order: as one draw
                yield part + noise.normal(0, ACT_JITTER, part.shape)
            else:
                yield part


def place(embedding: TSNEEmbedding, z: np.ndarray, client=None, chunk: int = TRANSFORM_CHUNK,
          n_iter: int = TRANSFORM_ITER) -> np.ndarray:
    """Coordinates of new points `z` on `embedding` (openTSNE transform, `n_iter` steps), in
    chunks of `chunk` points; over the Dask workers when a client is given."""
    return place_blocks(embedding, (z[r.start : r.stop] for r in cluster.shards(len(z), chunk)),
                        client, n_iter)


def place_blocks(embedding: TSNEEmbedding, blocks: Iterable[np.ndarray], client=None,
                 n_iter: int = TRANSFORM_ITER) -> np.ndarray:
    """place() of the points of `blocks` (each placed as one task), one after the other: here
    each block is taken from the iterable only when its turn comes, so a generator that
    prepares them holds one block at a time; with a client all are shipped at once.

    openTSNE moves the reference so that its bounding box is centred on 0 (in place) and
    returns the new points in that frame: here a centred copy is placed on, and the shift
    undone on the placed points, so they land on the reference's own coordinates."""
    shift = (np.max(embedding, axis=0) + np.min(embedding, axis=0)) / 2
    embedding = TSNEEmbedding(np.asarray(embedding) - shift, embedding.affinities,
                              random_state=embedding.random_state,
                              **embedding.gradient_descent_params)
    if client is None:
        placed = [transform_chunk(z, embedding, n_iter) for z in blocks]
    else:
        shipped = [(z,) for z in blocks]
        # Dask would ship the TSNEEmbedding (an ndarray subclass) as a bare array: wrap it.
        shared = client.scatter(Shipped(embedding), broadcast=True) if shipped else None
        placed = cluster.gather(client, transform_chunk, shipped, desc="place", progress=False,
                                sizes=[len(z) for z, in shipped], embedding=shared,
                                n_iter=n_iter) if shipped else []
    if not placed:
        return np.zeros((0, 2), np.float32)
    return as_coords(np.concatenate(placed) + shift, "placed points")


class Shipped:
    """A TSNEEmbedding on its way to the workers, pickled whole with its affinities."""

    def __init__(self, embedding: TSNEEmbedding):
        self.embedding = embedding


def transform_chunk(z: np.ndarray, embedding: TSNEEmbedding | Shipped,
                    n_iter: int = TRANSFORM_ITER) -> np.ndarray:
    if isinstance(embedding, Shipped):
        embedding = embedding.embedding
    return np.asarray(embedding.transform(z, n_iter=n_iter), dtype=np.float64)


class ReferenceNeighbours(Affinities):
    """What openTSNE's transform asks of a reference's affinities: the affinities of new points
    to their nearest reference points (exact neighbours, pipeline.knn), as PerplexityBasedNN's
    `to_new` computes them. The reference's own affinity matrix, which a rebuilt map would
    never use, is not computed: that was most of the time of rebuilding a map of 50,000
    points (its 90 nearest neighbours each, by Annoy)."""

    def __init__(self, z_ref: np.ndarray, perplexity: float, n_jobs: int = 1):
        super().__init__(verbose=False)
        self.index = ExactIndex(np.asarray(z_ref, np.float64))  # threads by itself
        self.perplexity, self.n_jobs = perplexity, n_jobs
        self.P = sparse.csr_matrix((len(z_ref), len(z_ref)))  # its shape is checked, no more

    @property
    def n_samples(self) -> int:
        return len(self.index)

    def to_new(self, data, perplexity=None, return_distances=False, k_neighbors="auto"):
        perplexity = self.perplexity if perplexity is None else perplexity
        k = min(self.n_samples, int(3 * perplexity)) if k_neighbors == "auto" else k_neighbors
        effective = PerplexityBasedNN.check_perplexity(perplexity, k)
        distances, neighbors = self.index.query(k, np.asarray(data, np.float64))
        P = joint_probabilities_nn(neighbors, distances, [effective], symmetrize=False,
                                   normalization="point-wise",
                                   n_reference_samples=self.n_samples, n_jobs=self.n_jobs)
        return (P, neighbors, distances) if return_distances else P


def embed_with_reference(x: np.ndarray, *, space: str, rows: np.ndarray, seed: int = 0,
                         perplexity: float = 30, client=None,
                         on_iteration: Callable[[int], None] | None = None,
                         start: np.ndarray | None = None) -> np.ndarray:
    """N × 2 coordinates: t-SNE of the reference `rows`, the others placed by transform; with
    `start` (N × 2, a parent's map) the reference starts from it, and all end on its scale."""
    x = np.asarray(x)
    if len(rows) < MIN_TSNE_POINTS:
        raise PipelineError(f"a reference of {len(rows)} points is too small for t-SNE")
    z_ref, others_of = reference_inputs(x[rows], space, seed)
    embedding = fit_tsne(z_ref, seed=seed, perplexity=perplexity, on_iteration=on_iteration,
                         start=None if start is None else np.asarray(start)[rows])
    coords = np.empty((len(x), 2), np.float32)
    coords[rows] = as_coords(embedding, f"{space.upper()} reference")
    others = np.setdiff1d(np.arange(len(x)), rows)
    # Prepared a transform chunk at a time as they are placed: no copy of x[others], and no
    # float64 copy of more than one chunk, so memory stays flat however many are placed.
    coords[others] = place_blocks(embedding, others_of.blocks(x, others, TRANSFORM_CHUNK),
                                  client)
    return coords if start is None else onto(coords, start)


def rebuild(x_ref: np.ndarray, coords_ref: np.ndarray, *, space: str, seed: int = 0,
            perplexity: float = 30):
    """The reference TSNEEmbedding of a stored run, from its reference rows and their
    coordinates, and the function that prepares new rows for it."""
    if len(x_ref) < MIN_TSNE_POINTS:
        raise PipelineError(f"a map of {len(x_ref)} points is too small to place images on")
    z_ref, prepare_other = reference_inputs(x_ref, space, seed)
    perplexity = float(min(perplexity, (len(z_ref) - 1) / 3))
    embedding = TSNEEmbedding(np.array(coords_ref, dtype=np.float64),
                              ReferenceNeighbours(z_ref, perplexity, _jobs()),
                              negative_gradient_method=gradient_method(len(z_ref)),
                              random_state=seed, n_jobs=_jobs())
    return embedding, prepare_other


def embed_maps(act, fea, prd, *, seed: int = 0, progress: bool = False, client=None,
               starts: dict[str, np.ndarray] | None = None, reference_n: int = REFERENCE_N,
               on_progress: Callable[[str, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The three maps and the reference rows they were fitted on.

    Up to `reference_n` images this is embed.embed_all, unchanged. Beyond, t-SNE runs on a
    stratified sample and the other images are placed by transform (on the client's workers
    when given). With `starts` ({space: N × 2}: before_after.starting_maps of the run a
    retrained one came from) each map starts from the parent's, so an image stays where it sat
    unless the model now sees it differently.
    """
    from pipeline.embed import SPACES, embed_all, tsne_steps
    from pipeline.errors import Stopped

    rows = choose_reference(act, reference_n, seed)
    if len(rows) == len(act) or len(act) < MIN_TSNE_POINTS:
        return embed_all(act, fea, prd, seed=seed, progress=progress, on_progress=on_progress,
                         should_stop=should_stop, starts=starts), rows
    arrays, out, steps = {"act": act, "fea": fea, "prd": prd}, {}, tsne_steps(starts)
    for k, space in enumerate(SPACES):
        def heard(done, k=k):
            if should_stop and should_stop():
                raise Stopped("embedding stopped; no run was written")
            if on_progress:
                on_progress("embed", (k + done / steps) / len(SPACES))

        out[space] = embed_with_reference(arrays[space], space=space, rows=rows, seed=seed,
                                          client=client, on_iteration=heard,
                                          start=None if starts is None else starts[space])
    return out, rows
