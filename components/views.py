"""Panels C, D, E: the embedded views of ACT, FEA and PRD side by side, with their hover
tooltips, the colour legend above them and the flower key beside the controls.
"""

import dash_bootstrap_components as dbc
from dash import dcc, html

from components import ids
from components.encoding import MOVED_FAR, NOT_IN_PARENT_COLOUR, OUTCOME_COLOURS

VIEW_TITLES = {
    "act": ("C · ACT", "annotated labels"),
    "fea": ("D · FEA", "the model's features"),
    "prd": ("E · PRD", "predicted probabilities"),
}
GRAPH_CONFIG = {
    "scrollZoom": True, "displaylogo": False, "doubleClick": "reset",
    "modeBarButtonsToRemove": ["autoScale2d", "toImage", "zoomIn2d", "zoomOut2d"],
}


def view_card(space: str) -> dbc.Card:
    title, subtitle = VIEW_TITLES[space]
    return dbc.Card([
        dbc.CardHeader([html.Span(title, className="view-title"),
                        html.Span(subtitle, className="view-subtitle"),
                        html.Span(id=ids.VIEW_HEADERS[space], className="view-count")],
                       className="view-header"),
        html.Div([
            # A large run's picture as a plain image, sent with the page (app.page): on screen
            # as the page renders, a second or more before plotly.js has loaded and drawn the
            # view over it (the graph comes after it, so it paints on top); hidden from then
            # on (assets/xrae.css).
            html.Img(id=ids.VIEW_PREVIEWS[space], className="view-preview", alt=""),
            dcc.Graph(id=ids.VIEWS[space], config=GRAPH_CONFIG, className="view-graph",
                      clear_on_unhover=True, figure={"data": [], "layout": {}}),
        ], className="view-stage"),
        # The hover callback turns the card towards the middle of the page, point by point.
        dcc.Tooltip(id=ids.VIEW_TOOLTIPS[space], direction="left" if space == "prd" else "right",
                    className="hover-card"),
    ], className="view-card")


def views_row() -> html.Div:
    return html.Div([
        html.Div([html.Div(id=ids.COLOUR_LEGEND, className="colour-legend"),
                  html.Div(id=ids.CORRECTION_KEY, className="colour-legend")],
                 className="legend-row"),
        dbc.Row([dbc.Col(view_card(s), width=4, className="view-col") for s in ids.VIEWS],
                className="g-2"),
    ])


def flower_key() -> dbc.Card:
    return dbc.Card(dbc.CardBody([
        html.Div("Flower key", className="panel-title"),
        dcc.Graph(id=ids.FLOWER_LEGEND, config={"staticPlot": True},
                  style={"height": "290px"}, figure={"data": [], "layout": {}}),
        html.Div("Petal angle = attribute (colour as named); box or lasso select in any view "
                 "highlights the same images in the other two; scroll to zoom.",
                 className="key-note"),
    ]), className="side-card")


def colour_legend(colour_by: str, attribute: str, colour: str, parent: str | None = None) -> list:
    """What the dot colours mean for the chosen colour-by (pure; shown above the views);
    `parent` is the run's parent run, for "moved"."""
    if colour_by == "moved":
        return moved_legend(parent)
    if colour_by == "outcome":
        chips = [html.Span([html.Span(className="chip", style={"background": c}), name],
                           className="legend-item") for name, c in OUTCOME_COLOURS.items()]
        return [html.Span(f"Outcome of “{attribute}”:", className="legend-label"), *chips]
    if colour_by == "disagreement":
        return [html.Span("Disagreement of the ACT, FEA and PRD neighbourhoods:",
                          className="legend-label"),
                html.Span("0 agree", className="legend-end"),
                html.Span(className="gradient disagreement-gradient"),
                html.Span("1 share no image", className="legend-end")]
    if colour_by == "error":
        return [html.Span("ACT–PRD error distance:", className="legend-label"),
                html.Span("0", className="legend-end"),
                html.Span(className="gradient error-gradient"),
                html.Span("1", className="legend-end")]
    low = "label 0" if colour_by == "label" else "p = 0"
    high = "label 1" if colour_by == "label" else "p = 1"
    what = "Label (ACT)" if colour_by == "label" else "Probability (PRD)"
    return [html.Span(f"{what} of “{attribute}”:", className="legend-label"),
            html.Span(low, className="legend-end"),
            html.Span(className="gradient",
                      style={"background": f"linear-gradient(90deg, #d9d9d9, {colour})"}),
            html.Span(high, className="legend-end")]


def moved_legend(parent: str | None) -> list:
    """The key of colour-by "moved since parent run", or why there is nothing to show."""
    grey = html.Span(className="chip", style={"background": NOT_IN_PARENT_COLOUR})
    if parent is None:
        return [html.Span("Moved since parent run:", className="legend-label"),
                html.Span([grey, "this run has no parent run: nothing to compare"],
                          className="legend-item")]
    return [html.Span(f"Moved since parent run {parent}, each view against the parent's map "
                      "(distance in typical 10th-neighbour spacings):", className="legend-label"),
            html.Span("0 stayed", className="legend-end"),
            html.Span(className="gradient moved-gradient"),
            html.Span(f"≥ {MOVED_FAR:g} moved far", className="legend-end"),
            html.Span([grey, "not in the parent"], className="legend-item")]


def correction_key(n_images: int) -> list:
    """What the black diamonds in the views mean, and on how many images (nothing when none)."""
    if n_images == 0:
        return []
    noun = "image has" if n_images == 1 else "images have"
    return [html.Span(className="diamond"),
            html.Span(f"{n_images:,} {noun} a corrected label (✎)", className="legend-item")]
