"""The views of large runs (above XRAE_RASTER_ABOVE images) as pictures drawn on the server:
redrawn for every gesture at the view's pixel size, with the hovered or clicked image found by
a k-d tree, so the browser never holds the run's points.

Small runs keep the scattergl views (callbacks/views.py): every callback here leaves them be.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
from dash import Input, Output, State, ctx, hooks, no_update
from scipy.spatial import cKDTree

from callbacks.common import (
    WITH_CORRECTIONS,
    chosen_run,
    corrected_rows,
    extent,
    labels_used,
    selection_rows,
    thresholds_sent,
    try_run,
)
from components import ids
from components.encoding import dot_size
from components.figures import (
    CORRECTED,
    GROUPS,
    POINTS,
    SELECTED,
    VIEW_MARGIN,
    corrected_trace,
    groups_trace,
    selected_trace,
)
from components.raster import (
    hover_surface,
    in_view,
    is_raster,
    layout_image,
    pixel_of,
    pixel_ratio,
    pixel_size,
    png_uri,
    render_view,
    with_petals,
)
from pipeline.store import open_run

SPACES = tuple(ids.VIEWS)
OVERLAY_CAP = 5_000  # group rings, diamonds or selection rings drawn per view, at most
OUTCOME_CODES = 4  # TP, FP, FN, TN: mixed per pixel, not averaged


def picture_box(run, space: str, viewport) -> list[float]:
    """The data box a view shows: its zoom box, else the box round all its points."""
    if (isinstance(viewport, list) and len(viewport) == 4
            and all(isinstance(v, (int, float)) and np.isfinite(v) for v in viewport)
            and viewport[1] > viewport[0] and viewport[3] > viewport[2]):
        return [float(v) for v in viewport]
    return extent(run, space)


def focus_mask(mask, selection) -> np.ndarray:
    """The points drawn vivid: those the filter keeps and, when images are selected, selected
    (the others fade, as plotly fades unselected points)."""
    mask = np.asarray(mask, bool)
    if len(selection) == 0:
        return mask
    chosen = np.zeros(len(mask), bool)
    chosen[selection] = True
    return mask & chosen


def overlay_groups(run, groups, box, xy) -> list[dict]:
    """The run's saved groups cut to their members in view (at most OVERLAY_CAP each)."""
    mine = [g for g in groups or [] if isinstance(g, dict) and g.get("run") == run.id]
    return [{"colour": g.get("colour"),
             "indices": in_view(xy, selection_rows(run, g.get("indices")), box, OVERLAY_CAP)}
            for g in mine]


def picture_view(run, space, colours, focus, viewport, size, groups, rings,
                 petals=None) -> dict:
    """Everything of one view of a large run: the picture (a layout image) with the flowers'
    `petals` drawn in (flower_templates' styles and flower_geometry, or None), the hover
    surface in the image trace's place, and group rings, selection rings and correction
    diamonds for what is in view. `colours` is (values, scale, range, codes-or-None); `rings`
    the selected rows that get a ring (the selected flowers: callbacks.views.pictured_flowers)
    or None."""
    xy = np.asarray(run.emb(space))
    box = picture_box(run, space, viewport)
    values, scale, crange, codes = colours
    size, ratio = pixel_size(size), pixel_ratio(size)
    pixels = _pixels(str(run.path), space, tuple(box), size)
    rgba = render_view(xy, values, scale, crange, focus, box, size, codes, pixels, ratio)
    uri = png_uri(rgba if petals is None else with_petals(rgba, *petals, box, ratio))
    base = dot_size(len(run))
    shown = overlay_groups(run, groups, box, xy)
    rings_of_groups = groups_trace(xy, shown, base)
    if not any(len(g["indices"]) for g in shown):
        # One point at no place keeps the trace selectable, and so plotly's box and lasso
        # tools in the mode bar (plotly hides them when no trace can be selected).
        rings_of_groups["x"], rings_of_groups["y"] = [None], [None]
    overlays = {
        GROUPS: rings_of_groups,
        SELECTED: selected_trace(xy, in_view(xy, rings, box, OVERLAY_CAP)),
        CORRECTED: corrected_trace(xy, in_view(xy, corrected_rows(run), box, OVERLAY_CAP), base),
    }
    for trace in overlays.values():
        # SVG, not WebGL: a figure without WebGL traces needs no GL context, which a browser
        # without a GPU emulates at great cost on every redraw; the overlays are capped.
        trace["type"] = "scatter"
    return {"picture": layout_image(uri, box), "extent": extent(run, space),
            POINTS: dict(_hover(str(run.path), space, tuple(box))), **overlays}


