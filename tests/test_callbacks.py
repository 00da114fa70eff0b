"""The dashboard's callbacks called directly on a real run on disk: what each one sends back for
the inputs a user gives (metrics of a selection, filters, threshold, linked selection, groups)."""

from __future__ import annotations

import base64
import io
from contextvars import copy_context
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dash import Patch, no_update
from dash._callback_context import context_value
from dash._utils import AttributeDict

from callbacks import control, detail, legends, selection, views
from callbacks import corrections as correction_callbacks
from components import ids
from components.figures import CORRECTED, FIRST_FLOWER, POINTS, SELECTED
from pipeline import corrections
from pipeline.metrics import OUTCOMES, group_summary, outcomes
from tests.conftest import write_synthetic_run
from tests.markup import tree

EVERY = list(range(17))


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    return write_synthetic_run(tmp_path / "data", n=60)


def call(callback, trigger, *args, value=None):
    """Call a callback as Dash would, with `trigger` (an id and property) as what fired."""
    def inside():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": trigger, "value": value}]))
        return callback(*args)
    return copy_context().run(inside)


def texts(component) -> list[str]:
    """All strings in a Dash component tree, depth first."""
    if component is None:
        return []
    if isinstance(component, (str, int, float)):
        return [str(component)]
    if isinstance(component, (list, tuple)):
        return [t for c in component for t in texts(c)]
    return texts(getattr(tree(component), "children", None))


def operations(patch: Patch) -> list[tuple[list, object]]:
    return [(op["location"], op["params"].get("value")) for op in patch.to_plotly_json()[
        "operations"]]


def decode(spec):
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.float32)


def tiles(block) -> dict[str, str]:
    found = {}

    def walk(c):
        if isinstance(c, (list, tuple)):
            for x in c:
                walk(x)
        elif getattr(c, "className", "") and "tile " in c.className:
            value, label = c.children
            found[label.children] = value.children
        elif hasattr(c, "children"):
            walk(c.children)
    walk(block)
    return found


def test_selection_metrics_equal_those_computed_from_the_run_arrays(run):
    rows = [1, 4, 7, 10, 22, 35, 41, 59]
    title, block = call(selection.summarise_selection, "store-selection.data", rows, 0.5, run.id)
    assert title == "Selection: 8 images"
    want = group_summary(run.act[rows], run.prd[rows], 0.5)
    shown = tiles(block)
    assert shown["images"] == "8"
    for k in ("TP", "FP", "FN", "TN"):
        assert int(shown[k]) == want["overall"][k]
    assert shown["F1"] == f"{want['overall']['f1']:.2f}"
    assert shown["Prec"] == f"{want['overall']['precision']:.2f}"
    per = texts(block)
    name = run.attributes[3]
    at = per.index(name)
    assert per[at + 1:at + 5] == [str(want["per_attribute"][k][3]) for k in ("TP", "FP", "FN",
                                                                               "TN")]


def test_undefined_scores_show_as_a_dash(run):
    act, prd = np.asarray(run.act), np.asarray(run.prd)
    image, j = np.argwhere((act == 0) & (prd < 0.5))[0]  # a true negative: P, R, F1 are 0/0
    _, block = call(selection.summarise_selection, "store-selection.data", [int(image)], 0.5,
                    run.id)
    per = texts(block)
    at = per.index(run.attributes[j])
    assert per[at + 1:at + 9] == ["0", "0", "0", "1", "1.00", "–", "–", "–"]


def test_no_selection_summarises_the_whole_run(run):
    title, block = call(selection.summarise_selection, "store-selection.data", [], 0.5, run.id)
    assert title.startswith("No selection")
    assert tiles(block)["images"] == "60"


def test_filter_fades_the_points_that_do_not_match_and_counts_those_that_do(run):
    *patches, count = call(views.fade_filtered, "radio-filter-match.value", [0, 3], "all", "act",
                           0.5, run.id)
    want = (np.asarray(run.act)[:, [0, 3]] == 1).all(axis=1)
    assert count == f"{want.sum()} of 60 images match · {60 - want.sum()} faded"
    for patch in patches:
        [(where, alpha)] = operations(patch)
        assert where == ["data", POINTS, "marker", "opacity"]
        np.testing.assert_array_equal(decode(alpha) > 0.5, want)
    *_, any_count = call(views.fade_filtered, "radio-filter-match.value", [0, 3], "any", "act",
                         0.5, run.id)
    assert int(any_count.split()[0]) == ((np.asarray(run.act)[:, [0, 3]] == 1).any(axis=1)).sum()


