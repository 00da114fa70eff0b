"""The beam centre of one detector image, from its rings and its beamstop shadow (our own
estimate; pipeline.integrate hands the integration about that centre to pyFAI).

Pure numpy/scipy on 2-D arrays; pixel (row y, column x) has its centre at integer (x, y).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

# The coarsest pyramid level is searched exhaustively on a grid; finer levels only refine.
COARSE_SIZE = 64
FINE_SIZE = 512
SHADOW_SIZE = 256  # beamstop shapes are read at this resolution or finer
TOP_CANDIDATES = 3
# The ring estimate's spread σ: the statistical error of the centre from the curvature of the
# objective over ±3 % of the image, times this factor, because neighbouring pixels' noise is
# correlated (spots, texture). Set on simulated images, where it makes σ ≈ the real error.
RING_NOISE_FACTOR = 6.0
# Rings that disagree with a beamstop shadow win only when their σ is this much smaller.
TRUST_RINGS_SHARPER = 0.5
NEAR_AS_GOOD = 0.2  # share of the ring-explained variance a beamstop-side basin may lose
CONFIDENT_WITHIN = 1.5  # px: confidence = 1 / (1 + (σ / CONFIDENT_WITHIN)²)
GUESS_BEYOND = 0.04  # σ above this share of the image size: no estimate, the middle instead


@dataclass(frozen=True)
class BeamCentre:
    """Where the direct beam would hit the detector, and how far the estimate can be trusted.

    sigma: estimated error in pixels; confidence = 1 / (1 + (sigma / 1.5 px)²), so 0.5 means
    about 1.5 px and below 0.1 means "a guess"; symmetry: share of the log-intensity variance
    (beyond a plane) explained by rings about (x, y); method: which evidence decided.
    """

    x: float
    y: float
    confidence: float
    sigma: float
    symmetry: float
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- masks and scaling


def shadow_mask(image) -> np.ndarray:
    """Dark regions at least 3 px across: beamstop shadows and detector gaps of zeros.

    Dark means at most 10 % of the typical intensity, both at the pixel and averaged over its
    5×5 neighbourhood: at low count rates Poisson noise makes zeros everywhere, but not
    whole neighbourhoods of them.
    """
    image = np.asarray(image, dtype=float)
    good = np.isfinite(image) & (image >= 0)
    values = np.where(good, image, 0.0)
    local = ndimage.uniform_filter(values, 5) / np.maximum(
        ndimage.uniform_filter(good.astype(float), 5), 1e-9
    )
    typical = local[good & (local > 0)]
    floor = 0.1 * float(np.median(typical)) if typical.size else 0.0
    dark = good & (values <= floor)
    shadow = ndimage.binary_opening(dark & (local <= floor), structure=np.ones((3, 3), bool))
    # The neighbourhood test shrinks shadows by 2 px; their dark rims belong to them too.
    return shadow | (ndimage.binary_dilation(shadow, np.ones((5, 5), bool)) & dark)


def valid_pixels(image, mask=None) -> np.ndarray:
    """Pixels that carry signal: finite, not negative (detector gap flags), not in shadow."""
    image = np.asarray(image, dtype=float)
    good = np.isfinite(image) & (image >= 0)
    if mask is not None:
        good &= np.asarray(mask, dtype=bool)
    return good & ~shadow_mask(image) if good.any() else good


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
        self.total = self._unexplained(self.moments[None])[0] / max(self.n - 3, 1)

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
            sums = np.stack(
                [
                    np.bincount(
                        keys, np.broadcast_to(col, bins.shape).ravel(), minlength=size
                    ).reshape(len(block), n_bins)
                    for col in self.cols
                ]
            )  # 3 × M × bins
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


def _ring_sigma(level: _Level, x: float, y: float) -> float:
    """The ring estimate's error in image pixels (RING_NOISE_FACTOR × statistical error)."""
    d = 0.03 * max(level.shape)
    cx, cy = level.to_level(x, y)
    steps = [(0, 0), (d, 0), (-d, 0), (0, d), (0, -d), (d, d), (d, -d), (-d, d), (-d, -d)]
    j = level.residual(np.array([cx, cy]) + np.array(steps, float))
    hxx, hyy = (j[1] + j[2] - 2 * j[0]) / d**2, (j[3] + j[4] - 2 * j[0]) / d**2
    hxy = (j[5] - j[6] - j[7] + j[8]) / (4 * d**2)
    hessian = np.array([[hxx, hxy], [hxy, hyy]])
    if np.linalg.eigvalsh(hessian).min() <= 0:
        return float("inf")  # not a minimum at this scale: no ring symmetry to speak of
    # Least squares: cov = 2 σ² H⁻¹ with H the Hessian of the residual sum (n × that of j).
    covariance = 2 * j[0] / level.n * np.linalg.inv(hessian)
    return float(RING_NOISE_FACTOR * np.sqrt(np.trace(covariance)) * level.factor)


