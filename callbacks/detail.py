"""Behaviour of panel G: thumbnails of the selection, the image opened large (from a click in a
view, a thumbnail or a neighbour) under an attribute's saliency, its ACT vs PRD table and its
FEA-space neighbours.
"""

from __future__ import annotations

from dash import ALL, Input, Output, State, ctx, hooks, html, no_update
from dash.exceptions import PreventUpdate

from callbacks.common import (
    Refused,
    chosen_run,
    disk_cache,
    neighbours,
    row_index,
    row_list,
    run_labels,
    thresholds_in_force,
    triggered_ids,
)
from callbacks.common import thumbnail as thumbnail_of
from components import ids
from components.control import ONE_FOR_ALL
from components.detail import act_prd_table, saliency_options, thumbnail
from components.figures import POINTS, empty_figure, image_figure, saliency_layer, with_saliency
from pipeline.errors import PipelineError
from pipeline.imaging import COLOUR_MAPS

MAX_THUMBS = 40
SPACES = tuple(ids.VIEWS)


def image_caption(run, index: int) -> str:
    return f"#{index} {run.images['image_id'].iloc[index]}"


@hooks.callback(
    Output(ids.THUMBNAILS, "children"),
    Input(ids.STORE_SUMMARISED, "data"), State(ids.RUN_PICKER, "value"),
)
def show_thumbnails(selection, run_id):
    """Clickable thumbnails of the selected images (the first MAX_THUMBS of them)."""
    run = chosen_run(run_id)
    try:
        selection = row_list(run, selection)
    except Refused as err:
        return html.Div(f"Cannot show the selection: {err}", className="summary-note")
    if not selection:
        return html.Div("Select images in a view to see them here; click a point to open it.",
                        className="summary-note")
    shown = selection[:MAX_THUMBS]
    note = (f"showing {len(shown)} of {len(selection):,} selected"
            if len(selection) > len(shown) else f"{len(selection):,} selected")
    return [html.Div(note, className="strip-note"),
            *[thumbnail(ids.THUMB, i, thumbnail_of(run, i), image_caption(run, i)) for i in shown]]


# A new selection reaches the detail panel (its thumbnails, its first image opened with table,
# neighbours and integration) once the selection's summary is on screen: drawn at once, that
# panel held back the linked views and the scores by ~1 s of browser work at 100k images.
hooks.clientside_callback(
    """function(_title, selection, summarised) {
        if (JSON.stringify(selection) === JSON.stringify(summarised)) {
            return window.dash_clientside.no_update;
        }
        // After the next frame is drawn: the views and the scores first.
        return new Promise(resolve => requestAnimationFrame(() => setTimeout(
            () => resolve(selection), 0)));
    }""",
    Output(ids.STORE_SUMMARISED, "data"),
    Input(ids.SELECTION_TITLE, "children"),
    State(ids.STORE_SELECTION, "data"), State(ids.STORE_SUMMARISED, "data"),
)


@hooks.callback(
    Output(ids.STORE_DETAIL_INDEX, "data"),
    [Input(ids.VIEWS[s], "clickData") for s in SPACES],
    Input({"type": ids.THUMB, "index": ALL}, "n_clicks"),
    Input({"type": ids.NEIGHBOUR, "index": ALL}, "n_clicks"),
    Input(ids.STORE_SUMMARISED, "data"), Input(ids.RUN_PICKER, "value"),
    State(ids.STORE_DETAIL_INDEX, "data"),
    prevent_initial_call=True,
)
def open_detail(click_act, click_fea, click_prd, _thumbs, _neighbours, selection, run_id, current):
    """Which image is shown large: the one clicked, else the first of a new selection (once
    its summary is on screen: STORE_SUMMARISED).

    Only an image of the run is opened: any other number the browser sends changes nothing."""
    trigger = _acted_on()
    if trigger is None:  # only new buttons fired, unclicked: they were just drawn
        return no_update
    if trigger == ids.RUN_PICKER:
        return None
    run = chosen_run(run_id)
    try:
        return _clicked_row(run, trigger, (click_act, click_fea, click_prd), selection, current)
    except Refused:
        raise PreventUpdate from None


def _acted_on():
    """What this call answers: a thumbnail or neighbour clicked, else the first other input
    that fired, else None. New buttons fire too, unclicked (n_clicks 0), alone or in the same
    call as the selection that drew them."""
    values = {item["prop_id"]: item["value"] for item in ctx.triggered}
    fired = ctx.triggered_prop_ids
    clicked = [c for p, c in fired.items() if isinstance(c, dict) and values.get(p)]
    others = [c for c in fired.values() if not isinstance(c, dict)]
    return (clicked or others or [None])[0]


def _clicked_row(run, trigger, clicks, selection, current):
    if isinstance(trigger, dict):  # a thumbnail or neighbour clicked (_acted_on)
        return row_index(run, trigger.get("index"))
    for space, click in zip(SPACES, clicks, strict=True):
        if trigger == ids.VIEWS[space]:
            points = (click or {}).get("points") if isinstance(click, dict) else None
            point = points[0] if isinstance(points, list) and points else {}
            if isinstance(point, dict) and point.get("curveNumber") == POINTS:
                return row_index(run, point.get("pointIndex"))
            return no_update
    selection = row_list(run, selection)
    if selection and current not in selection:
        return selection[0]
    return no_update


hooks.clientside_callback(  # in the page: no request for it
    "function(index) { return index === null || index === undefined; }",
    Output(ids.DETAIL_IMAGE_TOOLS, "hidden"), Input(ids.STORE_DETAIL_INDEX, "data"),
)


