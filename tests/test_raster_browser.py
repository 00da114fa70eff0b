"""Real-browser tests of the views of a large run, drawn as server-side pictures: the setting
XRAE_RASTER_ABOVE forces a small run onto that path, so the browser holds no point of it."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from dash.testing.wait import until
from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains

from app import create_app
from components.figures import CORRECTED, GROUPS, POINTS
from components.raster import warm_up
from pipeline.metrics import group_summary
from tests.conftest import WAIT_S, N, free_port, patient, write_synthetic_run
from tests.test_browser import (
    box_select,
    figure_data,
    gap_box,
    hover,
    lasso_select,
    to_pixels,
)

pytestmark = pytest.mark.browser
VIEWS = ("view-act", "view-fea", "view-prd")


@pytest.fixture
def pictures(dash_duo, tmp_path, monkeypatch):
    """The dashboard on a 60-image run drawn as pictures; yields (dash_duo, run)."""
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "10")
    run = write_synthetic_run(tmp_path / "data", n=N)
    warm_up()  # compiled once per process, before the page's first draw waits for it
    patient(dash_duo)
    dash_duo.start_server(create_app(tmp_path / "data"), port=free_port())
    dash_duo.wait_for_text_to_equal("#header-fea", f"{N} images")
    for view in VIEWS:
        until(lambda v=view: picture_of(dash_duo, v), timeout=WAIT_S)
    yield dash_duo, run


def picture_of(dash_duo, view: str) -> str | None:
    """The view's picture (a PNG data URI) once plotly has drawn it."""
    return figure_data(dash_duo, view, """(gd._fullLayout && gd._fullLayout.images
        && gd._fullLayout.images.length) ? gd._fullLayout.images[0].source : null""")


def png_pixels(uri: str) -> np.ndarray:
    """A picture's data URI as an RGBA array."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
                      .convert("RGBA")).astype(int)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def changed(dash_duo, view: str, before: str) -> bool:
    now = picture_of(dash_duo, view)
    return now is not None and now != before


def test_a_large_runs_views_are_pictures_with_no_points_in_the_browser(pictures):
    dash_duo, _ = pictures
    for view in VIEWS:
        assert figure_data(dash_duo, view, f"gd._fullData[{POINTS}].type") == "heatmap"
        assert picture_of(dash_duo, view).startswith("data:image/png;base64,")
        # Drawn at the plot area's own pixel size, which the browser reported (read each time:
        # the page may still be settling, e.g. a scrollbar appearing narrows every view).
        until(lambda v=view: near(picture_size(dash_duo, v), plot_size(dash_duo, v)),
              timeout=WAIT_S)
    assert dash_duo.get_logs() == []


def test_a_hidpi_screen_gets_pictures_at_its_device_pixels(pictures):
    dash_duo, run = pictures
    driver = dash_duo.driver
    window = driver.get_window_size()
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": window["width"], "height": window["height"], "deviceScaleFactor": 2,
        "mobile": False})
    try:
        assert driver.execute_script("return window.devicePixelRatio") == 2
        xy = np.asarray(run.emb("act"))
        lo, hi = np.percentile(xy, 10, axis=0), np.percentile(xy, 90, axis=0)
        dash_duo.driver.execute_script(
            "const gd = document.querySelector('#view-act .js-plotly-plot');"
            "Plotly.relayout(gd, {'xaxis.range': arguments[0], 'yaxis.range': arguments[1]});",
            [float(lo[0]), float(hi[0])], [float(lo[1]), float(hi[1])])
        # Twice the plot area's CSS pixels each way: as sharp as the screen.
        until(lambda: near(picture_size(dash_duo, "view-act"),
                           [2 * v for v in plot_size(dash_duo, "view-act")]), timeout=WAIT_S)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert dash_duo.get_logs() == []


def near(picture: list[int], plot: list[int]) -> bool:
    """A picture drawn for the plot area: each side within 5 % (at least 20 px, a scrollbar's
    width) of the area's, as the browser reports it while the page may still be settling."""
    return all(abs(a - b) <= max(20, 0.05 * b) for a, b in zip(picture, plot, strict=True))


def plot_size(dash_duo, view: str) -> list[int]:
    size = figure_data(dash_duo, view, "[gd._fullLayout._size.w, gd._fullLayout._size.h]")
    return [round(x) for x in size]


