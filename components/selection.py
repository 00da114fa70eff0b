"""Panel F, the selection manager: the current selection and saved groups with their TP/FP/FN/TN
and scores, overall and per attribute, two groups side by side, CSV export; and the audit tab.
"""

import math

import dash_bootstrap_components as dbc
from dash import dcc, html

from components import ids
from components.figures import f1_figure

SCORES = (("accuracy", "Acc"), ("precision", "Prec"), ("recall", "Rec"), ("f1", "F1"))
GROUP_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
                 "#9a6324", "#800000", "#469990")


def fmt(value, digits: int = 2) -> str:
    """A score for display; undefined (NaN, 0/0) shows as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def selection_manager(audit: html.Div) -> dbc.Card:
    """Panel F; `audit` is the label-audit tab's content (components/audit.py: audit_panel)."""
    tools = html.Div([
        dbc.Input(id=ids.GROUP_NAME, placeholder="group name", size="sm", className="group-name"),
        dbc.Button("Save group", id=ids.SAVE_GROUP, size="sm", color="primary"),
        dbc.Button("Export CSV", id=ids.EXPORT_SELECTION, size="sm", color="secondary",
                   outline=True),
        dbc.Button("Clear", id=ids.CLEAR_SELECTION, size="sm", color="secondary", outline=True),
    ], className="selection-tools")
    compare = html.Div([
        html.Div([dcc.Dropdown(id=ids.COMPARE_A, clearable=False, value="selection"),
                  html.Span("vs", className="mx-2"),
                  dcc.Dropdown(id=ids.COMPARE_B, clearable=False, value="all")],
                 className="compare-pickers"),
        html.Div(id=ids.COMPARE_TABLE, className="table-scroll"),
    ])
    return dbc.Card([
        dbc.CardHeader([html.Span("F · Selection manager", className="panel-title me-3"),
                        html.Span(id=ids.SELECTION_TITLE, className="selection-title"), tools],
                       className="manager-header"),
        dbc.CardBody(dbc.Tabs([
            dbc.Tab(html.Div(id=ids.SELECTION_SUMMARY), label="Metrics", tab_id="metrics"),
            dbc.Tab(html.Div(id=ids.GROUP_LIST), label="Groups", tab_id="groups"),
            dbc.Tab(compare, label="Compare", tab_id="compare"),
            dbc.Tab(html.Div(audit, id=ids.AUDIT_PANEL), label="Label audit", tab_id="audit"),
        ], id=ids.SELECTION_TABS, active_tab="metrics"), className="manager-body"),
    ], id=ids.SELECTION_MANAGER, className="bottom-card")


def overall_tiles(summary: dict) -> html.Div:
    """One line of tiles: image count, pooled TP/FP/FN/TN and the four scores."""
    o = summary["overall"]
    tiles = [("images", f"{summary['n_images']:,}")]
    tiles += [(k, f"{o[k]:,}") for k in ("TP", "FP", "FN", "TN")]
    tiles += [(short, fmt(o[key])) for key, short in SCORES]
    return html.Div([html.Div([html.Div(v, className="tile-value"),
                               html.Div(k, className="tile-label")], className=f"tile tile-{k}")
                     for k, v in tiles], className="tiles")


def _score_cell(value) -> html.Td:
    """A score cell shaded from red (0) to green (1), blank for undefined."""
    if value is None or math.isnan(value):
        return html.Td("–", className="num undefined")
    hue = 120 * value
    return html.Td(fmt(value), className="num", style={"background": f"hsla({hue},65%,55%,0.28)"})