@dataclass(frozen=True)
class RingFit:
    """The ring-symmetry optimum: centre, residual, its error σ (px) and symmetry share."""

    x: float
    y: float
    residual: float
    sigma: float
    symmetry: float


def _descend(levels: list[_Level], starts) -> tuple[float, float, float]:
    """Refine starting points one level up, then the best of them through the finer levels."""
    refined = [_climb(levels[min(1, len(levels) - 1)], x, y) for x, y in starts]
    x, y, res = min(refined, key=lambda c: c[2])
    for level in levels[2:]:
        steps = (1.0, 0.5, 0.25) if level is levels[-1] else (1.0, 0.5)
        x, y, res = _climb(level, x, y, steps)
    return x, y, res


def _fit(levels: list[_Level], starts) -> RingFit:
    x, y, res = _descend(levels, starts)
    fine = levels[-1]
    symmetry = float(np.clip(1 - res / fine.total, 0, 1))
    return RingFit(float(x), float(y), float(res), _ring_sigma(fine, x, y), symmetry)


def ring_estimate(image, mask=None, levels=None) -> RingFit | None:
    """The point about which log intensity is most ring-symmetric; None without signal.

    The centre minimises the variance of log intensity along 1-px rings (plus a plane for
    sloping backgrounds), searched on a grid at ≤64 px and refined coarse to fine up to ≤512 px;
    shadows and gaps are masked, so they neither pull the centre nor count as rings.
    """
    levels = levels or _pyramid(image, mask)
    if levels[-1].n < 16 or levels[-1].total == 0:
        return None
    return _fit(levels, _grid_search(levels[0]))


# ---------------------------------------------------------------- the beamstop's shadow


@dataclass(frozen=True)
class Beamstop:
    """Where a beamstop shadow says the beam is: kind is disc, bar or wedge."""

    x: float
    y: float
    sigma: float
    kind: str


def _gap_lines(dead: np.ndarray) -> np.ndarray:
    """Rows and columns that are almost all dead: gaps between detector modules."""
    lines = np.zeros_like(dead)
    lines[dead.mean(axis=1) >= 0.9, :] = True
    lines[:, dead.mean(axis=0) >= 0.9] = True
    return lines


def _downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return mask
    h, w = (s // factor * factor for s in mask.shape)
    blocks = mask[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3)) >= 0.5


