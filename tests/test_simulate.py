"""Tests of the synthetic SAXS/WAXS generator: reproducible, honest tags, clean failures.

Small images (32–128 px) and few of them keep these fast; the visibility checks render at the
256 px reference grid where the rule is defined.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline import physics, simulate
from pipeline.attributes import ATTRIBUTES
from pipeline.cli import main
from pipeline.sim.geometry import Geometry, transmission
from pipeline.sim.rules import CONTRAST, K_SIGMA, MIN_AREA, MIN_SHADOW, Q_PER_WIDTH, REF
from pipeline.sim.scene import Scene
from pipeline.simulate import draw_scene, simulate_dataset, simulate_image
from pipeline.store import open_dataset

TAG = {name: i for i, name in enumerate(ATTRIBUTES)}


def scenes_with(tag: str, count: int, limit: int = 400):
    """The first `count` scenes (seed [7, i]) carrying `tag`, with their rng for the noise."""
    found = []
    for i in range(limit):
        rng = np.random.default_rng([7, i])
        scene = draw_scene(rng)
        if scene.tags[TAG[tag]]:
            found.append((scene, rng))
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} of {limit} scenes carry {tag!r}")


def pixel_rule(scene: Scene, index: int, size: int = REF) -> tuple[float, float]:
    """The visibility rule evaluated pixel by pixel on rendered images: (area, significance)."""
    rest = scene.expected(size, without=(index,))
    feature = scene.expected(size) - rest
    region = scene.valid_mask(size) & (feature >= CONTRAST * rest)
    z = feature[region].sum() / math.sqrt(max(rest[region].sum(), 1e-9))
    return region.sum() / size**2, z


def ring_params(signal: float, background: float = 20.0) -> dict:
    """A centred beam, a circular beamstop and one powder ring at q = 0.5 nm⁻¹ (64 px at 256),
    on a Pilatus-like detector, with parasitic scatter that has faded long before the ring."""
    return {
        "version": 2,
        "detector": "pilatus",
        "beam": {"x": 0.5, "y": 0.5},
        "signal": signal,
        "background": {
            "level": background,
            "structure": [[0.0] * 4] * 4,
            "gain_noise": 0.0,
            "gain_seed": 0,
        },
        "modules": [
            {
                "kind": "rings",
                "sequence": "single",
                "q": [0.5],
                "height": [1.0],
                "width": 0.012,
                "texture": {"kind": "powder"},
                "weight": 1.0,
            }
        ],
        "beamstop": {
            "kind": "circular",
            "radius": 0.04,
            "offset": [0.0, 0.0],
            "arm_angle": math.pi / 2,
            "arm_width": 0.01,
            "penumbra": 1.5 / REF,
            "transmission": 1e-12,
        },
        "parasitic": {"edge": 50.0, "exponent": 4.0, "core": 0.006, "streaks": []},
        "direct_beam": 1e7,
        "window": None,
        "zingers": [],
    }


# ---------------------------------------------------------------- determinism


def test_same_seed_writes_identical_bytes_and_image_i_regenerates_alone(tmp_path):
    a = simulate_dataset(tmp_path / "a", 5, size=64, seed=11, dataset_id="d", progress=False)
    b = simulate_dataset(tmp_path / "b", 5, size=64, seed=11, dataset_id="d", progress=False)
    assert (a / "act.npy").read_bytes() == (b / "act.npy").read_bytes()
    stored = sorted(f.relative_to(a) for f in (a / "images.zarr").rglob("*") if f.is_file())
    assert stored == sorted(f.relative_to(b) for f in (b / "images.zarr").rglob("*") if f.is_file())
    for name in stored:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    ds = open_dataset(a)
    image, tags, _ = simulate_image(np.random.default_rng([11, 3]), 64)
    np.testing.assert_array_equal(image, ds.load_image(3))
    np.testing.assert_array_equal(tags, ds.true_act[3])


def test_a_pool_of_processes_writes_the_same_dataset_as_one_process(tmp_path, monkeypatch):
    """Large datasets are drawn by a pool, one image per task in any process: every file but the
    creation time is the same, byte for byte, as one process writes."""
    from pipeline import pool

    def written(workers: int) -> dict[str, bytes]:
        with monkeypatch.context() as patch:
            patch.setattr(pool, "workers_for", lambda n_items, minimum: workers)
            path = simulate_dataset(tmp_path / str(workers), 21, size=64, seed=5,
                                    label_noise=0.05, dataset_id="d", progress=False)
        files = {f.relative_to(path).as_posix(): f.read_bytes()
                 for f in sorted(path.rglob("*")) if f.is_file()}
        meta = json.loads(files.pop("dataset.json"))
        meta.pop("created")
        return {**files, "dataset.json": json.dumps(meta, sort_keys=True).encode()}

    alone, pooled = written(0), written(2)
    assert any(name.startswith("images.zarr/") for name in pooled)
    assert pooled == alone


def test_different_seed_gives_different_images():
    one, _, _ = simulate_image(np.random.default_rng([1, 0]), 64)
    two, _, _ = simulate_image(np.random.default_rng([2, 0]), 64)
    assert not np.array_equal(one, two)


def test_tags_do_not_depend_on_image_size():
    for i in range(6):
        _, small, _ = simulate_image(np.random.default_rng([5, i]), 32)
        _, large, _ = simulate_image(np.random.default_rng([5, i]), 128)
        np.testing.assert_array_equal(small, large)


def test_sizes_32_and_1024_give_finite_counts():
    for size in (32, 1024):
        image, tags, params = simulate_image(np.random.default_rng([0, 1]), size)
        assert image.shape == (size, size) and image.dtype == np.float32
        assert np.isfinite(image).all() and image.min() >= 0
        assert np.array_equal(image, np.round(image))  # photon counts are whole numbers
        json.dumps(params)  # the parameters are JSON-able


def test_a_pixel_gain_drawn_far_below_one_leaves_no_negative_expected_count():
    """Image 19,816 of seed 0 has the strongest gain noise (0.198) and a pixel whose gain was
    drawn 5σ low; its background went below zero and the simulation of a 20,000-image dataset
    stopped there. Such a pixel is now dead (gain 0), and every expected count stays ≥ 0."""
    scene = draw_scene(np.random.default_rng([0, 19816]))
    background = scene.params["background"]
    gain = np.random.default_rng(background["gain_seed"]).standard_normal((256, 256),
                                                                          np.float32)
    assert (1 + np.float32(background["gain_noise"]) * gain).min() < 0  # the case this checks
    expected = scene.expected(256)
    assert np.isfinite(expected).all() and expected.min() >= 0
    image, _, _ = simulate_image(np.random.default_rng([0, 19816]), 256)
    assert np.isfinite(image).all() and image.min() >= 0


# ---------------------------------------------------------------- tag honesty


def test_every_image_carries_at_least_one_tag_and_many_rings_implies_ring():
    tags = np.array([simulate_image(np.random.default_rng([3, i]), 32)[1] for i in range(60)])
    assert tags.sum(axis=1).min() >= 1
    assert np.all(tags[:, TAG["Ring"]] >= tags[:, TAG["Many rings"]])
    assert np.all(tags[:, TAG["Ring"]] >= tags[:, TAG["Polycrystalline"]])
    assert not np.any(tags[:, TAG["Strong scattering"]] & tags[:, TAG["Weak scattering"]])


def test_linear_beamstop_shadow_runs_from_the_edge_to_the_beam_centre():
    size = 128
    for scene, rng in scenes_with("Linear beamstop", 4):
        image = rng.poisson(scene.expected(size))
        stop, beam = scene.params["beamstop"], scene.params["beam"]
        ux, uy = math.cos(stop["angle"]), math.sin(stop["angle"])
        axis, t = [], 0.0  # pixels along the bar's axis, from the beam centre outwards
        while True:
            col, row = int((beam["x"] + t * ux) * size), int((beam["y"] + t * uy) * size)
            if not (0 <= col < size and 0 <= row < size):
                break
            axis.append(image[row, col])
            last, t = (row, col), t + 0.5 / size
        assert min(*last, size - 1 - last[0], size - 1 - last[1]) == 0, "the bar stops short"
        axis = np.array(axis)
        assert len(axis) >= 10 and (axis == 0).mean() >= 0.9 and axis.max() <= 2
        lit = image[scene.valid_mask(size)]
        assert lit.mean() > 5 * axis.mean()  # the rest of the detector is not as dark


def test_circular_and_wedge_beamstops_cover_the_beam_centre():
    for tag in ("Circ. Beamstop", "Wedge beamstop"):
        for scene, _ in scenes_with(tag, 2):
            geom = Geometry(REF, scene.params["beam"])
            shadow = transmission(geom, scene.params["beamstop"]) < 0.5
            row = int(scene.params["beam"]["y"] * REF)
            col = int(scene.params["beam"]["x"] * REF)
            assert shadow[row, col], f"{tag}: the beam centre is not in the shadow"
            assert shadow.mean() >= MIN_SHADOW


def test_beam_off_image_tag_means_the_centre_is_outside_the_detector():
    seen = {0: 0, 1: 0}
    for i in range(80):
        _, tags, params = simulate_image(np.random.default_rng([9, i]), 32)
        x, y = params["beam"]["x"], params["beam"]["y"]
        off = not (0 <= x < 1 and 0 <= y < 1)
        assert tags[TAG["Beam Off Image"]] == off
        seen[int(off)] += 1
        if off:  # the beamstop sits on the beam: none on the detector
            beamstops = ("Circ. Beamstop", "Linear beamstop", "Wedge beamstop")
            assert not any(tags[TAG[t]] for t in beamstops)
    assert seen[0] and seen[1]


def test_faint_ring_is_untagged_and_below_the_rule_bright_ring_is_tagged_and_seen():
    faint, bright = Scene(ring_params(0.05)), Scene(ring_params(1.0))
    assert not faint.tags[TAG["Ring"]]
    area, z = pixel_rule(faint, 0)
    assert area < MIN_AREA or z < K_SIGMA, "an untagged ring passes the rule on the pixels"
    assert bright.tags[TAG["Ring"]]
    area, z = pixel_rule(bright, 0)
    assert area >= MIN_AREA and z >= K_SIGMA
    # in a noisy image the ring band is far brighter than the annuli just inside and outside it
    image = np.random.default_rng(0).poisson(bright.expected(REF))
    rho = np.hypot(
        *np.meshgrid((np.arange(REF) + 0.5) / REF - 0.5, (np.arange(REF) + 0.5) / REF - 0.5)
    )
    ring = 0.5 / Q_PER_WIDTH
    band, beside = (
        np.abs(rho - ring) < 1.0 / REF,
        np.abs(np.abs(rho - ring) - 8.0 / REF) < 1.0 / REF,
    )
    assert image[band].mean() > image[beside].mean() + 5 * math.sqrt(
        image[beside].mean() / beside.sum()
    )


def test_rings_too_close_to_resolve_count_once():
    def four_rings(q):
        params = ring_params(20.0)
        params["modules"][0] |= {"q": q, "height": [1.0] * 4}
        return Scene(params)

    width = ring_params(1.0)["modules"][0]["width"]
    blended = four_rings([0.4, 0.4 + 1.5 * width, 0.7, 0.7 + 1.5 * width])
    apart = four_rings([0.4, 0.5, 0.6, 0.7])
    for scene in (blended, apart):
        assert all(c["visible"] for c in scene.measured["components"] if c["role"] == "ring")
    assert blended.tags[TAG["Ring"]] and not blended.tags[TAG["Many rings"]]
    assert apart.tags[TAG["Many rings"]]


def visible_rings_stand_out(scene, image) -> int:
    """Check that every ring the scene tags visible stands more than 3σ above what lies under
    it in the recorded `image`; return how many rings were checked."""
    checked = 0
    for index, seen in enumerate(scene.measured["components"]):
        if seen["role"] != "ring" or not seen["visible"]:
            continue
        rest = scene.expected(REF, without=(index,))
        feature = scene.expected(REF) - rest
        region = scene.valid_mask(REF) & (feature >= CONTRAST * rest)
        excess = image[region].sum() - rest[region].sum()
        assert region.sum() > 0
        assert excess > 3 * math.sqrt(rest[region].sum()), seen
        checked += 1
    return checked


def test_rings_tagged_visible_stand_above_what_lies_under_them():
    checked = sum(visible_rings_stand_out(scene, rng.poisson(scene.expected(REF)))
                  for scene, rng in scenes_with("Ring", 4))
    assert checked >= 4


def lattice_scene(lattice: str, sigma_dw: float, signal: float = 20.0, radius=None) -> Scene:
    """A powder of a BCC or FCC superlattice whose first reflection is at q = 0.3 nm⁻¹ (38 px
    at 256), in the setting of ring_params; `sigma_dw` (nm) fades the higher orders."""
    params = ring_params(signal)
    a = 2 * math.pi * math.sqrt(physics.cubic_reflections(lattice)[0][0]) / 0.3
    params["modules"] = [
        {
            "kind": "lattice",
            "lattice": lattice,
            "a": a,
            "radius": radius or 0.3 * a,
            "width": 0.012,
            "sigma_dw": sigma_dw,
            "disorder": 0.0,
            "texture": {"kind": "powder"},
            "weight": 1.0,
        }
    ]
    return Scene(params)


def seen_in_noisy_image(scene: Scene) -> int:
    """How many of the scene's rings stand out in a recorded (Poisson) image of it."""
    return visible_rings_stand_out(scene, np.random.default_rng(1).poisson(scene.expected(REF)))


