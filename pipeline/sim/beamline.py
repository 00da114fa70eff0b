"""What the beamline adds around the sample: parasitic and air scatter that is brightest at the
beamstop and falls steeply with q, streaks from the slits along the detector axes through the
beam, and the shadow of the flight tube's exit window on the detector's corners.

Each is a pure function of the drawn parameters, evaluated on pixels (for rendering) and on the
polar cells of the visibility rule, where it counts as background under every feature.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from pipeline.sim.rules import PARASITIC_REF, WINDOW_EDGE, WINDOW_FLOOR


def parasitic(rho: np.ndarray, p: dict) -> np.ndarray:
    """Counts of near-beam parasitic scatter at distance rho (detector widths) from the beam.

    p["edge"] counts at PARASITIC_REF, a core of radius p["core"], then ρ^−n (n = exponent).
    """
    c2 = p["core"] ** 2
    norm = 1 + PARASITIC_REF**2 / c2
    return p["edge"] * ((1 + rho.astype(np.float64) ** 2 / c2) / norm) ** (-p["exponent"] / 2)


def streak_pixels(dx: np.ndarray, dy: np.ndarray, streak: dict, core: float) -> np.ndarray:
    """One slit streak on pixels: a line through the beam, fading along it as ρ^−n."""
    ux, uy = math.cos(streak["angle"]), math.sin(streak["angle"])
    along = dx * np.float32(ux) + dy * np.float32(uy)
    across = dy * np.float32(ux) - dx * np.float32(uy)
    fall = _fall(np.abs(along), streak, core)
    return (fall * np.exp(-0.5 * (across / np.float32(streak["width"])) ** 2)).astype(np.float32)


def _fall(distance: np.ndarray, streak: dict, core: float) -> np.ndarray:
    norm = 1 + PARASITIC_REF**2 / core**2
    return streak["counts"] * ((1 + distance**2 / core**2) / norm) ** (-streak["exponent"] / 2)


def streak_cells(rho: np.ndarray, chi: np.ndarray, streak: dict, core: float) -> np.ndarray:
    """A streak's mean counts over polar cells (radii rho × azimuth centres chi of equal width).

    Across the line the streak is a Gaussian of σ = width/ρ in azimuth, on both sides of the beam.
    """
    half = (chi[1] - chi[0]) / 2
    sigma = np.maximum(streak["width"] / np.maximum(rho, 1e-6), 1e-6)[:, None]
    share = np.zeros((len(rho), len(chi)))
    for direction in (streak["angle"], streak["angle"] + math.pi):
        delta = (chi - direction + math.pi) % (2 * math.pi) - math.pi
        upper = special.ndtr((delta[None, :] + half) / sigma)
        lower = special.ndtr((delta[None, :] - half) / sigma)
        share += (upper - lower) * sigma * math.sqrt(2 * math.pi) / (2 * half)
    return _fall(rho, streak, core)[:, None] * share


def window_transmission(dx_det: np.ndarray, dy_det: np.ndarray, window: dict | None):
    """Fraction passed by the flight tube's round exit window (None: the window clears all).

    dx_det, dy_det are pixel positions in detector widths from the detector's top-left corner.
    """
    if not window:
        return None
    d = np.sqrt((dx_det - np.float32(window["x"])) ** 2 + (dy_det - np.float32(window["y"])) ** 2)
    outside = np.clip(0.5 + (d - np.float32(window["radius"])) / np.float32(WINDOW_EDGE), 0, 1)
    return (1 - np.float32(1 - WINDOW_FLOOR) * outside).astype(np.float32)
