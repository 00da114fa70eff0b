"""Behaviour of panels C, D, E: draw the three embedded views, then keep them current with small
Patches (filter fading, linked selection, threshold colours, flowers on zoom, group rings).

Each Patch callback owns one concern and always sends that concern whole, so a stale response
that Dash drops never leaves the views half-updated.
"""

from __future__ import annotations

import numpy as np
from dash import ALL, Input, Output, Patch, State, ctx, hooks, no_update

from callbacks.common import (
    WITH_CORRECTIONS,
    chosen_run,
    corrected_rows,
    disagreement_scores,
    extent,
    labels_used,
    most_disagreeing,
    moved_scores,
    run_error,
    selected_rows,
    selection_rows,
    thresholds_sent,
    triggered_ids,
    try_run,
)
from callbacks.raster import (
    colour_codes,
    drawn_view,
    focus_mask,
    keep_view,
    picture_key,
    picture_view,
    view_key,
)
from callbacks.rowsets import keep_rows
from components import ids
from components.control import ONE_FOR_ALL
from components.encoding import (
    DEFAULT_CAP,
    ERROR_SCALE,
    MOVED_RANGE,
    MOVED_SCALE,
    colour_values,
    dot_size,
    flower_subset,
    moved_colours,
    petal_radius,
    viewport_from_relayout,
)
from components.figures import (
    CORRECTED,
    FIRST_FLOWER,
    GROUPS,
    POINTS,
    SELECTED,
    centre_sizes,
    corrected_trace,
    flower_geometry,
    flower_paths,
    flower_templates,
    groups_trace,
    points_trace,
    selected_trace,
    typed,
    view_figure,
    with_paths,
)
from components.raster import SelectionRefused, is_raster, rows_in_shape
from components.views import correction_key
from pipeline.filters import filter_mask, uses_threshold

SPACES = tuple(ids.VIEWS)
TOP_DISAGREEING = "top"  # the panel B checkbox's value
DISAGREEMENT_SCALE = [[0.0, "#e8ecf1"], [0.5, "#8c6bb1"], [1.0, "#3f007d"]]
MATCH_OPACITY, FADED_OPACITY = 0.85, 0.07


def _outputs(prop_ids: dict, prop: str, duplicate: bool = True) -> list[Output]:
    return [Output(prop_ids[s], prop, allow_duplicate=duplicate) for s in SPACES]


FILTERS = [Input(ids.FILTER_ATTRIBUTES, "value"), Input(ids.FILTER_MATCH, "value"),
           Input(ids.FILTER_ON, "value")]
# The labels used (with corrections or as annotated) and the newest correction: a patch that
# draws from labels is sent again when either changes.
LABELS = [Input(ids.LABELS_USED, "value"), Input(ids.STORE_CORRECTIONS, "data")]


# ---------------------------------------------------------------- pure helpers on a run


def match_mask(run, act, threshold, attributes, match: str, on: str,
               disagreeing=None) -> np.ndarray:
    """Images passing the attribute filter on the labels used and, when `disagreeing` holds
    "top", among the 5 % whose neighbourhoods disagree most; attribute numbers the run does
    not have are ignored (they come from the browser). `threshold`: the thresholds in force,
    shape (A,) (common.thresholds_in_force)."""
    attributes = [a for a in attributes or []
                  if isinstance(a, int) and 0 <= a < len(run.attributes)]
    mask = filter_mask(act, run.prd, threshold, attributes, match or "any", on or "act")
    if isinstance(disagreeing, list) and TOP_DISAGREEING in disagreeing:
        mask = mask & most_disagreeing(run)
    return mask


def saved_groups(run, groups) -> list[dict]:
    """The run's saved groups, each as its colour and its rows (a token's or a checked list's:
    the browser holds them)."""
    return [{"run": run.id, "colour": g.get("colour"),
             "indices": selection_rows(run, g.get("indices"))}
            for g in groups or [] if isinstance(g, dict) and g.get("run") == run.id]


def opacities(mask) -> np.ndarray:
    return np.where(mask, MATCH_OPACITY, FADED_OPACITY).astype(np.float32)