# A view's pixels and hover surface depend only on its box and size: a selection, filter or
# threshold redraws the pictures without binning a million points again.
@lru_cache(maxsize=12)
def _pixels(run_path: str, space: str, box: tuple, size: tuple) -> np.ndarray:
    pixels = pixel_of(open_run(run_path).emb(space), box, size)
    pixels.flags.writeable = False
    return pixels


@lru_cache(maxsize=12)
def _hover(run_path: str, space: str, box: tuple) -> dict:
    return hover_surface(open_run(run_path).emb(space), list(box))


def colour_codes(colour_by) -> int | None:
    return OUTCOME_CODES if colour_by == "outcome" else None


# ---------------------------------------------------------------- redraw on every gesture


@hooks.callback(
    [Output(ids.VIEWS[s], "figure", allow_duplicate=True) for s in SPACES],
    Input(ids.STORE_SELECTION, "data"), Input(ids.THRESHOLD, "value"),
    Input(ids.THRESHOLD_MODE, "value"), Input(ids.FILTER_ATTRIBUTES, "value"),
    Input(ids.FILTER_MATCH, "value"),
    Input(ids.FILTER_ON, "value"), Input(ids.FILTER_DISAGREEING, "value"),
    Input(ids.LABELS_USED, "value"), Input(ids.STORE_CORRECTIONS, "data"),
    Input(ids.STORE_GROUPS, "data"),
    [Input(ids.STORE_VIEWPORTS[s], "data") for s in SPACES],
    [Input(ids.STORE_VIEW_SIZES[s], "data") for s in SPACES],
    State(ids.RUN_PICKER, "value"), State(ids.POINT_MODE, "value"),
    State(ids.COLOUR_BY, "value"), State(ids.COLOUR_ATTRIBUTE, "value"),
    State(ids.DISTANCE, "value"), State(ids.FLOWER_CAP, "value"),
    State(ids.FLOWER_ATTRIBUTES, "value"), State(ids.STORE_VIEWS_DRAWN, "data"),
    [State(ids.STORE_SHOWN_PICTURES[s], "data") for s in SPACES],
    prevent_initial_call=True,
)
def redraw_pictures(selection, threshold, threshold_choice, f_attributes, f_match, f_on,
                    disagreeing, which, _version, groups, vp_act, vp_fea, vp_prd, size_act,
                    size_fea, size_prd, run_id, mode, colour_by, colour_attribute, metric,
                    cap=None, shown=None, drawn=True, on_act=None, on_fea=None, on_prd=None):
    """A large run's three views drawn again when anything they show changes: the selection
    lit up in all three, the filter's fading, the threshold's outcome colours, the labels used,
    saved groups, and a view's zoom box or pixel size; in a flower mode with its flowers drawn
    into the picture, so the browser redraws each view once and parses no petal. Before the
    views' first draw (the page measuring them as it starts) there is nothing to redraw; the
    first draw brings everything. `on_*`: the key of the picture each view shows, as the page
    read it from its figure (STORE_SHOWN_PICTURES)."""
    run = try_run(run_id)
    if not drawn or run is None or not is_raster(len(run)):
        return [no_update] * len(SPACES)
    from callbacks.views import match_mask, per_view, pictured_flowers, view_colours

    which = which or WITH_CORRECTIONS
    threshold = thresholds_sent(run, threshold_choice, threshold)
    act = labels_used(run, which)
    viewports = dict(zip(SPACES, (vp_act, vp_fea, vp_prd), strict=True))
    sizes = dict(zip(SPACES, (size_act, size_fea, size_prd), strict=True))
    # Every view the page does not show as this answer would: not only the one zoomed or
    # resized. When a gesture comes while another's request is out (a zoom in one view, then
    # in the next), Dash drops the first answer, and the second must then bring that view's
    # picture too; the page's own record of what it shows (on_*) says which. A view to send
    # whose inputs did not change since it was drawn is taken from the views drawn last.
    filters = (f_attributes, f_match, f_on, disagreeing)
    keys = {s: view_key(s, run, threshold, filters, which, selection, groups, colour_by,
                        colour_attribute, metric, mode, shown, cap, viewports[s], sizes[s])
            for s in SPACES}
    on_screen = dict(zip(SPACES, (on_act, on_fea, on_prd), strict=True))
    unchanged = {s for s in SPACES if on_screen[s] == picture_key(keys[s])}
    views = {s: drawn_view(keys[s], run) for s in SPACES if s not in unchanged}
    if any(view is None for view in views.values()):
        mask = match_mask(run, act, threshold, f_attributes, f_match, f_on, disagreeing)
        rows = selection_rows(run, selection)
        values, scale, crange = view_colours(run, act, colour_by, colour_attribute, threshold,
                                             metric, which)
        colours = {s: (v, scale, crange, colour_codes(colour_by))
                   for s, v in per_view(values).items()}
        focus = focus_mask(mask, rows)
        for s in [s for s, view in views.items() if view is None]:
            rings = petals = None
            if mode not in (None, "dots"):
                rings, petals, _ = pictured_flowers(run, act, s, mode, shown, threshold, mask,
                                                    viewports[s], cap, rows)
            views[s] = picture_view(run, s, colours[s], focus, viewports[s], sizes[s], groups,
                                    rings, petals)
            keep_view(keys[s], run, views[s])
    return [no_update if s in unchanged else picture_patch(views[s], picture_key(keys[s]))
            for s in SPACES]


