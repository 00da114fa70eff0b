"""The robustness tab of panel F: which images to probe, start/cancel with progress, and the
small multiples of AP (or agreement with the clean decisions) against the perturbation's level.
"""

from __future__ import annotations

import math

import dash_bootstrap_components as dbc
from dash import dcc, html

from components import ids
from pipeline.robustness import DEFAULT_N, MEAN, PERTURBATIONS, TITLES

MAX_IMAGES = 2000  # the most one probe re-infers (17 passes each): minutes on a CPU
SAMPLE, SELECTION = "sample", "selection"
SCOPE_OPTIONS = [{"label": "Random sample of the run", "value": SAMPLE},
                 {"label": "Current selection", "value": SELECTION}]
METRIC_OPTIONS = [{"label": "AP (against the labels)", "value": "AP"},
                  {"label": "agreement with clean", "value": "agreement"}]
EXPLANATION = (
    "How the model holds up on poorer images: each image is smeared (motion blur), given "
    "Gaussian read noise, re-counted at a lower dose (Poisson) or binned to larger pixels, at "
    "four strengths, and re-inferred. AP is against the labels used; agreement is the share of "
    "decisions (at the run's thresholds) equal to those on the clean image. At most "
    f"{MAX_IMAGES:,} images; a larger scope is sampled.")
MEAN_COLOUR = "#212529"
SHOWN, HIDDEN = {"display": "block"}, {"display": "none"}
COLUMNS, ROWS = ([0.0, 0.45], [0.55, 1.0]), ([0.62, 0.96], [0.12, 0.46])  # of the 2 × 2 grid


def robustness_tab() -> html.Div:
    """The tab's controls, progress, status and plot (filled when a probe finishes)."""
    controls = html.Div([
        dcc.Dropdown(id=ids.ROBUSTNESS_SCOPE, options=SCOPE_OPTIONS, value=SAMPLE,
                     clearable=False, className="analysis-group", style={"minWidth": "210px"}),
        dbc.InputGroup([dbc.Input(id=ids.ROBUSTNESS_SIZE, type="number", min=1, max=MAX_IMAGES,
                                  step=1, value=DEFAULT_N),
                        dbc.InputGroupText("images at most")], size="sm",
                       style={"width": "200px"}),
        dbc.Button("Start probe", id=ids.ROBUSTNESS_START, size="sm", color="primary",
                   n_clicks=0),
        dbc.Button("Cancel", id=ids.ROBUSTNESS_CANCEL, size="sm", color="danger", outline=True,
                   n_clicks=0, disabled=True),
        dbc.RadioItems(id=ids.ROBUSTNESS_METRIC, options=METRIC_OPTIONS, value="AP", inline=True,
                       className="analysis-kind ms-2"),
    ], className="d-flex align-items-center flex-wrap gap-1 mb-1")
    progress = html.Div(dbc.Progress(id=ids.ROBUSTNESS_PROGRESS, value=0, label="", striped=True,
                                     animated=True, style={"height": "18px"}),
                        id=ids.ROBUSTNESS_PROGRESS_BOX, style=HIDDEN, className="my-1")
    return html.Div([
        controls,
        html.Div(EXPLANATION, className="summary-note"),
        progress,
        html.Div(id=ids.ROBUSTNESS_STATUS, className="small my-1"),
        dcc.Graph(id=ids.ROBUSTNESS_GRAPH, config={"displayModeBar": False},
                  figure={"data": [], "layout": {}}),
        html.Div(id=ids.ROBUSTNESS_NOTE, className="summary-note"),
        dcc.Store(id=ids.STORE_ROBUSTNESS_REQUEST),  # no data, not None: components.stores
        dcc.Store(id=ids.STORE_ROBUSTNESS),
    ], id=ids.ROBUSTNESS_PANEL)


def _value(v) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def _series(records: list[dict], kind: str, attribute: str, metric: str):
    rows = sorted((r for r in records
                   if r["perturbation"] == kind and r["attribute"] == attribute),
                  key=lambda r: r["level"])
    return [r["level"] for r in rows], [_value(r[metric]) for r in rows], \
        [r["setting"] for r in rows]


def robustness_figure(records: list[dict], attributes, colours, metric: str) -> dict:
    """A 2 × 2 grid, one panel per perturbation: `metric` of each attribute (thin, its colour)
    and their mean (thick, dark) against the level; one legend entry per line toggles it in
    every panel."""
    data, layout = [], {}
    names = [*attributes, MEAN]
    styles = [{"color": c, "width": 1.2} for c in colours] + [{"color": MEAN_COLOUR, "width": 3.5}]
    for p, kind in enumerate(PERTURBATIONS):
        axis = "" if p == 0 else str(p + 1)
        col, row = p % 2, p // 2
        settings = []
        for name, line in zip(names, styles, strict=True):
            levels, values, settings = _series(records, kind, name, metric)
            data.append({
                "type": "scatter", "mode": "lines+markers", "x": levels, "y": values,
                "name": name, "legendgroup": name, "showlegend": p == 0, "line": line,
                "marker": {"size": 7 if name == MEAN else 4, "color": line["color"]},
                "xaxis": f"x{axis}", "yaxis": f"y{axis}", "customdata": settings,
                "hovertemplate": f"{name}<br>%{{customdata}}: {metric} %{{y:.3f}}<extra></extra>",
            })
        layout[f"xaxis{axis}"] = {
            "domain": COLUMNS[col],
            "anchor": f"y{axis}", "tickmode": "array", "tickvals": list(range(len(settings))),
            "ticktext": [f"L{i}" for i in range(len(settings))], "tickfont": {"size": 10},
            "title": {"text": "level", "font": {"size": 10}, "standoff": 2}}
        layout[f"yaxis{axis}"] = {
            "domain": ROWS[row], "anchor": f"x{axis}",
            "range": [0, 1.04], "tickfont": {"size": 10},
            "title": {"text": metric, "font": {"size": 10}, "standoff": 2}}
    layout["annotations"] = [
        {"text": TITLES[kind], "showarrow": False, "xref": "paper", "yref": "paper",
         "x": COLUMNS[p % 2][0], "xanchor": "left", "y": ROWS[p // 2][1],
         "yanchor": "bottom", "font": {"size": 11}} for p, kind in enumerate(PERTURBATIONS)]
    # The legend goes below: beside the grid it would take a third of the panel's width.
    layout.update({"height": 620, "margin": {"l": 50, "r": 10, "t": 24, "b": 20},
                   "plot_bgcolor": "#ffffff", "hovermode": "closest",
                   "legend": {"font": {"size": 10}, "orientation": "h", "x": 0, "y": 0.0,
                              "yanchor": "top"}})
    return {"data": data, "layout": layout}


def level_note(records: list[dict]) -> str:
    """What each level stands for, perturbation by perturbation."""
    parts = []
    for kind in PERTURBATIONS:
        settings = {r["level"]: r["setting"] for r in records if r["perturbation"] == kind}
        parts.append(f"{TITLES[kind]}: " + ", ".join(f"L{lv} {settings[lv]}"
                                                      for lv in sorted(settings) if lv))
    return " · ".join(parts)
