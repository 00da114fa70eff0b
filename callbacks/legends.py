"""What explains the three views: the flower key, the colour key, and the card that opens on
hovering a point (its thumbnail and strongest predicted attributes), on both drawing paths.
"""

from __future__ import annotations

import numpy as np
from dash import Input, Output, State, hooks, html, no_update

from callbacks.common import chosen_run, extent, image_labels, parent_of, thumbnail, try_run
from callbacks.raster import pointed_row
from callbacks.views import SPACES, attribute_index
from components import ids
from components.figures import legend_figure
from components.views import colour_legend

HOVER_THUMB = 112  # pixels


@hooks.callback(
    Output(ids.FLOWER_LEGEND, "figure"),
    Input(ids.POINT_MODE, "value"), Input(ids.FLOWER_ATTRIBUTES, "value"),
    Input(ids.RUN_PICKER, "value"),
    Input(ids.STORE_VIEWS_DRAWN, "data"), prevent_initial_call=True,  # after the views
)
def draw_flower_key(mode, shown, run_id, _views_drawn=True):
    run = chosen_run(run_id)
    return legend_figure(mode or "dots", run.attributes, run.colours, shown or [])


@hooks.callback(
    Output(ids.COLOUR_LEGEND, "children"),
    Input(ids.COLOUR_BY, "value"), Input(ids.COLOUR_ATTRIBUTE, "value"),
    Input(ids.RUN_PICKER, "value"),
)
def draw_colour_legend(colour_by, colour_attribute, run_id):
    run = chosen_run(run_id)
    j = attribute_index(run, colour_attribute)
    parent = parent_of(run)
    return colour_legend(colour_by or "error", run.attributes[j], run.colours[j],
                         parent=parent.id if parent else None)


def hover_card(run, index: int) -> list:
    """The tooltip body: thumbnail, image id, the strongest predicted attributes and any
    corrected label (labels shown as corrected, marked ✎)."""
    prd = np.asarray(run.prd[index])
    act, corrected, _ = image_labels(run, index)
    top = [j for j in np.argsort(-prd)[:4] if prd[j] >= 0.05 or act[j]]
    top += [j for j in np.flatnonzero(corrected) if j not in top]
    lines = [html.Div([html.Span(className="swatch", style={"background": run.colours[j]}),
                       html.Span(run.attributes[j], className="hover-name"),
                       html.Span(f"{prd[j]:.2f}", className="hover-p"),
                       html.Span(f"{act[j]} ✎" if corrected[j] else "✓" if act[j] else "",
                                 className="hover-act")],
                      className="hover-line") for j in top]
    note = "PRD probability; ✓ = labelled (ACT)"
    if corrected.any():
        note += "; 0 ✎ / 1 ✎ = corrected label"
    image_id = str(run.images["image_id"].iloc[index])
    return [html.Img(src=thumbnail(run, index, HOVER_THUMB), className="hover-thumb"),
            html.Div([html.B(f"#{index} · {image_id}"), *lines,
                      html.Div(note, className="hover-note")], className="hover-text")]


def card_side(run, space: str, index: int, viewport) -> str:
    """The side of the hovered point its card opens to: away from the nearer edge of the page.

    The three views sit side by side in equal columns, so the point's place across that row
    (its view's column plus its share of the view's x range) says which edge is nearer.
    """
    box = viewport if _is_box(viewport) else extent(run, space)
    x = float(run.emb(space)[index, 0])
    share = (x - box[0]) / (box[1] - box[0]) if box[1] > box[0] else 0.5
    across = (SPACES.index(space) + min(max(share, 0.0), 1.0)) / len(SPACES)
    return "left" if across > 0.5 else "right"


def _is_box(viewport) -> bool:
    """Whether a viewport from the browser is an [x0, x1, y0, y1] box of finite numbers."""
    return (isinstance(viewport, list) and len(viewport) == 4
            and all(isinstance(v, (int, float)) and np.isfinite(v) for v in viewport))


VIEW_HOVERS = {}  # space -> its hover callback (tests call them directly)
for _space in SPACES:
    @hooks.callback(
        Output(ids.VIEW_TOOLTIPS[_space], "show"), Output(ids.VIEW_TOOLTIPS[_space], "bbox"),
        Output(ids.VIEW_TOOLTIPS[_space], "children"),
        Output(ids.VIEW_TOOLTIPS[_space], "direction"),
        Input(ids.VIEWS[_space], "hoverData"), State(ids.RUN_PICKER, "value"),
        State(ids.STORE_VIEWPORTS[_space], "data"),
        prevent_initial_call=True,
    )
    def show_hover(hover, run_id, viewport, space=_space):
        """The hovered image's thumbnail and strongest predicted attributes, in a card that
        opens towards the middle of the page so that it shows whole."""
        points = hover.get("points") if isinstance(hover, dict) else None
        point = points[0] if isinstance(points, list) and points else None
        run = try_run(run_id)
        index = pointed_row(run, space, point) if run is not None else None
        if index is None:
            return False, no_update, no_update, no_update
        return (True, point.get("bbox"), hover_card(run, index),
                card_side(run, space, index, viewport))

    VIEW_HOVERS[_space] = show_hover
