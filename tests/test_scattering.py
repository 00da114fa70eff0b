"""Beam centre, radial profile and polar unwrap on images whose geometry is known exactly,
and on the real protein diffraction image (inverted 8-bit PNG, linear beamstop from the top).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.integrate import polar_unwrap, radial_profile, ring_radii
from pipeline.scattering import beam_centre

REAL_IMAGE = Path(__file__).parent / "data" / "protein_diffraction_263060g10.png"
# The beamstop disc of the real image spans rows 246–262 and columns 197–213 (read off the PNG).
REAL_CENTRE = (205.0, 254.5)


def saxs_image(h, w, cx, cy, *, seed=0, rings=(40, 75, 115), beamstop=True, gap=True):
    """Poisson counts of a Lorentzian halo plus sharp rings about (cx, cy), with the usual
    obstructions: a linear beamstop arm from the top edge and a vertical detector gap of zeros."""
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot(x - cx, y - cy)
    mean = 3000 / (1 + (r / 12) ** 2) + 4
    for ring in rings:
        mean += 200 * np.exp(-((r - ring) ** 2) / 6)
    image = np.random.default_rng(seed).poisson(mean).astype(np.float32)
    if beamstop:
        image[(np.abs(x - cx) < 5) & (y < cy)] = 0
        image[r < 8] = 0
    if gap:
        image[:, w // 3 : w // 3 + 7] = -1  # Pilatus-style gap flags
    return image


@pytest.mark.parametrize(
    "shape, centre",
    [
        ((256, 256), (128.0, 128.0)),
        ((256, 256), (81.3, 170.6)),
        ((200, 300), (240.7, 52.2)),
        ((256, 256), (22.0, 30.5)),
    ],
    ids=["centred", "off-centre", "wide-near-corner", "close-to-corner"],
)
def test_beam_centre_is_found_within_a_pixel_despite_beamstop_and_gap(shape, centre):
    image = saxs_image(*shape, *centre)
    found = beam_centre(image)
    assert np.hypot(found.x - centre[0], found.y - centre[1]) < 1.0, found
    assert found.confidence > 0.5


def test_beam_centre_of_a_large_detector_is_found_within_a_pixel():
    image = saxs_image(1024, 1024, 611.4, 402.8, rings=(150, 300), seed=3)
    found = beam_centre(image)
    assert np.hypot(found.x - 611.4, found.y - 402.8) < 1.0, found


def test_a_beamstop_shadow_does_not_pull_the_centre_towards_it():
    """A wide shadow across half of the rings: masking keeps the estimate on the true centre."""
    image = saxs_image(256, 256, 140.0, 120.0, beamstop=False, gap=False)
    image[:, 150:175] = 0.3  # a broad, nearly dark strip, not exactly zero
    found = beam_centre(image)
    assert np.hypot(found.x - 140.0, found.y - 120.0) < 1.0, found


def test_noise_without_rings_or_beamstop_gets_zero_confidence_and_the_image_middle():
    found = beam_centre(np.random.default_rng(1).poisson(20, (128, 160)).astype(float))
    assert found.confidence == 0
    assert (found.x, found.y) == (79.5, 63.5)
    assert "no rings, no beamstop" in found.method


def test_a_disc_beamstop_alone_locates_the_beam_when_there_is_no_scattering():
    """Flat background, a circular beamstop on an arm from the left edge: no rings at all."""
    y, x = np.mgrid[0:200, 0:240]
    image = np.random.default_rng(5).poisson(50, (200, 240)).astype(float)
    image[np.hypot(x - 150.0, y - 90.0) < 12] = 0
    image[(np.abs(y - 90) < 2) & (x < 150)] = 0
    found = beam_centre(image)
    assert np.hypot(found.x - 150, found.y - 90) < 1.5, found
    assert found.method == "disc beamstop shadow" and found.confidence > 0.3


def test_a_bar_beamstop_alone_points_near_the_beam():
    """A linear beamstop from the bottom edge ending at the beam; the beam hides under its tip."""
    y, x = np.mgrid[0:200, 0:200]
    image = np.random.default_rng(6).poisson(30, (200, 200)).astype(float)
    tip = (np.abs(x - 70) < 7) & (y > 120)
    image[tip | (np.hypot(x - 70, y - 120) < 7)] = 0
    found = beam_centre(image)
    assert np.hypot(found.x - 70, found.y - 120) <= 7  # within the bar's half-width
    assert "bar beamstop" in found.method and found.confidence < 0.5


def test_simulated_images_with_visible_scattering_get_their_centre_within_two_pixels():
    """The simulator's own beam positions, including beams near an edge; images whose rings,
    halo or strong scattering are visible and whose beam falls on the detector."""
    from pipeline.attributes import ATTRIBUTES
    from pipeline.simulate import beam_pixel, simulate_image

    visible = [ATTRIBUTES.index(a) for a in ("Ring", "Halo", "Strong scattering")]
    errors, off_centre = [], 0
    for seed in range(40):
        image, tags, params = simulate_image(np.random.default_rng(seed), 128)
        bx, by = beam_pixel(params, 128)
        if not (tags[visible].any() and 0 <= bx < 128 and 0 <= by < 128):
            continue
        found = beam_centre(image)
        errors.append(np.hypot(found.x - bx, found.y - by))
        off_centre += np.hypot(bx - 63.5, by - 63.5) > 20
        if len(errors) == 16:
            break
    errors = np.array(errors)
    assert len(errors) == 16 and off_centre >= 2
    assert np.median(errors) < 1.0 and (errors <= 2).mean() >= 0.75, errors.round(1)


def test_real_protein_image_centre_lands_on_the_beamstop_disc():
    counts = 255.0 - np.asarray(Image.open(REAL_IMAGE), dtype=float)  # inverted contrast
    found = beam_centre(counts)
    assert np.hypot(found.x - REAL_CENTRE[0], found.y - REAL_CENTRE[1]) < 3, found
    assert found.confidence > 0.3 and "disc beamstop" in found.method


def test_radial_profile_recovers_rings_and_ignores_masked_pixels():
    image = saxs_image(256, 256, 100.0, 140.0, seed=2)
    radius, intensity, count = radial_profile(image, (100.0, 140.0))
    assert np.isclose(radius[1] - radius[0], 1.0)
    assert ring_radii(radius, intensity) == pytest.approx([40, 75, 115], abs=1.0)
    # The beamstop disc (r < 8) and gap flags (negative) never enter the mean.
    assert np.isnan(intensity[:7]).all() and (count[:7] == 0).all()
    assert np.nanmin(intensity) > 0


def test_radial_profile_of_a_flat_image_is_flat():
    radius, intensity, count = radial_profile(np.full((50, 60), 7.0), (10.0, 20.0), bin_width=2)
    assert np.allclose(intensity[count > 0], 7.0)
    # Pixels are split between rings, so counts are fractional, but every pixel is counted once.
    assert radius[0] == pytest.approx(1.0) and count.sum() == pytest.approx(50 * 60)


def test_polar_unwrap_turns_a_ring_into_a_straight_band():
    image = saxs_image(200, 200, 90.0, 110.0, rings=(50,), beamstop=False, gap=False, seed=4)
    radii, angles, polar = polar_unwrap(image, (90.0, 110.0), n_angles=180)
    assert polar.shape == (len(radii), 180) and angles[1] - angles[0] == pytest.approx(2)
    around = (radii > 42) & (radii < 80)  # past the bright halo
    peak_radius = radii[around][np.nanargmax(polar[around], axis=0)]
    assert np.all(np.abs(peak_radius - 50) <= 2)  # the ring is at r = 50 at every azimuth


def test_polar_unwrap_marks_outside_the_detector_and_masked_pixels_as_missing():
    image = np.ones((100, 100))
    image[:, 60:70] = -1  # a gap to the right of the centre
    radii, angles, polar = polar_unwrap(image, (50.0, 50.0), n_angles=36)
    assert angles[0] == pytest.approx(5) and angles[18] == pytest.approx(185)  # bin centres
    right = polar[:, 0]  # 0°–10°: along +x
    assert np.isnan(right[(radii > 11) & (radii < 19)]).all()
    assert np.isnan(right[radii > 51]).all()  # past the detector's right edge
    assert np.allclose(polar[(radii > 1) & (radii < 40), 18], 1.0)  # 180°: untouched detector
    assert radii[-1] + (radii[1] - radii[0]) / 2 == pytest.approx(np.hypot(50, 50))  # corner


def test_the_detail_view_names_the_library_that_integrated_the_profile(synthetic_run):
    from callbacks.science import science_for

    def texts(node):
        if isinstance(node, str):
            return [node]
        if isinstance(node, (list, tuple)):
            return [t for child in node for t in texts(child)]
        return texts(getattr(node, "children", None) or [])

    shown = " ".join(texts(science_for(synthetic_run, 0)))
    assert "integrated about this centre by pyFAI" in shown


@pytest.mark.parametrize("index", [-1, 60, "3", 2.5, None])
def test_the_science_slot_answers_a_crafted_image_number_with_a_message(synthetic_run, index,
                                                                        monkeypatch):
    from callbacks.science import show_science

    monkeypatch.setenv("XRAE_DATA_DIR", str(synthetic_run.data_dir))

    shown = show_science(index, synthetic_run.id)
    assert shown.children  # a message, not a 500
    if index is not None:
        assert "is not in run" in str(shown.children)
