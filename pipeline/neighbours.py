"""Which images are "nearest" in FEA space: one definition for the whole tool (the detail view's
neighbours and the label audit's neighbour vote), one index per run, built once and cached.

Nearest means smallest cosine distance between feature vectors reduced by PCA to at most
PCA_DIMS dimensions and centred: ResNet features have 2048 dimensions, most of them noise for
this purpose, and cosine ignores the overall activation strength that differs between images
of one kind taken at different exposures.

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

PCA_DIMS = 64
DEFINITION = f"cosine distance of features (first {PCA_DIMS} principal components)"


@dataclass(frozen=True)
class FeatureIndex:
    """A fitted neighbour search over a run's features, reduced as DEFINITION says."""

    reduced: np.ndarray  # N × d, the reduced and centred features
    unit: np.ndarray  # N × d, `reduced` scaled to unit length: the searched points
    search: ExactIndex  # the exact Euclidean search over `unit`

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


def build_index(fea) -> FeatureIndex:
    """The neighbour index of an N × D feature array (N ≥ 2)."""
    from sklearn.decomposition import PCA

    fea = np.asarray(fea, dtype=np.float32)
    n = len(fea)
    if n < 2:
        raise PipelineError(f"nearest neighbours need at least 2 images, the run has {n}")
    if fea.shape[1] > PCA_DIMS and n > PCA_DIMS:
        # Exact, from the D × D covariance: 1.2 s for 110,000 × 448 features against 8.2 s
        # for the randomized solver used before (which approximates the same components).
        fea = PCA(PCA_DIMS, svd_solver="covariance_eigh").fit_transform(fea)
    reduced = np.ascontiguousarray(fea - fea.mean(axis=0), dtype=np.float32)
    unit = reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
    unit = np.ascontiguousarray(unit, dtype=np.float32)
    return FeatureIndex(reduced, unit, ExactIndex(unit))


def neighbour_graph(fea, k: int) -> np.ndarray:
    """Indices (N × k) of every image's k nearest other images, nearest first."""
    index = build_index(fea)
    return index.nearest(np.arange(len(index.reduced)), k)


@lru_cache(maxsize=4)
def _run_index(run_path: str) -> FeatureIndex:
    # Runs never change once written, so the index is valid for the process lifetime.
    return build_index(open_run(run_path).fea)


@lru_cache(maxsize=8)
def _run_graph(run_path: str, k: int) -> np.ndarray:
    index = _run_index(run_path)
    graph = index.nearest(np.arange(len(index.reduced)), k)
    graph.flags.writeable = False
    return graph


def run_neighbour_graph(run: Run, k: int) -> np.ndarray:
    """neighbour_graph of a run's features, computed once per run and k."""
    return _run_graph(str(run.path), int(k))


def nearest_images(run: Run, index: int, k: int = 8) -> list[int]:
    """The k images of the run nearest to row `index`, nearest first (one query, cached index).
    The answer is remembered too: the detail view asks again each time an image is opened
    again, and one query searches every image of the run (a second at a million)."""
    return list(_nearest(str(run.path), int(index), int(k)))


@lru_cache(maxsize=1024)
def _nearest(run_path: str, index: int, k: int) -> tuple[int, ...]:
    return tuple(int(i) for i in _run_index(run_path).nearest([index], k)[0])