def test_two_reflections_of_a_lattice_do_not_name_it_and_three_do():
    # the same FCC crystal; more thermal disorder fades (220), leaving (111) and (200)
    two, three = lattice_scene("fcc", sigma_dw=4.0), lattice_scene("fcc", sigma_dw=3.0)
    assert seen_in_noisy_image(two) == 2 and seen_in_noisy_image(three) == 3
    assert not two.tags[TAG["FCC"]] and not two.tags[TAG["BCC"]]
    assert three.tags[TAG["FCC"]] and not three.tags[TAG["BCC"]]
    assert lattice_scene("bcc", sigma_dw=0.5).tags[TAG["BCC"]]
    assert not lattice_scene("bcc", sigma_dw=3.0).tags[TAG["BCC"]]


def test_three_bcc_rings_that_read_as_hexagonal_do_not_name_bcc():
    # particles whose form factor vanishes on (200): (110), (211), (220) at 1 : √3 : 2 are
    # also the first rings of a hexagonal mesophase; exposed longer, (200) and more show
    radius = 4.493 / (0.3 * math.sqrt(2))
    faint = lattice_scene("bcc", sigma_dw=0.5, radius=radius)
    assert seen_in_noisy_image(faint) == 3
    assert [c["name"] for c in faint.measured["components"] if c["visible"]][-2:] == [
        "BCC peak 3",
        "BCC peak 4",
    ]
    assert not faint.tags[TAG["BCC"]] and faint.tags[TAG["Higher orders"]]
    assert lattice_scene("bcc", sigma_dw=0.5, signal=100.0, radius=radius).tags[TAG["BCC"]]