@hooks.callback(
    Output(ids.DETAIL_IMAGE, "figure"),
    Input(ids.STORE_DETAIL_INDEX, "data"), Input(ids.COLOUR_MAP, "value"),
    State(ids.RUN_PICKER, "value"),
    Input(ids.SALIENCY_ATTRIBUTE, "value"), Input(ids.SALIENCY_OPACITY, "value"),
)
def draw_detail_image(index, colour_map, run_id, attribute=None, opacity=None):
    """The image large, in log intensity and the chosen false-colour map, under the chosen
    attribute's saliency when the run keeps a model."""
    if index is None:
        return empty_figure("Click a point or a thumbnail to open an image")
    run = chosen_run(run_id)
    if colour_map not in COLOUR_MAPS:
        colour_map = "Inferno"  # only the maps the dropdown offers
    try:
        index = row_index(run, index)
        pixels = run.load_image(index)
    except Refused as err:
        return empty_figure(f"Cannot show that image: {err}")
    except (PipelineError, OSError, ValueError) as err:
        return empty_figure(f"Cannot show image #{index}: {err}")
    figure = image_figure(pixels, colour_map)
    if attribute is None or run.checkpoint is None:  # no model: the picker's note says so
        return figure
    try:
        found, name, opacity = _saliency(run, index, attribute, opacity)
    except (PipelineError, OSError, ValueError) as err:
        return _with_note(figure, f"No saliency shown: {err}")
    if not found.any():  # Grad-CAM keeps evidence for the attribute only, and there was none
        return _with_note(figure, f"Nothing in this image raised the model's score for {name}.")
    from pipeline.saliency import METHOD

    return with_saliency(figure, saliency_layer(found, name, opacity, METHOD))


def opacity_value(value) -> float:
    """The saliency layer's opacity: a number in 0..1 (the slider's range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise Refused(f"the saliency opacity must be a number from 0 to 1, not {value!r:.40}")
    return float(value)


def _saliency(run, index: int, attribute, opacity):
    """The map of image `index` for the attribute named, its name and the opacity, each value
    the browser sent checked."""
    from pipeline import saliency  # torch loads only once someone asks for a map

    opacity = opacity_value(opacity)
    name = run.attributes[saliency.attribute_number(run, attribute)]  # refuses any other value
    return saliency.run_saliency(run, index, name, disk_cache(run, "saliency")), name, opacity


def _with_note(figure: dict, text: str) -> dict:
    """The figure with a line of text under the image (why the saliency is missing)."""
    note = {"text": text[:160], "showarrow": False, "xref": "paper", "yref": "paper", "x": 0,
            "y": 0, "xanchor": "left", "yanchor": "top", "font": {"color": "#b02a37", "size": 11}}
    layout = {**figure["layout"], "margin": {**figure["layout"]["margin"], "b": 24},
              "annotations": [note]}
    return {"data": figure["data"], "layout": layout}


NO_MODEL = ("This run keeps no model (its vectors were imported), so it cannot show where a model "
            "looked.")


@hooks.callback(
    Output(ids.SALIENCY_ATTRIBUTE, "options"), Output(ids.SALIENCY_ATTRIBUTE, "value"),
    Output(ids.SALIENCY_ATTRIBUTE, "disabled"), Output(ids.SALIENCY_NOTE, "children"),
    Input(ids.STORE_DETAIL_INDEX, "data"), State(ids.RUN_PICKER, "value"),
)
def offer_saliency(index, run_id):
    """The attributes whose saliency can cover the open image, its strongest prediction
    picked; a run without a model says so instead."""
    if index is None:
        return [], None, True, ""
    run = chosen_run(run_id)
    if run.checkpoint is None:
        return [], None, True, NO_MODEL
    try:
        index = row_index(run, index)
    except Refused as err:
        return [], None, True, f"No saliency: {err}"
    from pipeline.saliency import strongest_attribute  # torch: only for runs with a model

    return (saliency_options(run.attributes, run.prd[index]), strongest_attribute(run, index),
            False, "")


@hooks.callback(
    Output(ids.DETAIL_TITLE, "children"), Output(ids.DETAIL_TABLE, "children"),
    Output(ids.NEIGHBOURS, "children"),
    Input(ids.STORE_DETAIL_INDEX, "data"), Input(ids.THRESHOLD, "value"),
    State(ids.RUN_PICKER, "value"), Input(ids.THRESHOLD_MODE, "value"),
)
def describe_detail(index, threshold, run_id, threshold_choice=ONE_FOR_ALL):
    """The open image's name, its ACT vs PRD table (outcomes at the thresholds in force) and
    its 8 nearest neighbours in FEA space."""
    if index is None:
        return "no image open", None, None
    run = chosen_run(run_id)
    try:
        index = row_index(run, index)
        threshold = thresholds_in_force(run, threshold_choice, threshold)
    except Refused as err:
        return f"Cannot open that image: {err}", None, None
    row = run.images.iloc[index]
    title = f"#{index} · {row['image_id']} · {row['split']}"
    act, corrected = run_labels(run)  # labels in force: annotated plus analysts' corrections
    table = act_prd_table(run.attributes, run.colours, act[index], run.prd[index], threshold,
                          corrected[index])
    fired = triggered_ids()
    if fired and fired <= {ids.THRESHOLD, ids.THRESHOLD_MODE}:
        # The neighbours do not depend on the thresholds: drawn again, their buttons would be
        # new components, and their clicks an extra request, at every threshold change.
        return title, table, no_update
    strip = [thumbnail(ids.NEIGHBOUR, i, thumbnail_of(run, i), image_caption(run, i))
             for i in neighbours(run, index)]
    return title, table, strip or no_update
