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
    assert prepared.profile.shape == (4, PROFILE["bins"])
    one = prepare(_pattern(128, 128, 30), 32, STATS, default_inputs("resnet50"))
    assert one.views.shape == (1, 1, 32, 32) and one.profile is None
