"""The constants of the simulator: its geometry, the visibility rule that makes the tags
honest (see pipeline.simulate), and the detector's response."""

from __future__ import annotations

from pipeline.attributes import ATTRIBUTES

# 3: a lattice is tagged only where its rings index it (sim.indexing); 4: no pixel gain below zero
GENERATOR_VERSION = 4
REF = 256  # tags are judged on this reference grid, so they do not depend on the image size
Q_PER_WIDTH = 2.0  # nm⁻¹ across one detector width: a small-angle geometry
MIN_SIZE, MAX_SIZE = 32, 1024
NORM_RADIUS = 0.6  # module brightness is set over this disc around the beam (detector widths)

CONTRAST = 0.5
K_SIGMA = 5.0
MIN_AREA = 0.001  # of the detector area: ≈ 65 pixels at 256², 16 at 128²
MIN_SHADOW = 0.0015  # ≈ 100 pixels at 256²: a 0.7 % rod from the edge to the beam
MANY_RINGS = 4
HIGHER_ORDERS = 3
LATTICE_PEAKS = 3  # seen rings from the first: two give one ratio, which names no lattice
INDEX_TOLERANCE = 1.0  # ring widths (σ) within which another sequence's peak explains a ring
RESOLVE = 2.5  # rings closer than this many widths blend into one seen ring
STRONG_RATIO, STRONG_COUNTS = 3.0, 20.0
WEAK_RATIO, WEAK_COUNTS = 0.5, 0.3
HIGH_BG_COUNTS, HIGH_BG_SHARE = 8.0, 0.25

LEAK = 1e-12  # an opaque beamstop's transmission: dark even under the direct beam
FLOOR = 0.02  # dark counts per pixel, not blocked by the beamstop
PARASITIC_REF = 0.03  # parasitic scatter is drawn by its counts this far from the beam (widths)
BEAM_SIGMA = 0.25 / REF  # the direct beam's σ: well inside the narrowest beamstop
WINDOW_EDGE = 4.0 / REF  # the flight-tube window's shadow edge, blurred by distance
WINDOW_FLOOR = 0.03  # what the tube wall lets through outside the window
J_CELLS = 36  # 10° azimuthal cells for the visibility rule
J_FINE = 360  # 1° cells, for the spots of polycrystalline rings
SPOT_ANGLES = 4 * J_FINE  # a spotty ring's angular factor is evaluated once on this grid
NOISE_STREAM, SPLIT_STREAM = 2**40 + 1, 2**40 + 2  # seed keys apart from image indices
TAG_INDEX = {name: i for i, name in enumerate(ATTRIBUTES)}
