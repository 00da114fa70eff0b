"""The analyses tab of panel F: the co-occurrence and conditional error matrix (which attributes
make which others go wrong), as components and a pure figure function of the computed table.
"""

from __future__ import annotations

import math

import dash_bootstrap_components as dbc
import numpy as np
from dash import dcc, html

from components import ids

KIND_OPTIONS = [{"label": "missed labels (FN)", "value": "fn"},
                {"label": "false alarms (FP)", "value": "fp"}]
KIND_WORDS = {"fn": ("FN rate", "labelled images missed"),
              "fp": ("FP rate", "unlabelled images flagged")}
ALL_IMAGES, SELECTION = "all", "selection"
GROUP_OPTIONS = [{"label": "All images", "value": ALL_IMAGES},
                 {"label": "Current selection", "value": SELECTION}]
# Red: j goes wrong more often when i is present; blue: less often (plotly's RdBu, reversed).
CHANGE_SCALE = [[0.0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"],
                [1.0, "#b2182b"]]
DIAGONAL_COLOUR = "#5b6779"
EXPLANATION = ("Cell (row i, column j): how much more (red) or less (blue) often attribute j "
               "goes wrong when attribute i is labelled than when it is not. The grey squares on "
               "the diagonal give each attribute's own error rate (%). Only images that pass the "
               "filters count; click a cell to select its images (i labelled, j wrong).")


def cooccurrence_tab() -> html.Div:
    """The tab's controls, its matrix and the note saying what it counts."""
    controls = html.Div([
        dcc.Dropdown(id=ids.COOCCURRENCE_GROUP, options=GROUP_OPTIONS, value=ALL_IMAGES,
                     clearable=False, className="analysis-group"),
        dbc.RadioItems(id=ids.COOCCURRENCE_KIND, options=KIND_OPTIONS, value="fn", inline=True,
                       className="analysis-kind"),
    ], className="analysis-controls")
    return html.Div([
        controls,
        html.Div(EXPLANATION, className="summary-note"),
        html.Div(id=ids.COOCCURRENCE_NOTE, className="summary-note"),
        dcc.Graph(id=ids.COOCCURRENCE, className="cooccurrence-graph",
                  config={"displayModeBar": False}, figure={"data": [], "layout": {}}),
    ])


def _rate(value) -> str:
    return "undefined" if not math.isfinite(value) else f"{value:.2f}"


def _listed(matrix) -> list[list]:
    """A float matrix as nested lists with None where it is NaN (plotly leaves a gap)."""
    return [[None if not math.isfinite(v) else round(float(v), 4) for v in row] for row in matrix]


def cell_hover(table: dict, attributes, i: int, j: int) -> str:
    """What one off-diagonal cell means, with the counts behind both rates."""
    rate, _ = KIND_WORDS[table["kind"]]
    return (f"{attributes[j]} {rate}<br>with {attributes[i]}: {_rate(table['with_i'][i, j])} "
            f"({table['errors_with'][i, j]} of {table['n_with'][i, j]})<br>"
            f"without {attributes[i]}: {_rate(table['without_i'][i, j])} "
            f"({table['errors_without'][i, j]} of {table['n_without'][i, j]})<br>"
            f"change: {_rate(table['change'][i, j])} · click: select these images")


def diagonal_hover(table: dict, attributes, j: int) -> str:
    rate, words = KIND_WORDS[table["kind"]]
    wrong = table["errors_with"][j, j] + table["errors_without"][j, j]
    counted = table["n_with"][j, j] + table["n_without"][j, j]
    return (f"{attributes[j]} own {rate}: {_rate(table['own'][j])}<br>"
            f"{wrong} of {counted} {words} · click: select them")


def cooccurrence_figure(table: dict, attributes) -> dict:
    """The A × A heatmap of `change` (rows i: present or absent; columns j: whose errors) with
    the diagonal drawn apart as grey squares carrying each attribute's own error rate."""
    n = len(attributes)
    change = np.asarray(table["change"], dtype=float)
    finite = np.abs(change[np.isfinite(change)])
    reach = max(float(finite.max()) if finite.size else 0.0, 0.05)
    rate, _ = KIND_WORDS[table["kind"]]
    heat = {
        "type": "heatmap", "x": list(range(n)), "y": list(range(n)), "z": _listed(change),
        "zmin": -reach, "zmax": reach, "zmid": 0, "colorscale": CHANGE_SCALE, "xgap": 1,
        "ygap": 1, "hoverongaps": False, "name": "change",
        "text": [[cell_hover(table, attributes, i, j) if i != j else "" for j in range(n)]
                 for i in range(n)],
        "hovertemplate": "%{text}<extra></extra>",
        "colorbar": {"title": {"text": f"change in<br>{rate}<br>(i labelled<br>− not)",
                               "side": "top"}, "thickness": 12, "len": 0.9},
    }
    own = np.asarray(table["own"], dtype=float)
    diagonal = {
        "type": "scatter", "mode": "markers+text", "x": list(range(n)), "y": list(range(n)),
        "name": f"diagonal: own {rate} (%)", "showlegend": True,
        "marker": {"symbol": "square", "size": 19, "color": DIAGONAL_COLOUR},
        "text": ["–" if not math.isfinite(v) else f"{100 * v:.0f}" for v in own],
        "textfont": {"color": "white", "size": 9},
        "hovertext": [diagonal_hover(table, attributes, j) for j in range(n)],
        "hovertemplate": "%{hovertext}<extra></extra>",
    }
    axis = {"tickmode": "array", "tickvals": list(range(n)), "ticktext": list(attributes),
            "showgrid": False, "zeroline": False, "tickfont": {"size": 10},
            "range": [-0.5, n - 0.5]}
    return {"data": [heat, diagonal], "layout": {
        "xaxis": {**axis, "tickangle": -45, "title": {"text": f"j: attribute whose {rate} is shown",
                                                      "font": {"size": 11}}},
        "yaxis": {**axis, "range": [n - 0.5, -0.5],
                  "title": {"text": "i: attribute labelled or not", "font": {"size": 11}}},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom",
                   "font": {"size": 10}},
        "margin": {"l": 120, "r": 10, "t": 26, "b": 110}, "height": 560,
        "plot_bgcolor": "#ffffff", "clickmode": "event",
        # A diagonal square claims the pointer only over itself, not over the cells beside it.
        "hoverdistance": 8,
    }}


DISAGREEMENT_EXPLANATION = (
    "An image's disagreement is how little its nearest neighbours by labels (ACT), by the "
    "model's features (FEA) and by its predictions (PRD) have in common: 0, the three "
    "neighbourhoods coincide; 1, they share no image. High scores mark images the model sees "
    "as alike but labels or predictions set apart, or the reverse. Click one to open it.")
TOP_N = 10


def disagreement_tab() -> html.Div:
    """The most disagreeing images of the run, filled in when the tab is first opened."""
    return html.Div([
        html.Div(DISAGREEMENT_EXPLANATION, className="summary-note"),
        html.Div(id=ids.DISAGREEMENT_TAB_STATUS, className="summary-note"),
        html.Div(id=ids.DISAGREEMENT_LIST, className="thumb-strip disagreement-list"),
    ])


def disagreeing_caption(index: int, image_id: str, score: float) -> str:
    return f"#{index} {image_id} · {score:.2f}"
