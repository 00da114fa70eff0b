"""Behaviour of retraining: a Dash background callback (diskcache locally, Celery with Redis when
REDIS_URL is set) with progress and cancel, then the new run in the picker and a before/after table.
"""

from __future__ import annotations

import logging

import numpy as np
from dash import Input, Output, State, hooks, html, no_update

from callbacks.background import HIDDEN, alert, job_options, progress_reporter
from callbacks.common import access_settings, moved_scores, refusal, try_run, whole_number
from callbacks.control import run_options
from components import ids
from components.audit import compare_table
from pipeline import jobs, retrain
from pipeline.errors import PipelineError
from pipeline.store import resolve_data_dir

log = logging.getLogger("xrae.retrain")
JOBS = "start or cancel retraining"
MOST_MOVED = 8  # images listed under the before/after table


@hooks.callback(
    Output(ids.STORE_RETRAIN_REQUEST, "data"), Output(ids.RETRAIN_STATUS, "children"),
    Input(ids.RETRAIN, "n_clicks"), State(ids.RUN_PICKER, "value"),
    State(ids.RETRAIN_EPOCHS, "value"),
    prevent_initial_call=True,
)
def request_retraining(n_clicks, run_id, epochs):
    """Read the corrections here, on the web machine that owns corrections.sqlite, and hand
    them to the job with its checked settings: a Celery worker elsewhere must not open the
    database. The browser gets only a ticket for the request, never the request itself."""
    run = try_run(run_id)
    if not n_clicks or run is None:
        return no_update, no_update
    refused = refusal(JOBS)  # the server's check; the disabled button is only a courtesy
    if refused:
        return no_update, alert(refused)
    data_dir, max_jobs = resolve_data_dir(), access_settings().max_jobs
    dataset = str(run.meta.get("dataset", ""))
    try:
        jobs.check_job_room(data_dir, max_jobs)
        epochs = whole_number(retrain.FINE_TUNE_EPOCHS if epochs is None else epochs, 1,
                              retrain.MAX_EPOCHS, "the number of epochs")
        snapshot = retrain.snapshot_records(data_dir, dataset) if dataset else []
        ticket = jobs.issue_ticket(data_dir, {"run": run.id, "epochs": epochs,
                                                 "corrections": snapshot, "max_jobs": max_jobs})
    except PipelineError as err:  # Refused, or an unreadable corrections database
        return no_update, alert(f"Not started: {err}")
    return {"ticket": ticket}, ""


@hooks.callback(
    Output(ids.STORE_RETRAIN, "data"),
    Output(ids.RETRAIN_STATUS, "children", allow_duplicate=True),
    Input(ids.STORE_RETRAIN_REQUEST, "data"),
    **job_options(ids.RETRAIN, ids.CANCEL_RETRAIN, ids.RETRAIN_PROGRESS, ids.RETRAIN_PROGRESS_BOX),
)
def run_retraining(set_progress, request):
    """Fine-tune → re-infer → re-embed → new run, in a worker; the page polls its progress."""
    if not isinstance(request, dict) or not request.get("ticket"):
        return no_update, no_update
    try:
        request = jobs.redeem_ticket(resolve_data_dir(), request["ticket"])
    except PipelineError as err:
        return no_update, alert(f"Not started: {err}")
    run_id = request["run"]

    report = progress_reporter(set_progress)
    report("starting", 0.0)
    try:
        path = retrain.retrain_in_subprocess(resolve_data_dir(), run_id,
                                             epochs=request.get("epochs"),
                                             snapshot=request.get("corrections"),
                                             on_progress=report,
                                             max_jobs=request.get("max_jobs"))
    except retrain.Cancelled:
        return no_update, alert("Cancelled: no run was written; every existing run is "
                                 "unchanged.", "warning")
    except PipelineError as err:
        return no_update, alert(f"Retraining failed: {err}. Every existing run is unchanged.")
    except Exception as err:  # a bug must still reach the analyst, not only the worker's log
        log.exception("retraining run %s failed", run_id)
        return no_update, alert(f"Retraining failed ({type(err).__name__}: {err}). Every "
                                 "existing run is unchanged.")
    done = html.Span(f"Done: new run {path.name} is in the run picker.", className="text-success")
    return {"before": run_id, "after": path.name}, done


@hooks.callback(
    Output(ids.RETRAIN_STATUS, "children", allow_duplicate=True),
    Input(ids.CANCEL_RETRAIN, "n_clicks"), State(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,
)
def cancel_retraining(n_clicks, run_id):
    """Stop the job wherever it runs (a flag it polls), then clear what a killed job left."""
    run = try_run(run_id)
    if not n_clicks or run is None:
        return no_update
    refused = refusal(JOBS)
    if refused:
        return alert(refused)
    jobs.request_cancel(resolve_data_dir(), run.id)
    if jobs.wait_until_stopped(resolve_data_dir(), run.id, timeout=30):
        return alert("Cancelled: no run was written; every existing run is unchanged.",
                      "warning")
    return alert("Cancel requested; the job stops at its next step.", "warning")


@hooks.callback(
    Output(ids.RUN_PICKER, "options", allow_duplicate=True),
    Output(ids.RETRAIN_COMPARE, "children"), Output(ids.SHOW_NEW_RUN, "style"),
    Input(ids.STORE_RETRAIN, "data"),
    prevent_initial_call=True,
)
def offer_new_run(result):
    """The picker lists the new run; a table compares the two runs on the corrected labels."""
    result = result if isinstance(result, dict) else {}
    before, after = try_run(result.get("before")), try_run(result.get("after"))
    if before is None or after is None:
        return no_update, None, HIDDEN
    options, _ = run_options()
    try:
        table = compare_table(retrain.compare_runs(before, after))
    except PipelineError as err:
        table = alert(str(err))
    caption = html.Div(f"Before ({before.id}) and after ({after.id}), both judged on the "
                       "corrected labels, test split, each run at its own validated thresholds "
                       "(0.5 where it has none):", className="small text-muted mt-1")
    return options, [caption, table, most_moved(after)], {"display": "inline-block"}


def most_moved(run, space: str = "fea", n: int = MOST_MOVED) -> html.Div | None:
    """The images that moved most on the FEA map since the parent run (colour by "moved since
    parent run" shows them all), with how far, in typical neighbour spacings."""
    scores = moved_scores(run)
    if scores is None or not np.isfinite(scores[space]).any():
        return None
    score = np.nan_to_num(scores[space], nan=-1.0)
    top = np.argsort(-score, kind="stable")[:n]
    ids_ = run.images["image_id"].astype(str).to_numpy()
    listed = ", ".join(f"{ids_[r]} ({score[r]:.1f})" for r in top)
    return html.Div(f"Moved most on the FEA map since run {run.meta.get('parent_run')} "
                    f"(neighbour spacings): {listed}. Colour by “moved since parent run” "
                    "to see every image.", className="small text-muted mt-1")


@hooks.callback(
    Output(ids.RUN_PICKER, "value", allow_duplicate=True),
    Input(ids.SHOW_NEW_RUN, "n_clicks"), State(ids.STORE_RETRAIN, "data"),
    prevent_initial_call=True,
)
def show_new_run(n_clicks, result):
    after = try_run(result.get("after")) if isinstance(result, dict) else None
    if not n_clicks or after is None:
        return no_update
    return after.id

