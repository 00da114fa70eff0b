"""The whole page: controls and filters at left, the three embedded views on top, the selection
manager and the detail view below (Huang et al., IEEE VIS 2020, Fig. 1), plus every store.
"""

import dash_bootstrap_components as dbc
from dash import html

from components import ids
from components.audit import audit_panel, correction_form
from components.control import control_panel
from components.detail import detail_view
from components.filters import attribute_filters
from components.selection import selection_manager
from components.stores import stores
from components.views import flower_key, views_row


def create_layout(author: str | None = None, edit_locked: str | None = None,
                  jobs_locked: str | None = None) -> html.Div:
    """The page, every component in it from the start. `author`: the signed-in user (None when
    the server signs nobody in); `edit_locked` and `jobs_locked`: why the person may not correct
    labels or start retraining (None when they may), shown on the disabled buttons."""
    header = html.Div([
        html.Span("X-ray Attribute Explorer", className="brand"),
        html.Span("how a deep-learning model tags scattering images with many attributes",
                  className="tagline"),
    ], className="top-bar")
    empty = dbc.Alert(id=ids.EMPTY_STATE, is_open=False, color="warning", className="m-2")
    unreadable = dbc.Alert(id=ids.CORRECTIONS_ALERT, is_open=False, color="danger",
                           className="m-2")
    return html.Div([
        header, empty, unreadable,
        html.Div([
            html.Div([control_panel(), attribute_filters(), flower_key()], className="side"),
            html.Div([
                views_row(),
                html.Div([selection_manager(audit_panel(jobs_locked)),
                          detail_view(correction_form(author, edit_locked))],
                         className="bottom-row"),
            ], className="main"),
        ], className="app-grid"),
        *stores(),
    ], className="app")
