"""Exact k-nearest neighbours: pipeline.knn against scikit-learn's brute-force search (what the
tool used before), in the disagreement's PRD space (17 probabilities) and FEA space (features
reduced to 64 principal components, unit length), and the whole cross-space disagreement of a
run, the searches swapped and nothing else; then the neighbourhoods of a run extended by new
images (what `add` does) against a search of every pair of the grown run.

    python benchmarks/knn.py [--n 20000 110000] [--disagreement-n 110000] [--k 10]
                             [--extend 100000 10000]

The data are benchmarks/scale.py's clustered features (512-d in 40 clusters, label sets that
follow the cluster, probabilities near the labels). Each figure is one timed call; the machine
load is printed with it (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # scale, after the project

import numpy as np  # noqa: E402
from scale import clustered_features, load  # noqa: E402


class SklearnIndex:
    """scikit-learn's exact brute-force search behind pipeline.knn.ExactIndex's interface."""

    def __init__(self, points):
        from sklearn.neighbors import NearestNeighbors

        self.points = np.asarray(points)
        self.search = NearestNeighbors(algorithm="brute").fit(self.points)

    def __len__(self) -> int:
        return len(self.points)

    def query(self, k: int, queries=None):
        queries = self.points if queries is None else queries
        return self.search.kneighbors(queries, n_neighbors=min(k, len(self.points)))


def old_search():
    """The tool with scikit-learn's search wherever pipeline.knn's is used now."""
    return mock.patch.multiple("pipeline.analyses.disagreement", ExactIndex=SklearnIndex), \
        mock.patch.multiple("pipeline.neighbours", ExactIndex=SklearnIndex)


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def compare_spaces(n: int, k: int) -> None:
    from pipeline.analyses.disagreement import euclidean_neighbours
    from pipeline.neighbours import build_index

    _, fea, prd = clustered_features(n)
    spaces = {"PRD (17-d)": prd, "FEA (64-d unit)": build_index(fea).unit}
    for name, points in spaces.items():
        new, t_new = timed(euclidean_neighbours, points, k)
        first, second = old_search()
        with first, second:
            old, t_old = timed(euclidean_neighbours, points, k)
        print(f"  {n:7d} images, {name:15s}: new {t_new:6.1f} s, scikit-learn {t_old:6.1f} s, "
              f"{t_old / t_new:4.1f}× faster; same neighbours {np.mean(new == old):.5f} "
              f"({load()})", flush=True)


def compare_disagreement(n: int, k: int) -> None:
    from pipeline.analyses.disagreement import disagreement

    act, fea, prd = clustered_features(n)
    new, t_new = timed(disagreement, act, fea, prd, k)
    first, second = old_search()
    with first, second:
        old, t_old = timed(disagreement, act, fea, prd, k)
    moved = np.abs(new["score"] - old["score"])
    print(f"  disagreement() of {n} images: new {t_new:.1f} s, scikit-learn {t_old:.1f} s, "
          f"{t_old / t_new:.1f}× faster; scores equal {np.mean(moved <= 1e-6):.5f}, largest "
          f"difference {moved.max():.4f} ({load()})", flush=True)


def compare_extension(n_old: int, n_new: int) -> None:
    from pipeline.analyses import disagreement as dis

    act, fea, prd = clustered_features(n_old + n_new)
    parent, t_parent = timed(dis.neighbourhoods, act[:n_old], fea[:n_old], prd[:n_old])
    grown, t_grown = timed(dis.extended, parent, act, fea, prd)
    whole, t_whole = timed(lambda: dis.neighbourhoods(act, fea, prd, basis=parent.basis))
    same = np.array_equal(grown.found, whole.found) and np.array_equal(grown.score, whole.score)
    print(f"  {n_old} images ({t_parent:.1f} s every pair) and {n_new} more: extended "
          f"{t_grown:.1f} s, every pair of the {n_old + n_new} {t_whole:.1f} s, "
          f"{t_whole / t_grown:.1f}× faster; same lists and scores: {same} ({load()})",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20_000, 110_000])
    parser.add_argument("--disagreement-n", type=int, default=110_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--extend", type=int, nargs=2, default=[100_000, 10_000],
                        metavar=("N_OLD", "N_NEW"), help="0 0 to skip")
    args = parser.parse_args()
    from pipeline.knn import ExactIndex

    ExactIndex(np.zeros((3, 2))).query(1)  # compiled (or loaded from numba's cache) before timing
    print(f"exact {args.k} nearest neighbours of every image ({load()})")
    for n in args.n:
        compare_spaces(n, args.k)
    if args.disagreement_n:
        compare_disagreement(args.disagreement_n, args.k)
    if args.extend[0]:
        compare_extension(*args.extend)


if __name__ == "__main__":
    main()
