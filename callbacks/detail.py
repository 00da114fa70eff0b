"""Behaviour of panel G: thumbnails of the selection, the image opened large (from a click in a
view, a thumbnail or a neighbour), its ACT vs PRD table and its FEA-space neighbours.
"""

from __future__ import annotations

from dash import ALL, Input, Output, State, ctx, hooks, html, no_update
from dash.exceptions import PreventUpdate

from callbacks.common import (
    Refused,
    chosen_run,
    neighbours,
    row_index,
    row_list,
    run_labels,
    thresholds_in_force,
)
from callbacks.common import thumbnail as thumbnail_of
from components import ids
from components.control import ONE_FOR_ALL
from components.detail import act_prd_table, thumbnail
from components.figures import POINTS, empty_figure, image_figure
from pipeline.errors import PipelineError
from pipeline.imaging import COLOUR_MAPS

MAX_THUMBS = 40
SPACES = tuple(ids.VIEWS)


def image_caption(run, index: int) -> str:
    return f"#{index} {run.images['image_id'].iloc[index]}"


@hooks.callback(
    Output(ids.THUMBNAILS, "children"),
    Input(ids.STORE_SELECTION, "data"), State(ids.RUN_PICKER, "value"),
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


@hooks.callback(
    Output(ids.STORE_DETAIL_INDEX, "data"),
    [Input(ids.VIEWS[s], "clickData") for s in SPACES],
    Input({"type": ids.THUMB, "index": ALL}, "n_clicks"),
    Input({"type": ids.NEIGHBOUR, "index": ALL}, "n_clicks"),
    Input(ids.STORE_SELECTION, "data"), Input(ids.RUN_PICKER, "value"),
    State(ids.STORE_DETAIL_INDEX, "data"),
    prevent_initial_call=True,
)
def open_detail(click_act, click_fea, click_prd, _thumbs, _neighbours, selection, run_id, current):
    """Which image is shown large: the one clicked, else the first of a new selection.

    Only an image of the run is opened: any other number the browser sends changes nothing."""
    trigger = ctx.triggered_id
    if trigger == ids.RUN_PICKER:
        return None
    run = chosen_run(run_id)
    try:
        return _clicked_row(run, trigger, (click_act, click_fea, click_prd), selection, current)
    except Refused:
        raise PreventUpdate from None


def _clicked_row(run, trigger, clicks, selection, current):
    if isinstance(trigger, dict):
        clicked = ctx.triggered[0]["value"]
        # 0/None: the thumbnail was just drawn, not clicked
        return row_index(run, trigger.get("index")) if clicked else no_update
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


@hooks.callback(
    Output(ids.DETAIL_IMAGE, "figure"),
    Input(ids.STORE_DETAIL_INDEX, "data"), Input(ids.COLOUR_MAP, "value"),
    State(ids.RUN_PICKER, "value"),
)
def draw_detail_image(index, colour_map, run_id):
    """The image large, in log intensity and the chosen false-colour map."""
    if index is None:
        return empty_figure("Click a point or a thumbnail to open an image")
    run = chosen_run(run_id)
    if colour_map not in COLOUR_MAPS:
        colour_map = "Inferno"  # only the maps the dropdown offers
    try:
        pixels = run.load_image(row_index(run, index))
    except Refused as err:
        return empty_figure(f"Cannot show that image: {err}")
    except (PipelineError, OSError, ValueError) as err:
        return empty_figure(f"Cannot show image #{index}: {err}")
    return image_figure(pixels, colour_map)


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
    strip = [thumbnail(ids.NEIGHBOUR, i, thumbnail_of(run, i), image_caption(run, i))
             for i in neighbours(run, index)]
    return title, table, strip or no_update