def test_a_threshold_change_refades_only_a_filter_that_depends_on_it(run):
    # On the labels (or no filter at all) the faded points stay as they are: nothing is sent.
    for attributes, on in (([0, 3], "act"), ([], "prd")):
        assert call(views.fade_filtered, "slider-threshold.value", attributes, "any", on, 0.2,
                    run.id) == (no_update,) * 4
    # On the predictions they follow the threshold.
    faded = {}
    for t in (0.2, 0.8):
        *patches, count = call(views.fade_filtered, "slider-threshold.value", [0, 3], "any",
                               "prd", t, run.id)
        [(_, alpha)] = operations(patches[0])
        faded[t] = decode(alpha) > 0.5
        want = (np.asarray(run.prd)[:, [0, 3]] >= t).any(axis=1)
        np.testing.assert_array_equal(faded[t], want)
        assert count.startswith(f"{want.sum()} of 60")
    assert not np.array_equal(faded[0.2], faded[0.8])


def test_threshold_change_changes_outcomes_in_colours_metrics_and_detail(run):
    act, prd = np.asarray(run.act), np.asarray(run.prd)
    low, high = (call(views.recolour_on_threshold, "slider-threshold.value", t, run.id, "outcome",
                      4) for t in (0.2, 0.8))
    colours = [decode(operations(p[0])[0][1]) for p in (low, high)]
    for t, got in zip((0.2, 0.8), colours, strict=True):
        np.testing.assert_array_equal(got, outcomes(act[:, [4]], prd[:, [4]], t)[:, 0])
    assert not np.array_equal(*colours)
    assert call(views.recolour_on_threshold, "slider-threshold.value", 0.2, run.id, "error",
                4) == [no_update] * 3
    _, low_table, strip = call(detail.describe_detail, "slider-threshold.value", 0, 0.2, run.id)
    _, high_table, _ = call(detail.describe_detail, "slider-threshold.value", 0, 0.8, run.id)
    # The neighbours do not follow the thresholds: their strip is left as it is.
    assert strip is no_update
    assert call(detail.describe_detail, "store-detail-index.data", 0, 0.2, run.id)[2]
    outcome_of = {t: [w for w in texts(table) if w in OUTCOMES]
                  for t, table in ((0.2, low_table), (0.8, high_table))}
    for t, got in outcome_of.items():
        assert got == [OUTCOMES[k] for k in outcomes(act[[0]], prd[[0]], t)[0]]


def test_box_select_in_one_view_becomes_the_selection_and_highlights_all_three(run):
    selected = {"points": [{"curveNumber": 0, "pointIndex": i, "pointNumber": i}
                           for i in (5, 2, 9)] + [{"curveNumber": 1, "pointIndex": 0}]}
    rows, source = call(views.select, "view-fea.selectedData", None, selected, None, None, [],
                        run.id, [])
    assert (rows, source) == ([2, 5, 9], "fea")  # ring trace (curve 1) is not an image
    patches = call(views.highlight_selection, "store-selection.data", rows, source, "dots", run.id)
    for space, patch in zip(("act", "fea", "prd"), patches, strict=True):
        ops = operations(patch)
        assert (["data", POINTS, "selectedpoints"], [2, 5, 9]) in ops
        # Only the indices travel (and a revision bump that clears stale boxes elsewhere).
        assert len(ops) == (1 if space == "fea" else 2)
    cleared, _ = call(views.select, "button-clear-selection.n_clicks", None, selected, None, 1, [],
                      run.id, [])
    assert cleared == []


