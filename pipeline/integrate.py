"""Azimuthal integration of one detector image about its beam centre, done by pyFAI (the
facilities' standard, with pixel splitting and masks): the radial profile I(q), the polar view.

Until a detector geometry is calibrated, q is measured in pixels from the beam centre: the
integrator is given 1 mm pixels 1 m from the sample, so pyFAI's radius "r_mm" reads in pixels.
The beam centre itself comes from our own estimate (pipeline.scattering.beam_centre).
"""

from __future__ import annotations

import numpy as np
import pyFAI
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
from scipy import ndimage

from pipeline.scattering import beam_centre, valid_pixels

PIXEL_M, DISTANCE_M = 1e-3, 1.0
UNIT = "r_mm"  # the radius on the detector in mm, i.e. in pixels at PIXEL_M = 1 mm
MAX_POLAR_RADII = 512
INTEGRATOR = f"pyFAI {pyFAI.version}"
# Bounding-box pixel splitting into a histogram: each image has its own beam centre, so the
# look-up tables of pyFAI's CSR engines would be built for one use only (measured 1.5× slower).
METHOD = ("bbox", "histogram", "cython")


def integrator(centre) -> AzimuthalIntegrator:
    """An integrator whose point of normal incidence is the beam centre (x, y) in pixels.

    pyFAI puts a pixel's centre half a pixel in from its corner, we put it at the integer index:
    hence the + 0.5. Azimuth χ runs over [0°, 360°): 0° along +x, 90° down the image rows.
    """
    cx, cy = centre
    ai = AzimuthalIntegrator(dist=DISTANCE_M, poni1=(cy + 0.5) * PIXEL_M,
                             poni2=(cx + 0.5) * PIXEL_M, pixel1=PIXEL_M, pixel2=PIXEL_M)
    ai.setChiDiscAtZero()
    ai.empty = np.nan  # a bin no valid pixel reaches is missing, not zero
    return ai


def _prepared(image, mask):
    """(finite float image, pyFAI mask: 1 where a pixel is excluded)."""
    image = np.asarray(image, dtype=np.float64)
    good = valid_pixels(image, mask)
    return np.where(good, image, 0.0), (~good).astype(np.int8)


def farthest_corner(shape, centre) -> float:
    """Distance from the centre to the farthest pixel centre: the profile reaches it."""
    h, w = shape
    cx, cy = centre
    return float(max(np.hypot(cx - x, cy - y) for x in (0, w - 1) for y in (0, h - 1)))


def radial_profile(image, centre, mask=None, bin_width: float = 1.0):
    """Mean intensity in rings of `bin_width` px about centre (x, y): (radius, I, n_pixels).

    Rings no valid pixel reaches hold NaN; n_pixels is the (pixel-split, so fractional) number
    of pixels in each ring. Radii are ring midpoints in pixels.
    """
    data, excluded = _prepared(image, mask)
    n_bins = max(1, int(np.ceil((farthest_corner(data.shape, centre) + 0.5) / bin_width)))
    result = integrator(centre).integrate1d(
        data, n_bins, unit=UNIT, radial_range=(0.0, n_bins * bin_width), mask=excluded,
        correctSolidAngle=False, polarization_factor=None, method=METHOD,
    )
    return result.radial, result.intensity, np.asarray(result.count, dtype=float)


def polar_unwrap(image, centre, mask=None, n_angles: int = 360, n_radii: int | None = None,
                 r_max: float | None = None):
    """The image regrouped on (radius, azimuth) about centre: (radii, angles_deg, polar).

    polar[i, j] is the mean intensity of bin radii[i] px, angles_deg[j] (bin centres; 0° along
    +x, 90° down the rows), NaN outside the detector or where every pixel is masked. The default
    r_max reaches the farthest corner so no part of the image is lost.
    """
    data, excluded = _prepared(image, mask)
    r_max = farthest_corner(data.shape, centre) if r_max is None else float(r_max)
    n_radii = n_radii or max(2, int(np.ceil(r_max)))
    result = integrator(centre).integrate2d(
        data, n_radii, n_angles, unit=UNIT, radial_range=(0.0, r_max),
        azimuth_range=(0.0, 360.0), mask=excluded, correctSolidAngle=False,
        polarization_factor=None, method=METHOD,
    )
    return result.radial, result.azimuthal, np.asarray(result.intensity).T


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


def image_geometry(pixels) -> dict:
    """Beam centre, I(q), the rings in it and the polar view of one image (plain arrays), with
    the name of the library that integrated them."""
    centre = beam_centre(pixels)
    at = (centre.x, centre.y)
    radius, intensity, _ = radial_profile(pixels, at)
    r_max = farthest_corner(np.shape(pixels), at)
    radii, angles, polar = polar_unwrap(
        pixels, at, n_radii=min(MAX_POLAR_RADII, max(2, int(np.ceil(r_max))))
    )
    return {
        "centre": centre.as_dict(),
        "radius": radius.astype(np.float32),
        "intensity": intensity.astype(np.float32),
        "rings": ring_radii(radius, intensity),
        "radii": radii.astype(np.float32),
        "angles": angles.astype(np.float32),
        "polar": polar.astype(np.float32),
        "integrator": INTEGRATOR,
    }
