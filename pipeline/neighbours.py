"""Which images are "nearest" in FEA space: one definition for the whole tool (the detail view's
neighbours and the label audit's neighbour vote), one index per run, built once and cached.

Nearest means smallest cosine distance between feature vectors reduced by PCA to at most
PCA_DIMS dimensions and centred: ResNet features have 2048 dimensions, most of them noise for
this purpose, and cosine ignores the overall activation strength that differs between images
of one kind taken at different exposures.

The principal components are those of the run's images when it was first written, stored
with it (fit_basis); a run made from it by `add` keeps them, so its old images stay where
they were in this space and keep their neighbours unless a new image comes nearer.

The search itself is exact and Euclidean on the reduced vectors scaled to unit length, which
orders images as cosine distance does (|a − b|² = 2 − 2 cos) and lets the search use matrix
products (pipeline.knn; scikit-learn's cosine search was five times slower than its Euclidean
one at 20,000 images).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.errors import PipelineError
from pipeline.knn import ExactIndex
from pipeline.store import Run, open_run
from pipeline.store.files import BLOCK_ROWS, SPACES, check_array

PCA_DIMS = 64
DEFINITION = f"cosine distance of features (first {PCA_DIMS} principal components)"


@dataclass(frozen=True)
class FeatureIndex:
    """A fitted neighbour search over a run's features, reduced as DEFINITION says."""

    unit: np.ndarray  # N × d float32, the reduced and centred features at unit length

    search: ExactIndex  # the exact Euclidean search over `unit`
    basis: np.ndarray  # what reduced the features (fit_basis)

    def nearest(self, rows, k: int) -> np.ndarray:
        """For each of `rows`, its k nearest other images, nearest first (len(rows) × k)."""
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        n = len(self.unit)
        k = int(min(max(k, 1), n - 1))
        return without_self(self.search.query(k + 1, self.unit[rows])[1], rows, k)


def without_self(found: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each row of `found` (k + 1 neighbours of image rows[i], nearest first) less the image
    itself: usually column 0, but exact duplicates can tie with it, and then it may be absent,
    in which case the farthest is dropped."""
    keep = found != np.asarray(rows)[:, None]
    keep[keep.sum(axis=1) > k, -1] = False
    return found[keep].reshape(len(found), k)


def fit_basis(fea) -> np.ndarray:
    """The reduction DEFINITION names, fitted to an N × D feature array: a (1 + d) × D array,
    the features' mean and then the d principal axes (the identity when D ≤ PCA_DIMS).

    A run keeps the basis it was first written with (pipeline.store: fea_basis.npy), and runs
    made from it by `add` inherit it: the old images' reduced features, and so their nearest
    neighbours, stay as they were when new images join.
    """
    from sklearn.decomposition import PCA

    fea = np.asarray(fea, dtype=np.float32)
    if fea.shape[1] > PCA_DIMS and len(fea) > PCA_DIMS:
        # Exact, from the D × D covariance: 1.2 s for 110,000 × 448 features against 8.2 s
        # for the randomized solver used before (which approximates the same components).
        pca = PCA(PCA_DIMS, svd_solver="covariance_eigh").fit(fea)
        return np.vstack([pca.mean_, pca.components_]).astype(np.float32)
    return np.vstack([fea.mean(axis=0), np.eye(fea.shape[1])]).astype(np.float32)


def check_basis(basis, dims: int) -> np.ndarray:
    """A stored basis that fits features of `dims` columns, as float32."""
    basis = check_array("feature basis", basis, (None, dims))
    if len(basis) < 2:
        raise PipelineError(f"a feature basis needs a mean and at least one axis, not "
                            f"{basis.shape}")
    return basis.astype(np.float32, copy=False)


def unit_vectors(fea, basis: np.ndarray, block: int = BLOCK_ROWS, allocate=np.empty
                 ) -> np.ndarray:
    """Features reduced by a basis and scaled to unit length (N × d float32, made by
    `allocate`), in one pass a block of rows at a time: the centred copy of a million images'
    features at once would be 1.8 GB."""
    out = allocate((len(fea), len(basis) - 1), np.float32)
    for first in range(0, len(fea), block):
        reduced = (np.asarray(fea[first:first + block], dtype=np.float32) - basis[0]) \
            @ basis[1:].T
        reduced /= np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
        out[first:first + block] = reduced
    return out


def build_index(fea, basis=None, clustered: bool = False, allocate=np.empty) -> FeatureIndex:
    """The neighbour index of an N × D feature array (N ≥ 2), reduced by `basis` (fit_basis;
    by default fitted to these features); `clustered` for one that will search every image,
    `allocate` making its arrays (pipeline.knn.ExactIndex)."""
    fea = np.asarray(fea)
    if len(fea) < 2:
        raise PipelineError(f"nearest neighbours need at least 2 images, the run has {len(fea)}")
    basis = fit_basis(fea) if basis is None else check_basis(basis, fea.shape[1])
    unit = unit_vectors(fea, basis, allocate=allocate)
    return FeatureIndex(unit, ExactIndex(unit, clustered, allocate), basis)


def neighbour_graph(fea, k: int) -> np.ndarray:
    """Indices (N × k) of every image's k nearest other images, nearest first."""
    index = build_index(fea)
    return index.nearest(np.arange(len(index.unit)), k)


@lru_cache(maxsize=4)
def _run_index(run_path: str) -> FeatureIndex:
    # Runs never change once written, so the index is valid for the process lifetime.
    run = open_run(run_path)
    return build_index(run.fea, run.fea_basis)


@lru_cache(maxsize=8)
def _run_graph(run_path: str, k: int) -> np.ndarray:
    graph = _stored(run_path, k)
    if graph is None:
        index = _run_index(run_path)
        graph = index.nearest(np.arange(len(index.unit)), k)
    graph.flags.writeable = False
    return graph


def _stored(run_path: str, k: int, rows=slice(None)) -> np.ndarray | None:
    """The first k of the FEA neighbours the run stores (pipeline.analyses.disagreement) of
    `rows`, or None when it stores fewer (or none). Found by this module's search in the
    run's own basis and nearest first, so their first k are what a search for k finds."""
    lists = open_run(run_path).neighbour_lists
    if lists is None or k > lists.shape[2]:
        return None
    return np.array(lists[SPACES.index("fea")][rows, :k], dtype=np.int64)


def run_neighbour_graph(run: Run, k: int) -> np.ndarray:
    """neighbour_graph of a run's features, computed once per run and k (read from the run
    when it stores its neighbour lists)."""
    return _run_graph(str(run.path), int(k))


def nearest_images(run: Run, index: int, k: int = 8) -> list[int]:
    """The k images of the run nearest to row `index`, nearest first: read from the run when it
    stores its neighbour lists, else one query of the cached index (the index of a million
    images takes seconds to make, and a query a second). The answer is remembered too: the
    detail view asks again each time an image is opened again."""
    return list(_nearest(str(run.path), int(index), int(k)))


@lru_cache(maxsize=1024)
def _nearest(run_path: str, index: int, k: int) -> tuple[int, ...]:
    stored = _stored(run_path, k, [index])
    found = stored[0] if stored is not None else _run_index(run_path).nearest([index], k)[0]
    return tuple(int(i) for i in found)
