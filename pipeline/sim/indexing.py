"""Which rings a scientist sees apart, and whether the rings of a lattice index it: the part of
the visibility rule that reads peak sequences ("Many rings", "Higher orders", "BCC", "FCC").

Why a lattice needs three rings that no other sequence explains: two rings give one q ratio,
which names no lattice (BCC's √3 and 2 are also hexagonal ratios, 2 a lamellar one, √2 that of
a square lattice; FCC (111) and (200) often blend into one seen ring). A crystallographer
indexes a cubic lattice from three or more resolved reflections, and even three can read as
another sequence: BCC (110), (211), (220) at 1 : √3 : 2 are the first three rings of a
hexagonal mesophase. So a lattice is named only when LATTICE_PEAKS resolved rings, counted
from its first reflection, fit none of the other sequences the images hold (lamellar,
hexagonal, the other cubic lattice) within INDEX_TOLERANCE ring widths. Sequences that these
images never hold (square columnar, simple cubic) are left out: a reader of these images is
not asked to tell them apart.
"""

from __future__ import annotations

import numpy as np

from pipeline import physics
from pipeline.sim.components import Component
from pipeline.sim.rules import INDEX_TOLERANCE, LATTICE_PEAKS, RESOLVE

SEQUENCES = ("lamellar", "hexagonal", "bcc", "fcc")
_RATIOS = {kind: physics.sequence_ratios(kind, 12) for kind in SEQUENCES}


def seen_rings(rings: list[Component]) -> list[list[Component]]:
    """Rings as they are seen: sorted by q, those closer than RESOLVE widths to the first of a
    group blend into it (one seen ring)."""
    groups: list[list[Component]] = []
    for ring in sorted(rings, key=lambda c: c.q0):
        first = groups[-1][0] if groups else None
        if first is None or ring.q0 - first.q0 >= RESOLVE * max(ring.width, first.width):
            groups.append([ring])
        else:
            groups[-1].append(ring)
    return groups


def resolved_count(rings: list[Component]) -> int:
    """How many distinct rings are seen: centres closer than RESOLVE widths blend into one."""
    return len(seen_rings(rings))


def explained_by(groups: list[list[Component]], kind: str) -> bool:
    """Whether sequence `kind`, its first peak on the first seen ring's centre, puts a peak
    within INDEX_TOLERANCE widths of every seen ring (a blended ring spans its members)."""
    width = max(c.width for group in groups for c in group)
    low = np.array([min(c.q0 for c in group) for group in groups])
    high = np.array([max(c.q0 for c in group) for group in groups])
    peaks = (low[0] + high[0]) / 2 * _RATIOS[kind]
    slack = INDEX_TOLERANCE * width
    hit = (peaks[None, :] >= low[:, None] - slack) & (peaks[None, :] <= high[:, None] + slack)
    return bool(hit.any(axis=1).all())


def indexes_as(peaks: list[Component], lattice: str) -> bool:
    """Whether a lattice's visible reflections (its first among them) name it: LATTICE_PEAKS
    or more seen rings that no other sequence explains."""
    groups = seen_rings(peaks)
    if len(groups) < LATTICE_PEAKS:
        return False
    return not any(explained_by(groups, kind) for kind in SEQUENCES if kind != lattice)
