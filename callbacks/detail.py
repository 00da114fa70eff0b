"""Behaviour of panel G: thumbnails of the selection, the image opened large (from a click in a
view, a thumbnail or a neighbour), its ACT vs PRD table and its FEA-space neighbours.
"""

from __future__ import annotations

import dash
from dash import ALL, Input, Output, State, ctx, html, no_update

from callbacks.common import chosen_run, neighbours
from callbacks.common import thumbnail as thumbnail_of
from components import ids
from components.detail import act_prd_table, thumbnail
from components.figures import POINTS, empty_figure, image_figure
from pipeline.audit import corrected_run_labels
from pipeline.errors import PipelineError

MAX_THUMBS = 40
SPACES = tuple(ids.VIEWS)


def image_caption(run, index: int) -> str:
    return f"#{index} {run.images['image_id'].iloc[index]}"


@dash.callback(
    Output(ids.THUMBNAILS, "children"),
    Input(ids.STORE_SELECTION, "data"), State(ids.RUN_PICKER, "value"),
)
def show_thumbnails(selection, run_id):
    """Clickable thumbnails of the selected images (the first MAX_THUMBS of them)."""
    run = chosen_run(run_id)
    if not selection:
        return html.Div("Select images in a view to see them here; click a point to open it.",
                        className="summary-note")
    shown = sorted(selection)[:MAX_THUMBS]
    note = (f"showing {len(shown)} of {len(selection):,} selected"
            if len(selection) > len(shown) else f"{len(selection):,} selected")
    return [html.Div(note, className="strip-note"),
            *[thumbnail(ids.THUMB, i, thumbnail_of(run, i), image_caption(run, i)) for i in shown]]


@dash.callback(
    Output(ids.STORE_DETAIL_INDEX, "data"),
    [Input(ids.VIEWS[s], "clickData") for s in SPACES],
    Input({"type": ids.THUMB, "index": ALL}, "n_clicks"),
    Input({"type": ids.NEIGHBOUR, "index": ALL}, "n_clicks"),
    Input(ids.STORE_SELECTION, "data"), Input(ids.RUN_PICKER, "value"),
    State(ids.STORE_DETAIL_INDEX, "data"),
    prevent_initial_call=True,
)
def open_detail(click_act, click_fea, click_prd, _thumbs, _neighbours, selection, _run, current):
    """Which image is shown large: the one clicked, else the first of a new selection."""
    trigger = ctx.triggered_id
    if trigger == ids.RUN_PICKER:
        return None
    if isinstance(trigger, dict):
        clicked = ctx.triggered[0]["value"]
        return trigger["index"] if clicked else no_update  # 0/None: just drawn, not clicked
    for space, click in zip(SPACES, (click_act, click_fea, click_prd), strict=True):
        if trigger == ids.VIEWS[space]:
            point = (click or {}).get("points", [{}])[0]
            if point.get("curveNumber") == POINTS and "pointIndex" in point:
                return int(point["pointIndex"])
            return no_update
    if selection and current not in selection:
        return int(min(selection))
    return no_update


@dash.callback(
    Output(ids.DETAIL_IMAGE, "figure"),
    Input(ids.STORE_DETAIL_INDEX, "data"), Input(ids.COLOUR_MAP, "value"),
    State(ids.RUN_PICKER, "value"),
)
def draw_detail_image(index, colour_map, run_id):
    """The image large, in log intensity and the chosen false-colour map."""
    if index is None:
        return empty_figure("Click a point or a thumbnail to open an image")
    run = chosen_run(run_id)
    try:
        pixels = run.load_image(int(index))
    except (PipelineError, OSError, ValueError) as err:
        return empty_figure(f"Cannot show image #{index}: {err}")
    return image_figure(pixels, colour_map or "Inferno")


@dash.callback(
    Output(ids.DETAIL_TITLE, "children"), Output(ids.DETAIL_TABLE, "children"),
    Output(ids.NEIGHBOURS, "children"),
    Input(ids.STORE_DETAIL_INDEX, "data"), Input(ids.THRESHOLD, "value"),
    State(ids.RUN_PICKER, "value"),
)
def describe_detail(index, threshold, run_id):
    """The open image's name, its ACT vs PRD table and its 8 nearest neighbours in FEA space."""
    if index is None:
        return "no image open", None, None
    run = chosen_run(run_id)
    index = int(index)
    row = run.images.iloc[index]
    title = f"#{index} · {row['image_id']} · {row['split']}"
    act, corrected = corrected_run_labels(run)  # labels with the analysts' corrections (issue 4)
    table = act_prd_table(run.attributes, run.colours, act[index], run.prd[index], threshold,
                          corrected[index])
    strip = [thumbnail(ids.NEIGHBOUR, i, thumbnail_of(run, i), image_caption(run, i))
             for i in neighbours(run, index)]
    return title, table, strip or no_update
