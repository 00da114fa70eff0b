"""Behaviour of panel A: the run list (read fresh on every page load, newest first), the
options that follow the chosen run's attributes, and the decision threshold's choice.
"""

from __future__ import annotations

import numpy as np
from dash import Input, Output, State, hooks, html, no_update

from callbacks.common import (
    Refused,
    corrected_rows,
    moved_scores,
    run_thresholds,
    threshold_mode,
    threshold_problem,
    threshold_value,
    try_run,
)
from components import ids
from components.control import ONE_FOR_ALL, PER_ATTRIBUTE, WHOLE_IMAGE_COLOURS, threshold_list
from components.views import correction_key
from pipeline.store import resolve_data_dir, scan_runs


def run_label(run) -> str:
    """'dataset · mAP 0.78' for the run picker (the run id and date are in the summary)."""
    score = "mAP –" if run.m_ap is None else f"mAP {run.m_ap:.2f}"
    return f"{run.meta.get('dataset', run.id)} · {score}"


def run_options() -> tuple[list[dict], list[str]]:
    """The picker's options, newest first, and the ids that can be chosen.

    A broken run is listed disabled, its reason in the option's title, so it is seen but
    cannot stop the others from opening.
    """
    runs, broken = scan_runs()
    options = [{"label": run_label(r), "value": r.id, "title": r.id} for r in runs[::-1]]
    options += [{"label": f"{path.name} (broken)", "value": path.name, "title": reason,
                 "disabled": True} for path, reason in broken]
    return options, [r.id for r in runs[::-1]]


def list_run_options(current: str | None = None):
    """The run picker's options and choice (the current one if it is still a run, else the
    newest), and the empty-state message: read on every page load, by first_state."""
    options, good = run_options()
    if not good:
        return options, None, _no_run_message(len(options)), True
    value = current if current in good else good[0]
    return options, value, None, False


def _no_run_message(n_broken: int) -> list:
    where = resolve_data_dir()
    if n_broken:
        return [html.B("No run can be opened. "),
                f"The data directory {where} holds {n_broken} broken run(s); the run list "
                "names each problem (hover over it), and `python -m pipeline runs` prints them."]
    return [html.B("No run to show yet. "),
            f"The data directory {where} holds no run. Build the demo with "
            "`python app.py` (it builds one on first start) or `python -m pipeline demo`, "
            "then reload this page."]


@hooks.callback(
    Output(ids.RUN_SUMMARY, "children"),
    Output(ids.FLOWER_ATTRIBUTES, "options"), Output(ids.FLOWER_ATTRIBUTES, "value"),
    Output(ids.COLOUR_ATTRIBUTE, "options"), Output(ids.COLOUR_ATTRIBUTE, "value"),
    Output(ids.FILTER_ATTRIBUTES, "options"),
    Input(ids.RUN_PICKER, "value"), State(ids.COLOUR_ATTRIBUTE, "value"),
    prevent_initial_call=True,  # the page starts with its answer (first_state)
)
def describe_run(run_id, colour_attribute):
    run = try_run(run_id)
    if run is None:
        return "", [], [], [], None, []
    names, colours = run.attributes, run.colours
    petals = [{"label": html.Span([html.Span(className="swatch", style={"background": c}), n],
                                  title=n), "value": j}
              for j, (n, c) in enumerate(zip(names, colours, strict=True))]
    plain = [{"label": n, "value": j} for j, n in enumerate(names)]
    if not isinstance(colour_attribute, int) or colour_attribute >= len(names):
        colour_attribute = 0
    return (run_summary(run), petals, list(range(len(names))), plain, colour_attribute, plain)


def first_state() -> dict[str, dict]:
    """What the page starts with ({component id: {property: value}}): the run list with the
    newest run chosen, the options that follow its attributes and the corrections' key, as
    list_run_options, describe_run and views.mark_corrected give them. Sent with the page,
    they let the views be drawn in the page load's first round of callbacks; waiting for
    these callbacks took two more rounds."""
    options, run_id, message, is_open = list_run_options()
    summary, petals, shown, plain, colour_attribute, filters = describe_run(run_id, None)
    run = try_run(run_id)
    return {ids.RUN_PICKER: {"options": options, "value": run_id},
            ids.CORRECTION_KEY: {"children": correction_key(
                0 if run is None else len(corrected_rows(run)))},
            ids.EMPTY_STATE: {"children": message, "is_open": is_open},
            ids.RUN_SUMMARY: {"children": summary},
            ids.FLOWER_ATTRIBUTES: {"options": petals, "value": shown},
            ids.COLOUR_ATTRIBUTE: {"options": plain, "value": colour_attribute},
            ids.FILTER_ATTRIBUTES: {"options": filters}}