def count_text(mask) -> str:
    n, k = len(mask), int(np.sum(mask))
    if k == n:
        return f"All {n:,} images shown"
    return f"{k:,} of {n:,} images match · {n - k:,} faded"


def point_size(run, mode: str, metric: str, which: str):
    """Dot size; in joint flower mode the dot is the flower centre and grows with the error."""
    base = dot_size(len(run))
    if mode == "joint":
        return centre_sizes(run_error(run, metric, which), base - 1)
    return base


def flowered(run, space, mask, viewport, cap):
    """(rows drawn as flowers in a view, how many were eligible there, the view's box)."""
    cap = DEFAULT_CAP if cap is None else max(int(cap), 0)
    box = viewport or extent(run, space)
    rows, in_view = flower_subset(run.emb(space), box, mask, cap)
    return rows, in_view, box


def flower_parts(run, act, space, mode, shown, threshold, mask, viewport, cap):
    """One view's flowers: their rows, flower_geometry (x, y per petal shape of
    flower_templates), the petal radius and the header text with the counts."""
    rows, in_view, box = flowered(run, space, mask, viewport, cap)
    radius = petal_radius(box, len(rows))
    geometry = flower_geometry(mode, run.emb(space)[rows], act[rows], run.prd[rows], threshold,
                               shown or [], radius, len(run.attributes))
    return rows, geometry, radius, flower_header(len(rows), in_view)


def flowers_in_view(run, act, space, mode, shown, threshold, mask, viewport, cap):
    """The SVG path per petal shape (flower_templates) for one view, and the header text."""
    _, geometry, radius, header = flower_parts(run, act, space, mode, shown, threshold, mask,
                                               viewport, cap)
    return flower_paths(geometry, radius), header


def pictured_flowers(run, act, space, mode, shown, threshold, mask, viewport, cap, selection):
    """A large run's flowers in one view as its picture draws them (callbacks.raster): the
    selected flowers, which get a ring (the picture lights the whole selection up; ringing
    every selected image would put thousands of SVG markers on the page), the petals
    (flower_templates' styles with their geometry) and the header text."""
    rows, geometry, _, header = flower_parts(run, act, space, mode, shown, threshold, mask,
                                             viewport, cap)
    petals = (flower_templates(mode, run.attributes, run.colours), geometry)
    return np.intersect1d(rows, selection), petals, header


def flower_header(n_drawn: int, in_view: int) -> str:
    """A view's header in a flower mode: how many flowers it draws of those eligible in view."""
    capped = " (capped)" if in_view > n_drawn else ""
    return f"flowers: {n_drawn:,} of {in_view:,} in view{capped}"


def put_flowers(patch: Patch, paths: list[str]) -> Patch:
    """A view's Patch with its petal shapes' new paths (an empty one is hidden)."""
    for k, path in enumerate(paths):
        patch["layout"]["shapes"][FIRST_FLOWER + k]["path"] = path
        patch["layout"]["shapes"][FIRST_FLOWER + k]["visible"] = bool(path)
    return patch


