"""The pure functions behind the views: filters, error distance, colours, level of detail and
the attribute-flower geometry (Huang et al., IEEE VIS 2020, Fig. 2), images and thumbnails."""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.colors
import pytest
from PIL import Image

from components.encoding import (
    colour_values,
    flower_subset,
    petal_radius,
    viewport_from_relayout,
)
from components.figures import (
    FN_LENGTH,
    HATCH_LINES,
    PETAL_STEPS,
    flower_geometry,
    flower_paths,
    flower_templates,
    image_figure,
    legend_figure,
    petal_angles,
    thumbnail_uri,
    typed,
    view_figure,
    with_paths,
)
from pipeline.filters import filter_mask
from pipeline.metrics import error_distance

ACT = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]], dtype=np.uint8)
PRD = np.array([[0.9, 0.6, 0.2], [0.1, 0.3, 0.8], [0.7, 0.4, 0.1], [0.05, 0.0, 0.55]],
               dtype=np.float32)


def decode(spec: dict) -> np.ndarray:
    dtype = {"f4": np.float32, "u1": np.uint8, "i4": np.int32}[spec["dtype"]]
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=dtype)


def segments(x) -> list[np.ndarray]:
    """Split NaN-separated coordinates into their pieces' vertex index ranges."""
    x = np.asarray(x)
    cuts = np.flatnonzero(np.isnan(x))
    starts = np.concatenate([[0], cuts[:-1] + 1]).astype(int)[: len(cuts)]
    return [np.arange(a, b) for a, b in zip(starts, cuts, strict=True)]


def petals(x) -> list[np.ndarray]:
    """The petal outlines among the pieces (a hatch stroke is two points)."""
    return [rows for rows in segments(x) if len(rows) > 2]


def strokes(x) -> list[np.ndarray]:
    return [rows for rows in segments(x) if len(rows) == 2]


def subpaths(path: str) -> list[np.ndarray]:
    """An SVG path's subpaths as arrays of (x, y) vertices."""
    return [np.array([[float(v) for v in point.rstrip("Z").split(",")]
                      for point in piece.split("L")])
            for piece in path.split("M")[1:]]


def test_typed_arrays_round_trip_and_narrow_64_bit():
    values = np.array([1.5, -2.0, np.nan])
    spec = typed(values)
    assert spec["dtype"] == "f4"
    np.testing.assert_array_equal(decode(spec), values.astype(np.float32))
    assert typed(np.arange(3))["dtype"] == "i4"
    assert typed(np.zeros((2, 3), np.float32))["shape"] == "2, 3"


def test_filter_any_and_all_on_labels():
    assert filter_mask(ACT, PRD, 0.5, [0, 2], "any", "act").tolist() == [True, True, True, False]
    assert filter_mask(ACT, PRD, 0.5, [0, 2], "all", "act").tolist() == [True, False, False,
                                                                          False]
    assert filter_mask(ACT, PRD, 0.5, [], "all", "act").all()


def test_filter_on_predictions_and_outcomes_follows_the_threshold():
    assert filter_mask(ACT, PRD, 0.5, [1], "any", "prd").tolist() == [True, False, False, False]
    # Attribute 2: image 0 is FN, image 3 FP at 0.5; at 0.6 image 3 becomes TN.
    assert filter_mask(ACT, PRD, 0.5, [2], "any", "FN").tolist() == [True, False, False, False]
    assert filter_mask(ACT, PRD, 0.5, [2], "any", "FP").tolist() == [False, False, False, True]
    assert filter_mask(ACT, PRD, 0.6, [2], "any", "FP").tolist() == [False, False, False, False]
    assert filter_mask(ACT, PRD, 0.5, [0, 1], "all", "TN").tolist() == [False, True, False, True]
    with pytest.raises(ValueError):
        filter_mask(ACT, PRD, 0.5, [0], "any", "bogus")


