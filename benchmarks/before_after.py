"""Before/after maps of a retrained run at the demo's size: how far images whose data did not
change move between the parent's maps and the child's, with the child's maps started from the
parent's (pipeline.before_after) against the old way (fresh t-SNE, then turned, scaled and moved
onto the parent's by least squares) and against a start shrunk to openTSNE's usual std 1e-4
(the same steps, then scaled back onto the parent's), and the time of each.

    python benchmarks/before_after.py [--n 2000] [--changed 40] [--drift 0.05]

Arrays are synthetic, as a fine-tune leaves them: the child's probabilities and features are the
parent's with a little noise (`--drift`, a share of each array's spread), and `--changed` images
(labels corrected) now look like another label combination in all three spaces. Displacement is
in units of the parent map's typical 10th-neighbour distance. Prints the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.linalg import orthogonal_procrustes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.analyses import arrays as clustered_arrays  # noqa: E402
from pipeline.before_after import displacement, onto  # noqa: E402
from pipeline.embed import SPACES, embed_all  # noqa: E402


def parent_arrays(n: int, seed: int = 0):
    """The parent's arrays: the analyses benchmark's clustered labels, probabilities, features."""
    act, prd, fea = clustered_arrays(n, seed)
    return {"act": act, "fea": fea, "prd": prd}


def child_arrays(parent: dict, changed: np.ndarray, drift: float, seed: int = 1) -> dict:
    """The parent's arrays after a fine-tune: a little drift everywhere, and the `changed`
    images take the labels, probabilities and features of other images."""
    rng = np.random.default_rng(seed)
    donors = rng.permutation(len(parent["act"]))[: len(changed)]
    child = {}
    for space, x in parent.items():
        x = np.array(x)
        if space != "act":
            x = x + rng.normal(0, drift * x.std(), x.shape).astype(x.dtype)
        x[changed] = parent[space][donors]
        child[space] = np.clip(x, 0, 1) if space == "prd" else x
    return child


def procrustes(coords: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The old placement: a fresh map turned, scaled and moved onto the parent's."""
    a, b = coords - coords.mean(0), target - target.mean(0)
    rotation, scale = orthogonal_procrustes(a, b)
    return scale / (a**2).sum() * a @ rotation + target.mean(0)


def report(name: str, maps: dict, parent: dict, changed: np.ndarray, seconds: float) -> None:
    keep = np.setdiff1d(np.arange(len(parent["act"])), changed)
    cells = []
    for space in SPACES:
        moved = displacement(maps[space], parent[space])
        cells.append(f"{space.upper()} {np.median(moved[keep]):5.2f} / "
                     f"{np.median(moved[changed]):5.2f}")
    print(f"{name:34s} {seconds:6.1f} s   " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--changed", type=int, default=40)
    parser.add_argument("--drift", type=float, default=0.05)
    args = parser.parse_args()
    arrays = parent_arrays(args.n)
    changed = np.sort(np.random.default_rng(2).choice(args.n, args.changed, replace=False))
    child = child_arrays(arrays, changed, args.drift)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    parent = embed_all(**arrays)
    print(f"{args.n} images, {args.changed} changed; median displacement (neighbour spacings) "
          "of unchanged / changed images")
    started = time.perf_counter()
    fresh = embed_all(**child)
    fresh = {s: procrustes(np.asarray(fresh[s], np.float64), parent[s]) for s in SPACES}
    report("fresh t-SNE + least-squares align", fresh, parent, changed,
           time.perf_counter() - started)
    started = time.perf_counter()
    started_maps = embed_all(**child, starts={s: np.asarray(v, np.float64)
                                             for s, v in parent.items()})
    report("initialised from the parent", started_maps, parent, changed,
           time.perf_counter() - started)
    started = time.perf_counter()
    shrunk = embed_all(**child, starts={s: np.asarray(v, np.float64) * 1e-4 / np.std(v[:, 0])
                                        for s, v in parent.items()})
    shrunk = {s: onto(shrunk[s], parent[s]) for s in SPACES}
    report("started from it shrunk to std 1e-4", shrunk, parent, changed,
           time.perf_counter() - started)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