def build_views(run, mode, shown, colour_by, colour_attribute, metric, cap, threshold,
                filters, selection, groups, viewports, which=WITH_CORRECTIONS, sizes=None):
    """The three view figures and their header texts, everything on screen applied; a large
    run's points come as a picture drawn here (callbacks.raster) at each view's pixel size."""
    act = labels_used(run, which)
    mask = match_mask(run, act, threshold, *filters)
    raw, scale, crange = view_colours(run, act, colour_by, colour_attribute, threshold,
                                      metric, which)
    raw = per_view(raw)
    raster = is_raster(len(run))
    if not raster:  # encoded once for the three views when shared; a picture needs neither
        encoded = {id(v): typed(v) for v in raw.values()}
        alpha = typed(opacities(mask))
        size = point_size(run, mode, metric, which)
        size = size if np.isscalar(size) else typed(size)
    mine = saved_groups(run, groups)
    corrected = corrected_rows(run)
    sent = selection
    selection = selection_rows(run, selection)  # drawn again by every full redraw
    focus = focus_mask(mask, selection) if raster else None
    figures, headers = [], []
    for space in SPACES:
        xy = run.emb(space)
        flowers = [] if raster else flower_templates(mode, run.attributes, run.colours)
        header = f"{len(run):,} images"
        if raster:
            rings, petals = None, None
            if mode != "dots":
                rings, petals, header = pictured_flowers(
                    run, act, space, mode, shown, threshold, mask, viewports.get(space), cap,
                    selection)
            pixels = (sizes or {}).get(space)
            picture = picture_view(run, space, (raw[space], scale, crange,
                                                colour_codes(colour_by)),
                                   focus, viewports.get(space), pixels, mine, rings, petals)
            # Kept for the redraws to come, and its key sent with it (layout.meta): a zoom in
            # one view then draws and sends only that one.
            key = view_key(space, run, threshold, filters, which, sent, groups, colour_by,
                           colour_attribute, metric, mode, shown, cap, viewports.get(space),
                           pixels)
            keep_view(key, run, picture)
            traces = [picture[k] for k in (POINTS, GROUPS, SELECTED, CORRECTED)]
        else:
            points = points_trace(xy, encoded[id(raw[space])], scale, crange, alpha, size)
            points["selectedpoints"] = selection.tolist() or None
            traces = [points, groups_trace(xy, mine, dot_size(len(run))),
                      selected_trace(xy, selection if mode != "dots" else None),
                      corrected_trace(xy, corrected, dot_size(len(run)))]
            picture = {"picture": None, "extent": None}
            if mode != "dots":
                paths, header = flowers_in_view(run, act, space, mode, shown, threshold, mask,
                                                viewports.get(space), cap)
                flowers = with_paths(flowers, paths)
        figures.append(view_figure(*traces, flowers, uirevision=run.id,
                                   picture=picture["picture"], extent=picture["extent"]))
        if raster:
            figures[-1]["layout"]["meta"] = {"picture": picture_key(key)}
        headers.append(header)
    return figures, headers


def view_colours(run, act, colour_by, colour_attribute, threshold, metric, which):
    """Colour numbers, scale and range for the points (the error distance comes cached); the
    numbers are one array for the three views, or one per view ({space: array}) for "moved"."""
    if colour_by in (None, "error"):
        return run_error(run, metric, which), ERROR_SCALE, (0, 1)
    if colour_by == "disagreement":  # of neighbourhoods: labels used, threshold play no part
        return disagreement_scores(run), DISAGREEMENT_SCALE, (0, 1)
    if colour_by == "moved":  # of the maps: labels used, threshold play no part
        return moved_colours(moved_scores(run), len(run)), MOVED_SCALE, MOVED_RANGE
    j = attribute_index(run, colour_attribute)
    return colour_values(colour_by, act, run.prd, threshold, j, run.colours[j])


def per_view(values) -> dict:
    """Colour numbers per view: view_colours' one array shared by the three, or its own each."""
    return values if isinstance(values, dict) else dict.fromkeys(SPACES, values)


def attribute_index(run, index) -> int:
    return int(index) if isinstance(index, int) and 0 <= index < len(run.attributes) else 0


# ---------------------------------------------------------------- full draw (run, mode, colours)


