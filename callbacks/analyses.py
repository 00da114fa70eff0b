"""Behaviour of the analyses: the co-occurrence and conditional error matrix in panel F, which
follows the thresholds in force, the filters, the labels used and the chosen group, and whose
cells select their images in all three views.
"""

from __future__ import annotations

import numpy as np
from dash import ALL, Input, Output, State, ctx, hooks, html, no_update

from callbacks.common import (
    WITH_CORRECTIONS,
    Refused,
    chosen_run,
    column_index,
    disagreement_scores,
    labels_used,
    row_index,
    selection_rows,
    threshold_words,
    thresholds_in_force,
    thumbnail,
    triggered_ids,
)
from callbacks.rowsets import keep_rows
from callbacks.views import match_mask
from components import ids
from components.analyses import (
    GROUP_OPTIONS,
    SELECTION,
    TOP_N,
    cooccurrence_figure,
    disagreeing_caption,
)
from components.control import ONE_FOR_ALL
from components.detail import thumbnail as thumbnail_button
from components.figures import empty_figure
from pipeline.analyses.cooccurrence import ERROR_KINDS, cell_rows, conditional_errors

FILTERS = [Input(ids.FILTER_ATTRIBUTES, "value"), Input(ids.FILTER_MATCH, "value"),
           Input(ids.FILTER_ON, "value"), Input(ids.FILTER_DISAGREEING, "value")]
LABELS = [Input(ids.LABELS_USED, "value"), Input(ids.STORE_CORRECTIONS, "data")]
COOCCURRENCE_TAB = "cooccurrence"  # its tab id in panel F (components.selection)


def _saved(groups, run_id) -> list[dict]:
    return [g for g in groups if isinstance(g, dict) and g.get("run") == run_id] \
        if isinstance(groups, list) else []


def group_rows(run, group, selection, groups) -> tuple[str, np.ndarray]:
    """(name, rows) of the chosen group: all images, the current selection (all images while
    nothing is selected, as in the comparison) or a saved group of this run. A choice the run
    does not have counts as all images."""
    everything = ("All images", np.arange(len(run)))
    if group == SELECTION:
        rows = selection_rows(run, selection)
        return ("Current selection", rows) if len(rows) else everything
    mine = _saved(groups, run.id)
    if isinstance(group, str) and group.isdigit() and int(group) < len(mine):
        chosen = mine[int(group)]
        return str(chosen.get("name") or "group"), selection_rows(run, chosen.get("indices"))
    return everything


def counted_rows(run, act, threshold, filters, group, selection, groups) -> tuple[str, np.ndarray]:
    """The rows the matrix counts: those of the chosen group that pass the attribute filter."""
    name, rows = group_rows(run, group, selection, groups)
    mask = match_mask(run, act, threshold, *filters)
    return name, rows[mask[rows]]


def error_kind(value) -> str:
    """The error kind sent by the browser: "fn" or "fp"."""
    if value not in ERROR_KINDS:
        raise Refused(f"the error kind must be one of {ERROR_KINDS}, not {value!r:.40}")
    return value


