"""Behaviour of the robustness tab: the server checks the request and hands it to a Dash
background job (progress, cancel, the job limit, who may start jobs: as retraining does), which
runs the probe in a fresh process; the result is drawn as small multiples.
"""

from __future__ import annotations

import logging
import re

import numpy as np
from dash import Input, Output, State, hooks, html, no_update

from callbacks.analyses import _saved, group_rows
from callbacks.background import alert, job_options, progress_reporter
from callbacks.common import (
    WITH_CORRECTIONS,
    access_settings,
    labels_used,
    refusal,
    try_run,
    whole_number,
)
from components import ids
from components.figures import empty_figure
from components.robustness import (
    MAX_IMAGES,
    SAMPLE,
    SCOPE_OPTIONS,
    level_note,
    robustness_figure,
)
from pipeline import jobs, robustness
from pipeline.errors import PipelineError, Stopped
from pipeline.store import resolve_data_dir

log = logging.getLogger("xrae.robustness")
JOBS = "start or cancel a robustness probe"
ROBUSTNESS_TAB = "robustness"  # its tab id in panel F (components.selection)
SEED = 0  # the dashboard's sample and perturbations; the command line takes --seed


@hooks.callback(
    Output(ids.ROBUSTNESS_SCOPE, "options"),
    Input(ids.STORE_GROUPS, "data"), Input(ids.RUN_PICKER, "value"),
    prevent_initial_call=True,  # the page starts with no saved group: the layout's options
)
def list_robustness_scopes(groups, run_id):
    """A random sample, the current selection and the run's saved groups."""
    return SCOPE_OPTIONS + [{"label": str(g.get("name") or "group"), "value": str(k)}
                            for k, g in enumerate(_saved(groups, run_id))]


def probe_rows(run, scope, size, selection, groups) -> tuple[str, np.ndarray]:
    """(name, rows) the probe re-infers: the scope's rows, a seeded sample of `size` of them
    when it holds more. The size is checked here: the input's max is only a courtesy."""
    size = whole_number(size, 1, MAX_IMAGES, "the number of images")
    name, rows = group_rows(run, scope, selection, groups)
    if len(rows) > size:
        rows = rows[robustness.sample_rows(len(rows), size, SEED)]
        name = f"{name} (sampled)"
    if scope == SAMPLE:
        name = "Random sample"
    return name, rows


@hooks.callback(
    Output(ids.STORE_ROBUSTNESS_REQUEST, "data"), Output(ids.ROBUSTNESS_STATUS, "children"),
    Input(ids.ROBUSTNESS_START, "n_clicks"), State(ids.RUN_PICKER, "value"),
    State(ids.ROBUSTNESS_SCOPE, "value"), State(ids.ROBUSTNESS_SIZE, "value"),
    State(ids.STORE_SELECTION, "data"), State(ids.STORE_GROUPS, "data"),
    State(ids.LABELS_USED, "value"),
    prevent_initial_call=True,
)
def request_probe(n_clicks, run_id, scope, size, selection, groups, which=WITH_CORRECTIONS):
    """Check who asks and what, take the labels used here (the web machine owns the
    corrections database), and give the browser only a ticket for the request."""
    run = try_run(run_id)
    if not n_clicks or run is None:
        return no_update, no_update
    refused = refusal(JOBS)
    if refused:
        return no_update, alert(refused)
    data_dir, max_jobs = resolve_data_dir(), access_settings().max_jobs
    try:
        robustness.check_probe_ready(run)
        name, rows = probe_rows(run, scope, size, selection, groups)
        jobs.check_job_room(data_dir, max_jobs)
        labels = labels_used(run, which)[rows]
        ticket = jobs.issue_ticket(data_dir, {
            "run": run.id, "scope": name, "rows": rows.tolist(), "labels": labels.tolist(),
            "max_jobs": max_jobs})
    except PipelineError as err:  # Refused, a run without a model, a full queue
        return no_update, alert(f"Not started: {err}")
    return {"ticket": ticket}, ""


def job_name(request) -> str | None:
    """The lock and cancel-flag name of the probe a request stands for (None: not a request)."""
    ticket = request.get("ticket") if isinstance(request, dict) else None
    if not isinstance(ticket, str) or not re.fullmatch(r"[0-9a-f]{32}", ticket):
        return None
    return f"robustness-{ticket[:16]}"