@hooks.callback(
    _outputs(ids.VIEWS, "figure", duplicate=False),
    _outputs(ids.VIEW_HEADERS, "children", duplicate=False),
    Output(ids.FILTER_COUNT, "children"),
    Input(ids.RUN_PICKER, "value"), Input(ids.POINT_MODE, "value"),
    Input(ids.FLOWER_ATTRIBUTES, "value"), Input(ids.COLOUR_BY, "value"),
    Input(ids.COLOUR_ATTRIBUTE, "value"), Input(ids.DISTANCE, "value"),
    Input(ids.FLOWER_CAP, "value"),
    State(ids.THRESHOLD, "value"), [State(i.component_id, "value") for i in FILTERS],
    State(ids.STORE_SELECTION, "data"), State(ids.STORE_GROUPS, "data"),
    [State(ids.STORE_VIEWPORTS[s], "data") for s in SPACES], State(ids.LABELS_USED, "value"),
    State(ids.FILTER_DISAGREEING, "value"), State(ids.THRESHOLD_MODE, "value"),
    # Inputs, so that the first draw waits for the page's measure of the views (at once, in
    # the browser) and draws each picture once, at its size; a later resize redraws only the
    # pictures (callbacks.raster.redraw_pictures).
    [Input(ids.STORE_VIEW_SIZES[s], "data") for s in SPACES],
    State(ids.STORE_VIEWS_DRAWN, "data"),
)
def draw_views(run_id, mode, shown, colour_by, colour_attribute, metric, cap, threshold,
               f_attributes, f_match, f_on, selection, groups, vp_act, vp_fea, vp_prd,
               which=WITH_CORRECTIONS, disagreeing=None, threshold_choice=ONE_FOR_ALL,
               size_act=None, size_fea=None, size_prd=None, drawn=None):
    """The three views drawn in full, with their headers and the filter's count; a resize of
    views already drawn is left to callbacks.raster.redraw_pictures."""
    fired = triggered_ids()
    if drawn and fired and fired <= set(ids.STORE_VIEW_SIZES.values()):
        return (no_update,) * (2 * len(SPACES) + 1)
    run = chosen_run(run_id)
    threshold = thresholds_sent(run, threshold_choice, threshold)
    viewports = (vp_act, vp_fea, vp_prd)
    if ctx.triggered_id == ids.RUN_PICKER:
        selection = []  # rows and zoom boxes of the previous run mean nothing in this one
        viewports = (None,) * len(SPACES)
    filters = (f_attributes, f_match, f_on, disagreeing)
    figures, headers = build_views(
        run, mode or "dots", shown, colour_by, colour_attribute, metric, cap, threshold,
        filters, selection, groups, dict(zip(SPACES, viewports, strict=True)), which,
        dict(zip(SPACES, (size_act, size_fea, size_prd), strict=True)))
    mask = match_mask(run, labels_used(run, which), threshold, *filters)
    return (*figures, *headers, count_text(mask))


def first_pictures(layout) -> dict[str, str]:
    """A large run's three pictures (PNG data URIs by view) for the page to show as it starts,
    before plotly.js has loaded, or {} for a small run or none. Drawn by the first draw's own
    code (build_views) from the values the page's controls start with, so they are the
    pictures plotly will show, at the default size (components.raster.DEFAULT_SIZE: the page
    stretches them over the views' plot areas, as plotly stretches a picture over its axes);
    taken from the views drawn last while they are kept there (callbacks.raster.drawn_view),
    so a page load rarely draws them."""
    def value(component_id):
        return getattr(layout[component_id], "value", None)

    run = try_run(value(ids.RUN_PICKER))
    if run is None or not is_raster(len(run)):
        return {}
    (mode, shown, colour_by, colour_attribute, metric, cap, threshold, threshold_choice, which,
     disagreeing, *filters) = [value(i) for i in (
        ids.POINT_MODE, ids.FLOWER_ATTRIBUTES, ids.COLOUR_BY, ids.COLOUR_ATTRIBUTE, ids.DISTANCE,
        ids.FLOWER_CAP, ids.THRESHOLD, ids.THRESHOLD_MODE, ids.LABELS_USED,
        ids.FILTER_DISAGREEING, *(i.component_id for i in FILTERS))]
    threshold = thresholds_sent(run, threshold_choice, threshold)
    filters = (*filters, disagreeing)
    held = {s: drawn_view(view_key(s, run, threshold, filters, which, [], [], colour_by,
                                   colour_attribute, metric, mode, shown, cap, None, None), run)
            for s in SPACES}
    if all(view is not None for view in held.values()):
        return {s: view["picture"]["source"] for s, view in held.items()}
    figures, _ = build_views(run, mode or "dots", shown, colour_by, colour_attribute, metric,
                             cap, threshold, filters, [], [], dict.fromkeys(SPACES),
                             which or WITH_CORRECTIONS)
    return {s: f["layout"]["images"][0]["source"] for s, f in zip(SPACES, figures, strict=True)}


# The views come first as the page starts. Once plotly.js has loaded, it draws the page's
# graphs one after another, those whose figure came first first: the flower key and panel F's
# summary (each a plotly graph) are asked for once the views' first draw has come, not with it.
hooks.clientside_callback(
    """function(header, drawn) {
        return header && !drawn ? true : window.dash_clientside.no_update;
    }""",
    Output(ids.STORE_VIEWS_DRAWN, "data"),
    Input(ids.VIEW_HEADERS["fea"], "children"), State(ids.STORE_VIEWS_DRAWN, "data"),
)


