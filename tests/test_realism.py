"""Tests that simulated detector images show what real ones show, read off rendered pixels:
brightest beside the beamstop, several decades of range, module gaps where the detector's
modules meet, a beamstop penumbra, a saturating direct beam, and a CCD's read noise and blooming.
"""

from __future__ import annotations

import json

import numpy as np

from pipeline.cli import main
from pipeline.sim.detector import gap_mask, record
from pipeline.sim.rules import LEAK, REF
from pipeline.sim.scene import Scene
from pipeline.simulate import draw_scene, simulate_dataset
from pipeline.store import open_dataset


def beam_on(scene) -> bool:
    return 0 <= scene.params["beam"]["x"] < 1 and 0 <= scene.params["beam"]["y"] < 1


def recorded(seed, size: int, detector: str = "pilatus", want=lambda s: True, limit: int = 300):
    """The first scenes (seed [seed, i]) that satisfy `want`, with their recorded images."""
    for i in range(limit):
        rng = np.random.default_rng([seed, i])
        scene = draw_scene(rng, detector)
        if want(scene):
            yield scene, record(scene.expected(size), rng, detector)


def distance_from_beam(params: dict, size: int) -> np.ndarray:
    axis = (np.arange(size) + 0.5) / size
    return np.hypot(axis[None, :] - params["beam"]["x"], axis[:, None] - params["beam"]["y"])


def test_counts_beside_the_beamstop_exceed_twice_the_outer_detector_in_95_percent():
    size, brighter, total = 128, 0, 0
    for scene, image in recorded(21, size, want=beam_on):
        valid = scene.valid_mask(size)
        rho = distance_from_beam(scene.params, size)[valid]
        counts = image[valid]
        inner = counts[rho <= np.quantile(rho, 0.05)]  # the annulus nearest the stop
        outer = counts[rho >= np.quantile(rho, 0.80)]
        brighter += inner.mean() > 2 * outer.mean()
        total += 1
        if total == 60:
            break
    assert total == 60
    assert brighter >= 0.95 * total, f"{brighter} of {total}"


def test_dynamic_range_spans_three_decades_in_the_median_image():
    decades = []
    for _, image in recorded(22, 256, want=beam_on):
        p50, p999 = np.percentile(image, [50, 99.9])
        decades.append(np.log10(max(p999, 1) / max(p50, 1)))
        if len(decades) == 40:
            break
    assert np.median(decades) >= 3.0, np.round(decades, 1)


def pilatus_gap_lines(size: int) -> tuple[set[int], set[int]]:
    """Columns and rows between the modules of a Pilatus 1M (2 × 5 modules of 487 × 195 px,
    gaps of 7 and 17 px), scaled from its 981 × 1043 pixels to `size`."""
    cols = set(range(round(487 / 981 * size), round(494 / 981 * size)))
    rows = set()
    for k in range(1, 5):
        rows |= set(range(round((k * 212 - 17) / 1043 * size), round(k * 212 / 1043 * size)))
    return cols, rows


def test_module_gaps_sit_at_the_detector_module_boundaries_in_every_frame(tmp_path):
    size = 256
    path = simulate_dataset(tmp_path, 6, size=size, seed=5, dataset_id="p", progress=False)
    dataset = open_dataset(path)
    cols, rows = pilatus_gap_lines(size)
    assert len(cols) == 2 and len(rows) == 16  # 7 px → 2 px, 17 px → 4 px at 256
    for i in range(len(dataset)):
        image = dataset.load_image(i)
        dead_cols = set(np.flatnonzero((image == 0).all(axis=0)))
        dead_rows = set(np.flatnonzero((image == 0).all(axis=1)))
        assert dead_cols == cols and dead_rows == rows, i