def run_summary(run) -> list:
    """Size, model and date of the run, with its id for the command line."""
    model = run.meta.get("model", {})
    arch = model.get("arch", "model") if isinstance(model, dict) else str(model)
    created = str(run.meta.get("created", ""))[:16].replace("T", " ")
    return [f"{len(run):,} images · {len(run.attributes)} attributes · {arch}", html.Br(),
            html.Span(f"{run.id} · {created}", className="run-id")]


@hooks.callback(Output(ids.COLOUR_ATTRIBUTE, "disabled"), Input(ids.COLOUR_BY, "value"))
def colour_attribute_needed(colour_by):
    return colour_by in WHOLE_IMAGE_COLOURS


@hooks.callback(
    Output(ids.MOVED_STATUS, "children"),
    Input(ids.COLOUR_BY, "value"), Input(ids.RUN_PICKER, "value"),
)
def describe_moved(colour_by, run_id):
    """With colour-by "moved since parent run": which run the images moved from and how far
    they moved typically, or, for a run without one, that there is nothing to compare."""
    run = try_run(run_id) if colour_by == "moved" else None
    return "" if run is None else moved_note(run)


def moved_note(run) -> str:
    named = run.meta.get("parent_run")
    scores = moved_scores(run)
    if scores is None:
        if isinstance(named, str) and named:
            return (f"Run {run.id} came from run {named}, which is no longer in the data "
                    "directory: there is no map to compare with, so every image is grey.")
        return (f"Run {run.id} has no parent run (it was neither retrained nor added to), so "
                "no image moved since one: every image is grey. Choose a retrained run.")
    typical = ", ".join(f"{s.upper()} {np.nanmedian(v):.1f}" for s, v in scores.items()
                        if np.isfinite(v).any())
    if not typical:
        return f"Run {run.id} shares no image with its parent run {named}: every image is grey."
    placed = (run.meta.get("embedding") or {}).get("placed", "")
    how = f" (maps {placed})" if placed else ""
    return (f"Each view: how far an image moved from its place in parent run "
            f"{named}'s map{how}, in typical neighbour spacings; median {typical}.")


@hooks.callback(
    Output(ids.THRESHOLD_MODE, "value"),
    Input(ids.THRESHOLD, "value"), State(ids.THRESHOLD_MODE, "value"),
    prevent_initial_call=True,
)
def slider_means_one_for_all(_value, mode):
    """Moving the slider sets one threshold for all at its value, whatever was chosen before;
    the analyst can choose the per-attribute ones again. (Dash holds back the callbacks that
    read both until this one answers, so they run once, with the new choice.)"""
    return ONE_FOR_ALL if mode != ONE_FOR_ALL else no_update


@hooks.callback(
    Output(ids.THRESHOLD_CHOICE, "style"), Output(ids.THRESHOLD_LIST, "children"),
    Output(ids.THRESHOLD_NOTE, "children"), Output(ids.THRESHOLD_SLIDER_BOX, "className"),
    Input(ids.RUN_PICKER, "value"), Input(ids.THRESHOLD_MODE, "value"),
    Input(ids.THRESHOLD, "value"),
)
def describe_thresholds(run_id, mode, value):
    """The choice and each attribute's own threshold for a run that has them; for one without,
    the slider alone and a note saying why."""
    run = try_run(run_id)
    if run is None:
        return {"display": "none"}, None, "", ""
    try:
        mode, value = threshold_mode(mode), threshold_value(value)
    except Refused as err:
        return no_update, no_update, str(err), no_update
    own = run_thresholds(run)
    if own is None:
        problem = threshold_problem(run)
        why = (f"Its thresholds cannot be used ({problem})." if problem else
               "This run has no per-attribute thresholds (imported vectors, or a model trained "
               "before they were chosen on validation).")
        return {"display": "none"}, None, f"{why} One for all: {value:.2f}.", ""
    listing = threshold_list(run.attributes, run.colours, own)
    if mode == PER_ATTRIBUTE:
        note = "Each attribute's own threshold is in force; moving the slider sets one for all."
        return {}, listing, note, "threshold-idle"
    return {}, listing, f"One for all: {value:.2f}.", ""
