"""Pure scattering functions of q (nm⁻¹) and of the azimuth χ (radians) used by the simulator.

Every function takes numpy arrays and returns an array of the same shape; none draws random
numbers, so a scene is a pure function of its parameters.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
from scipy import special

# ---------------------------------------------------------------- particles


def sphere_amplitude(x: np.ndarray) -> np.ndarray:
    """3(sin x − x cos x)/x³, the normalised scattering amplitude of a sphere at x = qR."""
    x = np.asarray(x, dtype=np.float64)
    small = x < 1e-2
    xs = np.where(small, 1.0, x)
    exact = 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs**3
    return np.where(small, 1.0 - x**2 / 10.0, exact)  # the series avoids 0/0 at the centre


def sphere_form_factor(q: np.ndarray, radius: float, polydispersity: float = 0.0) -> np.ndarray:
    """P(q) of spheres, P(0) = 1; a Gaussian spread of radii (relative σ) fills in the minima.

    Radii are averaged by Gauss–Hermite quadrature with volume² weights, as each sphere
    scatters in proportion to the square of its volume.
    """
    q = np.asarray(q, dtype=np.float64)
    if polydispersity <= 0:
        return sphere_amplitude(q * radius) ** 2
    nodes, weights = _hermite_nodes()
    radii = radius * np.clip(1.0 + polydispersity * nodes, 0.05, None)
    w = weights * radii**6
    total = sum(wi * sphere_amplitude(q * ri) ** 2 for wi, ri in zip(w, radii, strict=True))
    return total / w.sum()


@lru_cache(maxsize=1)
def _hermite_nodes() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.hermite_e.hermegauss(7)


def percus_yevick(q: np.ndarray, diameter: float, phi: float) -> np.ndarray:
    """Hard-sphere structure factor S(q) in the Percus–Yevick closure (volume fraction phi).

    Closed form of the direct correlation function's transform; S(0) equals the
    compressibility limit (1 − φ)⁴ / (1 + 2φ)² and S → 1 at large q.
    """
    a = np.maximum(np.asarray(q, dtype=np.float64) * diameter, 0.05)
    alpha = (1 + 2 * phi) ** 2 / (1 - phi) ** 4
    beta = -6 * phi * (1 + phi / 2) ** 2 / (1 - phi) ** 4
    gamma = phi * alpha / 2
    sin, cos = np.sin(a), np.cos(a)
    g = (
        alpha / a**2 * (sin - a * cos)
        + beta / a**3 * (2 * a * sin + (2 - a**2) * cos - 2)
        + gamma / a**5 * (-(a**4) * cos + 4 * ((3 * a**2 - 6) * cos + (a**3 - 6 * a) * sin + 6))
    )
    return 1.0 / (1.0 + 24 * phi * g / a)


# ---------------------------------------------------------------- diffuse scattering


def power_law(q: np.ndarray, exponent: float, q_cut: float) -> np.ndarray:
    """(q² + q_cut²)^(−exponent/2): Porod-like decay, finite at q = 0 (the beamstop hides it)."""
    return (np.asarray(q, dtype=np.float64) ** 2 + q_cut**2) ** (-exponent / 2) * q_cut**exponent


def guinier(q: np.ndarray, rg: float) -> np.ndarray:
    """exp(−q²Rg²/3): the low-q decay of any compact object of radius of gyration Rg."""
    return np.exp(-(np.asarray(q, dtype=np.float64) ** 2) * rg**2 / 3.0)


def ornstein_zernike(q: np.ndarray, xi: float) -> np.ndarray:
    """1/(1 + q²ξ²): concentration fluctuations with correlation length ξ."""
    return 1.0 / (1.0 + np.asarray(q, dtype=np.float64) ** 2 * xi**2)


def debye_bueche(q: np.ndarray, a: float) -> np.ndarray:
    """1/(1 + q²a²)²: a random two-phase medium with correlation length a."""
    return ornstein_zernike(q, a) ** 2


def debye_waller(q: np.ndarray, sigma: float) -> np.ndarray:
    """exp(−σ²q²): how displacements of rms σ damp the higher orders of a lattice."""
    return np.exp(-(sigma**2) * np.asarray(q, dtype=np.float64) ** 2)


def high_q_diffuse(q: np.ndarray, sigma: float) -> np.ndarray:
    """1 − exp(−σ²q²): the diffuse intensity that disorder moves out of the peaks to high q."""
    return -np.expm1(-(sigma**2) * np.asarray(q, dtype=np.float64) ** 2)


def gaussian_peak(q: np.ndarray, q0: float, width: float) -> np.ndarray:
    """A peak of unit height at q0 with standard deviation `width` (grain-size broadening)."""
    return np.exp(-0.5 * ((np.asarray(q, dtype=np.float64) - q0) / width) ** 2)


# ---------------------------------------------------------------- peak sequences


def _bcc_allowed(hkl: tuple[int, int, int]) -> bool:
    return sum(hkl) % 2 == 0


def _fcc_allowed(hkl: tuple[int, int, int]) -> bool:
    return len({i % 2 for i in hkl}) == 1  # all odd or all even


@lru_cache(maxsize=4)
def cubic_reflections(lattice: str, count: int = 12) -> tuple[tuple[int, int], ...]:
    """The first `count` allowed (h²+k²+l², multiplicity) pairs of a BCC or FCC lattice.

    BCC allows h+k+l even (q ratios √2:√4:√6:√8 …); FCC allows hkl all odd or all even
    (√3:√4:√8:√11:√12 …). Multiplicities count every (h, k, l) of the same length, so
    coincident families such as BCC (330)/(411) add up.
    """
    allowed = {"bcc": _bcc_allowed, "fcc": _fcc_allowed}[lattice]
    span = range(-7, 8)
    mult: dict[int, int] = {}
    for hkl in itertools.product(span, span, span):
        m = sum(i * i for i in hkl)
        if m and allowed(hkl):
            mult[m] = mult.get(m, 0) + 1
    return tuple(sorted(mult.items())[:count])


def sequence_ratios(kind: str, count: int) -> np.ndarray:
    """q_n / q_1 for the first `count` peaks of a lamellar, hexagonal, BCC or FCC sequence."""
    if kind == "lamellar":
        return np.arange(1, count + 1, dtype=np.float64)
    if kind == "hexagonal":
        m = sorted({h * h + h * k + k * k for h in range(8) for k in range(8)} - {0})
        return np.sqrt(np.array(m[:count], dtype=np.float64))
    m = np.array([mm for mm, _ in cubic_reflections(kind, count)], dtype=np.float64)
    return np.sqrt(m / m[0])


# ---------------------------------------------------------------- azimuthal dependence


def wrapped_cauchy(chi: np.ndarray, chi0: float, eta: float, symmetry: int = 2) -> np.ndarray:
    """Azimuthal modulation of mean 1 with `symmetry` lobes; eta = 0 isotropic, → 1 sharp arcs."""
    c = np.cos(symmetry * (np.asarray(chi, dtype=np.float64) - chi0))
    return (1 - eta**2) / (1 + eta**2 - 2 * eta * c)


def grain_spots(chi: np.ndarray, centres, weights, width: float) -> np.ndarray:
    """Spots of azimuthal `width` at `centres` from a few crystal grains; mean 1.

    A powder of many grains gives a smooth ring; a handful gives this spotty ring. Each spot
    is a von Mises bump exp(κ(cos(χ − c) − 1)) with κ = 1/width², a Gaussian on the circle.
    """
    chi = np.asarray(chi, dtype=np.float64)
    centres, weights = np.asarray(centres, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    kappa = 1.0 / width**2
    cos = np.cos(chi)[..., None] * np.cos(centres) + np.sin(chi)[..., None] * np.sin(centres)
    out = np.exp(kappa * (cos - 1.0)) @ weights
    return out / (weights.sum() * special.i0e(kappa))  # i0e(κ) is the mean of one bump


def grain_spots_table(n: int, centres, weights, width: float) -> np.ndarray:
    """grain_spots at the n azimuths −π + (i + ½)·2π/n, each spot summed only within ±6 widths.

    The same values as grain_spots to within exp(−18), for a fraction of the work.
    """
    step = 2 * np.pi / n
    half = int(6 * width / step) + 1
    if 2 * half + 1 >= n:  # spots as wide as the circle: no window to save work with
        return grain_spots(-np.pi + (np.arange(n) + 0.5) * step, centres, weights, width)
    offsets = np.arange(-half, half + 1)
    centres, weights = np.asarray(centres, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    nearest = np.floor((centres + np.pi) / step).astype(np.int64)
    index = (nearest[:, None] + offsets[None, :]) % n  # each spot's window of azimuths
    d = -np.pi + (index + 0.5) * step - centres[:, None]
    d = (d + np.pi) % (2 * np.pi) - np.pi
    values = weights[:, None] * np.exp((np.cos(d) - 1.0) / width**2)
    out = np.bincount(index.ravel(), values.ravel(), minlength=n)
    return out / (weights.sum() * special.i0e(1.0 / width**2))


def ellipse_stretch(chi: np.ndarray, chi0: float, epsilon: float) -> np.ndarray:
    """Factor by which q is stretched at azimuth χ for objects elongated along chi0 (ε ≥ 1)."""
    d = np.asarray(chi, dtype=np.float64) - chi0
    return np.sqrt(np.sin(d) ** 2 + epsilon**2 * np.cos(d) ** 2)