# ---------------------------------------------------------------- patches


@hooks.callback(
    _outputs(ids.VIEWS, "figure"), Output(ids.FILTER_COUNT, "children", allow_duplicate=True),
    *FILTERS, Input(ids.THRESHOLD, "value"), State(ids.RUN_PICKER, "value"),
    *LABELS, Input(ids.FILTER_DISAGREEING, "value"), Input(ids.THRESHOLD_MODE, "value"),
    prevent_initial_call=True,
)
def fade_filtered(attributes, match, on, threshold, run_id, which=WITH_CORRECTIONS, _version=0,
                  disagreeing=None, threshold_choice=ONE_FOR_ALL):
    """Filtered-out points fade (low opacity) in all three views; the count says how many.
    A filter on labels follows the labels used, and so a correction. A new threshold leaves a
    filter on labels (or none) as it was: nothing is sent, and a run drawn as points is spared
    a redraw of its three views."""
    on_threshold = ctx.triggered_id in (ids.THRESHOLD, ids.THRESHOLD_MODE)
    if on_threshold and not uses_threshold(attributes, on):
        return (*[no_update] * len(SPACES), no_update)
    run = chosen_run(run_id)
    threshold = thresholds_sent(run, threshold_choice, threshold)
    mask = match_mask(run, labels_used(run, which), threshold, attributes, match, on,
                      disagreeing)
    if is_raster(len(run)):  # the pictures fade it (callbacks.raster)
        return (*[no_update] * len(SPACES), count_text(mask))
    alpha = typed(opacities(mask))
    patches = []
    for _ in SPACES:
        patch = Patch()
        patch["data"][POINTS]["marker"]["opacity"] = alpha
        patches.append(patch)
    return (*patches, count_text(mask))


@hooks.callback(
    _outputs(ids.VIEWS, "figure"),
    Input(ids.THRESHOLD, "value"), State(ids.RUN_PICKER, "value"),
    State(ids.COLOUR_BY, "value"), State(ids.COLOUR_ATTRIBUTE, "value"),
    State(ids.DISTANCE, "value"), *LABELS, Input(ids.THRESHOLD_MODE, "value"),
    prevent_initial_call=True,
)
def recolour_on_threshold(threshold, run_id, colour_by, colour_attribute, metric=None,
                          which=WITH_CORRECTIONS, _version=0, threshold_choice=ONE_FOR_ALL):
    """Outcome colours follow the decision thresholds; colours that come from the labels follow
    the labels used and the corrections; probabilities follow neither."""
    on_threshold = ctx.triggered_id in (ids.THRESHOLD, ids.THRESHOLD_MODE)
    if (colour_by in ("probability", "disagreement", "moved")
            or (colour_by != "outcome" and on_threshold)):
        return [no_update] * len(SPACES)
    run = chosen_run(run_id)
    if is_raster(len(run)):  # the pictures recolour (callbacks.raster)
        return [no_update] * len(SPACES)
    threshold = thresholds_sent(run, threshold_choice, threshold)
    values, _, _ = view_colours(run, labels_used(run, which), colour_by, colour_attribute,
                                threshold, metric, which)
    colours = typed(values)
    patches = []
    for _ in SPACES:
        patch = Patch()
        patch["data"][POINTS]["marker"]["color"] = colours
        patches.append(patch)
    return patches


