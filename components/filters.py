"""Panel B, attribute filters: which images stay vivid; the rest fade in every view.

One or more attributes, matched ANY or ALL, on the labels, the predictions or an outcome.
"""

import dash_bootstrap_components as dbc
from dash import dcc, html

from components import ids
from components.control import section

FILTER_ON_OPTIONS = [
    {"label": "ACT", "value": "act"}, {"label": "PRD", "value": "prd"},
    {"label": "TP", "value": "TP"}, {"label": "FP", "value": "FP"},
    {"label": "FN", "value": "FN"}, {"label": "TN", "value": "TN"},
]


def attribute_filters() -> dbc.Card:
    return dbc.Card(dbc.CardBody([
        html.Div("B · Attribute filters", className="panel-title"),
        dcc.Dropdown(id=ids.FILTER_ATTRIBUTES, options=[], value=[], multi=True,
                     placeholder="any attribute…"),
        section("Match", dbc.RadioItems(id=ids.FILTER_MATCH, inline=True, value="any",
                                        options=[{"label": "ANY", "value": "any"},
                                                 {"label": "ALL", "value": "all"}])),
        section("Applied to", dbc.RadioItems(id=ids.FILTER_ON, inline=True, value="act",
                                             options=FILTER_ON_OPTIONS, className="filter-on")),
        dcc.Checklist(id=ids.FILTER_DISAGREEING, value=[], className="mt-1",
                      inputClassName="me-1",
                      options=[{"label": "only the 5 % whose ACT/FEA/PRD neighbourhoods disagree "
                                         "most", "value": "top"}]),
        html.Div(id=ids.FILTER_COUNT, className="filter-count"),
    ]), id=ids.ATTRIBUTE_FILTERS, className="side-card")