@hooks.callback(
    Output(ids.STORE_ROBUSTNESS, "data"),
    Output(ids.ROBUSTNESS_STATUS, "children", allow_duplicate=True),
    Input(ids.STORE_ROBUSTNESS_REQUEST, "data"),
    **job_options(ids.ROBUSTNESS_START, ids.ROBUSTNESS_CANCEL, ids.ROBUSTNESS_PROGRESS,
                  ids.ROBUSTNESS_PROGRESS_BOX),
)
def run_probe(set_progress, request):
    """The probe in a fresh process (a forked worker must not run torch); the page polls."""
    job = job_name(request)
    if job is None:
        return no_update, no_update
    try:
        request = jobs.redeem_ticket(resolve_data_dir(), request["ticket"])
    except PipelineError as err:
        return no_update, alert(f"Not started: {err}")

    report = progress_reporter(set_progress)
    report("starting", 0.0)
    try:
        table = robustness.probe_in_subprocess(
            resolve_data_dir(), request["run"], request["rows"], request["labels"], seed=SEED,
            job=job, max_jobs=request.get("max_jobs"), on_progress=report)
    except Stopped:
        return no_update, alert("Cancelled: the probe stopped; nothing was written.", "warning")
    except PipelineError as err:
        return no_update, alert(f"The probe failed: {err}")
    except Exception as err:  # a bug must still reach the analyst, not only the worker's log
        log.exception("robustness probe of run %s failed", request["run"])
        return no_update, alert(f"The probe failed ({type(err).__name__}: {err})")
    result = {"run": request["run"], "scope": request["scope"], "n": len(request["rows"]),
              "table": table.to_dict("records")}
    done = html.Span(f"Done: {request['scope']}, {len(request['rows']):,} images.",
                     className="text-success")
    return result, done


@hooks.callback(
    Output(ids.ROBUSTNESS_STATUS, "children", allow_duplicate=True),
    Input(ids.ROBUSTNESS_CANCEL, "n_clicks"), State(ids.STORE_ROBUSTNESS_REQUEST, "data"),
    prevent_initial_call=True,
)
def cancel_probe(n_clicks, request):
    """Raise the job's cancel flag too: a Celery worker is not killed by Dash's cancel."""
    job = job_name(request)
    if not n_clicks or job is None:
        return no_update
    refused = refusal(JOBS)
    if refused:
        return alert(refused)
    jobs.request_cancel(resolve_data_dir(), job)
    if jobs.wait_until_stopped(resolve_data_dir(), job, timeout=30):  # and clears the flag
        return alert("Cancelled: the probe stopped; nothing was written.", "warning")
    return alert("Cancel requested; the probe stops after its current images.", "warning")


@hooks.callback(
    Output(ids.ROBUSTNESS_GRAPH, "figure"), Output(ids.ROBUSTNESS_NOTE, "children"),
    Input(ids.STORE_ROBUSTNESS, "data"), Input(ids.ROBUSTNESS_METRIC, "value"),
    Input(ids.RUN_PICKER, "value"), Input(ids.SELECTION_TABS, "active_tab"),
    prevent_initial_call=True,  # its tab is hidden as the page starts; opening it draws it
)
def draw_robustness(result, metric, run_id, tab=ROBUSTNESS_TAB):
    """The last probe of this run, as AP or agreement against level; a run without a model
    says so. Drawn while its tab is open (a hidden tab is brought up to date when it opens)."""
    if tab != ROBUSTNESS_TAB:
        return no_update, no_update
    run = try_run(run_id)
    if run is None:
        return empty_figure("No run chosen."), ""
    if run.checkpoint is None:
        return empty_figure(NO_MODEL), ""
    if metric not in ("AP", "agreement"):
        return empty_figure(f"the score must be AP or agreement, not {metric!r:.40}"), ""
    records = checked_records(result, run)
    if records is None:
        return empty_figure("Choose the images and press Start probe."), ""
    figure = robustness_figure(records, run.attributes, run.colours, metric)
    n = result.get("n")
    count = f"{n:,} images" if isinstance(n, int) and not isinstance(n, bool) else "images"
    figure["layout"]["title"] = {"text": f"{str(result.get('scope'))[:80]}: {count}",
                                 "font": {"size": 12}, "x": 0.01}
    figure["layout"]["margin"]["t"] = 44
    return figure, level_note(records)


NO_MODEL = ("This run has no model (model.pt), so its images cannot be re-inferred: the "
            "robustness probe needs a run made from a checkpoint (`python -m pipeline infer` "
            "or the demo).")
RECORD_KEYS = {"perturbation": str, "level": int, "setting": str, "attribute": str}


def checked_records(result, run) -> list[dict] | None:
    """The stored table of a probe of this run, checked (the browser sends it back and could
    send anything); None when it is absent, of another run or malformed."""
    if not isinstance(result, dict) or result.get("run") != run.id:
        return None
    records, names = result.get("table"), {*run.attributes, robustness.MEAN}
    if not isinstance(records, list) or not records or len(records) > 10_000:
        return None
    for r in records:
        ok = isinstance(r, dict) and all(isinstance(r.get(k), t) for k, t in RECORD_KEYS.items())
        ok = ok and r["perturbation"] in robustness.PERTURBATIONS and r["attribute"] in names
        ok = ok and all(r.get(m) is None or (isinstance(r.get(m), (int, float))
                                              and not isinstance(r.get(m), bool))
                        for m in ("AP", "agreement"))
        if not ok:
            return None
    return records