def test_an_empty_selection_left_by_a_redraw_keeps_the_selection(run):
    def select_in_fea(data):
        return call(views.select, "view-fea.selectedData", None, data, None, None, [], run.id,
                    [])

    # A full redraw drops the box outline; plotly then reports no points, no box, no lasso.
    assert select_in_fea({"points": []}) == (no_update, no_update)
    # The user's own gestures still count: a double-click (None) or a box round no image.
    assert select_in_fea(None) == ([], "fea")
    box = {"points": [], "range": {"x": [0.1, 0.2], "y": [0.1, 0.2]}}
    assert select_in_fea(box) == ([], "fea")
    lasso = {"points": [{"curveNumber": 0, "pointIndex": 4}],
             "lassoPoints": {"x": [0, 1, 1], "y": [0, 0, 1]}}
    assert select_in_fea(lasso) == ([4], "fea")


def test_zoom_redraws_only_that_views_flowers(run):
    xy = np.asarray(run.emb("prd"))
    box = [float(xy[:, 0].min()), float(np.median(xy[:, 0])), float(xy[:, 1].min()),
           float(xy[:, 1].max())]
    out = call(views.draw_flowers, f"{ids.STORE_VIEWPORTS['prd']}.data", None, None, box, 0.5,
               [], "any", "act", run.id, "act", EVERY, 500)
    figures, headers = out[:3], out[3:]
    assert figures[0] is no_update and figures[1] is no_update
    inside = int(((xy[:, 0] <= box[1])).sum())
    assert headers[2] == f"flowers: {inside} of {inside} in view"
    locations = [where for where, _ in operations(figures[2])]
    assert all(where[:3] == ["layout", "shapes", where[2]] and where[2] >= FIRST_FLOWER
               for where in locations)
    assert len(locations) == 2 * 17  # each petal shape's path and whether it shows
    paths = [v for where, v in operations(figures[2]) if where[-1] == "path"]
    assert len(paths) == 17
    # One closed subpath per petal: one per label among the flowers in the box.
    labels = sum(path.count("M") for path in paths)
    assert labels == int(np.asarray(run.act)[xy[:, 0] <= box[1]].sum())


def test_flower_cap_limits_the_flowers_and_says_so(run):
    out = call(views.draw_views, "input-flower-cap.value", run.id, "prd", EVERY, "error", 0,
               "cosine", 10, 0.5, [], "any", "act", [], [], None, None, None)
    assert out[3:6] == ("flowers: 10 of 60 in view (capped)",) * 3
    figure = out[0]
    assert len(figure["data"]) == 4 and len(figure["layout"]["shapes"]) == FIRST_FLOWER + 17
    petals = sum(s["path"].count("M") for s in figure["layout"]["shapes"])
    assert 0 < petals <= 10 * 17  # ten flowers' petals at most
    assert figure["data"][POINTS]["type"] == "scattergl"


