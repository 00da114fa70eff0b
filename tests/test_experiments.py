"""Tests that wide-angle and grazing-incidence images show what real ones show, read off rendered
pixels: the WAXS polarisation and amorphous halo near 14 nm⁻¹; the GISAXS sample horizon, Yoneda
band and specular rod; and that tags stay honest in both geometries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.sim.rules import REF
from pipeline.simulate import draw_scene, simulate_dataset
from pipeline.store import open_dataset
from tests.test_simulate import visible_rings_stand_out


def scenes(experiment: str, want, count: int, seed: int = 5, limit: int = 400):
    """The first `count` scenes of `experiment` (seed [seed, i]) that satisfy `want`."""
    found = []
    for i in range(limit):
        scene = draw_scene(np.random.default_rng([seed, i]), experiment=experiment)
        if want(scene):
            found.append(scene)
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} such {experiment} scenes in {limit}")


def component_index(scene, role: str) -> int:
    return next(i for i, c in enumerate(scene.components) if c.role == role)


def only(scene, index: int) -> np.ndarray:
    """What component `index` alone adds to the expected image at the reference size."""
    return scene.expected(REF) - scene.expected(REF, without=(index,))


def offsets(scene, size: int = REF) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(size) + 0.5) / size
    dx = axis[None, :] - scene.params["beam"]["x"]
    dy = axis[:, None] - scene.params["beam"]["y"]
    return np.broadcast_arrays(dx, dy)


def isotropic_halo(scene) -> bool:
    seen = {c["role"]: c["visible"] for c in scene.measured["components"]}
    halo = [m for m in scene.params["modules"] if m["kind"] == "halo"]
    return seen.get("halo", False) and not halo[0].get("aniso")


# ---------------------------------------------------------------- WAXS


def test_waxs_amorphous_halo_peaks_near_14_per_nm_in_q():
    for scene in scenes("waxs", isotropic_halo, 3):
        halo = only(scene, component_index(scene, "halo"))
        dx, dy = offsets(scene)
        rho = np.hypot(dx, dy)
        bins = (rho * REF).astype(int)
        valid = scene.valid_mask(REF) & (halo > 0)
        mean = np.bincount(bins[valid], halo[valid]) / np.maximum(np.bincount(bins[valid]), 1)
        peak_q = float(scene.experiment.q((np.argmax(mean) + 0.5) / REF))
        assert 11.5 <= peak_q <= 16.5, peak_q


def test_waxs_polarisation_dims_the_halo_left_and_right_of_the_beam():
    """A horizontally polarised beam scatters less along χ = 0°, 180° than along ±90°."""
    checked = 0
    for scene in scenes("waxs", isotropic_halo, 6):
        halo = only(scene, component_index(scene, "halo"))
        dx, dy = offsets(scene)
        rho, chi = np.hypot(dx, dy), np.degrees(np.arctan2(dy, dx))
        ring = scene.valid_mask(REF) & (halo > 0.5 * halo.max()) & (rho > 0.25)
        across = ring & ((np.abs(chi) < 20) | (np.abs(chi) > 160))
        along = ring & (np.abs(np.abs(chi) - 90) < 20)
        if across.sum() < 30 or along.sum() < 30:
            continue
        two_theta = np.arctan(np.median(rho[ring]) / math.sqrt(3))
        expected = 1 - math.sin(two_theta) ** 2  # P(χ = 0) / P(χ = 90°)
        ratio = halo[across].mean() / halo[along].mean()
        assert ratio < 0.97 and ratio == pytest.approx(expected, abs=0.08), (ratio, expected)
        checked += 1
    assert checked >= 2


# ---------------------------------------------------------------- GISAXS


def has(role: str):
    return lambda scene: any(
        c["role"] == role and c["visible"] for c in scene.measured["components"]
    )


def sample_scattering(scene) -> np.ndarray:
    """The film's scattering alone: every component but the direct beam."""
    sample = tuple(i for i, c in enumerate(scene.components) if c.role != "beam")
    return scene.expected(REF) - scene.expected(REF, without=sample)