def test_visibility_is_judged_consistently_on_cells_and_pixels():
    for scene, _ in scenes_with("Halo", 2):
        index = next(i for i, c in enumerate(scene.measured["components"]) if c["role"] == "halo")
        area, z = pixel_rule(scene, index)
        assert area >= MIN_AREA * 0.5 and z >= K_SIGMA * 0.5


# ---------------------------------------------------------------- datasets and errors


def test_label_noise_flips_fraction_p_and_true_act_differs_exactly_there(tmp_path):
    path = simulate_dataset(
        tmp_path, 30, size=32, seed=4, label_noise=0.1, dataset_id="noisy", progress=False
    )
    ds = open_dataset(path)
    flipped = ds.act != ds.true_act
    assert flipped.sum() == round(0.1 * 30 * len(ATTRIBUTES))
    np.testing.assert_array_equal(flipped, simulate.annotation_flips(30, 4, 0.1))
    assert ds.meta["label_noise"] == 0.1 and ds.meta["n_flipped"] == flipped.sum()
    assert set(ds.images["split"]) == {"train", "test"}
    assert (ds.images["split"] == "test").sum() == 6


def test_clean_dataset_has_true_act_equal_to_act(tmp_path):
    ds = open_dataset(simulate_dataset(tmp_path, 4, size=32, dataset_id="clean", progress=False))
    np.testing.assert_array_equal(ds.act, ds.true_act)
    assert ds.meta["n_flipped"] == 0 and ds.meta["visibility_rule"]["k_sigma"] == K_SIGMA


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "number of images"),
        (["--n", "2", "--size", "16"], "image size"),
        (["--n", "2", "--size", "2048"], "image size"),
        (["--n", "2", "--label-noise", "0.7"], "label noise"),
        (["--n", "2", "--label-noise", "-0.1"], "label noise"),
        (["--n", "2", "--id", "../escape"], "invalid dataset id"),
    ],
)
def test_bad_simulate_input_exits_2_naming_the_problem(tmp_path, capsys, args, message):
    code = main(["simulate", *args, "--quiet", "--data-dir", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())


def test_simulate_killed_midway_leaves_no_dataset_directory(tmp_path, monkeypatch):
    real = simulate.simulate_image
    calls = {"n": 0}

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed at image 3")
        return real(*args)

    monkeypatch.setattr(simulate, "simulate_image", failing)
    with pytest.raises(RuntimeError, match="killed"):
        simulate_dataset(tmp_path, 6, size=32, dataset_id="half", progress=False)
    assert list((tmp_path / "datasets").iterdir()) == []


def test_command_line_prints_where_it_wrote_and_prevalence(tmp_path, capsys):
    args = ["simulate", "--n", "3", "--size", "32", "--id", "tiny", "--quiet",
            "--data-dir", str(tmp_path)]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0
    assert str(tmp_path / "datasets" / "tiny") in out
    assert all(name in out for name in ATTRIBUTES)
    assert main(args) == 2  # an existing id is not overwritten
    assert "already exists" in capsys.readouterr().err


# ---------------------------------------------------------------- physics


def test_percus_yevick_meets_the_compressibility_limit_and_tends_to_one():
    q = np.array([1e-4, 50.0])
    for phi in (0.1, 0.3, 0.45):
        s = physics.percus_yevick(q, diameter=10.0, phi=phi)
        assert s[0] == pytest.approx((1 - phi) ** 4 / (1 + 2 * phi) ** 2, rel=1e-3)
        assert s[1] == pytest.approx(1.0, abs=0.05)


def test_bcc_and_fcc_reflections_follow_the_selection_rules():
    assert [m for m, _ in physics.cubic_reflections("bcc", 5)] == [2, 4, 6, 8, 10]
    assert [m for m, _ in physics.cubic_reflections("fcc", 5)] == [3, 4, 8, 11, 12]
    assert dict(physics.cubic_reflections("fcc", 3)) == {3: 8, 4: 6, 8: 12}
    np.testing.assert_allclose(physics.sequence_ratios("bcc", 3), np.sqrt([1, 2, 3]))


def test_angular_factors_keep_the_mean_intensity():
    chi = np.linspace(-np.pi, np.pi, 20000, endpoint=False)
    assert physics.wrapped_cauchy(chi, 0.3, 0.8, 2).mean() == pytest.approx(1.0, rel=1e-6)
    spots = physics.grain_spots(chi, [0.1, 2.0, -1.0], [1.0, 0.5, 2.0], 0.05)
    assert spots.mean() == pytest.approx(1.0, rel=1e-3)
    grid = -np.pi + (np.arange(1440) + 0.5) * (2 * np.pi / 1440)
    for width in (0.02, 2.0):  # the windowed table equals the full sum, narrow or wide
        full = physics.grain_spots(grid, [0.1, 3.1], [1.0, 2.0], width)
        np.testing.assert_allclose(
            physics.grain_spots_table(1440, [0.1, 3.1], [1.0, 2.0], width), full, atol=1e-6
        )
    assert physics.sphere_form_factor(np.array([0.0]), 10.0, 0.1)[0] == pytest.approx(1.0)
