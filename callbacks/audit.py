"""Behaviour of the label audit tab: fills the `audit-panel` slot, ranks the run's suspicious
labels (corrections applied), opens a row's image, exports the corrections as CSV.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from dash import ALL, Input, Output, State, ctx, dcc, hooks, no_update

from callbacks.common import (
    Refused,
    column_index,
    labels_version,
    row_index,
    run_labels,
    try_run,
)
from components import ids
from components.audit import audit_table, corrections_summary, predictions_note
from pipeline import audit, corrections, folds
from pipeline.errors import PipelineError
from pipeline.spreadsheet import formula_safe
from pipeline.store import resolve_data_dir

TOP_ROWS = 30
AUDIT_TAB = "audit"  # the tab's id in panel F (components.selection)


@hooks.callback(
    Output(ids.AUDIT_TABLE, "children"), Output(ids.AUDIT_SUMMARY, "children"),
    Output(ids.AUDIT_PREDICTIONS, "children"),
    Input(ids.RUN_PICKER, "value"), Input(ids.STORE_CORRECTIONS, "data"),
    Input(ids.SELECTION_TABS, "active_tab"),
    prevent_initial_call=True,  # its tab is hidden as the page starts; opening it ranks
)
def show_audit(run_id, _version, tab=AUDIT_TAB):
    """The top suspicious labels of the run, counting the corrections already made, and which
    predictions they were ranked on; ranked when the tab is open (on a large run it takes
    seconds), and again only when the labels or the predictions changed (reopening the tab
    draws the remembered ranking)."""
    if tab != AUDIT_TAB:  # hidden: its ~350 components leave the page (they slow every update)
        return None, no_update, no_update
    run = try_run(run_id)
    if run is None:
        return None, "No run chosen.", None
    act, corrected = run_labels(run)  # the annotated labels while corrections are unreadable
    ranking = _ranking(run, act, corrected)
    column = {name: j for j, name in enumerate(run.attributes)}
    rows = [{**r, "column": column[r["attribute"]]} for r in ranking.to_dict("records")]
    table = audit_table(rows, dict(zip(run.attributes, run.colours, strict=True)))
    source = predictions_note(ranking.attrs["predictions"], run.id)
    dataset = str(run.meta.get("dataset", ""))
    try:
        n_events = len(corrections.history(resolve_data_dir(), dataset)) if dataset else 0
    except PipelineError:
        return (table, "Corrections unavailable: the corrections database cannot be read.",
                source)
    return table, corrections_summary(int(corrected.sum()), n_events, dataset or "–"), source


@hooks.callback(
    Output(ids.STORE_DETAIL_INDEX, "data", allow_duplicate=True),
    Output(ids.STORE_SELECTION, "data", allow_duplicate=True),
    Input({"type": ids.AUDIT_ROW, "index": ALL}, "n_clicks"), State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def open_audit_row(clicks, run_id):
    """A row opens its image in the detail view and selects it, so the three views show it."""
    if not isinstance(ctx.triggered_id, dict) or not any(clicks or []):
        return no_update, no_update
    if not ctx.triggered[0]["value"]:
        return no_update, no_update  # the table was just redrawn, nothing was clicked
    run = try_run(run_id)
    try:
        row = _audit_row(run, ctx.triggered_id.get("index"))
    except Refused:
        return no_update, no_update  # not a row this server drew
    return row, [row]


def _ranking(run, act, corrected):
    """audit_run's top rows, remembered per run, labels in force and out-of-fold predictions."""
    key = (str(run.path), labels_version(run),
           json.dumps(folds.oof_note(run), sort_keys=True, default=str))
    with _RANKINGS_LOCK:  # a second request for the same ranking waits for the first
        if key not in _RANKINGS:
            _RANKINGS[key] = audit.audit_run(run, act=act, skip=corrected, top=TOP_ROWS)
            while len(_RANKINGS) > 8:
                _RANKINGS.popitem(last=False)
        _RANKINGS.move_to_end(key)
        return _RANKINGS[key]


_RANKINGS: OrderedDict = OrderedDict()
_RANKINGS_LOCK = threading.Lock()


def _audit_row(run, index) -> int:
    """The image row of an audit row's id 'row/column', both checked against the run."""
    parts = str(index).split("/")
    if run is None or len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise Refused(f"not an audit row: {index!r:.40}")
    column_index(run, int(parts[1]))
    return row_index(run, int(parts[0]))


@hooks.callback(
    Output(ids.DOWNLOAD_CORRECTIONS, "data"),
    Input(ids.EXPORT_CORRECTIONS, "n_clicks"), State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def export_corrections(n_clicks, run_id):
    """Every correction event (undos included) of the run's dataset, as CSV."""
    run = try_run(run_id)
    if not n_clicks or run is None:
        return no_update
    dataset = str(run.meta.get("dataset", ""))
    try:
        frame = corrections.history(resolve_data_dir(), dataset)
    except PipelineError:
        return no_update  # unreadable database: the banner at the top names it
    return dcc.send_data_frame(formula_safe(frame).to_csv, f"corrections-{dataset or 'all'}.csv",
                               index=False)