# The views drawn last, by the full draw (callbacks.views.build_views) or the redraw (a few,
# for a few people at once): {key: (labels in force, view)}. The key is every input of one
# view's picture as sent (view_key); the labels in force are compared by identity (a
# correction makes a new array; corrections change the pictures even with the labels as
# annotated in use), as the browser's count of corrections is only a trigger. A run's views
# change in no other way: a run is written once.
_DRAWN: OrderedDict[tuple, tuple] = OrderedDict()
_DRAWN_LOCK = threading.Lock()
DRAWN_KEPT = 24  # views (a picture of 100-300 KB and its overlays each)


def view_key(space, run, threshold, filters, which, selection, groups, colour_by,
             colour_attribute, metric, mode, shown, cap, viewport, size) -> tuple:
    """What one view's picture is drawn from, as the browser sent it (`threshold`: those in
    force, `filters`: attributes, match, on, disagreeing)."""
    common = json.dumps([str(run.path), np.asarray(threshold).tolist(), list(filters),
                         which or WITH_CORRECTIONS, selection, groups, colour_by,
                         colour_attribute, metric, mode or "dots", shown, cap],
                        default=str, sort_keys=True)
    return space, common, json.dumps([viewport, size], default=str)


def picture_key(key: tuple) -> str:
    """A view key as a short string: the figure carries it (layout.meta.picture), and the page
    sends back the one of the picture it shows."""
    return hashlib.blake2b(repr(key).encode(), digest_size=12).hexdigest()


def drawn_view(key: tuple, run) -> dict | None:
    """The view drawn last from `key`, unless a correction came since; else None."""
    in_force = labels_used(run, WITH_CORRECTIONS)
    with _DRAWN_LOCK:
        held = _DRAWN.get(key)
        if held is None or held[0] is not in_force:
            return None
        _DRAWN.move_to_end(key)
        return held[1]