def _close(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary closing that treats the image edge as continuing the mask (no erosion there)."""
    padded = np.pad(mask, iterations, mode="edge")
    closed = ndimage.binary_closing(padded, np.ones((3, 3), bool), iterations=iterations)
    return closed[iterations:-iterations, iterations:-iterations]


def beamstop_estimate(image) -> Beamstop | None:
    """The beam position read off the largest beamstop shadow, or None when there is none.

    As in Czyzewski et al. (Expert Syst. Appl. 2021), the beam sits at the inner end of the
    shadow, away from where its holder leaves the detector. The end is read by shape: a disc
    (circular beamstop on a thin arm) is centred on the beam; a bar (linear beamstop) covers
    the beam about half its width behind its rounded tip; a wedge points at the beam, which
    hides somewhere near the tip.
    """
    image = np.asarray(image, dtype=float)
    factor = int(np.ceil(max(image.shape) / SHADOW_SIZE))
    shadow = _downsample_mask(shadow_mask(image), factor)
    dead = shadow | _downsample_mask(~np.isfinite(image) | (image < 0), factor)
    gaps = _gap_lines(dead)
    # Close pinholes (counts leaking through), drop clumps of Poisson zeros and thin wires,
    # and bridge a shadow that a module gap cuts in two.
    solid = _close(shadow, 2)
    solid = ndimage.binary_opening(solid & ~gaps, np.ones((5, 5), bool))
    solid |= _close(solid, 5) & gaps
    square = np.ones((3, 3), bool)
    labels, count = ndimage.label(solid, structure=square)
    if count == 0:
        return None
    areas = np.bincount(labels.ravel())[1:]
    biggest = int(np.argmax(areas)) + 1
    if areas[biggest - 1] < max(20, 0.0003 * shadow.size):
        return None
    found = _read_shadow(labels == biggest, gaps)
    if found is None:
        return None
    (x, y), sigma, kind = found
    f = factor
    return Beamstop(float(x * f + (f - 1) / 2), float(y * f + (f - 1) / 2), float(sigma * f), kind)


def _read_shadow(blob: np.ndarray, gaps: np.ndarray):
    """((x, y), sigma, kind) of one shadow component, in its own pixel units."""
    h, w = blob.shape
    outside = gaps.copy()
    outside[[0, -1], :] = outside[:, [0, -1]] = True
    edt = ndimage.distance_transform_edt(blob)
    if edt.max() < 2:
        return None  # a thin line: a wire or a gap edge, not a beamstop
    ys, xs = np.nonzero(blob)
    touching = blob & ndimage.binary_dilation(outside)
    if touching.any():
        ay, ax = (c.mean() for c in np.nonzero(touching))
        far = np.hypot(xs - ax, ys - ay)
        tip = np.array([xs[far.argmax()], ys[far.argmax()]], float)
    else:  # a disc held by something invisible
        ay, ax = float(ys.mean()), float(xs.mean())
        k = int(edt[ys, xs].argmax())
        tip = np.array([xs[k], ys[k]], float)
    # The end of the shadow: deep inside it (large edt) but close to the tip.
    score = edt[ys, xs] - 0.5 * np.hypot(xs - tip[0], ys - tip[1])
    k = int(score.argmax())
    end = np.array([xs[k], ys[k]], float)
    radius = float(edt[ys[k], xs[k]])
    from_end = np.hypot(xs - end[0], ys - end[1])
    ring = (from_end >= 2 * radius) & (from_end <= 4 * radius)
    beyond = float(edt[ys[ring], xs[ring]].max()) / radius if ring.any() else 0.0
    if beyond < 0.7:  # the holder beyond the end is much thinner: a disc, centred on the beam
        core = (edt[ys, xs] > 0.5 * radius) & (from_end < 2 * radius)  # the disc without its arm
        return np.array([xs[core].mean(), ys[core].mean()]), 1.0 + 0.05 * radius, "disc"
    towards = np.array([ax, ay]) - end
    towards /= max(np.hypot(*towards), 1e-9)
    if beyond <= 1.3:  # as thick beyond as at the end: a bar
        return end + radius * towards, radius, "bar"
    return tip, 0.04 * max(h, w), "wedge"


# ---------------------------------------------------------------- both together


def beam_centre(image, mask=None) -> BeamCentre:
    """Estimate the beam centre from ring symmetry and the beamstop shadow together.

    Czyzewski et al. score candidate centres by the beamstop shadow alone; here the shadow is one of
    two witnesses. When the best rings lie elsewhere than the beamstop says, the rings are
    searched again from the beamstop, and that basin is taken if it fits nearly as well
    (NEAR_AS_GOOD). Then `_combine` weighs the two. With neither rings nor beamstop the image
    middle is returned with confidence 0.
    """
    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise ValueError(f"beam_centre needs a 2-D image, got shape {image.shape}")
    h, w = image.shape
    levels = _pyramid(image, mask)
    ring = ring_estimate(image, levels=levels)
    stop = beamstop_estimate(image)
    if ring is not None and stop is not None:
        ring = _ring_near_beamstop(levels, ring, stop)
    x, y, sigma, method = _combine(ring, stop)
    symmetry = round(ring.symmetry, 4) if ring else 0.0
    if not sigma <= GUESS_BEYOND * max(h, w):
        middle = "image middle (no rings, no beamstop)"
        return BeamCentre((w - 1) / 2, (h - 1) / 2, 0.0, float("inf"), symmetry, middle)
    confidence = round(1 / (1 + (sigma / CONFIDENT_WITHIN) ** 2), 4)
    return BeamCentre(float(x), float(y), confidence, round(float(sigma), 3), symmetry, method)


def _combine(ring: RingFit | None, stop: Beamstop | None):
    """(x, y, sigma, method): estimates that agree within 3 combined σ are averaged with
    weights 1/σ²; otherwise the rings win only with a much smaller σ (TRUST_RINGS_SHARPER),
    since a beamstop is put on the beam."""
    x, y, sigma = (ring.x, ring.y, ring.sigma) if ring else (0.0, 0.0, np.inf)
    if stop is None:
        return x, y, sigma, "ring symmetry"
    if np.isfinite(sigma) and np.hypot(stop.x - x, stop.y - y) <= 3 * np.hypot(sigma, stop.sigma):
        wr, ws = 1 / sigma**2, 1 / stop.sigma**2
        x, y = (wr * x + ws * stop.x) / (wr + ws), (wr * y + ws * stop.y) / (wr + ws)
        return x, y, (wr + ws) ** -0.5, f"ring symmetry + {stop.kind} beamstop"
    if sigma < TRUST_RINGS_SHARPER * stop.sigma:
        return x, y, sigma, "ring symmetry"
    return stop.x, stop.y, stop.sigma, f"{stop.kind} beamstop shadow"


def _ring_near_beamstop(levels, ring: RingFit, stop: Beamstop) -> RingFit:
    """The ring fit started from the beamstop, when it fits nearly as well as the best one."""
    if np.hypot(ring.x - stop.x, ring.y - stop.y) <= 3 * stop.sigma:
        return ring
    near = _fit(levels, [(stop.x, stop.y)])
    explained = levels[-1].total - ring.residual
    stays = np.hypot(near.x - stop.x, near.y - stop.y) <= 3 * stop.sigma
    if stays and explained > 0 and (near.residual - ring.residual) < NEAR_AS_GOOD * explained:
        return near
    return ring