def test_a_ccd_dataset_has_no_module_gaps_and_records_its_detector(tmp_path):
    args = ["simulate", "--n", "3", "--size", "64", "--detector", "ccd", "--id", "c",
            "--quiet", "--data-dir", str(tmp_path)]
    assert main(args) == 0
    dataset = open_dataset(tmp_path / "datasets" / "c")
    meta = json.loads((tmp_path / "datasets" / "c" / "dataset.json").read_text())
    assert meta["detector"]["name"] == "ccd" and dataset.meta["detector"]["name"] == "ccd"
    for i in range(3):
        image = dataset.load_image(i)
        assert not (image == 0).all(axis=0).any() and not (image == 0).all(axis=1).any()


def test_unknown_detector_exits_2_naming_it(tmp_path, capsys):
    args = ["simulate", "--n", "2", "--detector", "xpad9", "--quiet", "--data-dir", str(tmp_path)]
    assert main(args) == 2
    assert "unknown detector 'xpad9'" in capsys.readouterr().err


def opaque_disc(scene) -> bool:
    stop = scene.params["beamstop"]
    return stop is not None and stop["kind"] == "circular" and stop["transmission"] == LEAK


def test_beamstop_penumbra_is_wider_than_one_pixel():
    size = 512
    for checked, (scene, _) in enumerate(recorded(23, size, want=opaque_disc)):
        lit = Scene(scene.params | {"beamstop": None}).expected(size)
        passed = scene.expected(size) / np.maximum(lit, 1e-12)  # the stop's transmission
        stop, beam = scene.params["beamstop"], scene.params["beam"]
        axis = (np.arange(size) + 0.5) / size
        dx = axis[None, :] - beam["x"] - stop["offset"][0]
        dy = axis[:, None] - beam["y"] - stop["offset"][1]
        away = np.cos(np.arctan2(dy, dx) - stop["arm_angle"]) < 0.5  # > 60° from the arm
        edge = (np.abs(np.hypot(dx, dy) - stop["radius"]) < 4 / size) & away & (lit > 0)
        partial = edge & (passed > 0.05) & (passed < 0.95)
        perimeter = edge.sum() / 8  # the edge band is 8 px wide
        assert partial.sum() / perimeter > 1.5, partial.sum() / perimeter  # a sharp edge: ≤ 1
        if checked == 2:
            break


def unblocked(scene) -> bool:
    """The beam on the detector with no beamstop."""
    return beam_on(scene) and scene.params["beamstop"] is None


def test_unblocked_direct_beam_saturates_a_photon_counter():
    for checked, (_, image) in enumerate(recorded(24, 256, want=unblocked)):
        assert image.max() == 2.0**20 - 1
        if checked == 2:
            break


def test_semi_transparent_beamstop_shows_the_attenuated_beam_in_its_shadow():
    def leaky(scene) -> bool:
        stop = scene.params["beamstop"]
        return stop is not None and stop["transmission"] > LEAK

    for checked, (scene, image) in enumerate(recorded(25, 256, want=leaky)):
        row, col = (int(scene.params["beam"][k] * 256) for k in ("y", "x"))
        shadow = ~scene.valid_mask(256) & (image > 0)  # the stop's shadow, gaps left out
        assert image[row - 1 : row + 2, col - 1 : col + 2].max() > 10 * np.median(image[shadow])
        if checked == 2:
            break


def test_the_beam_never_falls_into_a_gap_between_modules():
    size, seen = 256, 0
    for scene, _ in recorded(29, size, want=beam_on, limit=200):
        row, col = (int(scene.params["beam"][k] * size) for k in ("y", "x"))
        assert not gap_mask("pilatus", size)[row, col]
        seen += 1
    assert seen >= 150


