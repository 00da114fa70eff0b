"""What the model sees: the min channel beside the mean, the radial profile about the beam."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.inputs import (
    PROFILE,
    beam_estimate,
    default_inputs,
    image_channel,
    prepare,
    radial_profile,
)
from pipeline.model import log_intensity

STATS = {"centre": 2.0, "scale": 4.0}


def _pattern(cx: float, cy: float, ring_px: float, side: int = 256) -> np.ndarray:
    """Counts of a detector image: scatter falling steeply from the beam, one sharp ring."""
    yy, xx = np.mgrid[0:side, 0:side].astype(float)
    rho = np.hypot(xx - cx, yy - cy)
    return 20 + 2e5 / (1 + (rho / 3) ** 4) + 400 * np.exp(-0.5 * ((rho - ring_px) / 1.0) ** 2)


def test_a_rod_one_detector_pixel_wide_stays_dark_in_the_min_channel_at_64():
    image = np.full((256, 256), 1000.0)
    image[:, 101] = 0  # a beamstop rod: 1 of 256 pixels, a quarter of a 64² input pixel
    views = prepare(image, 64, STATS, default_inputs("compact")).views
    assert views.shape == (1, 3, 64, 64)
    mean, darkest, _ = views[0]
    full = np.log1p(1000.0) / STATS["scale"]  # the rod's whole contrast, scaled
    assert darkest[:, 10].mean() - darkest[:, 25].mean() == pytest.approx(full, rel=1e-3)
    assert mean[:, 10].mean() - mean[:, 20:30].min(axis=1).mean() < 0.35 * full  # blurred away


@pytest.mark.parametrize("cx, cy", [(128.0, 128.0), (70.0, 190.0)])
def test_the_beam_is_found_and_the_profile_peaks_at_the_rings_radius(cx, cy):
    square = log_intensity(_pattern(cx, cy, ring_px=50))
    x, y = beam_estimate(square)
    assert np.hypot(x - cx, y - cy) <= 3
    profile = radial_profile(square, PROFILE)
    assert profile.shape == (len(PROFILE["stats"]), PROFILE["bins"])
    mean = profile[PROFILE["stats"].index("mean")]
    edges = np.exp(np.linspace(np.log(PROFILE["r_min"]), np.log(PROFILE["r_max"]),
                               PROFILE["bins"] + 1)) * 256
    ring_bin = np.searchsorted(edges, 50) - 1
    outer = slice(ring_bin - 8, ring_bin + 9)
    assert abs(int(np.argmax(mean[outer])) - 8) <= 1  # the ring, not the beam's tail


def test_the_beam_channel_shows_the_beamstop_at_the_detectors_resolution():
    image = _pattern(150.0, 100.0, ring_px=60)
    yy, xx = np.mgrid[0:256, 0:256]
    disc = np.hypot(xx - 156, yy - 100) <= 4  # a stop of 9 px, beside which the beam is seen
    image[disc] = 0
    square = log_intensity(image)
    window = image_channel(square, 64, "beam", beam_estimate(square))
    assert window.shape == (64, 64)
    assert (window == 0).sum() == disc.sum()  # every shadowed pixel, one input pixel each
    mean = image_channel(square, 64, "mean")
    assert (mean == 0).sum() < disc.sum() / 8


def test_every_flip_and_rotation_of_an_image_gives_the_same_profile():
    image = _pattern(90.0, 150.0, ring_px=40) + np.random.default_rng(0).poisson(5, (256, 256))
    inputs = default_inputs("compact")
    reference = prepare(image, 64, STATS, inputs).profile
    for k in range(1, 4):
        for view in (np.rot90(image, k), np.rot90(image, k).T):
            assert np.allclose(prepare(view, 64, STATS, inputs).profile, reference, atol=1e-5)


def test_multiscale_gives_fifteen_views_of_every_channel_and_one_profile():
    with_window = {"channels": ["mean", "min", "beam"], "profile": PROFILE}
    prepared = prepare(_pattern(128, 128, 30), 32, STATS, with_window, multiscale=True)
    assert prepared.views.shape == (15, 3, 32, 32)
    assert all(np.array_equal(v[2], prepared.views[0, 2]) for v in prepared.views)  # beam window
    assert prepared.profile.shape == (len(PROFILE["stats"]), PROFILE["bins"])
    one = prepare(_pattern(128, 128, 30), 32, STATS, default_inputs("resnet50"))
    assert one.views.shape == (1, 1, 32, 32) and one.profile is None


def _profile_by_the_first_formula(square: np.ndarray, spec: dict, centre) -> np.ndarray:
    """The radial profile as first written (per-pixel hypot and log, ndimage.maximum): the
    faster one in pipeline.inputs must give the same numbers."""
    from scipy import ndimage

    side, bins = square.shape[0], spec["bins"]
    cx, cy = centre
    low, high = np.log(spec["r_min"]), np.log(spec["r_max"])
    ys, xs = np.nonzero(square > 0)
    values = square[ys, xs].astype(np.float64)
    radius = np.hypot(xs - cx, ys - cy) / side
    ring = np.floor((np.log(np.maximum(radius, 1e-12)) - low) / (high - low) * bins)
    keep = (ring >= 0) & (ring < bins)
    ring, values = ring[keep].astype(np.int64), values[keep]
    count = np.bincount(ring, minlength=bins).astype(np.float64)
    mean = np.bincount(ring, values, minlength=bins) / np.maximum(count, 1)
    square_mean = np.bincount(ring, values**2, minlength=bins) / np.maximum(count, 1)
    found = {"mean": mean, "sd": np.sqrt(np.maximum(square_mean - mean**2, 0)),
             "max": np.asarray(ndimage.maximum(values, ring, np.arange(bins)), float)
             if len(ring) else np.zeros(bins)}
    # spot: each pixel's 3 × 3 mean over neighbours with counts (most of them), largest per ring
    near = ndimage.uniform_filter(np.where(square > 0, square, 0).astype(np.float64), 3,
                                  mode="constant")
    share = ndimage.uniform_filter((square > 0).astype(np.float64), 3, mode="constant")
    smooth = np.where(share > 0.5, near / np.maximum(share, 1e-12), -np.inf)[ys, xs][keep]
    spot = np.asarray(ndimage.maximum(smooth, ring, np.arange(bins)), float) \
        if len(ring) else np.zeros(bins)
    found["spot"] = np.where(np.isfinite(spot), spot, found["max"])
    # arc: the largest mean over 16 sectors of 22.5° with 3 or more pixels (angles in float32)
    angle = np.arctan2((ys - np.float32(cy)).astype(np.float32),
                       (xs - np.float32(cx)).astype(np.float32))[keep]
    sector = np.minimum(((angle + np.float32(np.pi)) * np.float32(16 / (2 * np.pi)))
                        .astype(np.int64), 15)
    cells = np.bincount(ring * 16 + sector, minlength=bins * 16).reshape(bins, 16)
    sums = np.bincount(ring * 16 + sector, values, minlength=bins * 16).reshape(bins, 16)
    arc = np.where(cells >= 3, sums / np.maximum(cells, 1), -np.inf).max(axis=1)
    found["arc"] = np.where(np.isfinite(arc), arc, mean)
    seen, centres = count > 0, np.arange(bins)
    for key, profile in found.items():
        found[key] = np.interp(centres, centres[seen], profile[seen]) if seen.any() else profile
    edges = np.exp(low + (high - low) * np.arange(bins + 1) / bins) * side
    found["cover"] = np.minimum(count / (np.pi * np.diff(edges**2)), 1.0)
    return np.stack([found[k] for k in spec["stats"]]).astype(np.float32)


def _masked(image: np.ndarray) -> np.ndarray:
    """The image with a module gap, a beamstop's rod and disc and dead pixels (no counts)."""
    image = image.copy()
    image[:, 120:126] = 0
    image[140:, 100:103] = -1  # a flagged rod reads as negative
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    image[np.hypot(xx - 128, yy - 128) < 6] = 0
    image[np.random.default_rng(3).random(image.shape) < 0.02] = np.nan
    return image