def keep_view(key: tuple, run, view: dict) -> None:
    in_force = labels_used(run, WITH_CORRECTIONS)
    with _DRAWN_LOCK:
        _DRAWN[key] = (in_force, view)
        _DRAWN.move_to_end(key)
        while len(_DRAWN) > DRAWN_KEPT:
            _DRAWN.popitem(last=False)


def picture_patch(view: dict, key: str):
    """A Patch that puts one view's new picture (its picture_key `key`) and overlay traces in
    place."""
    from dash import Patch

    patch = Patch()
    patch["layout"]["images"] = [view["picture"]]
    patch["layout"]["meta"] = {"picture": key}
    for trace in (POINTS, GROUPS, SELECTED, CORRECTED):
        patch["data"][trace] = view[trace]
    return patch


for _space in SPACES:
    # The plot area's size (assets/xrae.js: measure), taken as the page starts, so that the
    # first draw's pictures are drawn once, at their size, and again after each relayout;
    # written only when it changed, so a zoom does not redraw the picture twice. A window
    # resize, which Dash passes on only once, is caught by the page's own resize listener
    # there. The server clamps the size.
    hooks.clientside_callback(
        f"""function(_relayout, previous) {{
            const size = window.xrae.measure('{ids.VIEWS[_space]}',
                                             '{ids.STORE_VIEW_SIZES[_space]}', {VIEW_MARGIN},
                                             previous);
            return size || window.dash_clientside.no_update;
        }}""",
        Output(ids.STORE_VIEW_SIZES[_space], "data"),
        Input(ids.VIEWS[_space], "relayoutData"),
        State(ids.STORE_VIEW_SIZES[_space], "data"),
    )


for _space in SPACES:
    # The key of the picture the view shows, read from its figure in the page whenever the
    # figure changes: what redraw_pictures may leave as it is.
    hooks.clientside_callback(
        """function(figure) {
            const meta = figure && figure.layout && figure.layout.meta;
            return (meta && meta.picture) || null;
        }""",
        Output(ids.STORE_SHOWN_PICTURES[_space], "data"), Input(ids.VIEWS[_space], "figure"),
    )


# ---------------------------------------------------------------- hover and click


@lru_cache(maxsize=6)
def _tree(run_path: str, space: str) -> cKDTree:
    return cKDTree(np.asarray(open_run(run_path).emb(space), np.float64))


def nearest_row(run, space: str, x: float, y: float) -> int:
    """The image nearest to (x, y) in a view (a k-d tree per run and view, built once)."""
    _, row = _tree(str(run.path), space).query([x, y])
    return int(row)


def pointed_row(run, space: str, point) -> int | None:
    """The image a hover or click event points at: its index in the image trace (small runs),
    or the image nearest to the hovered cell of the picture's hover surface when that cell
    holds one (large runs); None for any other trace, an empty cell or anything malformed."""
    if not isinstance(point, dict) or point.get("curveNumber") != POINTS:
        return None
    if is_raster(len(run)):
        x, y = point.get("x"), point.get("y")
        if point.get("z") != 1:
            return None
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        return nearest_row(run, space, x, y) if numbers and np.isfinite([x, y]).all() else None
    index = point.get("pointIndex")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(run):
        return index
    return None


@hooks.callback(
    Output(ids.STORE_DETAIL_INDEX, "data", allow_duplicate=True),
    [Input(ids.VIEWS[s], "clickData") for s in SPACES], State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def open_clicked_picture(click_act, click_fea, click_prd, run_id):
    """A click on a large run's picture opens the image nearest to it (small runs: panel G's
    own callback opens the clicked point)."""
    run = chosen_run(run_id)
    if not is_raster(len(run)):
        return no_update
    clicks = dict(zip(SPACES, (click_act, click_fea, click_prd), strict=True))
    for space in SPACES:
        if ctx.triggered_id == ids.VIEWS[space]:
            points = (clicks[space] or {}).get("points") if isinstance(clicks[space], dict) \
                else None
            point = points[0] if isinstance(points, list) and points else None
            row = pointed_row(run, space, point)
            return no_update if row is None else row
    return no_update