@hooks.callback(
    Output(ids.COOCCURRENCE_GROUP, "options"),
    Input(ids.STORE_GROUPS, "data"), Input(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,  # the page starts with no saved group: the layout's options
)
def list_cooccurrence_groups(groups, run_id):
    """All images, the current selection and the run's saved groups."""
    return GROUP_OPTIONS + [{"label": str(g.get("name") or "group"), "value": str(k)}
                            for k, g in enumerate(_saved(groups, run_id))]


@hooks.callback(
    Output(ids.COOCCURRENCE, "figure"), Output(ids.COOCCURRENCE_NOTE, "children"),
    Input(ids.COOCCURRENCE_KIND, "value"), Input(ids.COOCCURRENCE_GROUP, "value"),
    Input(ids.THRESHOLD, "value"), *FILTERS,
    Input(ids.STORE_SELECTION, "data"), Input(ids.STORE_GROUPS, "data"),
    Input(ids.RUN_PICKER, "value"), *LABELS, Input(ids.THRESHOLD_MODE, "value"),
    Input(ids.SELECTION_TABS, "active_tab"),
    prevent_initial_call=True,  # its tab is hidden as the page starts; opening it draws it
)
def draw_cooccurrence(kind, group, threshold, f_attributes, f_match, f_on, f_disagreeing,
                      selection, groups, run_id, which=WITH_CORRECTIONS, _version=0,
                      threshold_choice=ONE_FOR_ALL, tab=COOCCURRENCE_TAB):
    """The conditional error matrix of the images counted, and a note saying which they are;
    drawn while its tab is open (a hidden tab is brought up to date when it opens)."""
    if tab != COOCCURRENCE_TAB:
        return no_update, no_update
    if group != SELECTION and triggered_ids() == {ids.STORE_SELECTION}:
        return no_update, no_update  # the matrix does not count the selection: nothing changed
    run = chosen_run(run_id)
    try:
        kind = error_kind(kind)
        words = threshold_words(run, threshold_choice, threshold)
        threshold = thresholds_in_force(run, threshold_choice, threshold)
    except Refused as err:
        return empty_figure(str(err)), str(err)
    act = labels_used(run, which)
    filters = (f_attributes, f_match, f_on, f_disagreeing)
    name, rows = counted_rows(run, act, threshold, filters, group, selection, groups)
    note = f"{name}: {len(rows):,} images counted at {words}."
    if len(rows) == 0:
        return empty_figure("No image of this group passes the filters."), note
    table = conditional_errors(act, run.prd, threshold, kind, rows)
    return cooccurrence_figure(table, run.attributes), note


@hooks.callback(
    Output(ids.STORE_SELECTION, "data", allow_duplicate=True),
    Output(ids.STORE_SELECTION_SOURCE, "data", allow_duplicate=True),
    Input(ids.COOCCURRENCE, "clickData"),
    State(ids.COOCCURRENCE_KIND, "value"), State(ids.COOCCURRENCE_GROUP, "value"),
    State(ids.THRESHOLD, "value"), [State(i.component_id, "value") for i in FILTERS],
    State(ids.STORE_SELECTION, "data"), State(ids.STORE_GROUPS, "data"),
    State(ids.RUN_PICKER, "value"), State(ids.LABELS_USED, "value"),
    State(ids.THRESHOLD_MODE, "value"),
    prevent_initial_call=True,
)
def select_cell(click, kind, group, threshold, f_attributes, f_match, f_on, f_disagreeing,
                selection, groups, run_id, which=WITH_CORRECTIONS, threshold_choice=ONE_FOR_ALL):
    """Clicking cell (i, j) selects the images counted there (i labelled, j wrong; on the
    diagonal, j wrong), in all three views, as a box selection would."""
    run = chosen_run(run_id)
    try:
        point = click["points"][0]
        i, j = column_index(run, point["y"]), column_index(run, point["x"])
        kind = error_kind(kind)
        threshold = thresholds_in_force(run, threshold_choice, threshold)
    except (Refused, KeyError, IndexError, TypeError):
        return no_update, no_update  # not a cell of this run's matrix: nothing to select
    act = labels_used(run, which)
    filters = (f_attributes, f_match, f_on, f_disagreeing)
    _, rows = counted_rows(run, act, threshold, filters, group, selection, groups)
    found = cell_rows(act, run.prd, threshold, i, j, kind, rows)
    if len(found) == 0:
        return no_update, no_update
    return keep_rows(run, found), None


# ---------------------------------------------------------------- cross-space disagreement

COMPUTING = ("Reading the scores; a run written before runs stored them has every image's "
             "neighbourhoods in ACT, FEA and PRD computed now, once (on two cores about 12 s "
             "for 100,000 images, 5 minutes for a million)…")
WAITING = "Open this tab or colour the views by disagreement to see the scores."


@hooks.callback(
    Output(ids.DISAGREEMENT_LIST, "children"), Output(ids.DISAGREEMENT_TAB_STATUS, "children"),
    Input(ids.SELECTION_TABS, "active_tab"), Input(ids.COLOUR_BY, "value"),
    Input(ids.FILTER_DISAGREEING, "value"), Input(ids.RUN_PICKER, "value"),
    running=[(Output(ids.DISAGREEMENT_STATUS, "children"), COMPUTING, ""),
             (Output(ids.DISAGREEMENT_TAB_STATUS, "children"), COMPUTING, "")],
    # Nothing asks for the scores as the page starts (its tab is hidden, the colour-by and
    # the filter do not need them): no request, and no "Reading the scores" flashing by.
    prevent_initial_call=True,
)
def list_disagreeing(tab, colour_by, filtered, run_id):
    """The TOP_N most disagreeing images, read when the analyst first asks for the score (this
    tab, the colour-by or the filter), never at the page's start; for a run without stored
    scores, a message says so while their one computation runs."""
    run = chosen_run(run_id)
    asked = (tab == "disagreement" or colour_by == "disagreement"
             or (isinstance(filtered, list) and bool(filtered)))
    if not asked:
        return [], WAITING
    score = disagreement_scores(run)
    top = highest(score, TOP_N)
    image_ids = run.images["image_id"].to_numpy()
    buttons = [thumbnail_button(ids.DISAGREEING, int(r), thumbnail(run, int(r)),
                                disagreeing_caption(int(r), str(image_ids[r]), float(score[r])))
               for r in top]
    median = float(np.median(score))
    note = (f"The {len(top)} most disagreeing of {len(run):,} images (score after the id; "
            f"the run's median is {median:.2f}).")
    return [html.Div(note, className="strip-note"), *buttons], ""


def highest(score: np.ndarray, n: int) -> np.ndarray:
    """Rows of the n highest scores, highest first, the lower row first among equal ones (as a
    stable sort would give them, without sorting the whole run)."""
    n = min(n, len(score))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    nth = np.partition(score, len(score) - n)[len(score) - n]
    near_top = np.flatnonzero(score >= nth)
    return near_top[np.lexsort((near_top, -score[near_top]))][:n]


@hooks.callback(
    Output(ids.STORE_DETAIL_INDEX, "data", allow_duplicate=True),
    Input({"type": ids.DISAGREEING, "index": ALL}, "n_clicks"), State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def open_disagreeing(_clicks, run_id):
    """A click on one of the most disagreeing images opens it in the detail view."""
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not ctx.triggered[0]["value"]:
        return no_update  # the thumbnails were just drawn, not clicked
    try:
        return row_index(chosen_run(run_id), trigger.get("index"))
    except Refused:
        return no_update