def test_gisaxs_film_scatters_nothing_below_its_horizon():
    for scene in scenes("gisaxs", has("lowq"), 3):
        film = sample_scattering(scene)
        _, dy = offsets(scene)
        horizon = scene.experiment.grazing["horizon"]
        near = np.abs(dy - horizon) < 0.06
        above = film[near & (dy < horizon - 2 / REF)].mean()
        below = film[near & (dy > horizon + 2 / REF)].mean()
        assert below < 0.01 * above, (below, above)
        assert not scene.valid_mask(REF)[dy > horizon + 2 / REF].any()


def test_gisaxs_yoneda_band_is_the_brightest_row_of_the_film_above_the_horizon():
    for scene in scenes("gisaxs", has("lowq"), 3):
        film = sample_scattering(scene)
        dx, dy = offsets(scene)
        g = scene.experiment.grazing
        beside = (np.abs(dx[0]) > 0.12) & (np.abs(dx[0]) < 0.3)  # off the specular rod
        rows = film[:, beside].mean(axis=1)
        band = (dy[:, 0] < g["horizon"]) & (dy[:, 0] > g["horizon"] - 0.15)
        brightest = dy[:, 0][band][np.argmax(rows[band])]
        assert abs(brightest - g["yoneda"]) <= g["yoneda_sigma"] + 1.5 / REF


def test_gisaxs_specular_rod_runs_up_from_the_beam_above_the_horizon():
    def clear_above(scene):  # no beamstop arm up along the rod (χ = −90° is up)
        stop = scene.params["beamstop"]
        arm = stop and stop.get("arm_angle", stop.get("angle"))
        return stop is None or abs((arm + math.pi / 2 + math.pi) % (2 * math.pi) - math.pi) > 0.5

    for scene in scenes("gisaxs", clear_above, 3):
        image = scene.expected(REF)
        dx, dy = offsets(scene)
        column = int(scene.params["beam"]["x"] * REF)
        g = scene.experiment.grazing
        rows = (dy[:, 0] < -g["specular"] - 0.02) & (dy[:, 0] > -0.3)
        rod = image[rows, column]
        aside = 0.5 * (image[rows, column - 6] + image[rows, column + 6])
        seen = (rod > 0) & (aside > 0)  # not in a gap between modules
        assert seen.sum() > 20 and np.median(rod[seen] / aside[seen]) > 1.5


@pytest.mark.parametrize("experiment", ["waxs", "gisaxs"])
def test_rings_tagged_visible_stand_above_what_lies_under_them(experiment):
    found = scenes(experiment, has("ring"), 3, seed=11)
    checked = sum(visible_rings_stand_out(scene, np.random.default_rng(0).poisson(
        scene.expected(REF))) for scene in found)
    assert checked >= 3


# ---------------------------------------------------------------- datasets and the command


def test_a_gisaxs_dataset_records_its_experiment(tmp_path, capsys):
    assert (
        main(
            [
                "simulate",
                "--n",
                "4",
                "--size",
                "64",
                "--experiment",
                "gisaxs",
                "--data-dir",
                str(tmp_path),
                "--id",
                "gi",
                "--quiet",
            ]
        )
        == 0
    )
    assert "GISAXS" in capsys.readouterr().out
    dataset = open_dataset("gi", tmp_path)
    assert dataset.meta["experiment"]["name"] == "gisaxs"


def test_saxs_is_the_default_and_draws_as_before(tmp_path):
    """Naming the default experiment changes nothing: the same bytes, no experiment in params."""
    a = simulate_dataset(tmp_path, 3, size=32, dataset_id="a", progress=False)
    b = simulate_dataset(tmp_path, 3, size=32, dataset_id="b", progress=False, experiment="saxs")
    da, db = open_dataset(a), open_dataset(b)
    assert all(np.array_equal(da.load_image(i), db.load_image(i)) for i in range(3))
    assert da.meta["experiment"]["name"] == "saxs"


def test_unknown_experiment_exits_2_naming_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["simulate", "--n", "2", "--experiment", "xpcs", "--data-dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "xpcs" in err and "gisaxs" in err
    assert not any(tmp_path.iterdir())