@pytest.mark.parametrize("case", ["centred", "off-centre", "beam-off-the-image", "masked",
                                  "noisy", "integer-centre", "blank"])
def test_the_radial_profile_equals_its_first_formula(case):
    rng = np.random.default_rng(7)
    image, centre = {
        "centred": (_pattern(128.0, 128.0, ring_px=50), None),
        "off-centre": (_pattern(40.3, 201.7, ring_px=70), None),
        "beam-off-the-image": (_pattern(-30.0, 90.0, ring_px=120), (-30.0, 90.0)),
        "masked": (_masked(_pattern(133.4, 121.9, ring_px=40)), None),
        "noisy": (rng.poisson(_pattern(90.2, 150.6, ring_px=30)).astype(float), None),
        "integer-centre": (_pattern(100.0, 60.0, ring_px=25), (100.0, 60.0)),
        "blank": (np.zeros((256, 256)), (128.0, 128.0)),
    }[case]
    square = log_intensity(image)
    centre = centre or beam_estimate(square)
    np.testing.assert_allclose(radial_profile(square, PROFILE, centre),
                               _profile_by_the_first_formula(square, PROFILE, centre),
                               rtol=1e-6, atol=1e-6)


def test_the_beam_centre_is_refined_by_symmetry_to_within_half_a_pixel_and_old_inputs_keep_theirs():
    from pipeline.inputs import beam_centre, symmetry_refined

    cx, cy = 101.3, 140.6
    image = _pattern(cx, cy, ring_px=22) + np.random.default_rng(1).poisson(3, (256, 256))
    yy, xx = np.mgrid[0:256, 0:256]
    image[np.hypot(xx - cx, yy - cy) <= 3] = 0  # a beamstop disc on the beam
    image[(np.abs(yy - cy) <= 1.5) & (xx > cx)] = 0  # and its arm to the edge
    image[60:64, :] = 0  # a module gap
    square = log_intensity(image)
    off = (cx + 3.1, cy - 2.3)  # a first estimate three or four pixels out
    x, y = symmetry_refined(square, off)
    assert np.hypot(x - cx, y - cy) <= 0.5
    # flipping the image flips the refined centre with it
    fx, fy = symmetry_refined(square[:, ::-1].copy(), (255 - off[0], off[1]))
    assert fx == pytest.approx(255 - x, abs=1e-6) and fy == pytest.approx(y, abs=1e-6)
    # new compact inputs refine; inputs recorded without a method keep the intensity peak
    assert beam_centre(square, default_inputs("compact")) == symmetry_refined(
        square, beam_estimate(square))
    assert beam_centre(square, {"channels": ["mean"], "profile": PROFILE}) == beam_estimate(square)


