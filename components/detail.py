"""Panel G, the detail image view: thumbnails of the selection, one image large (log intensity,
false colour, optionally under one attribute's saliency), its ACT vs PRD table, its nearest
neighbours in FEA space, and the science slot.
"""

import json

import dash_bootstrap_components as dbc
import numpy as np
from dash import dcc, html

from components import ids
from components.encoding import OUTCOME_COLOURS
from components.html_table import element, html_table, swatch_name, text
from pipeline.imaging import COLOUR_MAPS
from pipeline.metrics import OUTCOMES
from pipeline.neighbours import DEFINITION as NEIGHBOURS_DEFINITION


def detail_view(correction_form: html.Div) -> dbc.Card:
    """Panel G; `correction_form` is components/audit.py's form for the person asking."""
    image = html.Div([
        # Until an image is open there is nothing to colour: the tools wait (callbacks/detail).
        html.Div([
            html.Div([html.Span("colour map", className="me-2 small text-muted"),
                      dcc.Dropdown(id=ids.COLOUR_MAP, value="Inferno",
                                   options=[{"label": m.replace("Greys_r", "Grey"), "value": m}
                                            for m in COLOUR_MAPS],
                                   clearable=False, className="colour-map")],
                     className="map-row"),
            saliency_controls(),
        ], id=ids.DETAIL_IMAGE_TOOLS, hidden=True),
        dcc.Graph(id=ids.DETAIL_IMAGE, className="detail-graph",
                  config={"displaylogo": False, "scrollZoom": True},
                  figure={"data": [], "layout": {}}),
    ])
    neighbours = html.Div([
        html.Div([html.Span("Nearest neighbours in FEA space", className="section-title"),
                  html.Span(f" · {NEIGHBOURS_DEFINITION}", className="section-hint")]),
        html.Div(id=ids.NEIGHBOURS, className="thumb-strip"),
    ])
    return dbc.Card([
        dbc.CardHeader([html.Span("G · Detail", className="panel-title me-3"),
                        html.Span(id=ids.DETAIL_TITLE, className="detail-title")]),
        dbc.CardBody([
            html.Div(id=ids.THUMBNAILS, className="thumb-strip selection-thumbs"),
            dbc.Row([dbc.Col(image, width=6),
                     dbc.Col(html.Div(id=ids.DETAIL_TABLE, className="table-scroll detail-table"),
                             width=6)], className="g-2"),
            dbc.Row([dbc.Col(neighbours, width=6),
                     dbc.Col(html.Div(correction_form, id=ids.DETAIL_CORRECTIONS,
                                      className="detail-corrections"), width=6)],
                    className="g-2 mt-1"),
            # Under the large image, across the card: beam centre, I(q), polar view.
            html.Div(id=ids.DETAIL_SCIENCE, className="detail-science mt-2"),
        ]),
    ], id=ids.DETAIL_VIEW, className="bottom-card")


def saliency_controls() -> html.Div:
    """Which attribute's saliency covers the large image (none: the image alone), how opaque,
    and a note when there is none to show."""
    return html.Div([
        html.Span("saliency for", className="me-2 small text-muted",
                  title="Grad-CAM: the regions of the image that raised the model's score "
                        "for this attribute"),
        dcc.Dropdown(id=ids.SALIENCY_ATTRIBUTE, options=[], value=None, clearable=True,
                     placeholder="none", className="saliency-attribute"),
        html.Div([html.Span("opacity", className="ms-2 me-1 small text-muted"),
                  html.Div(dcc.Slider(id=ids.SALIENCY_OPACITY, min=0, max=1, step=0.05,
                                      value=0.6, marks=None, tooltip={"placement": "bottom"}),
                           className="saliency-opacity")], className="map-row"),
        html.Span(id=ids.SALIENCY_NOTE, className="ms-2 small text-muted saliency-note"),
    ], className="map-row saliency-row")


def saliency_options(attributes, prd_row) -> list[dict]:
    """The picker's attributes in the run's order, each with the model's probability."""
    return [{"label": f"{name} · {float(p):.2f}", "value": name}
            for name, p in zip(attributes, prd_row, strict=True)]


def thumbnail(kind: str, index: int, uri: str, caption: str):
    """A clickable thumbnail; kind is ids.THUMB or ids.NEIGHBOUR, index the run row.

    One component, its caption as text and its picture as the button's background: an image
    and a caption inside it made three, and Dash's renderer re-checks every component holding
    others at each update of the page (a strip of 40 was 120 components, 40 of them holders)."""
    return html.Button(caption, id={"type": kind, "index": int(index)}, n_clicks=0,
                       title=caption,
                       style={"backgroundImage": f"url({json.dumps(uri)})"},
                       className="thumb")


def act_prd_table(attributes, colours, act_row, prd_row, threshold,
                  corrected_row=None) -> dcc.Markdown:
    """For one image: each attribute's label, predicted probability (as a bar) and outcome
    (one component: components.html_table).

    threshold: one number or one per attribute (each outcome at the attribute's own; its value
    is the outcome's tooltip). corrected_row (bools, optional): labels an analyst corrected, ✎.
    """
    limits = np.broadcast_to(np.asarray(threshold, dtype=np.float32), (len(attributes),))
    rows = []
    for j, name in enumerate(attributes):
        p, a = float(prd_row[j]), int(act_row[j])
        mark = " ✎" if corrected_row is not None and corrected_row[j] else ""
        said = np.float32(prd_row[j]) >= limits[j]
        outcome = OUTCOMES[0 if a and said else 1 if said else 2 if a else 3]
        fill = element("div", class_="bar-fill",
                       style=f"width: {100 * p:.0f}%; background: {colours[j]}")
        bar = element("div", fill, class_="bar") + element("span", text(f"{p:.2f}"),
                                                           class_="num")
        rows.append(element("tr", [
            element("td", swatch_name(name, colours[j]), class_="attr"),
            element("td", text(("1" if a else "0") + mark), class_="num"),
            element("td", element("div", bar, class_="bar-cell")),
            element("td", element("span", text(outcome), class_="outcome-badge",
                                  style=f"background: {OUTCOME_COLOURS[outcome]}",
                                  title=f"threshold {limits[j]:.2f}")),
        ], class_=f"outcome-{outcome}"))
    head = [element("tr", [element("th", text(h)) for h in ("attribute", "ACT", "PRD",
                                                             "outcome")])]
    return html_table(head, rows, "metric-table act-prd", hover=False)