@hooks.callback(
    _outputs(ids.VIEWS, "figure"), _outputs(ids.VIEW_HEADERS, "children"),
    [Input(ids.STORE_VIEWPORTS[s], "data") for s in SPACES], Input(ids.THRESHOLD, "value"),
    *FILTERS,
    State(ids.RUN_PICKER, "value"), State(ids.POINT_MODE, "value"),
    State(ids.FLOWER_ATTRIBUTES, "value"), State(ids.FLOWER_CAP, "value"),
    *LABELS, State(ids.DISTANCE, "value"), Input(ids.FILTER_DISAGREEING, "value"),
    Input(ids.THRESHOLD_MODE, "value"),
    prevent_initial_call=True,
)
def draw_flowers(vp_act, vp_fea, vp_prd, threshold, attributes, match, on, run_id, mode, shown,
                 cap, which=WITH_CORRECTIONS, _version=0, metric=None, disagreeing=None,
                 threshold_choice=ONE_FOR_ALL):
    """Redraw the flowers of the views whose viewport, thresholds, filter or labels changed. A
    large run's flowers are drawn into its pictures (callbacks.raster); here only its headers'
    counts change."""
    if not mode or mode == "dots":
        return [no_update] * 2 * len(SPACES)
    run = chosen_run(run_id)
    raster = is_raster(len(run))
    threshold = thresholds_sent(run, threshold_choice, threshold)
    act = labels_used(run, which)
    mask = match_mask(run, act, threshold, attributes, match, on, disagreeing)
    moved = {s for s in SPACES if ctx.triggered_id == ids.STORE_VIEWPORTS[s]}
    labels_changed = ctx.triggered_id in (ids.LABELS_USED, ids.STORE_CORRECTIONS)
    spaces = moved or set(SPACES)
    figures, headers = [], []
    for space, viewport in zip(SPACES, (vp_act, vp_fea, vp_prd), strict=True):
        if space not in spaces:
            figures.append(no_update)
            headers.append(no_update)
            continue
        if raster:
            rows, in_view, _ = flowered(run, space, mask, viewport, cap)
            figures.append(no_update)
            headers.append(flower_header(len(rows), in_view))
            continue
        paths, header = flowers_in_view(run, act, space, mode, shown, threshold, mask,
                                        viewport, cap)
        patch = put_flowers(Patch(), paths)
        # The centre dots grow with the error distance (a picture's dots do not).
        if mode == "joint" and labels_changed:
            patch["data"][POINTS]["marker"]["size"] = typed(point_size(run, mode, metric, which))
        figures.append(patch)
        headers.append(header)
    return (*figures, *headers)


for _space in SPACES:
    @hooks.callback(
        Output(ids.STORE_VIEWPORTS[_space], "data"),
        Input(ids.VIEWS[_space], "relayoutData"), Input(ids.RUN_PICKER, "value"),
        State(ids.STORE_VIEWPORTS[_space], "data"),
        prevent_initial_call=True,
    )
    def track_viewport(relayout, _run_id, previous):
        """Remember the axis box after zoom or pan (a new run starts unzoomed); other relayout
        events change nothing."""
        if ctx.triggered_id == ids.RUN_PICKER:
            return None if previous is not None else no_update
        viewport = viewport_from_relayout(relayout, previous)
        return no_update if viewport == previous else viewport


def drawn_by_user(selected_data) -> bool:
    """Whether a view's selection event is the user's: a box or lasso (it carries its range or
    lasso outline, even round no image), or a deselect (None: a double-click in the view).

    A full redraw replaces the figure and drops the box outline; plotly then re-selects with
    no outline and reports an empty selection without range or lasso. That is not the user
    clearing the selection, which the redraw has drawn again from the selection store.
    """
    if selected_data is None:
        return True
    return bool(selected_data.get("points") or selected_data.get("range")
                or selected_data.get("lassoPoints"))


@hooks.callback(
    Output(ids.STORE_SELECTION, "data"), Output(ids.STORE_SELECTION_SOURCE, "data"),
    [Input(ids.VIEWS[s], "selectedData") for s in SPACES],
    Input(ids.CLEAR_SELECTION, "n_clicks"),
    Input({"type": ids.GROUP_SELECT, "index": ALL}, "n_clicks"),
    Input(ids.RUN_PICKER, "value"), State(ids.STORE_GROUPS, "data"),
    prevent_initial_call=True,
)
def select(sel_act, sel_fea, sel_prd, _clear, group_clicks, run_id, groups):
    """The current selection: a box or lasso in any view, a saved group, or nothing."""
    trigger = ctx.triggered_id
    for space, data in zip(SPACES, (sel_act, sel_fea, sel_prd), strict=True):
        if trigger == ids.VIEWS[space]:
            if not drawn_by_user(data):
                return no_update, no_update
            run = try_run(run_id)
            if run is None:
                return selected_rows(data), space
            if is_raster(len(run)) and data is not None:
                rows = _rows_in_drawn_shape(run, space, data)
                return (no_update, no_update) if rows is None else (keep_rows(run, rows), space)
            return keep_rows(run, selection_rows(run, selected_rows(data))), space
    if isinstance(trigger, dict) and trigger.get("type") == ids.GROUP_SELECT:
        if not any(group_clicks):
            return no_update, no_update  # the buttons were just drawn, not clicked
        run = try_run(run_id)
        mine = [g for g in groups or [] if g.get("run") == run_id]
        index = trigger.get("index")
        if run is None or not isinstance(index, int) or not 0 <= index < len(mine):
            return no_update, no_update
        return keep_rows(run, selection_rows(run, mine[index].get("indices"))), None
    return [], None