def picture_size(dash_duo, view: str) -> list[int]:
    return dash_duo.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        const img = new Image();
        img.onload = () => done([img.naturalWidth, img.naturalHeight]);
        img.src = gd._fullLayout.images[0].source;""", view)


@pytest.mark.parametrize(("tool", "space"), [("box", "fea"), ("lasso", "prd")])
def test_a_box_or_lasso_on_a_picture_lights_up_the_others_and_counts_outcomes(pictures, tool,
                                                                              space):
    dash_duo, run = pictures
    (x0, x1, y0, y1), expected = gap_box(np.asarray(run.emb(space)), 0.2, 0.8)
    assert 3 < len(expected) < N
    before = {v: picture_of(dash_duo, v) for v in VIEWS}
    (box_select if tool == "box" else lasso_select)(dash_duo, f"view-{space}", x0, x1, y0, y1)
    dash_duo.wait_for_text_to_equal("#text-selection-title",
                                    f"Selection: {len(expected)} images")
    for view in VIEWS:  # every view's picture is drawn again with the selection vivid
        until(lambda v=view: changed(dash_duo, v, before[v]), timeout=WAIT_S)
    want = group_summary(run.act[expected], run.prd[expected], 0.5)["overall"]
    tiles = {el.find_element("css selector", ".tile-label").text:
             el.find_element("css selector", ".tile-value").text
             for el in dash_duo.find_elements("#selection-summary .tile")}
    assert {k: int(tiles[k].replace(",", "")) for k in ("TP", "FP", "FN", "TN")} == {
        k: want[k] for k in ("TP", "FP", "FN", "TN")}
    assert dash_duo.get_logs() == []


def test_hovering_a_picture_shows_the_nearest_images_thumbnail_and_a_click_opens_it(pictures):
    dash_duo, run = pictures
    xy = np.asarray(run.emb("act"))
    row = int(np.argmin(np.hypot(*(xy - np.median(xy, axis=0)).T)))  # an image mid-view
    hover(dash_duo, "view-act", xy[row])
    label = f"#{row} · {run.images['image_id'].iloc[row]}"
    until(lambda: label in dash_duo.driver.execute_script(
        "return document.querySelector('#tooltip-act').textContent"), timeout=WAIT_S)
    dash_duo.wait_for_element("#tooltip-act .hover-thumb")
    [(x, y)] = to_pixels(dash_duo, "view-act", [xy[row]])
    actions = ActionChains(dash_duo.driver)
    actions.w3c_actions.pointer_action.move_to_location(round(x), round(y))
    actions.w3c_actions.pointer_action.click()
    actions.perform()
    dash_duo.wait_for_contains_text("#text-detail-title", run.images["image_id"].iloc[row])
    assert dash_duo.get_logs() == []


def test_zooming_in_draws_flowers_over_the_picture_and_redraws_it_for_the_box(pictures):
    dash_duo, run = pictures
    dash_duo.find_element("#radio-point-mode input[value='act']").click()
    dash_duo.wait_for_text_to_equal("#header-fea", f"flowers: {N} of {N} in view")
    xy = np.asarray(run.emb("fea"))
    lo, hi = np.percentile(xy, 30, axis=0), np.percentile(xy, 70, axis=0)
    inside = int(((xy >= lo) & (xy <= hi)).all(axis=1).sum())
    before = picture_of(dash_duo, "view-fea")
    dash_duo.driver.execute_script(
        "const gd = document.querySelector('#view-fea .js-plotly-plot');"
        "Plotly.relayout(gd, {'xaxis.range': arguments[0], 'yaxis.range': arguments[1]});",
        [float(lo[0]), float(hi[0])], [float(lo[1]), float(hi[1])])
    dash_duo.wait_for_text_to_equal("#header-fea", f"flowers: {inside} of {inside} in view")
    until(lambda: changed(dash_duo, "view-fea", before), timeout=WAIT_S)
    image = figure_data(dash_duo, "view-fea", "gd._fullLayout.images[0]")
    assert np.allclose([image["x"], image["x"] + image["sizex"]], [lo[0], hi[0]], rtol=1e-4)
    # The petals are in the picture (components.raster.with_petals), not layout shapes: the
    # inside of a petal is its attribute's colour at 0.9 over white.
    assert figure_data(dash_duo, "view-fea", "gd._fullLayout.shapes.length") == 0
    fills = (0.9 * np.array([hex_rgb(c) for c in run.colours]) + 0.1 * 255).round()
    pixels = png_pixels(picture_of(dash_duo, "view-fea"))[..., :3].reshape(-1, 1, 3)
    assert (np.abs(pixels - fills[None]).max(axis=2) <= 2).any(axis=1).sum() > 100
    # Overlays are SVG: the figure holds no WebGL trace at all.
    types = figure_data(dash_duo, "view-fea", "gd._fullData.map(t => t.type)")
    assert types[GROUPS] == types[CORRECTED] == "scatter" and "scattergl" not in types
    assert dash_duo.get_logs() == []
