"""Layout of the label audit (suspicious labels, corrections count, retraining with progress) and
of the label-correction form in the detail view; pure functions, no callbacks, no file access.
"""

from __future__ import annotations

import math

import dash_bootstrap_components as dbc
from dash import dcc, html

from components import ids
from pipeline.retrain import FINE_TUNE_EPOCHS

MARK = "✎"  # marks a corrected label wherever labels are listed
CONFIDENT_TIP = ("confident: the model is at least as sure of the other label as it typically is "
                 "of that label's own images (confident learning)")


def audit_panel(locked: str | None = None) -> html.Div:
    """The content of the `audit-panel` slot: summary, ranked table, retraining (its buttons
    disabled, with `locked` as their tooltip, when the person may not start jobs)."""
    summary = html.Div([
        html.Span(id=ids.AUDIT_SUMMARY, className="me-2"),
        dbc.Button("Export corrections CSV", id=ids.EXPORT_CORRECTIONS, size="sm",
                   color="secondary", outline=True),
        dcc.Download(id=ids.DOWNLOAD_CORRECTIONS),
    ], className="d-flex align-items-center flex-wrap gap-1 mb-1")
    hint = html.Div("Most suspicious labels first: score = how far the label lies from what "
                    "the model's probabilities of all attributes (PRD) and the image's other "
                    "labels lead one to expect (expected: the chance the true label is 1); ● = "
                    "confident by the attribute's own threshold. Click a row to open the image.",
                    className="small text-muted mb-1")
    return html.Div([summary, hint,
                     html.Div(id=ids.AUDIT_PREDICTIONS, className="small mb-1"),
                     html.Div(id=ids.AUDIT_TABLE, className="table-scroll",
                              style={"maxHeight": "260px"}),
                     retrain_box(locked),
                     # no data, not None: see components.stores
                     dcc.Store(id=ids.STORE_RETRAIN),
                     dcc.Store(id=ids.STORE_RETRAIN_REQUEST)])


def retrain_box(locked: str | None = None) -> html.Div:
    buttons = html.Div([
        html.Span(dbc.Button("Retrain on corrections", id=ids.RETRAIN, size="sm",
                             color="primary", n_clicks=0, disabled=bool(locked)),
                  title=locked or "", id=ids.RETRAIN_WHY),
        dbc.InputGroup([dbc.Input(id=ids.RETRAIN_EPOCHS, type="number", min=1, max=200, step=1,
                                  value=FINE_TUNE_EPOCHS),
                        dbc.InputGroupText("epochs")], size="sm", style={"width": "130px"}),
        dbc.Button("Cancel", id=ids.CANCEL_RETRAIN, size="sm", color="danger", outline=True,
                   n_clicks=0, disabled=True),
        dbc.Button("Show the new run", id=ids.SHOW_NEW_RUN, size="sm", color="success",
                   outline=True, n_clicks=0, style={"display": "none"}),
    ], className="d-flex gap-1")
    progress = html.Div(dbc.Progress(id=ids.RETRAIN_PROGRESS, value=0, label="", striped=True,
                                     animated=True, style={"height": "18px"}),
                        id=ids.RETRAIN_PROGRESS_BOX, style={"display": "none"}, className="my-1")
    return html.Div([
        html.Div("Retraining", className="section-title mt-2"),
        html.Div("Fine-tunes this run's model on the labels with every correction applied, "
                 "re-infers and re-embeds, and adds the result as a new run.",
                 className="small text-muted mb-1"),
        buttons, progress,
        html.Div(id=ids.RETRAIN_STATUS, className="small my-1"),
        html.Div(id=ids.RETRAIN_COMPARE, className="table-scroll"),
    ])