def attribute_table(summary: dict, attributes, colours) -> dbc.Table:
    """Per attribute: positives, TP, FP, FN, TN and the four scores."""
    per = summary["per_attribute"]
    head = html.Thead(html.Tr([html.Th("attribute"), html.Th("TP"), html.Th("FP"), html.Th("FN"),
                               html.Th("TN")] + [html.Th(short) for _, short in SCORES]))
    rows = []
    for j, name in enumerate(attributes):
        rows.append(html.Tr([
            html.Td([html.Span(className="swatch", style={"background": colours[j]}), name],
                    className="attr"),
            *[html.Td(f"{per[k][j]:,}", className=f"num count-{k}") for k in ("TP", "FP", "FN",
                                                                               "TN")],
            *[_score_cell(per[key][j]) for key, _ in SCORES],
        ]))
    return dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, className="metric-table")


def summary_block(summary: dict, attributes, colours, note: str | None = None,
                  reference: dict | None = None) -> html.Div:
    """Tiles, the per-attribute table and, against a reference (all images), the F1 chart."""
    parts = [overall_tiles(summary)]
    if note:
        parts.append(html.Div(note, className="summary-note"))
    parts.append(html.Div(attribute_table(summary, attributes, colours), className="table-scroll"))
    if reference is not None:
        figure = f1_figure(summary["per_attribute"]["f1"], reference["per_attribute"]["f1"],
                           attributes, colours)
        parts.append(dcc.Graph(figure=figure, config={"displayModeBar": False},
                               className="f1-chart"))
    return html.Div(parts)


def compare_table(a: dict, b: dict, names: tuple[str, str], attributes, colours) -> dbc.Table:
    """Two groups side by side: counts and P/R/F1 overall and per attribute, with ΔF1."""
    def cells(s, j=None):
        src = s["overall"] if j is None else {k: v[j] for k, v in s["per_attribute"].items()}
        return [_score_cell(src["precision"]), _score_cell(src["recall"]), _score_cell(src["f1"])]

    def delta(j=None):
        fa = a["overall"]["f1"] if j is None else a["per_attribute"]["f1"][j]
        fb = b["overall"]["f1"] if j is None else b["per_attribute"]["f1"][j]
        return html.Td("–" if math.isnan(fa) or math.isnan(fb) else f"{fa - fb:+.2f}",
                       className="num")

    head = html.Thead([
        html.Tr([html.Th(""), html.Th(f"{names[0]} ({a['n_images']:,})", colSpan=3,
                                      className="group-head"),
                 html.Th(f"{names[1]} ({b['n_images']:,})", colSpan=3, className="group-head"),
                 html.Th("")]),
        html.Tr([html.Th("attribute")] + [html.Th(h) for h in ("P", "R", "F1") * 2]
                + [html.Th("ΔF1")]),
    ])
    rows = [html.Tr([html.Td(html.B("overall")), *cells(a), *cells(b), delta()])]
    for j, name in enumerate(attributes):
        rows.append(html.Tr([
            html.Td([html.Span(className="swatch", style={"background": colours[j]}), name],
                    className="attr"), *cells(a, j), *cells(b, j), delta(j)]))
    return dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, className="metric-table")


def group_row(k: int, group: dict, summary: dict) -> html.Div:
    """One saved group: colour, name, size, F1, and its select / export / delete buttons."""
    o = summary["overall"]
    return html.Div([
        html.Span(className="group-swatch", style={"borderColor": group["colour"]}),
        html.Span(group["name"], className="group-name-label"),
        html.Span(f"{summary['n_images']:,} images", className="group-stat"),
        html.Span(f"TP {o['TP']} · FP {o['FP']} · FN {o['FN']} · TN {o['TN']}",
                  className="group-stat"),
        html.Span(f"F1 {fmt(o['f1'])}", className="group-stat"),
        dbc.Button("Select", id={"type": ids.GROUP_SELECT, "index": k}, size="sm",
                   color="link"),
        dbc.Button("CSV", id={"type": ids.GROUP_EXPORT, "index": k}, size="sm", color="link"),
        dbc.Button("Delete", id={"type": ids.GROUP_DELETE, "index": k}, size="sm",
                   color="link", className="text-danger"),
    ], className="group-row")
