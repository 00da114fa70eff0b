"""One image looks the same wherever it is shown: thumbnail, montage tile and detail image."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from components.figures import image_figure, thumbnail_uri
from components.science import detector_figure
from pipeline.errors import PipelineError
from pipeline.imaging import colour_lut, false_colour, log_intensity, window
from pipeline.montage import HEADER, LABEL_WIDTH, montage
from pipeline.store import DatasetWriter, open_dataset


def saxs_like(n: int = 96, seed: int = 0) -> np.ndarray:
    """Counts falling with radius plus one ring, a gap row and a hot pixel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n]
    r = np.hypot(x - n / 2, y - n / 3)
    counts = rng.poisson(2e4 / (1 + r) ** 2 + 200 * np.exp(-((r - 25) ** 2) / 4) + 3)
    counts = counts.astype(np.float32)
    counts[40] = -1  # a detector gap
    counts[5, 5] = 1e7  # a hot pixel: saturates, does not set the scale
    return counts


def decoded(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_the_thumbnail_and_the_montage_tile_of_an_image_are_the_same_pixels(tmp_path):
    image = saxs_like()
    with DatasetWriter(tmp_path, "one", ["Ring"]) as ds:
        ds.add(image, [1])
    sheet = np.asarray(montage(open_dataset("one", tmp_path), per_attribute=1, tile=48,
                               colour_map="Viridis"))
    tile = sheet[HEADER + 14 : HEADER + 48, LABEL_WIDTH : LABEL_WIDTH + 48]  # below its number
    drawn = false_colour(image, 48, "Viridis")
    assert np.array_equal(tile, drawn[14:])
    assert np.array_equal(decoded(thumbnail_uri(image, 48, "Viridis")), drawn)


def test_the_detail_and_detector_views_use_the_same_window_as_the_thumbnail():
    image = saxs_like()
    lo, hi = window(log_intensity(image))
    assert hi < np.log10(1e7)  # the hot pixel does not stretch the scale
    for trace in (image_figure(image)["data"][0], detector_figure(image, {"x": 48, "y": 32,
                                                                         "confidence": 1,
                                                                         "method": "test"})
                  ["data"][0]):
        assert (trace["zmin"], trace["zmax"]) == pytest.approx((lo, hi))
    # The brightest colour is reached inside the window, the darkest at its low end.
    rgb = false_colour(image)
    lut = colour_lut()
    assert tuple(rgb[5, 5]) == tuple(lut[-1]) and tuple(rgb[40, 0]) == tuple(lut[0])


def test_an_unknown_colour_map_is_a_clear_error():
    with pytest.raises(PipelineError, match="unknown colour map 'Nope'"):
        false_colour(saxs_like(), colour_map="Nope")


def test_detector_gaps_do_not_wash_out_the_window():
    image = np.random.default_rng(3).poisson(500, (64, 64)).astype(np.float32)
    image[:, ::8] = 0  # module gaps: an eighth of the frame counts nothing
    lo, hi = window(log_intensity(image))
    assert lo > 2.5  # the low end sits at the background (~500 counts), not at the gaps' 0
    rgb = false_colour(image)
    assert tuple(rgb[0, 0]) == tuple(colour_lut()[0])  # a gap is drawn darkest
    assert len({tuple(c) for c in rgb[:, 1:8].reshape(-1, 3)}) > 20  # the background has contrast
