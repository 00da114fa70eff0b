"""The server-side path of large runs' views: selections found from the box or lasso drawn,
hostile selection events refused, pictures that colour, fade and light up the right pixels, and
the callbacks that send pictures instead of points (forced onto small runs by the setting)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from dash import Patch, no_update
from PIL import Image

from callbacks import legends, views
from callbacks import raster as raster_callbacks
from callbacks.common import extent
from components import raster
from components.figures import GROUPS, POINTS, SELECTED, flower_geometry, flower_templates
from pipeline import corrections
from pipeline.errors import PipelineError
from tests.test_callbacks import EVERY, call, decode, texts
from tests.test_callbacks import run as run  # noqa: F401  (fixture)

SQUARE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5], [2.0, 2.0]]


@pytest.fixture
def pictures(monkeypatch):
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "10")


def test_a_box_selects_the_points_inside_it_edges_included_in_either_drag_direction():
    xy = np.array(SQUARE)
    box = {"range": {"x": [1.0, 0.0], "y": [0.0, 1.0]}}
    assert raster.rows_in_shape(xy, box) == [0, 1, 2, 3, 4]
    assert raster.rows_in_shape(xy, {"range": {"x": [1.5, 2.5], "y": [1.5, 2.5]}}) == [5]
    assert raster.rows_in_shape(xy, {"range": {"x": [5, 6], "y": [5, 6]}}) == []


def test_a_lasso_selects_the_points_inside_its_polygon_not_its_bounding_box():
    rng = np.random.default_rng(0)
    xy = rng.random((2000, 2)) * 2
    triangle = {"lassoPoints": {"x": [0.0, 2.0, 0.0], "y": [0.0, 0.0, 2.0]}}
    got = raster.rows_in_shape(xy, triangle)
    assert got == np.flatnonzero(xy.sum(axis=1) < 2).tolist()
    # A concave outline (an L): the notch's points are left out.
    ell = {"lassoPoints": {"x": [0, 2, 2, 1, 1, 0], "y": [0, 0, 1, 1, 2, 2]}}
    notch = (xy[:, 0] > 1) & (xy[:, 1] > 1)
    assert set(raster.rows_in_shape(xy, ell)) == set(np.flatnonzero(~notch).tolist())


@pytest.mark.parametrize("event", [
    {"range": {"x": [0, "1"], "y": [0, 1]}},
    {"range": {"x": [0, float("nan")], "y": [0, 1]}},
    {"range": {"x": [0, float("inf")], "y": [0, 1]}},
    {"range": {"x": [0, 1, 2], "y": [0, 1, 2]}},
    {"range": {"x": [0, 1]}},
    {"range": [0, 1]},
    {"lassoPoints": {"x": [0, 1], "y": [0, 1]}},
    {"lassoPoints": {"x": [0, 1, 2], "y": [0, 1]}},
    {"lassoPoints": {"x": [True, 1, 2], "y": [0, 1, 2]}},
    {"lassoPoints": {"x": list(range(raster.MAX_LASSO + 1)),
                     "y": list(range(raster.MAX_LASSO + 1))}},
])
def test_a_malformed_or_oversized_selection_event_is_refused(event):
    with pytest.raises(raster.SelectionRefused, match="selection"):
        raster.rows_in_shape(np.array(SQUARE), event)


def test_an_event_without_a_box_or_lasso_selects_nothing_new():
    assert raster.rows_in_shape(np.array(SQUARE), {"points": []}) is None
    assert raster.rows_in_shape(np.array(SQUARE), None) is None


def test_the_raster_setting_is_a_whole_number(monkeypatch):
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "1000")
    assert raster.is_raster(1001) and not raster.is_raster(1000)
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "many")
    with pytest.raises(PipelineError, match="XRAE_RASTER_ABOVE"):
        raster.raster_above()
    monkeypatch.delenv("XRAE_RASTER_ABOVE")
    assert raster.raster_above() == raster.RASTER_ABOVE


def test_a_picture_draws_focused_points_vivid_in_their_colour_and_the_rest_faded():
    xy = np.array([[0.25, 0.25], [0.75, 0.75]], np.float32)
    scale = [[0, "#0000ff"], [1, "#ff0000"]]
    rgba = raster.render_view(xy, [0.0, 1.0], scale, (0, 1), [True, False], [0, 1, 0, 1],
                              (40, 40))
    assert rgba.shape == (40, 40, 4)
    low_left, up_right = rgba[30, 10], rgba[10, 30]  # rows run top to bottom
    assert low_left[2] > 200 and low_left[0] < 50 and low_left[3] == raster.FOCUS_ALPHA
    assert up_right[0] > 200 and 0 < up_right[3] <= raster.BACKGROUND_ALPHA
    assert rgba[20, 20, 3] == 0  # nothing drawn between them


def test_outcome_codes_are_coloured_by_category_not_averaged():
    xy = np.array([[0.5, 0.5]] * 2 + [[0.1, 0.1]], np.float32)
    scale = [[0, "#00ff00"], [0.5, "#00ff00"], [0.5, "#ff0000"], [1, "#ff0000"]]
    rgba = raster.render_view(xy, [0.0, 0.0, 3.0], scale, (0, 3), [True] * 3, [0, 1, 0, 1],
                              (20, 20), categories=4)
    assert tuple(rgba[10, 10, :3]) == (0, 255, 0)
    assert tuple(rgba[18, 2, :3]) == (255, 0, 0)


def decode_png(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_a_large_runs_full_draw_sends_pictures_at_the_views_size_not_points(run, pictures):
    out = call(views.draw_views, "radio-point-mode.value", run.id, "dots", EVERY, "error", 0,
               "cosine", 500, 0.5, [], "any", "act", [], [], None, None, None, "with", None,
               "one", [300, 200], None, None)
    act, fea = out[0], out[1]
    assert act["data"][POINTS]["type"] == "heatmap"
    assert decode_png(act["layout"]["images"][0]["source"]).shape == (200, 300, 4)
    assert decode_png(fea["layout"]["images"][0]["source"]).shape[:2] == raster.DEFAULT_SIZE[::-1]
    # A HiDPI screen (2 device pixels per CSS pixel) gets a picture twice as many pixels wide,
    # stretched over the same box.
    sharp = call(views.draw_views, "radio-point-mode.value", run.id, "act", EVERY, "error", 0,
                 "cosine", 500, 0.5, [], "any", "act", [], [], None, None, None, "with", None,
                 "one", [300, 200, 2], None, None)[0]["layout"]["images"][0]
    assert decode_png(sharp["source"]).shape[:2] == (400, 600)
    assert sharp["sizex"] == act["layout"]["images"][0]["sizex"]
    xy = np.asarray(run.emb("act"))
    assert act["layout"]["images"][0]["x"] < xy[:, 0].min()
    assert act["layout"]["xaxis"]["range"][1] > xy[:, 0].max()


@pytest.mark.parametrize(("sent", "size", "ratio"), [
    ([300, 200], (300, 200), 1.0),
    ([300, 200, 2], (600, 400), 2.0),
    ([300, 200, 1.5], (450, 300), 1.5),
    ([300, 200, 8], (600, 400), 2.0),  # more than a HiDPI screen's ratio: drawn at 2
    ([300, 200, 0.25], (300, 200), 1.0),
    ([300, 200, float("nan")], (300, 200), 1.0),
    ([300, 200, "2"], (300, 200), 1.0),
    ([5000, 200, 2], (2400, 400), 2.0),
    ("300x200", raster.DEFAULT_SIZE, 1.0),
])
def test_a_picture_is_drawn_at_the_screens_device_pixels_within_limits(sent, size, ratio):
    assert raster.pixel_size(sent) == size
    assert raster.pixel_ratio(sent) == ratio


def test_a_box_in_a_large_runs_view_selects_on_the_server_and_relights_all_three(run, pictures):
    xy = np.asarray(run.emb("fea"))
    event = {"points": [], "range": {"x": [-0.5, 1.0], "y": [-1.0, 0.5]}}
    rows, source = call(views.select, "view-fea.selectedData", None, event, None, None, [],
                        run.id, [])
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= 1.0) & (xy[:, 1] >= -1.0) & (xy[:, 1] <= 0.5)
    assert rows == np.flatnonzero(inside).tolist() and source == "fea"
    hostile = {"range": {"x": [0, "1e9"], "y": [0, 1]}}
    assert call(views.select, "view-fea.selectedData", None, hostile, None, None, [], run.id,
                []) == (no_update, no_update)
    before = call(raster_callbacks.redraw_pictures, "store-selection.data", [], 0.5, "one", [],
                  "any", "act", None, "with", 0, [], None, None, None, None, None, None, run.id,
                  "dots", "error", 0, "cosine")
    after = call(raster_callbacks.redraw_pictures, "store-selection.data", rows, 0.5, "one", [],
                 "any", "act", None, "with", 0, [], None, None, None, None, None, None, run.id,
                 "dots", "error", 0, "cosine")
    for old, new in zip(before, after, strict=True):
        assert isinstance(new, Patch)
        old_alpha = decode_png(picture_of(old))[..., 3]
        new_alpha = decode_png(picture_of(new))[..., 3]
        # Fewer pixels stay vivid once only the selected images are in focus.
        assert (new_alpha == raster.FOCUS_ALPHA).sum() < (old_alpha == raster.FOCUS_ALPHA).sum()


def picture_of(patch: Patch) -> str:
    for op in patch.to_plotly_json()["operations"]:
        if op["location"] == ["layout", "images"]:
            return op["params"]["value"][0]["source"]
    raise AssertionError("no picture in the patch")


def test_a_zoom_draws_that_view_for_its_box_and_brings_the_others_too(run, pictures):
    """A zoom's answer carries all three views: when a zoom in one view comes while the last
    zoom in another is still being answered, Dash drops that first answer, and this one must
    put its view right too (a HiDPI test caught a picture left at the old size that way)."""
    out = call(raster_callbacks.redraw_pictures, "store-viewport-prd.data", [], 0.5, "one", [],
               "any", "act", None, "with", 0, [], None, None, [0, 1, 0, 1], None, None, None,
               run.id, "dots", "error", 0, "cosine")
    images = [[op for op in patch.to_plotly_json()["operations"]
               if op["location"] == ["layout", "images"]][0]["params"]["value"][0]
              for patch in out]
    assert (images[2]["x"], images[2]["sizex"], images[2]["y"], images[2]["sizey"]) == \
        (0, 1, 1, 1)
    for space, image in zip(("act", "fea"), images, strict=False):  # their own whole maps
        x0, x1, y0, y1 = extent(run, space)
        assert (image["x"], image["sizex"], image["y"]) == (x0, x1 - x0, y1)


def test_a_zoom_draws_only_the_zoomed_view_again_until_a_correction_changes_them_all(
        run, pictures, monkeypatch, tmp_path):
    """The views a zoom leaves as they were come from the views drawn last, by the full draw
    or a redraw (the answer still carries all three); a label corrected since changes what
    every view shows (its diamonds, its colours), so all three are drawn again."""
    drawn = []
    original = raster_callbacks.picture_view

    def counting(run, space, *args):
        drawn.append(space)
        return original(run, space, *args)
    monkeypatch.setattr(raster_callbacks, "picture_view", counting)
    monkeypatch.setattr(views, "picture_view", counting)

    def redraw(trigger, vp_fea, version=0):
        return call(raster_callbacks.redraw_pictures, trigger, [], 0.5, "one", [], "any", "act",
                    None, "with", version, [], None, vp_fea, None, None, None, None, run.id,
                    "dots", "error", 0, "cosine")
    figures, _ = views.build_views(run, "dots", None, "error", 0, "cosine", None,
                                   np.full(len(run.attributes), 0.5), ([], "any", "act", None),
                                   [], [], dict.fromkeys(("act", "fea", "prd")), "with")
    assert drawn == ["act", "fea", "prd"]  # the full draw, as the page starts
    drawn.clear()
    first = redraw("store-groups.data", None)
    assert drawn == []  # nothing changed since: the views drawn are sent again
    zoom = [-1.0, 1.0, -1.0, 1.0]
    drawn.clear()
    zoomed = redraw("store-viewport-fea.data", zoom)
    assert drawn == ["fea"]
    assert picture_of(zoomed[0]) == picture_of(first[0])
    assert picture_of(zoomed[2]) == picture_of(first[2])
    assert picture_of(zoomed[1]) != picture_of(first[1])

    j = int(np.argmax(np.abs(np.asarray(run.act[3], float) - np.asarray(run.prd[3]))))
    corrections.set_label(tmp_path / "data", run.meta["dataset"], run.images["image_id"][3],
                          run.attributes[j], 1 - int(run.act[3, j]), author="ana")
    drawn.clear()
    corrected = redraw("store-corrections-version.data", zoom, version=1)
    assert drawn == ["act", "fea", "prd"]
    for k in (0, 2):  # the whole maps, image 3 in them: its colour moved
        assert picture_of(corrected[k]) != picture_of(zoomed[k])


def test_a_zoom_sends_only_the_views_the_page_does_not_already_show(run, pictures):
    """Each picture carries its key; the page sends back the key of the picture each view
    shows. A zoom then sends the zoomed view alone, and also any view whose last answer never
    reached the page (Dash drops an answer when a newer request of the same callback is out)."""
    figures, _ = views.build_views(run, "dots", None, "error", 0, "cosine", None,
                                   np.full(len(run.attributes), 0.5), ([], "any", "act", None),
                                   [], [], dict.fromkeys(("act", "fea", "prd")), "with")
    shown = [f["layout"]["meta"]["picture"] for f in figures]
    assert len(set(shown)) == 3

    def zoom(on_screen):
        return call(raster_callbacks.redraw_pictures, "store-viewport-fea.data", [], 0.5, "one",
                    [], "any", "act", None, "with", 0, [], None, [-1.0, 1.0, -1.0, 1.0], None,
                    None, None, None, run.id, "dots", "error", 0, "cosine", None, None, True,
                    *on_screen)
    out = zoom(shown)
    assert out[0] is no_update and out[2] is no_update
    patch = {tuple(op["location"]): op["params"]["value"]
             for op in out[1].to_plotly_json()["operations"]}
    assert patch[("layout", "meta")]["picture"] not in shown  # a new picture, a new key
    # The page never got act's last picture (an answer dropped): act is sent again.
    again = zoom(["a key of a picture the page never got", *shown[1:]])
    assert isinstance(again[0], Patch) and again[2] is no_update
    assert picture_of(again[0]) == figures[0]["layout"]["images"][0]["source"]


def test_saved_groups_are_ringed_in_view_and_small_runs_are_left_to_their_points(run,
                                                                                  monkeypatch):
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "10")
    group = {"run": run.id, "name": "g", "colour": "#ff7f0e", "indices": [1, 2, 3]}
    out = call(raster_callbacks.redraw_pictures, "store-groups.data", [], 0.5, "one", [], "any",
               "act", None, "with", 0, [group], None, None, None, None, None, None, run.id,
               "dots", "error", 0, "cosine")
    ops = {tuple(op["location"]): op["params"].get("value")
           for op in out[0].to_plotly_json()["operations"]}
    assert ops[("data", GROUPS)]["marker"]["color"] == ["#ff7f0e"] * 3
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "1000")
    assert call(raster_callbacks.redraw_pictures, "store-groups.data", [], 0.5, "one", [], "any",
                "act", None, "with", 0, [group], None, None, None, None, None, None, run.id,
                "dots", "error", 0, "cosine") == [no_update] * 3


def test_a_large_run_rings_only_the_selected_flowers(run, pictures):
    everything = list(range(len(run)))
    out = call(raster_callbacks.redraw_pictures, "store-selection.data", everything, 0.5, "one",
               [], "any", "act", None, "with", 0, [], None, None, None, None, None, None, run.id,
               "joint", "error", 0, "cosine", 7)
    for space, patch in zip(("act", "fea", "prd"), out, strict=True):
        rings = {tuple(op["location"]): op["params"].get("value")
                 for op in patch.to_plotly_json()["operations"]}[("data", SELECTED)]
        ringed = decode(rings["x"])
        flowers, _, _ = views.flowered(run, space, np.ones(len(run), bool), None, 7)
        # 7 flowers drawn, all selected: 7 rings, at the flowers' centres, not one per image
        assert len(ringed) == 7 < len(run)
        assert sorted(ringed.tolist()) == sorted(np.asarray(run.emb(space))[flowers, 0].tolist())


def test_petals_are_drawn_into_a_picture_where_they_lie_and_nowhere_else():
    # One flower of two petals at the picture's centre: "a" points up, "b" down; "b" unshown.
    shapes = flower_templates("act", ["a", "b"], ["#d62728", "#1f77b4"])
    geometry = flower_geometry("act", np.array([[0.5, 0.5]]), np.array([[1, 1]]),
                               np.array([[0.9, 0.9]]), 0.5, [0], 0.3, 2)
    empty = np.zeros((100, 100, 4), np.uint8)
    drawn = raster.with_petals(empty, shapes, geometry, [0.0, 1.0, 0.0, 1.0])
    assert drawn.shape == (100, 100, 4) and (drawn[..., 3] == 255).all()
    red = (0.9 * np.array([214, 39, 40]) + 0.1 * 255).round()
    # The petal reaches 0.3 up from the centre: rows count from the top of the picture.
    assert np.abs(drawn[35, 50, :3] - red).max() <= 2
    assert (drawn[65, 50, :3] == 255).all() and (drawn[5:15, 5:15, :3] == 255).all()
    # The points under the petals keep their colour away from them, exactly.
    points = np.zeros((100, 100, 4), np.uint8)
    points[90, 10] = [10, 200, 30, 235]
    under = raster.with_petals(points, shapes, geometry, [0.0, 1.0, 0.0, 1.0])
    plain = (np.array([10, 200, 30]) * 235 + 255 * 20) / 255
    assert np.abs(under[90, 10, :3] - plain).max() <= 1


def test_a_large_runs_flowers_are_drawn_into_its_pictures_not_sent_as_shapes(run, pictures):
    def operations(patch):
        return {tuple(op["location"][:2]): op["params"].get("value")
                for op in patch.to_plotly_json()["operations"]}

    everything = [list(range(len(run.attributes)))]
    args = ([], 0.3, "one", [], "any", "act", None, "with", 0, [], None, None, None, None, None,
            None, run.id)
    joint = call(raster_callbacks.redraw_pictures, "slider-threshold.value", *args, "joint",
                 "error", 0, "cosine", 7, *everything)
    dots = call(raster_callbacks.redraw_pictures, "slider-threshold.value", *args, "dots",
                "error", 0, "cosine", 7, *everything)
    for with_flowers, without in zip(joint, dots, strict=True):
        assert ("layout", "shapes") not in operations(with_flowers)
        pictured, plain = (decode_png(operations(p)[("layout", "images")][0]["source"])
                           for p in (with_flowers, without))
        assert (pictured != plain).any(axis=2).sum() > 50  # seven flowers' petals
    # A selection redraws the pictures: their flowers come with them.
    selected = call(raster_callbacks.redraw_pictures, "store-selection.data", *args, "joint",
                    "error", 0, "cosine", 7, *everything)
    assert [operations(p)[("layout", "images")] for p in selected] == [
        operations(p)[("layout", "images")] for p in joint]
    figures_and_headers = call(views.draw_flowers, "slider-threshold.value", None, None, None,
                               0.3, [], "any", "act", run.id, "joint", *everything, 7)
    assert list(figures_and_headers[:3]) == [no_update] * 3  # the pictures carry them
    assert list(figures_and_headers[3:]) == [f"flowers: 7 of {len(run)} in view (capped)"] * 3


def test_hover_and_click_on_a_picture_find_the_nearest_image(run, pictures):
    xy = np.asarray(run.emb("prd"))
    near = {"points": [{"curveNumber": POINTS, "x": float(xy[7, 0]) + 1e-4,
                        "y": float(xy[7, 1]), "z": 1, "pointIndex": [3, 4]}]}
    show, _, body, _ = call(legends.VIEW_HOVERS["prd"], "view-prd.hoverData", near, run.id, None)
    assert show is True and texts(body)[0].startswith("#7 · ")
    empty = {"points": [{**near["points"][0], "z": 0}]}
    assert call(legends.VIEW_HOVERS["prd"], "view-prd.hoverData", empty, run.id, None)[0] is False
    assert call(raster_callbacks.open_clicked_picture, "view-prd.clickData", None, None, near,
                run.id) == 7
    hostile = {"points": [{"curveNumber": POINTS, "x": "7", "y": None, "z": 1}]}
    assert call(raster_callbacks.open_clicked_picture, "view-prd.clickData", None, None,
                hostile, run.id) is no_update
