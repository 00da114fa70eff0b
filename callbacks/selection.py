"""Behaviour of panel F: metrics of the current selection and of saved groups (overall and per
attribute, at the thresholds in force), saving and deleting groups, comparing two, CSV export.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict

import numpy as np
import pandas as pd
from dash import ALL, Input, Output, State, ctx, dcc, hooks, html, no_update

from callbacks.common import (
    AS_ANNOTATED,
    WITH_CORRECTIONS,
    Refused,
    chosen_run,
    labels_used,
    labels_version,
    row_list,
    run_labels,
    selection_rows,
    threshold_words,
    thresholds_in_force,
    thresholds_sent,
    try_run,
)
from callbacks.rowsets import keep_rows
from components import ids
from components.control import ONE_FOR_ALL
from components.selection import (
    COMPARE_CHOICES,
    GROUP_COLOURS,
    compare_table,
    group_row,
    summary_block,
)
from pipeline.analyses.uncertainty import bootstrap_intervals
from pipeline.metrics import OUTCOMES, group_summary, outcomes
from pipeline.spreadsheet import formula_safe

SELECTION, EVERYTHING = "selection", "all"
# Panel F's tabs (components.selection): a hidden tab's content is made when it opens.
GROUPS_TAB, COMPARE_TAB = "groups", "compare"
# The labels used and the newest correction: the numbers are scored again when either changes.
LABELS = [Input(ids.LABELS_USED, "value"), Input(ids.STORE_CORRECTIONS, "data")]


def labels_note(run, which: str) -> str:
    """Which labels the numbers are scored on, in words, with how many were corrected."""
    if which == AS_ANNOTATED:
        return "Scored on the labels as annotated (corrections ignored)."
    n = int(run_labels(run)[1].sum())
    return f"Scored on the labels with corrections ({n:,} corrected)."


def summarise(run, rows, threshold, which: str = WITH_CORRECTIONS,
              intervals: bool = False) -> dict:
    """group_summary of the given rows (all rows when None) at the thresholds in force (shape
    (A,), or one number), on the labels used (by default those in force: annotated plus
    corrections); with `intervals`, also the scores' 95 % bootstrap intervals (None for a group
    of no image).

    Remembered per run, rows, thresholds and labels: on a large run one summary takes seconds,
    and the selection panel, the comparison and the group list ask for the same ones."""
    rows = None if rows is None else selection_rows(run, rows)
    key = (str(run.path), None if rows is None else hashlib.blake2b(rows.tobytes()).digest(),
           np.asarray(threshold, np.float32).tobytes(), labels_version(run, which), intervals)
    with _SUMMARIES_LOCK:  # a second panel asking for the same summary waits for the first
        if key not in _SUMMARIES:
            _SUMMARIES[key] = _summary(run, slice(None) if rows is None else rows, threshold,
                                       which, intervals)
            while len(_SUMMARIES) > MAX_SUMMARIES:
                _SUMMARIES.popitem(last=False)
        _SUMMARIES.move_to_end(key)
        return _SUMMARIES[key]


MAX_SUMMARIES = 64
_SUMMARIES: OrderedDict = OrderedDict()
_SUMMARIES_LOCK = threading.Lock()


def _summary(run, rows, threshold, which: str, intervals: bool) -> dict:
    act, prd = np.asarray(labels_used(run, which)[rows]), np.asarray(run.prd[rows])
    summary = group_summary(act, prd, threshold)
    if intervals:
        summary["intervals"] = bootstrap_intervals(act, prd, threshold) if len(act) else None
    return summary


def my_groups(groups, run_id) -> list[dict]:
    """The saved groups that belong to the run on screen, in saving order."""
    return [g for g in groups or [] if g.get("run") == run_id]


def group_frame(run, rows, threshold, which: str = WITH_CORRECTIONS) -> pd.DataFrame:
    """One row per image: id, row, split, then ACT (the labels used), PRD, outcome and the
    threshold that outcome was decided at, for every attribute. The threshold travels with the
    file, so an outcome read later can be checked against the probability beside it."""
    rows = np.asarray(sorted(rows), dtype=np.int64)
    act, prd = np.asarray(labels_used(run, which)[rows]), np.asarray(run.prd[rows])
    codes = outcomes(act, prd, threshold)
    limits = np.broadcast_to(np.asarray(threshold, dtype=float), (len(run.attributes),))
    frame = pd.DataFrame({"image_id": run.images["image_id"].to_numpy()[rows], "row": rows,
                          "split": run.images["split"].to_numpy()[rows]})
    for j, name in enumerate(run.attributes):
        frame[f"ACT {name}"] = act[:, j]
        frame[f"PRD {name}"] = np.round(prd[:, j], 4)
        frame[f"outcome {name}"] = np.asarray(OUTCOMES)[codes[:, j]]
        frame[f"threshold {name}"] = round(float(limits[j]), 4)
    return frame


@hooks.callback(
    Output(ids.SELECTION_TITLE, "children"), Output(ids.SELECTION_SUMMARY, "children"),
    Input(ids.STORE_SELECTION, "data"), Input(ids.THRESHOLD, "value"),
    Input(ids.RUN_PICKER, "value"), *LABELS, Input(ids.THRESHOLD_MODE, "value"),
    # As the page starts, made once the views' first draw has come (callbacks.views): its F1
    # chart is a plotly graph, which plotly would otherwise draw before the views.
    Input(ids.STORE_VIEWS_DRAWN, "data"), prevent_initial_call=True,
)
def summarise_selection(selection, threshold, run_id, which=WITH_CORRECTIONS, _version=0,
                        threshold_choice=ONE_FOR_ALL, _views_drawn=True):
    """The selection's counts and scores; all images (the model overall) when none is chosen.
    The note says which labels the counts are scored on, and at which thresholds."""
    run = chosen_run(run_id)
    limits = thresholds_sent(run, threshold_choice, threshold)
    words = threshold_words(run, threshold_choice, threshold)
    rows = selection_rows(run, selection)
    if len(rows):
        title = f"Selection: {len(rows):,} images"
        note = f"At {words}. {labels_note(run, which)}"
    else:
        title = "No selection: box or lasso select in a view"
        note = (f"Showing all {len(run):,} images (the whole run) at {words}. "
                f"{labels_note(run, which)}")
    summary = summarise(run, rows if len(rows) else None, limits, which, intervals=True)
    everything = summarise(run, None, limits, which) if len(rows) else summary
    return title, summary_block(summary, run.attributes, run.colours, note, everything)


@hooks.callback(
    Output(ids.STORE_GROUPS, "data"), Output(ids.GROUP_NAME, "value"),
    Input(ids.SAVE_GROUP, "n_clicks"), Input({"type": ids.GROUP_DELETE, "index": ALL}, "n_clicks"),
    State(ids.GROUP_NAME, "value"), State(ids.STORE_SELECTION, "data"),
    State(ids.STORE_GROUPS, "data"), State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def edit_groups(_save, delete_clicks, name, selection, groups, run_id):
    """Save the selection as a named, coloured group, or delete a saved group."""
    groups = list(groups or [])
    trigger = ctx.triggered_id
    if isinstance(trigger, dict):
        if not any(delete_clicks):
            return no_update, no_update  # the buttons were just drawn, not clicked
        doomed = my_groups(groups, run_id)[trigger["index"]]
        return [g for g in groups if g is not doomed and g != doomed], no_update
    run = try_run(run_id)
    rows = selection_rows(run, selection) if run is not None else []
    if not len(rows):
        return no_update, no_update
    mine = my_groups(groups, run_id)
    name = (name or "").strip() or f"group {len(mine) + 1}"
    colour = GROUP_COLOURS[len(mine) % len(GROUP_COLOURS)]
    groups.append({"run": run_id, "name": name, "colour": colour,
                   "indices": keep_rows(run, rows)})
    return groups, ""


@hooks.callback(
    Output(ids.GROUP_LIST, "children"),
    Output(ids.COMPARE_A, "options"), Output(ids.COMPARE_B, "options"),
    Input(ids.STORE_GROUPS, "data"), Input(ids.THRESHOLD, "value"),
    Input(ids.RUN_PICKER, "value"), *LABELS, Input(ids.THRESHOLD_MODE, "value"),
    Input(ids.SELECTION_TABS, "active_tab"),
    prevent_initial_call=True,  # hidden as the page starts, which has no saved group yet
)
def list_groups(groups, threshold, run_id, which=WITH_CORRECTIONS, _version=0,
                threshold_choice=ONE_FOR_ALL, tab=GROUPS_TAB):
    """The saved groups with their scores, and the comparison's choices; made while the groups
    or the comparison tab is open (a hidden tab is brought up to date when it opens)."""
    if tab not in (GROUPS_TAB, COMPARE_TAB):
        return no_update, no_update, no_update
    run = chosen_run(run_id)
    threshold = thresholds_sent(run, threshold_choice, threshold)
    mine = my_groups(groups, run_id)
    options = COMPARE_CHOICES + [{"label": g["name"], "value": str(k)} for k, g in enumerate(mine)]
    if not mine:
        rows = html.Div("No saved groups yet: select images in a view, name the group and press "
                        "Save group. Saved groups stay outlined in the views.",
                        className="summary-note")
    else:
        rows = [group_row(k, g, summarise(run, g["indices"], threshold, which))
                for k, g in enumerate(mine)]
    return rows, options, options


def _pick(choice, selection, mine):
    """(label, rows) for a compare choice: the selection, everything, or a saved group."""
    if choice == SELECTION:  # nothing selected: every image, and the header says so
        return ("Current selection", selection) if selection else ("No selection: all images",
                                                                   None)
    if choice not in (None, EVERYTHING) and str(choice).isdigit() and int(choice) < len(mine):
        group = mine[int(choice)]
        return group["name"], group["indices"]
    return "All images", None


@hooks.callback(
    Output(ids.COMPARE_TABLE, "children"),
    Input(ids.COMPARE_A, "value"), Input(ids.COMPARE_B, "value"),
    Input(ids.STORE_GROUPS, "data"), Input(ids.STORE_SELECTION, "data"),
    Input(ids.THRESHOLD, "value"), Input(ids.RUN_PICKER, "value"), *LABELS,
    Input(ids.THRESHOLD_MODE, "value"), Input(ids.SELECTION_TABS, "active_tab"),
    prevent_initial_call=True,  # its tab is hidden as the page starts; opening it compares
)
def compare_groups(choice_a, choice_b, groups, selection, threshold, run_id,
                   which=WITH_CORRECTIONS, _version=0, threshold_choice=ONE_FOR_ALL,
                   tab=COMPARE_TAB):
    """Two groups side by side (an empty selection counts as all images), while the tab is
    open."""
    if tab != COMPARE_TAB:
        return no_update
    run = chosen_run(run_id)
    threshold = thresholds_sent(run, threshold_choice, threshold)
    mine = my_groups(groups, run_id)
    (name_a, rows_a), (name_b, rows_b) = (_pick(c, selection, mine) for c in (choice_a, choice_b))
    a, b = (summarise(run, rows, threshold, which, intervals=True) for rows in (rows_a, rows_b))
    return compare_table(a, b, (name_a, name_b), run.attributes, run.colours)


@hooks.callback(
    Output(ids.DOWNLOAD, "data"),
    Input(ids.EXPORT_SELECTION, "n_clicks"),
    Input({"type": ids.GROUP_EXPORT, "index": ALL}, "n_clicks"),
    State(ids.STORE_SELECTION, "data"), State(ids.STORE_GROUPS, "data"),
    State(ids.THRESHOLD, "value"), State(ids.RUN_PICKER, "value"), State(ids.LABELS_USED, "value"),
    State(ids.THRESHOLD_MODE, "value"),
    prevent_initial_call=True,
)
def export_csv(_export, group_clicks, selection, groups, threshold, run_id,
               which=WITH_CORRECTIONS, threshold_choice=ONE_FOR_ALL):
    """A CSV of image ids with ACT, PRD and outcome per attribute for the selection or a group."""
    run = chosen_run(run_id)
    trigger = ctx.triggered_id
    if isinstance(trigger, dict) and not any(group_clicks or []):
        return no_update  # the buttons were just drawn, not clicked
    try:
        name, rows = _export_rows(run, trigger, selection, groups)
        limits = thresholds_in_force(run, threshold_choice, threshold)
        frame = group_frame(run, rows or range(len(run)), limits, which)
    except Refused:
        return no_update  # not a selection or group of this run: nothing to send
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "group"
    return dcc.send_data_frame(formula_safe(frame).to_csv, f"{slug}-{run.id}.csv", index=False)


def _export_rows(run, trigger, selection, groups) -> tuple[str, list[int]]:
    """(name, checked rows) of what to export: a saved group of the run, else the selection."""
    if not isinstance(trigger, dict):
        return "selection", row_list(run, selection)
    groups = [g for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []
    mine, k = my_groups(groups, run.id), trigger.get("index")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(mine):
        raise Refused(f"no saved group {k!r:.20} to export")
    return str(mine[k].get("name") or "group"), row_list(run, mine[k].get("indices"))