def _num(value, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        f"{value:.{digits}f}"


def audit_table(rows: list[dict], colours: dict[str, str] | None = None) -> html.Div | dbc.Table:
    """The ranked suspicious labels; each row is a button that opens its image.

    rows: dicts with index, column, image_id, attribute, label, prd, expected, score, confident.
    """
    if not rows:
        return html.Div("No label to audit.", className="summary-note")
    colours = colours or {}
    head = html.Thead(html.Tr([html.Th(h) for h in
                               ("#", "image", "attribute", "label", "PRD", "expected",
                                "score")]))
    body = []
    for rank, r in enumerate(rows, start=1):
        swatch = html.Span(className="swatch",
                           style={"background": colours.get(r["attribute"], "#999")})
        body.append(html.Tr([
            html.Td(rank, className="num"),
            html.Td(html.Button(f"#{r['index']} {r['image_id']}", n_clicks=0,
                                id={"type": ids.AUDIT_ROW, "index": f"{r['index']}/{r['column']}"},
                                className="btn btn-link btn-sm p-0 audit-open",
                                title="open in the detail view and highlight in the views")),
            html.Td([swatch, r["attribute"]], className="attr"),
            html.Td(str(r["label"]), className="num"),
            html.Td(_num(r["prd"]), className="num"),
            html.Td(_num(r["expected"]), className="num"),
            html.Td([_num(r["score"]), html.Span(" ●" if r.get("confident") else "",
                                                 title=CONFIDENT_TIP, className="text-danger")],
                    className="num fw-bold"),
        ]))
    return dbc.Table([head, html.Tbody(body)], size="sm", hover=True,
                     className="metric-table audit-table")


def predictions_note(source: str, run_id: str) -> str:
    """Which predictions the audit ranked on (pipeline.audit.run_predictions' phrase) and, for
    in-sample ones or out-of-fold ones without the image view, the command that makes better."""
    if source.startswith("out-of-fold"):
        note = f"Ranked on {source}: no image was scored by a model that trained on it."
        if source.endswith("image view"):
            return note
        return (f"{note} The image view ranks better: python -m pipeline audit --run {run_id} "
                "--image-view")
    return (f"Ranked on {source}, which hide some of the errors; out-of-fold predictions rank "
            f"better: python -m pipeline audit --run {run_id} --folds 5")


def corrections_summary(n_active: int, n_events: int, dataset: str) -> str:
    return (f"{MARK} {n_active} label{'s' if n_active != 1 else ''} corrected on dataset "
            f"{dataset} ({n_events} edits in the history)")


def corrections_banner(problem: str) -> str:
    """The page-wide notice while the corrections database cannot be read."""
    return (f"Label corrections unavailable: {problem}. Exploring works; corrections are off "
            "until it is repaired or moved aside.")


def compare_table(frame) -> dbc.Table:
    """Before/after per-attribute AP, precision, recall and F1 (rows of compare_runs)."""
    metrics = ("AP", "P", "R", "F1")
    head = html.Thead([
        html.Tr([html.Th("attribute", rowSpan=2)] +
                [html.Th(m, colSpan=2, className="text-center") for m in metrics]),
        html.Tr([html.Th(w, className="num") for _ in metrics for w in ("before", "after")]),
    ])
    body = []
    for row in frame.to_dict("records"):
        cells = [html.Td(row["attribute"], className="attr")]
        for m in metrics:
            before, after = row[f"{m} before"], row[f"{m} after"]
            better = (not math.isnan(before) and not math.isnan(after)) and after - before
            style = {"color": "#137333"} if better and better > 0.005 else \
                {"color": "#b3261e"} if better and better < -0.005 else {}
            cells += [html.Td(_num(before), className="num"),
                      html.Td(_num(after), className="num", style=style)]
        body.append(html.Tr(cells, className="fw-bold" if row["attribute"] == "mean" else ""))
    return dbc.Table([head, html.Tbody(body)], size="sm", className="metric-table compare-runs")


def correction_form(author: str | None = None, locked: str | None = None) -> html.Div:
    """The content of the `detail-corrections` slot: flip one label of the open image.

    `author`: the signed-in user, shown in a disabled name field (corrections are recorded
    under it). `locked`: why this person may not correct labels, the buttons' tooltip."""
    buttons = [dbc.Button("Flip label", id=ids.FLIP_LABEL, size="sm", color="warning",
                          n_clicks=0, disabled=True),
               dbc.Button("Undo", id=ids.UNDO_CORRECTION, size="sm", color="secondary",
                          outline=True, n_clicks=0, disabled=True)]
    return html.Div([
        html.Div("Correct a label", className="section-title mt-2"),
        dcc.Dropdown(id=ids.CORRECTION_ATTRIBUTE, placeholder="attribute…", clearable=False,
                     className="mb-1"),
        dbc.Input(id=ids.CORRECTION_NOTE, placeholder="note (optional)", size="sm",
                  maxLength=500, className="mb-1"),
        html.Div([
            dbc.Input(id=ids.CORRECTION_AUTHOR, placeholder="your name", size="sm",
                      maxLength=100, debounce=True, style={"maxWidth": "140px"},
                      value=author, disabled=author is not None),  # signed in: fixed
            # A disabled button shows no tooltip of its own: the span around it does.
            html.Span(buttons, title=locked or "", id=ids.CORRECTION_WHY,
                      className="d-flex gap-1"),
        ], className="d-flex gap-1 align-items-center"),
        html.Div(id=ids.CORRECTION_STATUS, className="small my-1"),
        html.Div(id=ids.CORRECTION_LIST, className="small"),
        dcc.Store(id=ids.STORE_AUTHOR, storage_type="local"),
    ])


def attribute_options(attributes, act_row, prd_row, corrected_row) -> list[dict]:
    """Dropdown options 'Ring: 0 → 1 (PRD 0.93)', with the mark on corrected labels."""
    options = []
    for j, name in enumerate(attributes):
        label, new = int(act_row[j]), 1 - int(act_row[j])
        mark = f" {MARK}" if corrected_row[j] else ""
        options.append({"label": f"{name}: {label} → {new} (PRD {float(prd_row[j]):.2f}){mark}",
                        "value": j})
    return options


def image_corrections(records: list[dict]) -> html.Div:
    """The corrections in force for the open image: what, who, when, why."""
    if not records:
        return html.Div("No label of this image is corrected.", className="text-muted")
    items = [html.Li([html.B(f"{MARK} {r['attribute']} = {r['value']}"),
                      f" by {r['author']}, {str(r['created'])[:16].replace('T', ' ')} UTC",
                      html.Span(f" — {r['note']}", className="text-muted") if r["note"] else ""])
             for r in records]
    return html.Ul(items, className="mb-0 ps-3")
