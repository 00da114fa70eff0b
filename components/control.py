"""Panel A, the control panel: run, point mode, flower petals, error distance, threshold and
colour-by. Options that depend on the run's attributes are filled in by callbacks/control.py.
"""

import dash_bootstrap_components as dbc
from dash import dcc, html

from components import ids
from components.encoding import DEFAULT_CAP

POINT_MODE_OPTIONS = [
    {"label": "Dots", "value": "dots"},
    {"label": "Flowers · ACT labels", "value": "act"},
    {"label": "Flowers · PRD probabilities", "value": "prd"},
    {"label": "Flowers · joint (TP / FN / FP)", "value": "joint"},
]
PER_ATTRIBUTE, ONE_FOR_ALL = "per", "one"  # the threshold choice's values
THRESHOLD_MODE_OPTIONS = [
    {"label": "per attribute (chosen on validation)", "value": PER_ATTRIBUTE},
    {"label": "one for all (the slider)", "value": ONE_FOR_ALL},
]
LABELS_USED_OPTIONS = [
    {"label": "with corrections", "value": "with"},
    {"label": "as annotated", "value": "annotated"},
]
COLOUR_BY_OPTIONS = [
    {"label": "Error distance", "value": "error"},
    {"label": "Outcome", "value": "outcome"},
    {"label": "Label (ACT)", "value": "label"},
    {"label": "Probability (PRD)", "value": "probability"},
    {"label": "Disagreement (ACT/FEA/PRD neighbourhoods)", "value": "disagreement"},
    {"label": "Moved since parent run (retrained)", "value": "moved"},
]
# Colour-bys that need no attribute (the attribute dropdown is disabled for them).
WHOLE_IMAGE_COLOURS = ("error", "disagreement", "moved")


def section(title: str, *children, hint: str | None = None) -> html.Div:
    """A titled block of the side panels."""
    head = [html.Span(title, className="section-title")]
    if hint:
        head.append(html.Span(hint, className="section-hint"))
    return html.Div([html.Div(head, className="section-head"), *children], className="section")


def threshold_section() -> html.Div:
    """The decision threshold: the run's own per attribute (the default) or one for all set by
    the slider; moving the slider chooses one for all (callbacks/control.py)."""
    return section(
        "Decision threshold",
        html.Div(dbc.RadioItems(id=ids.THRESHOLD_MODE, options=THRESHOLD_MODE_OPTIONS,
                                value=PER_ATTRIBUTE, className="compact-radio"),
                 id=ids.THRESHOLD_CHOICE),
        html.Div(dcc.Slider(id=ids.THRESHOLD, min=0, max=1, step=0.01, value=0.5,
                            marks={v: f"{v:g}" for v in (0, 0.25, 0.5, 0.75, 1)},
                            updatemode="mouseup"), id=ids.THRESHOLD_SLIDER_BOX),
        html.Div(id=ids.THRESHOLD_NOTE, className="key-note"),
        html.Div(id=ids.THRESHOLD_LIST))


def threshold_list(attributes, colours, values) -> html.Details:
    """Each attribute's own threshold, folded: a colour swatch, the name and the value, two to a
    row; the summary line gives their range."""
    cells = [html.Div([html.Span(className="swatch", style={"background": c}),
                       html.Span(n, className="threshold-name"),
                       html.Span(f"{v:.2f}", className="threshold-value")],
                      title=f"{n}: {v:.3f}", className="threshold-item")
             for n, c, v in zip(attributes, colours, values, strict=True)]
    summary = f"each attribute's threshold ({min(values):.2f}–{max(values):.2f})"
    return html.Details([html.Summary(summary), html.Div(cells, className="threshold-grid")],
                        className="threshold-list")


def control_panel() -> dbc.Card:
    return dbc.Card(dbc.CardBody([
        html.Div("A · Control", className="panel-title"),
        section("Run", dcc.Dropdown(id=ids.RUN_PICKER, clearable=False, placeholder="no run yet",
                                    optionHeight=48),
                html.Div(id=ids.RUN_SUMMARY, className="run-summary")),
        section("Points", dbc.RadioItems(id=ids.POINT_MODE, options=POINT_MODE_OPTIONS,
                                         value="dots", className="compact-radio")),
        section("Flower cap",
                html.Div(dcc.Input(id=ids.FLOWER_CAP, type="number", min=0, max=5000, step=50,
                                   value=DEFAULT_CAP, debounce=True, className="cap-input"),
                         className="cap-row"),
                hint="flowers per view; dots beyond"),
        section("Petals", dcc.Checklist(id=ids.FLOWER_ATTRIBUTES, options=[], value=[],
                                        className="petal-checklist", inputClassName="me-1"),
                hint="attributes the flowers show"),
        section("Flower centre",
                dbc.RadioItems(id=ids.DISTANCE, inline=True, value="cosine",
                               options=[{"label": "cosine", "value": "cosine"},
                                        {"label": "Euclidean", "value": "euclidean"}]),
                hint="ACT–PRD error distance"),
        threshold_section(),
        section("Labels",
                dbc.RadioItems(id=ids.LABELS_USED, options=LABELS_USED_OPTIONS, value="with",
                               inline=True),
                hint="what metrics, filters, colours and flowers use"),
        section("Colour by",
                dbc.RadioItems(id=ids.COLOUR_BY, options=COLOUR_BY_OPTIONS, value="error",
                               className="compact-radio"),
                dcc.Dropdown(id=ids.COLOUR_ATTRIBUTE, options=[], value=0, clearable=False,
                             className="mt-1"),
                html.Div(id=ids.DISAGREEMENT_STATUS, className="key-note"),
                html.Div(id=ids.MOVED_STATUS, className="key-note")),
    ]), id=ids.CONTROL_PANEL, className="side-card")
