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
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.errors import PipelineError
from pipeline.neighbours import build_index
from pipeline.store import Run, open_run

DEFAULT_K = 10
PAIRS = (("act", "fea"), ("act", "prd"), ("fea", "prd"))
SLACK = 1e-6  # distances equal up to float rounding count as within the radius


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


def _euclidean_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    found = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)[1]
    return _without_self(found, k)


def _without_self(found: np.ndarray, k: int) -> np.ndarray:
    rows = np.arange(len(found))[:, None]
    keep = found != rows
    keep[keep.sum(axis=1) > k, -1] = False  # self was not among them: drop the farthest
    return found[keep].reshape(len(found), k)


def spaces(act, fea, prd, k: int) -> tuple[dict[str, Space], dict[str, np.ndarray]]:
    """The three spaces and each image's k nearest neighbours in each."""
    act = np.asarray(act, dtype=np.float32)
    prd = np.asarray(prd, dtype=np.float32)
    index = build_index(fea)
    unit = index.reduced / np.maximum(np.linalg.norm(index.reduced, axis=1, keepdims=True), 1e-12)
    found = {"act": _euclidean_neighbours(act, k), "prd": _euclidean_neighbours(prd, k),
             "fea": index.nearest(np.arange(len(unit)), k)}
    made = {"act": Space(act, False), "fea": Space(unit.astype(np.float32), True),
            "prd": Space(prd, False)}
    return made, found


def agreement(x: str, y: str, made: dict[str, Space], found: dict[str, np.ndarray]) -> np.ndarray:
    """Per image, the share of its nearest neighbours in x that lie within its k-NN radius in y."""
    rows = np.arange(len(found[x]))
    radius = made[y].distance(rows, found[y]).max(axis=1)
    return (made[y].distance(rows, found[x]) <= radius[:, None] + SLACK).mean(axis=1)


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


@lru_cache(maxsize=4)
def _run_disagreement(run_path: str, k: int) -> dict[str, np.ndarray]:
    run = open_run(run_path)
    found = disagreement(run.act, run.fea, run.prd, k)
    for values in found.values():
        values.flags.writeable = False
    return found


def run_disagreement(run: Run, k: int = DEFAULT_K) -> dict[str, np.ndarray]:
    """disagreement of a run, computed once per run and k (runs never change)."""
    return _run_disagreement(str(run.path), int(k))