def test_ccd_shows_read_noise_on_its_floor_and_blooms_along_columns():
    scene, image = next(recorded(26, 256, "ccd", want=unblocked))
    expected = scene.expected(256)
    assert (image != np.round(image)).mean() > 0.9  # read noise: not whole photon counts
    faint = (expected > 0) & (expected <= np.quantile(expected[expected > 0], 0.2))
    residual = image[faint] - 10.0 - expected[faint]  # the pedestal is 10
    read_variance = residual.var() - expected[faint].mean()  # beyond the Poisson variance
    assert abs(residual.mean()) < 0.3 and 2.5 < read_variance < 6, read_variance  # σ² = 4
    saturated = image >= 65535
    rows, cols = np.nonzero(saturated)
    assert saturated.sum() >= 5
    assert np.ptp(rows) >= 3 * max(np.ptp(cols), 1), "blooming runs along the column"
    # a photon counter recording the same scene clips the beam without spreading it
    counter = Scene(scene.params | {"detector": "pilatus"})
    clipped = record(counter.expected(256), np.random.default_rng(0), "pilatus") >= 2.0**20 - 1
    assert clipped.sum() < saturated.sum()


def test_oriented_rings_show_two_four_or_six_arcs():
    from tests.test_simulate import ring_params

    for lobes in (2, 4, 6):
        params = ring_params(5.0)
        params["beamstop"], params["detector"] = None, "ccd"  # no stop, no gaps cross it
        params["modules"][0]["texture"] = {"kind": "arcs", "symmetry": lobes, "eta": 0.6,
                                           "chi0": 0.3}
        image = Scene(params).expected(REF)
        chi = np.linspace(-np.pi, np.pi, 720, endpoint=False)
        radius = 0.5 / 2.0 * REF  # the ring at q = 0.5 nm⁻¹, 2 nm⁻¹ across the detector
        cols = (REF / 2 + radius * np.cos(chi)).astype(int)
        rows = (REF / 2 + radius * np.sin(chi)).astype(int)
        around = image[rows, cols]
        bright = around > 2 * np.median(around)
        starts = np.flatnonzero(bright & ~np.roll(bright, 1))  # runs of bright azimuths
        assert len(starts) == lobes


def test_slit_streaks_run_along_the_detector_axes_through_the_beam():
    size = 256

    def streaked(scene) -> bool:
        return beam_on(scene) and bool(scene.params["parasitic"]["streaks"])

    for checked, (scene, image) in enumerate(recorded(27, size, want=streaked)):
        streak, beam = scene.params["parasitic"]["streaks"][0], scene.params["beam"]
        valid = scene.valid_mask(size)
        ux, uy = np.cos(streak["angle"]), np.sin(streak["angle"])
        on, beside = [], []
        for t in np.arange(0.06, 0.3, 1 / size):  # outwards on both sides, past the stop
            for sign in (1, -1):
                x, y = beam["x"] + sign * t * ux, beam["y"] + sign * t * uy
                dx, dy = -uy * 6 / size, ux * 6 / size  # 6 px across the streak
                points = [(x, y, on), (x + dx, y + dy, beside), (x - dx, y - dy, beside)]
                for px, py, into in points:
                    col, row = int(px * size), int(py * size)
                    if 0 <= col < size and 0 <= row < size and valid[row, col]:
                        into.append(image[row, col])
        assert np.mean(on) > 1.5 * np.mean(beside), (np.mean(on), np.mean(beside))
        if checked == 2:
            break


def test_flight_tube_window_shadows_the_detector_corners():
    def windowed(scene) -> bool:
        return scene.params["window"] is not None

    size = 128
    for checked, (scene, image) in enumerate(recorded(28, size, want=windowed)):
        w = scene.params["window"]
        axis = (np.arange(size) + 0.5) / size
        far = np.hypot(axis[None, :] - w["x"], axis[:, None] - w["y"]) - w["radius"]
        outside, inside = far > 4 / size, (far < -4 / size) & (far > -0.1)
        lit = scene.expected(size) > 0  # module gaps left out
        assert outside.any(), "the window clears the whole detector"
        assert image[outside & lit].mean() < 0.1 * image[inside & lit].mean()
        if checked == 2:
            break
