"""Tests of the montage: a PNG grid with one row per attribute, in log-intensity false colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.attributes import ATTRIBUTES
from pipeline.cli import main
from pipeline.imaging import colour_lut, false_colour
from pipeline.montage import BACKGROUND as BACKGROUND_RGB
from pipeline.montage import EMPTY, HEADER, LABEL_WIDTH, PAD, montage_size
from pipeline.readers import read_image
from pipeline.simulate import simulate_dataset
from pipeline.store import DatasetWriter


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("montage")
    simulate_dataset(root, 14, size=32, seed=2, dataset_id="sim", progress=False)
    return root


def test_montage_writes_a_png_of_the_expected_grid_size(data_dir, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    code = main(
        [
            "montage",
            "--dataset",
            "sim",
            "--out",
            str(out),
            "--per-attribute",
            "3",
            "--tile",
            "40",
            "--data-dir",
            str(data_dir),
        ]
    )
    assert code == 0 and str(out) in capsys.readouterr().out
    with Image.open(out) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert png.size == montage_size(len(ATTRIBUTES), 3, 40)
        assert png.size == (LABEL_WIDTH + 3 * (40 + PAD) + PAD, HEADER + 17 * (40 + PAD) + PAD)
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # no temporary file left


def test_attribute_with_no_examples_shows_empty_tiles(tmp_path):
    names = ["Ring", "Halo"]
    with DatasetWriter(tmp_path, "two", names) as ds:
        for i in range(3):
            ds.add(np.random.default_rng(i).poisson(5.0, (16, 16)), [1, 0])
    out = tmp_path / "two.png"
    assert (
        main(
            [
                "montage",
                "--dataset",
                "two",
                "--out",
                str(out),
                "--per-attribute",
                "2",
                "--tile",
                "20",
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    sheet = np.asarray(Image.open(out))
    top = HEADER + 1 * (20 + PAD)  # the Halo row: no image carries it
    assert tuple(sheet[top + 10, LABEL_WIDTH + 10]) == EMPTY
    assert tuple(sheet[HEADER + 12, LABEL_WIDTH + 15]) != EMPTY  # the Ring row has images


def test_false_colour_maps_zero_to_the_dark_end_and_the_peak_to_the_bright_end():
    image = np.zeros((8, 8), dtype=np.float32)
    image[4, 4] = 1e5
    rgb = false_colour(image)
    lut = colour_lut()
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == tuple(lut[0]) and tuple(rgb[4, 4]) == tuple(lut[-1])
    assert false_colour(image, 4).shape == (4, 4, 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "missing"], "no dataset"),
        (["--dataset", "sim", "--per-attribute", "0"], "--per-attribute"),
        (["--dataset", "sim", "--out", "sheet.jpg"], ".png"),
        (["--dataset", "sim", "--colour-map", "Nope"], "unknown colour map"),
    ],
)
def test_bad_montage_input_exits_2_naming_the_problem(data_dir, tmp_path, capsys, args, message):
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "x.png")]
    assert main(["montage", *args, "--data-dir", str(data_dir)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


REAL_IMAGE = Path(__file__).parent / "data" / "protein_diffraction_263060g10.png"


def test_compare_sheet_puts_the_real_image_beside_simulated_ones_drawn_alike(data_dir, tmp_path):
    out = tmp_path / "compare.png"
    args = ["montage", "--dataset", "sim", "--out", str(out), "--tile", "48",
            "--compare", str(REAL_IMAGE), "--inverted", "--data-dir", str(data_dir)]
    assert main(args) == 0
    sheet = np.asarray(Image.open(out))
    assert sheet.shape[:2] == montage_size(3, 4, 48)[::-1]  # one real row, two simulated
    real_tile = sheet[HEADER : HEADER + 48, LABEL_WIDTH : LABEL_WIDTH + 48]
    counts = read_image(REAL_IMAGE, inverted=True)
    drawn = false_colour(counts, 48)  # the same function draws every tile
    # captions cover the tile's top and bottom rows: compare the middle band
    np.testing.assert_array_equal(real_tile[16:32], drawn[16:32])
    first_sim = HEADER + 48 + PAD
    sim_tile = sheet[first_sim : first_sim + 48, LABEL_WIDTH : LABEL_WIDTH + 48]
    assert (sim_tile != np.array(BACKGROUND_RGB)).any()


def test_compare_with_a_missing_image_exits_2_naming_it(data_dir, tmp_path, capsys):
    missing = tmp_path / "nowhere.tif"
    args = ["montage", "--dataset", "sim", "--out", str(tmp_path / "c.png"),
            "--compare", str(missing), "--data-dir", str(data_dir)]
    assert main(args) == 2
    assert "nowhere.tif" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