def test_inputs_with_an_unknown_beam_centre_method_are_refused_naming_the_checkpoint():
    from pipeline.errors import PipelineError
    from pipeline.inputs import check_inputs

    with pytest.raises(PipelineError, match="model.pt.*beam-centre method 'guess'"):
        check_inputs("model.pt", {**default_inputs("compact"), "centre": "guess"})


def _ring_bin(radius_px: float) -> int:
    edges = np.exp(np.linspace(np.log(PROFILE["r_min"]), np.log(PROFILE["r_max"]),
                               PROFILE["bins"] + 1)) * 256
    return int(np.searchsorted(edges, radius_px)) - 1


def _contrast(row: np.ndarray, at: int) -> float:
    """How far a profile row rises at bin `at` above a smooth fit to the bins around it, in
    units of those bins' scatter about the fit."""
    around = np.r_[at - 14 : at - 4, at + 5 : at + 15]
    fit = np.polyfit(around, row[around], 2)
    scatter = (row[around] - np.polyval(fit, around)).std()
    near = np.arange(at - 1, at + 2)
    return float((row[near] - np.polyval(fit, near)).max() / scatter)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_few_grains_spots_stand_out_in_the_spot_row_where_the_mean_misses_them(seed):
    cx, cy, radius = 118.4, 131.7, 60.0
    yy, xx = np.mgrid[0:256, 0:256].astype(float)
    rho = np.hypot(xx - cx, yy - cy)
    spots = sum(14 * np.exp(-0.5 * ((xx - cx - radius * np.cos(a)) ** 2
                                    + (yy - cy - radius * np.sin(a)) ** 2) / 1.2**2)
                for a in (0.3, 1.9, 3.6, 5.0))  # four grains, each spot as wide as a ring
    expected = 10 + 2e4 / (1 + (rho / 4) ** 3) + spots
    image = np.random.default_rng(seed).poisson(expected).astype(float)
    profile = radial_profile(log_intensity(image), PROFILE, (cx, cy))
    row = {k: profile[PROFILE["stats"].index(k)] for k in ("mean", "max", "spot")}
    at = _ring_bin(radius)
    assert _contrast(row["mean"], at) < 2  # four spots are nothing in the ring's mean
    assert _contrast(row["spot"], at) > 5
    # a single pixel's maximum mixes the spots with the noise's own extremes
    assert _contrast(row["spot"], at) > 1.5 * _contrast(row["max"], at)


def test_an_arc_a_sixteenth_of_its_ring_reads_at_its_own_brightness_in_the_arc_row():
    cx, cy, radius = 128.3, 127.6, 70.0
    yy, xx = np.mgrid[0:256, 0:256].astype(float)
    rho, chi = np.hypot(xx - cx, yy - cy), np.arctan2(yy - cy, xx - cx)
    arc = (np.abs(rho - radius) < 3) & (np.abs(chi - 0.3) < np.pi / 16)  # 22.5° of the ring
    image = np.where(arc, 1000.0, 10.0)
    profile = radial_profile(log_intensity(image), PROFILE, (cx, cy))
    at = _ring_bin(radius)
    arc_row, mean = profile[PROFILE["stats"].index("arc")], profile[PROFILE["stats"].index("mean")]
    assert arc_row[at] > np.log1p(1000.0) * 0.8  # most of the best sector is the arc
    assert mean[at] < np.log1p(10.0) + 0.35 * (np.log1p(1000.0) - np.log1p(10.0))  # diluted
    assert arc_row[at - 10] == pytest.approx(np.log1p(10.0))  # off the ring: background
