"""Behaviour of the label-correction form in the detail view: flip or undo one label of the open
image (stored durably in <data_dir>/corrections.sqlite), remember the analyst's name locally,
poll for corrections other analysts make meanwhile, and say so when the database is unreadable.
"""

from __future__ import annotations

from dash import Input, Output, State, ctx, hooks, html, no_update
from dash.exceptions import PreventUpdate

from callbacks.common import (
    Refused,
    author_of,
    column_index,
    image_labels,
    refusal,
    row_index,
    run_labels,
    signed_in_name,
    text_value,
    thresholds_in_force,
    try_run,
)
from components import ids
from components.audit import (
    MARK,
    attribute_options,
    corrections_banner,
    image_corrections,
)
from components.control import ONE_FOR_ALL
from components.detail import act_prd_table
from pipeline import corrections
from pipeline.errors import PipelineError
from pipeline.store import resolve_data_dir

EDIT = "correct labels"


@hooks.callback(
    Output(ids.CORRECTION_AUTHOR, "value"), Output(ids.STORE_AUTHOR, "data"),
    Input(ids.STORE_AUTHOR, "modified_timestamp"), Input(ids.CORRECTION_AUTHOR, "value"),
    State(ids.STORE_AUTHOR, "data"),
)
def remember_author(_stored_at, typed, stored):
    """The name field and the browser's local store follow each other (one callback, no loop);
    a signed-in user's name is their sign-in, whatever the store or the field say."""
    signed_in = signed_in_name()
    if signed_in is not None:
        return signed_in, no_update
    try:
        if ctx.triggered_id == ids.CORRECTION_AUTHOR:
            return no_update, text_value(typed, "name", corrections.MAX_AUTHOR)
        return text_value(stored, "name", corrections.MAX_AUTHOR), no_update
    except Refused:
        raise PreventUpdate from None


def _open_image(run, index):
    """(dataset id, image id) of the open image, or None when nothing can be corrected."""
    dataset = str(run.meta.get("dataset", "")) if run is not None else ""
    if not dataset or index is None:
        return None
    try:
        return dataset, str(run.images["image_id"].iloc[row_index(run, index)])
    except Refused:
        return None


@hooks.callback(
    Output(ids.CORRECTION_ATTRIBUTE, "options"), Output(ids.CORRECTION_LIST, "children"),
    Output(ids.FLIP_LABEL, "disabled"), Output(ids.UNDO_CORRECTION, "disabled"),
    Input(ids.STORE_DETAIL_INDEX, "data"), Input(ids.STORE_CORRECTIONS, "data"),
    Input(ids.RUN_PICKER, "value"),
)
def describe_labels(index, _version, run_id):
    """The open image's labels as flip choices, and its corrections in force (marked)."""
    run = try_run(run_id)
    key = _open_image(run, index)
    if key is None:
        return [], html.Div("Open an image to correct its labels.", className="text-muted"), \
            True, True
    act, corrected, mine = image_labels(run, int(index))
    options = attribute_options(run.attributes, act, run.prd[int(index)], corrected)
    listing = image_corrections(mine.to_dict("records"))
    if corrections.unavailable(resolve_data_dir()):  # the banner at the top says the rest
        return options, _alert("Corrections are off: the database cannot be read."), True, True
    if refusal(EDIT):
        return options, listing, True, True
    return options, listing, False, mine.empty


