"""Detector models: how a detector turns expected photons into recorded pixel values, with its
fixed module gaps, flat-field residue, counter or ADC depth, read noise and blooming.

A dataset is recorded by one detector, so its gaps and flat-field pattern are the same in every
frame. Two models, after common SAXS/WAXS detectors:
- "pilatus": a Pilatus 1M-like hybrid photon counter (2 × 5 modules of 487 × 195 pixels,
  7-pixel gaps between columns and 17-pixel gaps between rows, scaled to the image size); whole
  counts, no read noise, a 20-bit counter that clips;
- "ccd": a phosphor-coupled CCD (one chip, no gaps); Gaussian read noise on a dark pedestal,
  a 16-bit ADC, and blooming: charge beyond a full well spills along the readout column.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Detector:
    name: str
    summary: str
    modules: tuple[int, int] = (1, 1)  # columns, rows of modules
    module_px: tuple[int, int] = (0, 0)  # module width, height in the real detector's pixels
    gap_px: tuple[int, int] = (0, 0)  # gap between module columns, between module rows
    saturation: float = 2.0**20 - 1  # the largest recorded value
    read_noise: float = 0.0  # Gaussian σ in photons (ADU per photon is 1)
    pedestal: float = 0.0  # dark offset added to every pixel
    full_well: float = np.inf  # charge beyond this blooms along the column
    module_gain: float = 0.0  # relative σ of each module's gain after flat-fielding
    pixel_gain: float = 0.0  # relative σ of each pixel's gain after flat-fielding
    flat_seed: int = 0

    @property
    def read_variance(self) -> float:
        """Noise variance per pixel beyond Poisson, in photons², for the visibility rule."""
        return self.read_noise**2


DETECTORS = {
    "pilatus": Detector(
        "pilatus",
        "Pilatus 1M-like photon counter: 2×5 modules, 7/17 px gaps, 20-bit counter",
        modules=(2, 5),
        module_px=(487, 195),
        gap_px=(7, 17),
        saturation=2.0**20 - 1,
        module_gain=0.02,
        pixel_gain=0.01,
        flat_seed=1_000_001,
    ),
    "ccd": Detector(
        "ccd",
        "CCD: one chip, read noise σ 2 on a pedestal of 10, 16-bit ADC, blooming",
        saturation=65535.0,
        read_noise=2.0,
        pedestal=10.0,
        full_well=65535.0 - 10.0,
        pixel_gain=0.015,
        flat_seed=1_000_002,
    ),
}
DEFAULT_DETECTOR = "pilatus"


def get_detector(name: str) -> Detector:
    try:
        return DETECTORS[name]
    except (KeyError, TypeError):
        raise PipelineError(
            f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}"
        ) from None


def _module_edges(size: int, count: int, module: int, gap: int) -> list[tuple[int, int]]:
    """Pixel ranges [start, stop) of the gaps between `count` modules, scaled to `size`."""
    total = count * module + (count - 1) * gap
    out = []
    for k in range(1, count):
        start = round((k * module + (k - 1) * gap) / total * size)
        stop = max(start + 1, round((k * (module + gap)) / total * size))
        out.append((start, stop))
    return out


@lru_cache(maxsize=16)
def gap_lines(name: str, size: int) -> tuple[tuple, tuple]:
    """(column ranges, row ranges) of dead pixels between modules at this image size."""
    det = get_detector(name)
    (cols, rows), (mw, mh), (gx, gy) = det.modules, det.module_px, det.gap_px
    return tuple(_module_edges(size, cols, mw, gx)), tuple(_module_edges(size, rows, mh, gy))


def gap_mask(name: str, size: int) -> np.ndarray:
    """True on the dead pixels between modules."""
    mask = np.zeros((size, size), dtype=bool)
    col_ranges, row_ranges = gap_lines(name, size)
    for start, stop in col_ranges:
        mask[:, start:stop] = True
    for start, stop in row_ranges:
        mask[start:stop, :] = True
    return mask


@lru_cache(maxsize=8)
def flat_field(name: str, size: int) -> np.ndarray:
    """The detector's residual gain per pixel (mean 1): fixed for the detector, every frame."""
    det = get_detector(name)
    rng = np.random.default_rng([det.flat_seed, size])
    gain = 1 + det.pixel_gain * rng.standard_normal((size, size), np.float32)
    if det.module_gain:
        (cols, rows), col_ranges, row_ranges = det.modules, *gap_lines(name, size)
        x_cuts = [0, *[s for s, _ in col_ranges], size]
        y_cuts = [0, *[s for s, _ in row_ranges], size]
        per_module = 1 + det.module_gain * rng.standard_normal((rows, cols))
        for r in range(rows):
            for c in range(cols):
                gain[y_cuts[r] : y_cuts[r + 1], x_cuts[c] : x_cuts[c + 1]] *= per_module[r, c]
    gain = gain.astype(np.float32)
    gain.flags.writeable = False
    return gain


def bloom(charge: np.ndarray, full_well: float) -> np.ndarray:
    """Charge beyond the full well spills up and down its column, filling neighbours in turn."""
    over = charge > full_well
    if not over.any():
        return charge
    out = charge.copy()
    for col in np.flatnonzero(over.any(axis=0)):
        out[:, col] = _bloom_column(out[:, col], full_well)
    return out


def _bloom_column(column: np.ndarray, full_well: float) -> np.ndarray:
    excess = float(np.clip(column - full_well, 0, None).sum())
    column = np.minimum(column, full_well)
    full = np.flatnonzero(column >= full_well)
    lo, hi = int(full.min()), int(full.max())  # blooming grows the saturated run both ways
    up = True
    while excess > 0 and (lo > 0 or hi < len(column) - 1):
        if (up and lo > 0) or hi >= len(column) - 1:
            lo -= 1
            index = lo
        else:
            hi += 1
            index = hi
        up = not up
        take = min(excess, full_well - column[index])
        column[index] += take
        excess -= take
    return column


def record(expected: np.ndarray, rng: np.random.Generator, name: str) -> np.ndarray:
    """Recorded float32 pixel values: Poisson photons, then the detector's own response.

    Gaps are already dark in `expected` (Scene.expected), so they record no photons.
    """
    det = get_detector(name)
    photons = rng.poisson(expected).astype(np.float64)
    if np.isfinite(det.full_well):
        photons = bloom(photons, det.full_well)
    if det.read_noise:
        photons += det.pedestal + det.read_noise * rng.standard_normal(photons.shape)
    return np.clip(photons, 0, det.saturation).astype(np.float32)