def test_petals_lie_under_a_small_runs_points_and_in_a_large_runs_pictures(run, monkeypatch):
    # Under the WebGL points a joint flower's centre dot shows over its petals; a picture has
    # its petals drawn in, so the browser parses no petal shape of a large run.
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "1000")
    out = call(views.draw_views, "radio-point-mode.value", run.id, "joint", EVERY, "error", 0,
               "cosine", 500, 0.5, [], "any", "act", [], [], None, None, None)
    shapes = out[0]["layout"]["shapes"]
    assert {s["layer"] for s in shapes} == {"below"}
    assert sum(s["path"].count("M") for s in shapes if s["visible"]) > 0
    monkeypatch.setenv("XRAE_RASTER_ABOVE", "10")
    out = call(views.draw_views, "radio-point-mode.value", run.id, "joint", EVERY, "error", 0,
               "cosine", 500, 0.5, [], "any", "act", [], [], None, None, None)
    assert out[0]["layout"]["shapes"] == []
    assert out[0]["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    assert out[3].startswith("flowers: ")


def test_a_full_redraw_draws_the_selection_it_is_given_into_all_three_views(run):
    out = call(views.draw_views, "radio-point-mode.value", run.id, "joint", EVERY, "error", 0,
               "cosine", 500, 0.5, [], "any", "act", [3, 8, 13], [], None, None, None)
    for space, figure in zip(("act", "fea", "prd"), out[:3], strict=True):
        assert figure["data"][POINTS]["selectedpoints"] == [3, 8, 13]
        np.testing.assert_allclose(decode(figure["data"][SELECTED]["x"]),
                                   np.asarray(run.emb(space))[[3, 8, 13], 0])
    # The store comes from the browser: rows the run does not have are not drawn.
    out = call(views.draw_views, "radio-point-mode.value", run.id, "joint", EVERY, "error", 0,
               "cosine", 500, 0.5, [], "any", "act", [8, 60, -1, "3", True], [], None, None,
               None)
    assert out[0]["data"][POINTS]["selectedpoints"] == [8]
    assert len(decode(out[0]["data"][SELECTED]["x"])) == 1


def test_saved_groups_are_outlined_compared_and_exported(run):
    groups, name = call(selection.edit_groups, "button-save-group.n_clicks", 1, [], "halo set",
                        [3, 1, 2], [], run.id)
    assert name == "" and groups[0]["name"] == "halo set" and groups[0]["indices"] == [1, 2, 3]
    groups, _ = call(selection.edit_groups, "button-save-group.n_clicks", 2, [], "", [7, 8],
                     groups, run.id)
    assert groups[1]["name"] == "group 2" and groups[1]["colour"] != groups[0]["colour"]
    rings = call(views.outline_groups, "store-groups.data", groups, run.id)
    [(where, trace)] = operations(rings[0])
    assert where == ["data", 1] and trace["marker"]["color"] == [groups[0]["colour"]] * 3 + [
        groups[1]["colour"]] * 2
    table = call(selection.compare_groups, "dropdown-compare-a.value", "0", "1", groups, [], 0.5,
                 run.id)
    assert "halo set (3)" in texts(table) and "group 2 (2)" in texts(table)
    table = call(selection.compare_groups, "dropdown-compare-a.value", "selection", "all",
                 groups, [], 0.5, run.id)  # nothing selected: the header says it is all images
    assert f"No selection: all images ({len(run)})" in texts(table)
    assert "Current selection" not in texts(table)
    sent = call(selection.export_csv, '{"index":0,"type":"group-export"}.n_clicks', None, [1, 0],
                [], groups, 0.5, run.id, value=1)
    frame = pd.read_csv(io.StringIO(sent["content"]))
    assert sent["filename"] == f"halo-set-{run.id}.csv"
    assert frame["image_id"].tolist() == run.images["image_id"].iloc[[1, 2, 3]].tolist()
    first = run.attributes[0]
    assert frame[f"ACT {first}"].tolist() == np.asarray(run.act)[[1, 2, 3], 0].tolist()
    assert set(frame[f"outcome {first}"]) <= set(OUTCOMES)
    assert frame[f"threshold {first}"].tolist() == [0.5] * 3  # the threshold each outcome used
    said = frame[f"PRD {first}"] >= 0.5
    assert (frame[f"outcome {first}"].isin(["TP", "FP"]) == said).all()
    kept, _ = call(selection.edit_groups, '{"index":0,"type":"group-delete"}.n_clicks', None,
                   [1, 0], "", [], groups, run.id, value=1)
    assert [g["name"] for g in kept] == ["group 2"]


def test_run_picker_lists_runs_newest_first_with_dataset_and_map(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAE_DATA_DIR", str(tmp_path / "data"))
    options, value, message, is_open = control.list_run_options()
    assert (options, value, is_open) == ([], None, True) and "no run" in texts(message)[0].lower()
    first = write_synthetic_run(tmp_path / "data", n=20, seed=1)
    second = write_synthetic_run(tmp_path / "data", n=20, seed=2)
    options, value, _, is_open = control.list_run_options()
    assert value == options[0]["value"] and not is_open
    assert {o["value"] for o in options} == {first.id, second.id}
    assert options[0]["label"].startswith(second.meta["dataset"]) and "mAP" in options[0]["label"]


def test_clicking_a_point_or_thumbnail_opens_that_image(run):
    click = {"points": [{"curveNumber": 0, "pointIndex": 17}]}
    assert call(detail.open_detail, "view-act.clickData", click, None, None, [], [], [], run.id,
                None) == 17
    assert call(detail.open_detail, '{"index":23,"type":"thumb"}.n_clicks', None, None, None,
                [0, 1], [], [], run.id, 17, value=1) == 23
    assert call(detail.open_detail, '{"index":23,"type":"thumb"}.n_clicks', None, None, None,
                [0, 0], [], [], run.id, 17, value=0) is no_update
    title, table, neighbours = call(detail.describe_detail, "store-detail-index.data", 23, 0.5,
                                    run.id)
    assert title.startswith("#23 · ")
    # Nearest by the tool's one definition: cosine of the centred features (32 dimensions, so
    # no principal components are dropped), the image itself left out.
    fea = np.asarray(run.fea, dtype=np.float64)
    fea -= fea.mean(axis=0)
    unit = fea / np.linalg.norm(fea, axis=1, keepdims=True)
    nearest = [i for i in np.argsort(-(unit @ unit[23])) if i != 23][:8]
    assert [n.id["index"] for n in neighbours] == [int(i) for i in nearest]


def test_among_flowers_the_selection_is_ringed_in_every_view(run):
    rows = [3, 8, 13]
    patches = call(views.highlight_selection, "store-selection.data", rows, "act", "joint", run.id)
    for space, patch in zip(("act", "fea", "prd"), patches, strict=True):
        ops = dict((tuple(where), value) for where, value in operations(patch))
        np.testing.assert_allclose(decode(ops[("data", SELECTED, "x")]), np.asarray(run.emb(space))[
            rows, 0])
        np.testing.assert_allclose(decode(ops[("data", SELECTED, "y")]), np.asarray(run.emb(space))[
            rows, 1])


def test_hovering_a_point_shows_its_thumbnail_and_strongest_attributes(run):
    hover = {"points": [{"curveNumber": 0, "pointIndex": 12, "bbox": {"x0": 1, "x1": 2,
                                                                       "y0": 3, "y1": 4}}]}
    show, bbox, body, _ = call(legends.VIEW_HOVERS["fea"], "view-fea.hoverData", hover, run.id,
                               None)
    assert show is True and bbox == hover["points"][0]["bbox"]
    assert body[0].src.startswith("data:image/png;base64,")
    words = texts(body)
    assert words[0] == f"#12 · {run.images['image_id'].iloc[12]}"
    strongest = int(np.argmax(np.asarray(run.prd[12])))
    assert words[1] == run.attributes[strongest]
    assert words[2] == f"{run.prd[12, strongest]:.2f}"
    hidden = call(legends.VIEW_HOVERS["fea"], "view-fea.hoverData", None, run.id, None)
    assert hidden[0] is False
    beyond = {"points": [{"curveNumber": 0, "pointIndex": 60}]}  # the run has rows 0..59
    assert call(legends.VIEW_HOVERS["fea"], "view-fea.hoverData", beyond, run.id, None)[0] is False


def test_the_hover_card_opens_towards_the_middle_of_the_page(run):
    def side(space, row, viewport=None):
        hover = {"points": [{"curveNumber": 0, "pointIndex": int(row)}]}
        return call(legends.VIEW_HOVERS[space], f"view-{space}.hoverData", hover, run.id,
                    viewport)[3]

    x = {s: np.asarray(run.emb(s))[:, 0] for s in ("act", "fea", "prd")}
    # The left view's cards open rightwards, the right view's leftwards, wherever the point.
    assert side("act", np.argmax(x["act"])) == side("act", np.argmin(x["act"])) == "right"
    assert side("prd", np.argmax(x["prd"])) == side("prd", np.argmin(x["prd"])) == "left"
    # The middle view's card opens away from the nearer edge of the view.
    right, left = np.argmax(x["fea"]), np.argmin(x["fea"])
    assert (side("fea", right), side("fea", left)) == ("left", "right")
    # Zoomed in, the point's place in the zoom box counts: the right-most image now sits left.
    zoom = [float(x["fea"][right]) - 0.1, float(x["fea"][right]) + 10, -100.0, 100.0]
    assert side("fea", right, zoom) == "right"
    assert side("fea", right, ["not", "a", "box", 1]) == "left"  # a bad box is not trusted


def test_hovering_an_image_with_a_corrected_label_shows_the_label_in_force(run, tmp_path):
    weakest = int(np.argmin(np.asarray(run.prd[12])))  # never among the strongest four
    old = int(run.act[12, weakest])
    corrections.set_label(tmp_path / "data", run.meta["dataset"], run.images["image_id"][12],
                          run.attributes[weakest], 1 - old, author="ana")
    hover = {"points": [{"curveNumber": 0, "pointIndex": 12}]}
    words = texts(call(legends.VIEW_HOVERS["act"], "view-act.hoverData", hover, run.id, None)[2])
    at = words.index(run.attributes[weakest])
    assert words[at + 2] == f"{1 - old} ✎"
    assert words[-1].endswith("0 ✎ / 1 ✎ = corrected label")


def test_a_missing_image_file_is_named_not_crashed_on(run):
    call(detail.show_thumbnails, "store-selection.data", [4], run.id)  # drawn (and cached) now
    store = Path(str(run.image_path(5)).split("#")[0])  # the dataset's chunk store
    [shard] = store.rglob("full/*/c/0/0/0")
    shard.unlink()  # the file holding images 0 to 255
    figure = call(detail.draw_detail_image, "store-detail-index.data", 5, "Inferno", run.id)
    message = figure["layout"]["annotations"][0]["text"]
    assert "#5" in message and "missing" in message and str(shard) in message
    strip = call(detail.show_thumbnails, "store-selection.data", [4, 5], run.id)
    sources = [t.style["backgroundImage"] for t in strip[1:]]
    assert sources[0].startswith('url("data:image/png')
    assert sources[1].startswith('url("data:image/svg')


def test_corrected_images_wear_a_diamond_in_all_three_views(run, tmp_path):
    dataset, image_ids = run.meta["dataset"], run.images["image_id"]
    corrections.set_label(tmp_path / "data", dataset, image_ids[4], "Ring", 1, author="ana")
    corrections.set_label(tmp_path / "data", dataset, image_ids[11], "Halo", 0, author="ben")
    corrections.set_label(tmp_path / "data", dataset, image_ids[11], "Ring", 1, author="ben")
    corrections.set_label(tmp_path / "data", "another-dataset", image_ids[20], "Ring", 1)

    out = call(views.draw_views, "run-picker.value", run.id, "joint", EVERY, "error", 0,
               "cosine", 500, 0.5, [], "any", "act", [], [], None, None, None)
    for space, figure in zip(("act", "fea", "prd"), out[:3], strict=True):
        diamonds = figure["data"][CORRECTED]
        assert diamonds["marker"]["symbol"] == "diamond-open"
        np.testing.assert_allclose(decode(diamonds["x"]), np.asarray(run.emb(space))[[4, 11], 0])

    *patches, key = call(views.mark_corrected, "store-corrections-version.data", 3, run.id,
                         "60 images")
    assert " ".join(texts(key)) == "2 images have a corrected label (✎)"
    corrections.undo(tmp_path / "data", dataset, image_ids[4], "Ring", author="ana")
    *patches, key = call(views.mark_corrected, "store-corrections-version.data", 5, run.id,
                         "60 images")
    assert " ".join(texts(key)) == "1 image has a corrected label (✎)"
    for space, patch in zip(("act", "fea", "prd"), patches, strict=True):
        [(where, trace)] = operations(patch)
        assert where == ["data", CORRECTED]
        np.testing.assert_allclose(decode(trace["y"]), np.asarray(run.emb(space))[[11], 1])
    # Before the views are first drawn, or on a new run, only the key changes.
    out = call(views.mark_corrected, "run-picker.value", 5, run.id, "60 images")
    assert out[:3] == (no_update,) * 3 and texts(out[3])


def test_a_correction_made_elsewhere_reaches_the_page_at_the_next_poll(run, tmp_path):
    poll = correction_callbacks.notice_other_corrections
    assert call(poll, "interval-corrections-poll.n_intervals", 1, 0, run.id) is no_update
    event = corrections.set_label(tmp_path / "data", run.meta["dataset"],
                                  run.images["image_id"][7], "Ring", 1, author="ben")
    assert call(poll, "interval-corrections-poll.n_intervals", 2, 0, run.id) == event
    assert call(poll, "interval-corrections-poll.n_intervals", 3, event, run.id) is no_update
    corrections.set_label(tmp_path / "data", "another-dataset", "img1", "Ring", 1)
    assert call(poll, "interval-corrections-poll.n_intervals", 4, event, run.id) is no_update