def test_error_distance_cosine_and_euclidean():
    act = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], np.uint8)
    prd = np.array([[1, 0], [0, 1], [0, 0], [0.5, 0]], np.float32)
    np.testing.assert_allclose(error_distance(act, prd, "cosine"), [0, 1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(error_distance(act, prd, "euclidean"),
                               [0, 1, 0, np.sqrt(0.25 / 2)], atol=1e-6)


def test_outcome_colours_change_with_the_threshold():
    at_half, scale, limits = colour_values("outcome", ACT, PRD, 0.5, 2, "#123456")
    assert at_half.tolist() == [2, 0, 3, 1]  # FN, TP, TN, FP
    assert limits == (0, 3) and len(scale) == 8
    at_low, _, _ = colour_values("outcome", ACT, PRD, 0.15, 2, "#123456")
    assert at_low.tolist() == [0, 0, 3, 1]


def test_flower_subset_keeps_points_in_view_up_to_the_cap_and_stays_put_when_panning():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10, (2000, 2))
    everything = np.ones(len(xy), bool)
    rows, in_view = flower_subset(xy, [0, 5, 0, 5], everything, cap=100)
    assert in_view == int(((xy < 5).all(axis=1)).sum()) and len(rows) == 100
    assert (xy[rows] <= 5).all()
    moved, _ = flower_subset(xy, [0.5, 5.5, 0, 5], everything, cap=100)
    assert len(np.intersect1d(rows, moved)) > 70  # the same points keep their flowers
    faded = np.zeros(len(xy), bool)
    assert len(flower_subset(xy, None, faded, cap=100)[0]) == 0  # filtered out: no flowers
    assert petal_radius([0, 10, 0, 10], 4)[0] > petal_radius([0, 10, 0, 10], 400)[0]
    rx, ry = petal_radius([0, 10, 0, 1], 50)
    assert rx == pytest.approx(10 * ry)  # round on screen whatever the axes' scales


def test_relayout_events_give_the_viewport():
    zoom = {"xaxis.range[0]": 2, "xaxis.range[1]": 1, "yaxis.range[0]": 0, "yaxis.range[1]": 3}
    assert viewport_from_relayout(zoom) == [1, 2, 0, 3]
    assert viewport_from_relayout({"xaxis.autorange": True}, [1, 2, 0, 3]) is None
    assert viewport_from_relayout({"selections": []}, [1, 2, 0, 3]) == [1, 2, 0, 3]


def geometry(mode, threshold=0.5, shown=(0, 1, 2), radius=1.0):
    centres = np.array([[0, 0], [10, 0], [20, 0], [30, 0]], float)
    return flower_geometry(mode, centres, ACT, PRD, threshold, list(shown), radius, 3), centres


def test_act_flowers_have_one_petal_per_label():
    traces, _ = geometry("act")
    assert [len(petals(x)) for x, _ in traces] == ACT.sum(axis=0).tolist()


def test_prd_petal_lengths_are_the_probabilities():
    traces, centres = geometry("prd", radius=2.0)
    for j, (x, y) in enumerate(traces):
        for rows in petals(x):
            owner = int(np.argmin(np.abs(centres[:, 0] - x[rows][0])))
            reach = np.hypot(x[rows] - centres[owner, 0], y[rows] - centres[owner, 1]).max()
            assert reach == pytest.approx(2.0 * PRD[owner, j], rel=1e-4)


def test_joint_flowers_separate_tp_fn_fp_by_style_and_length():
    traces, centres = geometry("joint")
    said = PRD >= 0.5
    fp, tp, fn = traces[:3], traces[3:6], traces[6:]
    assert [len(petals(x)) for x, _ in fp] == (~ACT.astype(bool) & said).sum(axis=0).tolist()
    assert [len(petals(x)) for x, _ in tp] == (ACT.astype(bool) & said).sum(axis=0).tolist()
    assert [len(petals(x)) for x, _ in fn] == (ACT.astype(bool) & ~said).sum(axis=0).tolist()
    x, y = fn[2]  # image 0 misses attribute 2: a short petal
    assert np.nanmax(np.hypot(x, y)) == pytest.approx(FN_LENGTH, rel=1e-4)
    # FN petals are hatched: strokes across each, inside its outline; TP and FP have none.
    assert [len(strokes(x)) for x, _ in fn] == [HATCH_LINES * len(petals(x)) for x, _ in fn]
    assert not any(strokes(x) for x, _ in fp + tp)
    stroke = strokes(x)[0]
    assert np.hypot(x[stroke], y[stroke]).max() <= FN_LENGTH * (1 + 1e-4)
    styles = flower_templates("joint", ["a", "b", "c"], ["#ff0000", "#00ff00", "#0000ff"])
    assert styles[0]["line"]["color"] == "#111111"  # FP: black border
    assert styles[6]["line"]["color"] == "#ff0000" and styles[6]["fillcolor"].startswith(
        "rgba(255,255,255")  # FN: white petal, its colour in outline and strokes
    assert styles[3]["fillcolor"] == "rgba(255,0,0,0.9)"  # TP: solid in its colour


def test_each_style_and_attribute_is_one_path_with_a_closed_subpath_per_petal():
    traces, _ = geometry("joint", radius=2.0)
    paths = flower_paths(traces, 2.0)
    for (x, y), path in zip(traces, paths, strict=True):
        pieces = subpaths(path)
        assert len(pieces) == len(segments(x))
        assert path.count("Z") == len(pieces)  # each outline and stroke closed
        outlines = [p for p in pieces if len(p) > 2]
        assert len(outlines) == len(petals(x))
        for rows, piece in zip(petals(x), outlines, strict=True):
            assert len(piece) == PETAL_STEPS
            # to within 1/200 of the petal radius
            np.testing.assert_allclose(piece, np.c_[x[rows], y[rows]], atol=2.0 / 200)
    shapes = with_paths(flower_templates("joint", ["a", "b", "c"], ["#f00", "#0f0", "#00f"]),
                        paths)
    assert [s["visible"] for s in shapes] == [bool(len(x)) for x, _ in traces]
    figure = view_figure({}, {}, {}, {}, shapes, uirevision="r")
    assert len(figure["data"]) == 4 and figure["layout"]["shapes"] == shapes


def test_petals_point_at_their_attribute_angle_and_hidden_attributes_get_none():
    traces, _ = geometry("act", shown=(0, 2))
    assert len(traces[1][0]) == 0  # attribute 1 not shown
    first = petals(traces[0][0])[0]  # image 0's petal, on the flower at the origin
    x, y = traces[0][0][first], traces[0][1][first]
    tip = np.argmax(np.hypot(x, y))
    assert np.arctan2(y[tip], x[tip]) == pytest.approx(petal_angles(2)[0], abs=0.05)


def test_flower_key_explains_every_joint_style():
    figure = legend_figure("joint", ["a", "b", "c"], ["#ff0000", "#00ff00", "#0000ff"], [0, 2])
    texts = " ".join(a["text"] for a in figure["layout"]["annotations"])
    for words in ("TP", "FN", "FP", "error", "a", "c"):
        assert words in texts
    assert " b" not in texts.replace("labelled but", "")
    # The key's petals are the views' own shapes: a, c full-length petals and the examples.
    shapes = figure["layout"]["shapes"]
    drawn = [s["name"] for s in shapes if s.get("visible", True) and "name" in s]
    assert drawn == ["a (TP)", "c (TP)"]
    examples = [s for s in shapes if "name" not in s]
    assert [len([p for p in subpaths(s["path"]) if len(p) == 2]) for s in examples] == \
        [0, HATCH_LINES, 0]  # TP, FN (hatched), FP
    assert examples[2]["line"]["color"] == "#111111"


def test_thumbnail_is_a_small_png_of_log_intensity():
    image = np.zeros((300, 200), np.float32)
    image[100:200, 50:150] = 1e4
    image[0, 0] = -5  # masked pixel
    uri = thumbnail_uri(image, size=48)
    png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert png.size == (48, 48) and png.format == "PNG"


def test_large_image_is_downsampled_log_intensity():
    image = np.full((1024, 1024), 99.0, np.float32)
    figure = image_figure(image, "Viridis", max_side=256)
    z = figure["data"][0]["z"]
    assert z["shape"] == "256, 256"
    np.testing.assert_allclose(decode(z), 2.0, rtol=1e-6)
    # plotly.js knows "Viridis" but not "Inferno" by name: scales are sent spelled out.
    assert figure["data"][0]["colorscale"] == plotly.colors.get_colorscale("Viridis")
    inferno = image_figure(image, "Inferno")["data"][0]["colorscale"]
    assert inferno[0][1] == plotly.colors.sequential.Inferno[0]
