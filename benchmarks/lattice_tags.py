"""How BCC and FCC patterns look to a reader who indexes rings: per lattice and number of seen
(resolved) rings from its first reflection, how many images there are and how many of them
another sequence (lamellar, hexagonal, the other cubic lattice) explains within
INDEX_TOLERANCE ring widths; and how many images each rule tags.

    python benchmarks/lattice_tags.py [--n 1600] [--seed 0]

Image i is drawn as simulate_dataset draws it (np.random.default_rng([seed, i])), so the default
is the demo's dataset. Only the scenes are built (no rendering): about 5 ms an image.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script, this folder (with its pipeline.py) comes first

from pipeline.sim.indexing import SEQUENCES, explained_by, seen_rings  # noqa: E402
from pipeline.sim.rules import LATTICE_PEAKS  # noqa: E402
from pipeline.simulate import draw_scene  # noqa: E402

LATTICES = ("bcc", "fcc")


def lattice_views(n: int, seed: int) -> list[tuple[str, int, tuple[str, ...]]]:
    """Per image and lattice whose first reflection is visible: (lattice, seen rings, the other
    sequences that explain them)."""
    out = []
    for i in range(n):
        scene = draw_scene(np.random.default_rng([seed, i]))
        seen = [c for c, v in zip(scene.components, scene.measured["components"], strict=True)
                if v["visible"] and c.role == "ring"]
        for lattice in LATTICES:
            peaks = [c for c in seen if c.family == lattice]
            if not peaks or peaks[0].order != 1:
                continue
            groups = seen_rings(peaks)
            others = tuple(k for k in SEQUENCES if k != lattice and explained_by(groups, k))
            out.append((lattice, len(groups), others))
    return out


def report(views, n: int) -> None:
    print(f"{n} images; a lattice counted where its first reflection is visible")
    print(f"{'lattice':8s} {'seen rings':>10s} {'images':>7s} {'read as another':>16s}  as what")
    for lattice in LATTICES:
        mine = [v for v in views if v[0] == lattice]
        for k in (1, 2, 3, 4):
            rows = [v for v in mine if (v[1] == k if k < 4 else v[1] >= k)]
            others = Counter(v[2] for v in rows if v[2])
            what = ", ".join(f"{'+'.join(o)} {c}" for o, c in others.most_common(3))
            print(f"{lattice:8s} {k if k < 4 else '4+':>10} {len(rows):7d} "
                  f"{sum(others.values()):16d}  {what}")
    for lattice in LATTICES:
        mine = [v for v in views if v[0] == lattice]
        old = sum(v[1] >= 2 for v in mine)
        new = sum(v[1] >= LATTICE_PEAKS and not v[2] for v in mine)
        two = sum(v[1] == 2 for v in mine)
        print(f"{lattice.upper()}: tagged by 2 seen rings {old} ({two} of them with exactly 2); "
              f"by {LATTICE_PEAKS} that no other sequence explains {new}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report(lattice_views(args.n, args.seed), args.n)


if __name__ == "__main__":
    main()
