"""Before/after maps of a retrained run: its t-SNE maps start from its parent's coordinates of the
same images, so an image sits where it sat unless the model now sees it differently; and how far
each image moved between the parent's map and the child's (after Huang et al., IEEE VIS 2020).

openTSNE asks for a start shrunk to std 1e-4 when the layout is a fresh guess (PCA). A parent's
map is no guess but a converged map: optimising on from it at its own scale, without the early
exaggeration (which would first pull it into clusters of its own), kept unchanged images 2-3x
nearer their old place than a shrunk start did (benchmarks/before_after.py, RESULTS.md). The
result is then scaled and centred back onto the parent's map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from sklearn.neighbors import NearestNeighbors

NEIGHBOURS = 10  # a map's unit of movement: the typical distance to an image's 10th neighbour
MIN_MATCHED = 5  # fewer images in common with the parent: fresh maps


@dataclass(frozen=True)
class ParentMaps:
    """A parent run's three maps and the ids of the images on them (one row each)."""

    run_id: str
    image_ids: np.ndarray
    coords: dict[str, np.ndarray]

    @classmethod
    def of(cls, run) -> ParentMaps:
        return cls(run.id, np.asarray(run.images["image_id"]).astype(str),
                   {s: np.asarray(run.emb(s), np.float64) for s in ("act", "fea", "prd")})


def parent_rows(child_ids, parent_ids) -> np.ndarray:
    """For each child image, its row in the parent (its first, should an id repeat); -1 where
    the parent does not hold it."""
    parent = pd.Index(np.asarray(parent_ids).astype(str))
    first = ~parent.duplicated(keep="first")
    found = parent[first].get_indexer(np.asarray(child_ids).astype(str))  # a hash lookup
    return np.where(found >= 0, np.flatnonzero(first)[found], -1).astype(np.int64)


def starting_maps(parent: ParentMaps, child_ids, arrays: dict[str, np.ndarray]
                  ) -> dict[str, np.ndarray] | None:
    """Each space's start, N × 2 on the parent's scale: the parent's coordinates of the images
    it holds; an image it does not hold starts where its nearest held image (in that space's
    input) sits. None when too few images are held for the parent's maps to mean anything."""
    rows = parent_rows(child_ids, parent.image_ids)
    held = rows >= 0
    if held.sum() < MIN_MATCHED:
        return None
    starts = {}
    for space, x in arrays.items():
        start = np.empty((len(rows), 2), np.float64)
        start[held] = parent.coords[space][rows[held]]
        if not held.all():
            x = np.asarray(x, np.float64)
            near = NearestNeighbors(n_neighbors=1).fit(x[held]).kneighbors(
                x[~held], return_distance=False)[:, 0]
            start[~held] = start[held][near]
        starts[space] = start
    return starts


def placement(parent: ParentMaps | None, starts) -> str:
    """How a run's maps were placed, in words for its run.json."""
    if parent is None:
        return "fresh"
    if starts is None:
        return f"fresh (too few images in common with parent {parent.run_id})"
    return f"initialised from parent {parent.run_id}"


def initialisation(start: np.ndarray) -> np.ndarray:
    """openTSNE's starting positions from a parent's layout: centred, at the parent's scale."""
    start = np.asarray(start, np.float64)
    return start - start.mean(axis=0)


def onto(coords: np.ndarray, start: np.ndarray) -> np.ndarray:
    """`coords` scaled and moved (never turned: the start fixed their orientation) to lie
    closest to `start` in the least-squares sense."""
    coords, start = np.asarray(coords, np.float64), np.asarray(start, np.float64)
    a, b = coords - coords.mean(axis=0), start - start.mean(axis=0)
    size = float((a**2).sum())
    factor = float((a * b).sum()) / size if size > 0 else 1.0
    return (factor * a + start.mean(axis=0)).astype(np.float32)


def neighbour_scale(xy: np.ndarray, k: int = NEIGHBOURS) -> float:
    """The map's unit of movement: the median distance from an image to its k-th nearest
    neighbour on the map (1.0 for a map with no spread)."""
    xy = np.asarray(xy, np.float64)
    if len(xy) < 2:
        return 1.0
    k = min(k, len(xy) - 1)
    distance, _ = cKDTree(xy).query(xy, k=k + 1)
    scale = float(np.median(distance[:, -1]))
    return scale if scale > 0 else 1.0


def displacement(child_xy: np.ndarray, parent_xy: np.ndarray, scale: float | None = None
                 ) -> np.ndarray:
    """How far each image moved from the parent's map to the child's, in units of `scale`
    (default: the parent map's neighbour_scale); rows must be the same images."""
    child_xy, parent_xy = np.asarray(child_xy, np.float64), np.asarray(parent_xy, np.float64)
    moved = np.linalg.norm(child_xy - parent_xy, axis=1)
    return (moved / (neighbour_scale(parent_xy) if scale is None else scale)).astype(np.float32)


def moved_since(child, parent) -> dict[str, np.ndarray]:
    """Per space, how far each of the child run's images moved since the parent run (units of
    the parent map's neighbour spacing); NaN for images the parent does not hold."""
    rows = parent_rows(child.images["image_id"], parent.images["image_id"])
    held = rows >= 0
    out = {}
    for space in ("act", "fea", "prd"):
        score = np.full(len(rows), np.nan, np.float32)
        if held.any():
            parent_xy = np.asarray(parent.emb(space))
            score[held] = displacement(np.asarray(child.emb(space))[held],
                                       parent_xy[rows[held]], neighbour_scale(parent_xy))
        out[space] = score
    return out
