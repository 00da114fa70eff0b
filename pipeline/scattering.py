"""Scattering geometry of one detector image: beam centre, radial profile I(q), polar unwrap.

Pure numpy/scipy on 2-D arrays; pixel (row y, column x) has its centre at integer (x, y).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

# The coarsest pyramid level is searched exhaustively on a grid; finer levels only refine.
COARSE_SIZE = 64
FINE_SIZE = 512
TOP_CANDIDATES = 3
# Below this confidence no centre stands out (noise, flat field): say so, use the middle.
NO_RING_CONFIDENCE = 0.02


@dataclass(frozen=True)
class BeamCentre:
    """Where the direct beam would hit the detector, and how far the estimate can be trusted.

    symmetry: share of the image's log-intensity variance explained by rings about (x, y);
    sharpness: how much that drops when the centre moves by 3 % of the image size;
    confidence: their product, in [0, 1] (below about 0.2 the estimate is a guess).
    """

    x: float
    y: float
    confidence: float
    symmetry: float
    sharpness: float
    method: str = "ring-symmetry"

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- masks and scaling


def valid_pixels(image, mask=None) -> np.ndarray:
    """Pixels that carry signal: finite, not negative (detector gap flags), not in shadow.

    Shadows (beamstop, gaps filled with zeros) are near-zero regions at least 3 px across;
    isolated zeros are kept because Poisson noise makes them at low count rates.
    """
    image = np.asarray(image, dtype=float)
    good = np.isfinite(image) & (image >= 0)
    if mask is not None:
        good &= np.asarray(mask, dtype=bool)
    if not good.any():
        return good
    positive = image[good & (image > 0)]
    floor = 0.05 * float(np.median(positive)) if positive.size else 0.0
    dark = good & (image <= floor)
    shadow = ndimage.binary_opening(dark, structure=np.ones((3, 3), bool))
    return good & ~shadow


def _log_scaled(image: np.ndarray, good: np.ndarray) -> np.ndarray:
    """log(1 + I / median I) with bright outliers (Bragg spots, hot pixels) clipped."""
    values = image[good]
    scale = float(np.median(values[values > 0])) if (values > 0).any() else 1.0
    out = np.zeros(image.shape)
    out[good] = np.log1p(values / scale)
    out[good] = np.minimum(out[good], np.percentile(out[good], 99.5))
    return out


def _block_mean(values: np.ndarray, good: np.ndarray, factor: int):
    """Downsample by `factor` averaging valid pixels; a block is valid if half of it is."""
    if factor == 1:
        return values, good
    h, w = (s // factor * factor for s in values.shape)
    shape = (h // factor, factor, w // factor, factor)
    weights = good[:h, :w].reshape(shape).sum(axis=(1, 3))
    sums = (values[:h, :w] * good[:h, :w]).reshape(shape).sum(axis=(1, 3))
    keep = weights >= factor * factor / 2
    return np.where(keep, sums / np.maximum(weights, 1), 0.0), keep


# ---------------------------------------------------------------- the ring-symmetry objective


class _Level:
    """One pyramid level: valid pixels' coordinates and centred log intensities.

    The objective fits, for a candidate centre, one mean per 1-px ring plus a plane a·x + b·y
    common to all rings, so that a background sloping across the detector (air scatter,
    fluorescence) is not mistaken for rings about a far-away centre.
    """

    def __init__(self, logi: np.ndarray, good: np.ndarray, factor: int):
        self.factor = factor
        self.shape = logi.shape
        ys, xs = np.nonzero(good)
        self.ys, self.xs = ys.astype(float), xs.astype(float)
        values = logi[good]
        self.n = values.size
        if self.n == 0:
            self.total = 0.0
            return
        cols = [values - values.mean(), self.xs - self.xs.mean(), self.ys - self.ys.mean()]
        self.cols = np.stack(cols)  # v, x, y, each centred
        self.moments = self.cols @ self.cols.T  # 3 × 3 sums of products
        self.total = self._unexplained(self.moments[None]) [0] / max(self.n - 3, 1)

    @staticmethod
    def _unexplained(m: np.ndarray) -> np.ndarray:
        """Σv² left after regressing v on x and y, from a stack of 3 × 3 moment matrices."""
        sxx, syy, sxy = m[:, 1, 1], m[:, 2, 2], m[:, 1, 2]
        sxv, syv = m[:, 1, 0], m[:, 2, 0]
        det = sxx * syy - sxy**2 + 1e-9 * (sxx + syy) ** 2 + 1e-300
        explained = (syy * sxv**2 - 2 * sxy * sxv * syv + sxx * syv**2) / det
        return np.maximum(m[:, 0, 0] - explained, 0)

    def to_level(self, x: float, y: float) -> tuple[float, float]:
        f = self.factor
        return (x - (f - 1) / 2) / f, (y - (f - 1) / 2) / f

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        f = self.factor
        return x * f + (f - 1) / 2, y * f + (f - 1) / 2

    def residual(self, centres: np.ndarray) -> np.ndarray:
        """Residual variance of log intensity around ring means + a plane, per centre."""
        out = np.empty(len(centres))
        chunk = max(1, 1_000_000 // max(self.n, 1))
        for start in range(0, len(centres), chunk):
            block = centres[start : start + chunk]
            r = np.hypot(self.xs[None, :] - block[:, :1], self.ys[None, :] - block[:, 1:])
            bins = r.astype(np.int64)
            n_bins = int(bins.max()) + 1
            keys = (bins + n_bins * np.arange(len(block))[:, None]).ravel()
            size = n_bins * len(block)
            count = np.bincount(keys, minlength=size).reshape(len(block), n_bins)
            sums = np.stack([
                np.bincount(keys, np.broadcast_to(col, bins.shape).ravel(), minlength=size)
                .reshape(len(block), n_bins) for col in self.cols])  # 3 × M × bins
            weighted = sums / np.maximum(count, 1)
            between = np.einsum("amk,bmk->mab", sums, weighted)
            left = self._unexplained(self.moments[None] - between)
            dof = np.maximum(self.n - (count > 0).sum(axis=1) - 2, 1)
            out[start : start + len(block)] = left / dof
        return out


def _pyramid(image, mask) -> list[_Level]:
    """Levels from coarse (≤ COARSE_SIZE px) to fine (≤ FINE_SIZE px), factors of two apart."""
    good = valid_pixels(image, mask)
    logi = _log_scaled(np.asarray(image, dtype=float), good)
    side = max(logi.shape)
    fine = 1
    while side / fine > FINE_SIZE:
        fine *= 2
    levels, factor = [], fine
    while True:
        levels.append(_Level(*_block_mean(logi, good, factor), factor))
        if side / factor <= COARSE_SIZE:
            break
        factor *= 2
    return levels[::-1]


def _grid_search(level: _Level) -> list[tuple[float, float]]:
    """The best few centres on a 2-px grid over the coarse image, kept apart from each other."""
    h, w = level.shape
    gy, gx = np.mgrid[0:h:2, 0:w:2]
    centres = np.column_stack([gx.ravel(), gy.ravel()]).astype(float)
    order = np.argsort(level.residual(centres))
    picked: list[np.ndarray] = []
    for c in centres[order]:
        if all(np.hypot(*(c - p)) > 6 for p in picked):
            picked.append(c)
        if len(picked) == TOP_CANDIDATES:
            break
    return [level.to_image(*c) for c in picked]


def _climb(level: _Level, x: float, y: float, steps=(1.0, 0.5, 0.25)):
    """Hill-climb on the 3×3 neighbourhood at each step size; returns (x, y, residual)."""
    x, y = level.to_level(x, y)
    offsets = np.array([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], float)
    best = float(level.residual(np.array([[x, y]]))[0])
    for step in steps:
        for _ in range(20):
            trial = np.array([x, y]) + step * offsets
            res = level.residual(trial)
            k = int(np.argmin(res))
            if res[k] >= best:
                break
            best, (x, y) = float(res[k]), trial[k]
    return (*level.to_image(x, y), best)


def _sharpness(level: _Level, x: float, y: float, best: float) -> float:
    """Share of the ring-explained variance lost when the centre moves 3 % of the image size."""
    d = 0.03 * max(level.shape)
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    cx, cy = level.to_level(x, y)
    around = np.column_stack([cx + d * np.cos(angles), cy + d * np.sin(angles)])
    explained = level.total - best
    if explained <= 0:
        return 0.0
    return float(np.clip((level.residual(around).mean() - best) / explained, 0, 1))


def beam_centre(image, mask=None) -> BeamCentre:
    """Estimate the beam centre as the point about which intensity is most ring-symmetric.

    Seed 004 starts from centres of mass and a beamstop-shadow score; here the centre minimises
    the variance of log intensity along 1-px rings, searched on a grid at ≤64 px and refined
    coarse to fine up to ≤512 px. Shadows and gaps are masked, so they do not pull the centre.
    """
    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise ValueError(f"beam_centre needs a 2-D image, got shape {image.shape}")
    levels = _pyramid(image, mask)
    h, w = image.shape
    if levels[-1].n < 16 or levels[-1].total == 0:
        return BeamCentre((w - 1) / 2, (h - 1) / 2, 0.0, 0.0, 0.0, "image centre (no signal)")
    # Every coarse candidate is refined one level up; only the best goes on to the finer ones.
    refined = [_climb(levels[min(1, len(levels) - 1)], x, y) for x, y in _grid_search(levels[0])]
    x, y, res = min(refined, key=lambda c: c[2])
    for level in levels[2:]:
        steps = (1.0, 0.5, 0.25) if level is levels[-1] else (1.0, 0.5)
        x, y, res = _climb(level, x, y, steps)
    fine = levels[-1]
    symmetry = float(np.clip(1 - res / fine.total, 0, 1))
    sharpness = _sharpness(fine, x, y, res)
    if symmetry * sharpness < NO_RING_CONFIDENCE:
        return BeamCentre(
            (w - 1) / 2,
            (h - 1) / 2,
            0.0,
            round(symmetry, 4),
            round(sharpness, 4),
            "image centre (no ring symmetry found)",
        )
    return BeamCentre(
        float(x), float(y), round(symmetry * sharpness, 4), round(symmetry, 4), round(sharpness, 4)
    )


# ---------------------------------------------------------------- profile and polar views


def radial_profile(image, centre, mask=None, bin_width: float = 1.0):
    """Mean intensity in rings of `bin_width` px about centre (x, y): (radius, I, n_pixels).

    Rings without a valid pixel hold NaN. Radii are ring midpoints in pixels (the q unit until
    the geometry is calibrated).
    """
    image = np.asarray(image, dtype=float)
    good = valid_pixels(image, mask)
    ys, xs = np.nonzero(good)
    r = np.hypot(xs - centre[0], ys - centre[1])
    bins = (r / bin_width).astype(np.int64)
    n_bins = int(bins.max()) + 1 if bins.size else 0
    count = np.bincount(bins, minlength=n_bins)
    total = np.bincount(bins, image[good], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        intensity = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    radius = (np.arange(n_bins) + 0.5) * bin_width
    return radius, intensity, count


def polar_unwrap(
    image,
    centre,
    mask=None,
    n_angles: int = 360,
    n_radii: int | None = None,
    r_max: float | None = None,
):
    """The image resampled on (radius, azimuth) about centre: (radii, angles_deg, polar).

    polar[i, j] is the intensity at radii[i] px and angles_deg[j] (0° along +x, 90° along +y,
    i.e. down the image rows), NaN outside the detector or in masked pixels. The default r_max
    reaches the farthest corner so no part of the image is lost (seed 004's "max" variant).
    """
    image = np.asarray(image, dtype=float)
    h, w = image.shape
    cx, cy = centre
    if r_max is None:
        r_max = max(np.hypot(cx - x, cy - y) for x in (0, w - 1) for y in (0, h - 1))
    n_radii = n_radii or max(2, int(np.ceil(r_max)))
    radii = np.linspace(0, r_max, n_radii)
    angles = np.linspace(0, 360, n_angles, endpoint=False)
    phi = np.deg2rad(angles)
    rows = cy + radii[:, None] * np.sin(phi)[None, :]
    cols = cx + radii[:, None] * np.cos(phi)[None, :]
    filled = np.where(valid_pixels(image, mask), image, np.nan)
    polar = ndimage.map_coordinates(filled, [rows, cols], order=1, mode="constant", cval=np.nan)
    return radii, angles, polar


def ring_radii(radius, intensity, n: int = 3, min_radius: float = 3.0) -> list[float]:
    """Radii of the n most prominent peaks of log I(r): where rings are, to draw over the image."""
    from scipy.signal import find_peaks

    radius = np.asarray(radius, dtype=float)
    logi = np.log(np.clip(np.asarray(intensity, dtype=float), 1e-12, None))
    ok = np.isfinite(np.asarray(intensity, dtype=float)) & (radius >= min_radius)
    if ok.sum() < 5:
        return []
    trend = ndimage.median_filter(logi[ok], size=15, mode="nearest")  # the smooth fall-off
    peaks, props = find_peaks(logi[ok] - trend, prominence=0.1)
    strongest = peaks[np.argsort(props["prominences"])[::-1][:n]]
    return sorted(float(r) for r in radius[ok][strongest])
