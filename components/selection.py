"""Panel F, the selection manager: the current selection and saved groups with their TP/FP/FN/TN
and scores, overall and per attribute, two groups side by side, CSV export; and the audit tab.
"""

import math

import dash_bootstrap_components as dbc
from dash import dcc, html

from components import ids
from components.analyses import cooccurrence_tab, disagreement_tab
from components.figures import f1_figure
from components.html_table import element, html_table, swatch_name, text
from components.robustness import robustness_tab
from pipeline.analyses.uncertainty import differ

SCORES = (("accuracy", "Acc"), ("precision", "Prec"), ("recall", "Rec"), ("f1", "F1"))
# What two groups can always be compared (the saved groups are added to these).
COMPARE_CHOICES = [{"label": "Current selection", "value": "selection"},
                   {"label": "All images", "value": "all"}]
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
        html.Div([dcc.Dropdown(id=ids.COMPARE_A, clearable=False, value="selection",
                               options=COMPARE_CHOICES),
                  html.Span("vs", className="mx-2"),
                  dcc.Dropdown(id=ids.COMPARE_B, clearable=False, value="all",
                               options=COMPARE_CHOICES)],
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
            dbc.Tab(cooccurrence_tab(), label="Co-occurrence", tab_id="cooccurrence"),
            dbc.Tab(disagreement_tab(), label="Disagreement", tab_id="disagreement"),
            dbc.Tab(robustness_tab(), label="Robustness", tab_id="robustness"),
            dbc.Tab(html.Div(audit, id=ids.AUDIT_PANEL), label="Label audit", tab_id="audit"),
        ], id=ids.SELECTION_TABS, active_tab="metrics"), className="manager-body"),
    ], id=ids.SELECTION_MANAGER, className="bottom-card")


INTERVAL_NOTE = ("[low, high]: the 95 % interval of the score (bootstrap over the group's "
                 "images): how far it could move on another sample of the same size.")
DIFFER_NOTE = ("≠ and bold: the two groups' 95 % intervals do not overlap, so the difference is "
               "larger than the sampling of either group explains (for overlapping groups, such "
               "as a selection against all images, read it as a rough guide).")


def interval_text(interval) -> str:
    """A 95 % interval for display, '[0.78, 0.86]'; undefined bounds as en dashes."""
    if interval is None:
        return ""
    low, high = (float(v) for v in interval)
    return f"[{fmt(low)}, {fmt(high)}]"


def overall_tiles(summary: dict) -> html.Div:
    """One line of tiles: image count, pooled TP/FP/FN/TN and the four scores, each score with
    its 95 % interval beneath when the summary carries intervals."""
    o = summary["overall"]
    intervals = (summary.get("intervals") or {}).get("overall", {})
    tiles = [("images", f"{summary['n_images']:,}")]
    tiles += [(k, f"{o[k]:,}") for k in ("TP", "FP", "FN", "TN")]
    boxes = [_tile(k, v) for k, v in tiles]
    for key, short in SCORES:
        tile = _tile(short, fmt(o[key]))
        if key in intervals:
            tile = html.Div([tile, html.Div(interval_text(intervals[key]),
                                            className="tile-interval")],
                            className="tile-box", title=INTERVAL_NOTE)
        boxes.append(tile)
    return html.Div(boxes, className="tiles")


def _tile(label: str, value: str) -> html.Div:
    return html.Div([html.Div(value, className="tile-value"),
                     html.Div(label, className="tile-label")], className=f"tile tile-{label}")


def _score_cell(value, extra: str = "", differs: bool = False) -> str:
    """A score cell shaded from red (0) to green (1), an en dash for undefined; `extra` is
    markup after the value (the comparison's ≠ mark and interval)."""
    if value is None or math.isnan(value):
        return element("td", text("–") + extra, class_="num undefined")
    return element("td", text(fmt(value)) + extra, class_="num differs" if differs else "num",
                   style=f"background: hsla({120 * value:.1f},65%,55%,0.28)")


def _header_row(names) -> str:
    return element("tr", [element("th", text(n)) for n in names])


def attribute_table(summary: dict, attributes, colours) -> dcc.Markdown:
    """Per attribute: TP, FP, FN, TN and the four scores (one component: components.html_table)."""
    per = summary["per_attribute"]
    head = [_header_row(["attribute", "TP", "FP", "FN", "TN", *(s for _, s in SCORES)])]
    rows = []
    for j, name in enumerate(attributes):
        rows.append(element("tr", [
            element("td", swatch_name(name, colours[j]), class_="attr"),
            *[element("td", text(f"{per[k][j]:,}"), class_=f"num count-{k}")
              for k in ("TP", "FP", "FN", "TN")],
            *[_score_cell(per[key][j]) for key, _ in SCORES],
        ]))
    return html_table(head, rows, "metric-table")


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


def _interval_of(summary: dict, metric: str, j=None):
    """A group's 95 % interval of one score, overall (j None) or of attribute j; None if absent."""
    found = summary.get("intervals")
    if not found:
        return None
    return found["overall"][metric] if j is None else found["per_attribute"][metric][j]


def _compared_cell(value, interval, differs: bool) -> str:
    """A score cell of the comparison: value, a ≠ mark where the groups differ beyond their
    intervals, and the interval beneath."""
    extra = element("span", text("≠"), class_="differs-mark") if differs else ""
    if interval is not None:
        extra += element("div", text(interval_text(interval)), class_="cell-interval")
    return _score_cell(value, extra, differs)


def compare_table(a: dict, b: dict, names: tuple[str, str], attributes, colours) -> html.Div:
    """Two groups side by side: P/R/F1 with their 95 % intervals, overall and per attribute,
    with ΔF1; a ≠ marks a score whose intervals do not overlap between the groups."""
    metrics = ("precision", "recall", "f1")

    def value(s, metric, j):
        return s["overall"][metric] if j is None else s["per_attribute"][metric][j]

    def cells(j=None):
        out = []
        for s in (a, b):
            for m in metrics:
                ia, ib = _interval_of(a, m, j), _interval_of(b, m, j)
                differs = ia is not None and ib is not None and differ(ia, ib)
                out.append(_compared_cell(value(s, m, j), _interval_of(s, m, j), differs))
        return out

    def delta(j=None):
        fa, fb = value(a, "f1", j), value(b, "f1", j)
        return element("td", text("–" if math.isnan(fa) or math.isnan(fb) else f"{fa - fb:+.2f}"),
                       class_="num")

    group = "{} ({:,})"
    head = [
        element("tr", [element("th"),
                       element("th", text(group.format(names[0], a["n_images"])), colspan=3,
                               class_="group-head"),
                       element("th", text(group.format(names[1], b["n_images"])), colspan=3,
                               class_="group-head"),
                       element("th")]),
        _header_row(["attribute", *("P", "R", "F1") * 2, "ΔF1"]),
    ]
    rows = [element("tr", [element("td", element("b", text("overall"))), *cells(), delta()])]
    for j, name in enumerate(attributes):
        rows.append(element("tr", [element("td", swatch_name(name, colours[j]), class_="attr"),
                                   *cells(j), delta(j)]))
    table = html_table(head, rows, "metric-table compare-intervals")
    return html.Div([html.Div(f"{INTERVAL_NOTE} {DIFFER_NOTE}", className="summary-note"), table])


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