@hooks.callback(
    Output(ids.STORE_CORRECTIONS, "data"), Output(ids.CORRECTION_STATUS, "children"),
    Output(ids.CORRECTION_NOTE, "value"),
    Input(ids.FLIP_LABEL, "n_clicks"), Input(ids.UNDO_CORRECTION, "n_clicks"),
    State(ids.CORRECTION_ATTRIBUTE, "value"), State(ids.CORRECTION_NOTE, "value"),
    State(ids.CORRECTION_AUTHOR, "value"), State(ids.STORE_DETAIL_INDEX, "data"),
    State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def write_correction(flips, undos, column, note, author, index, run_id):
    """Flip the chosen label (to the opposite of what it is now) or undo its last correction."""
    if not (flips or undos):
        return no_update, no_update, no_update
    refused = refusal(EDIT)  # the server's check; the disabled buttons are only a courtesy
    if refused:
        return no_update, _alert(refused), no_update
    run = try_run(run_id)
    key = _open_image(run, index)
    if key is None or column is None:
        return no_update, _alert("Open an image and choose an attribute first."), no_update
    dataset, image_id = key
    data_dir = resolve_data_dir()
    try:
        column = column_index(run, column)
        note = text_value(note, "note", corrections.MAX_NOTE)
        author = author_of(author)
        attribute = run.attributes[column]
        if ctx.triggered_id == ids.UNDO_CORRECTION:
            event = corrections.undo(data_dir, dataset, image_id, attribute, author=author,
                                     note=note)
            message = f"Undone: {attribute} of {image_id} is back to its previous label."
        else:
            now = corrections.active(data_dir, dataset, image_id)
            current = _current_label(run, int(index), column, now, image_id, attribute)
            event = corrections.set_label(data_dir, dataset, image_id, attribute, 1 - current,
                                          author=author, note=note)
            message = f"{MARK} {attribute} of {image_id}: {current} → {1 - current} (saved)."
    except PipelineError as err:
        return no_update, _alert(str(err)), no_update
    return event, html.Span(message, className="text-success"), ""


@hooks.callback(
    Output(ids.STORE_CORRECTIONS, "data", allow_duplicate=True),
    Input(ids.CORRECTIONS_POLL, "n_intervals"),
    State(ids.STORE_CORRECTIONS, "data"), State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def notice_other_corrections(_ticks, seen, run_id):
    """Corrections made elsewhere (another analyst, the command line) reach this page at the
    next poll: a new newest event id refreshes everything that shows corrections."""
    run = try_run(run_id)
    dataset = str(run.meta.get("dataset", "")) if run is not None else ""
    if not dataset:
        return no_update
    try:
        latest = corrections.latest_event(resolve_data_dir(), dataset)
    except PipelineError:
        return no_update  # an unreadable database is named where corrections are written
    return latest if latest != seen else no_update


@hooks.callback(
    Output(ids.DETAIL_TABLE, "children", allow_duplicate=True),
    Input(ids.STORE_CORRECTIONS, "data"), State(ids.STORE_DETAIL_INDEX, "data"),
    State(ids.THRESHOLD, "value"), State(ids.RUN_PICKER, "value"),
    State(ids.THRESHOLD_MODE, "value"),
    prevent_initial_call=True,
)
def mark_detail_table(_version, index, threshold, run_id, threshold_choice=ONE_FOR_ALL):
    """After a flip or undo, the ACT/PRD table of the open image shows the label now in force."""
    run = try_run(run_id)
    if _open_image(run, index) is None:
        return no_update
    try:
        threshold = thresholds_in_force(run, threshold_choice, threshold)
    except Refused:
        return no_update
    act, corrected = run_labels(run)
    index = int(index)
    return act_prd_table(run.attributes, run.colours, act[index], run.prd[index], threshold,
                         corrected[index])


@hooks.callback(
    Output(ids.CORRECTIONS_ALERT, "children"), Output(ids.CORRECTIONS_ALERT, "is_open"),
    Input(ids.URL, "pathname"), Input(ids.CORRECTIONS_POLL, "n_intervals"),
    State(ids.CORRECTIONS_ALERT, "children"),
)
def warn_corrections_unavailable(_pathname, _ticks, shown):
    """One banner at the top of the page while corrections.sqlite cannot be read (and gone as
    soon as it is repaired or moved aside); everything that needs no corrections keeps working."""
    problem = corrections.unavailable(resolve_data_dir())
    text = corrections_banner(problem) if problem else None
    if text == shown:
        raise PreventUpdate
    return text, text is not None


def _current_label(run, index: int, column: int, active, image_id: str, attribute: str) -> int:
    hit = active[(active["image_id"] == image_id) & (active["attribute"] == attribute)]
    return int(hit["value"].iloc[-1]) if len(hit) else int(run.act[index, column])


def _alert(text: str) -> html.Span:
    return html.Span(text, className="text-danger")