def _rows_in_drawn_shape(run, space: str, data) -> np.ndarray | None:
    """A large run's selection, found on the server from the box or lasso drawn (the picture
    has no points for plotly to select); None for a malformed shape, which changes nothing."""
    try:
        return rows_in_shape(run.emb(space), data)
    except SelectionRefused:
        return None


@hooks.callback(
    _outputs(ids.VIEWS, "figure"),
    Input(ids.STORE_SELECTION, "data"), State(ids.STORE_SELECTION_SOURCE, "data"),
    State(ids.POINT_MODE, "value"), State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def highlight_selection(selection, source, mode=None, run_id=None):
    """Linked brushing: the selected rows light up in all three views. Only the indices go
    (and, among flowers, whose petals stay vivid, rings round the selected centres)."""
    run = try_run(run_id)
    raster = run is not None and is_raster(len(run))  # the pictures light it up
    rows = (selection_rows(run, selection).tolist() or None) \
        if run is not None and not raster else None
    rings = run is not None and mode not in (None, "dots") and not raster
    patches = []
    for space in SPACES:
        patch = Patch()
        if not raster:
            patch["data"][POINTS]["selectedpoints"] = rows
        if rings:
            ring = selected_trace(run.emb(space), rows)
            patch["data"][SELECTED]["x"], patch["data"][SELECTED]["y"] = ring["x"], ring["y"]
        if space != source:
            # A new revision drops the box the user once drew here, now out of date.
            patch["layout"]["selectionrevision"] += 1
        patches.append(patch)
    return patches


@hooks.callback(
    _outputs(ids.VIEWS, "figure"),
    Input(ids.STORE_GROUPS, "data"), State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def outline_groups(groups, run_id):
    """Saved groups stay outlined in the views, each in its colour."""
    run = chosen_run(run_id)
    if is_raster(len(run)):  # outlined, in view, with the pictures (callbacks.raster)
        return [no_update] * len(SPACES)
    mine = saved_groups(run, groups)
    patches = []
    for space in SPACES:
        patch = Patch()
        patch["data"][GROUPS] = groups_trace(run.emb(space), mine, dot_size(len(run)))
        patches.append(patch)
    return patches


@hooks.callback(
    _outputs(ids.VIEWS, "figure"), Output(ids.CORRECTION_KEY, "children"),
    Input(ids.STORE_CORRECTIONS, "data"), Input(ids.RUN_PICKER, "value"),
    State(ids.VIEW_HEADERS["act"], "children"),
    prevent_initial_call=True,
)
def mark_corrected(_version, run_id, drawn):
    """Images with a corrected label wear a black diamond in all three views, whoever made the
    correction; the key above the views counts them."""
    run = chosen_run(run_id)
    rows = corrected_rows(run)
    if ctx.triggered_id == ids.RUN_PICKER or not drawn or is_raster(len(run)):
        # The full draw of a new run (or the first draw, still on its way) brings the diamonds;
        # a large run's pictures bring those in view (callbacks.raster).
        return (*[no_update] * len(SPACES), correction_key(len(rows)))
    patches = []
    for space in SPACES:
        patch = Patch()
        patch["data"][CORRECTED] = corrected_trace(run.emb(space), rows, dot_size(len(run)))
        patches.append(patch)
    return (*patches, correction_key(len(rows)))
