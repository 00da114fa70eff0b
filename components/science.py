"""The detail panel's scientific views of one image: detector with beam centre, I(q), polar view.

Pure functions: arrays and the beam-centre estimate in, plotly figure dicts and components out.
"""

from __future__ import annotations

import numpy as np
import plotly.colors
from dash import dcc, html

from components.figures import detector_heatmap, typed
from pipeline.imaging import DEFAULT_COLOUR_MAP, LOG_UNIT, log_intensity, window

GRAPH_HEIGHT = 260
LOW_CONFIDENCE = 0.2  # below this the centre is shown as a guess (see scattering.BeamCentre)
CENTRE_COLOUR = "#00e5ff"


def centre_summary(centre: dict) -> str:
    """One line: where the beam centre is, how sure the estimate is, and from what evidence."""
    where = f"Beam centre x {centre['x']:.1f}, y {centre['y']:.1f} px"
    sigma = centre.get("sigma", float("inf"))
    spread = f" ± {sigma:.1f} px" if np.isfinite(sigma) else ""
    text = f"{where}{spread} · confidence {centre['confidence']:.2f} · {centre['method']}"
    if 0 < centre["confidence"] < LOW_CONFIDENCE:
        text += " (low: treat as a guess)"
    return text


def circle_xy(cx: float, cy: float, radii, n: int = 181):
    """Outlines of circles about (cx, cy) as x, y lists with None between circles."""
    t = np.linspace(0, 2 * np.pi, n)
    xs, ys = [], []
    for r in radii:
        xs += [*(cx + r * np.cos(t)).round(2).tolist(), None]
        ys += [*(cy + r * np.sin(t)).round(2).tolist(), None]
    return xs, ys


def guide_radii(shape, centre: dict, rings) -> list[float]:
    """Circles to draw: the detected rings, else quarters of the distance to the nearest edge."""
    if rings:
        return list(rings)
    h, w = shape
    edge = min(centre["x"], centre["y"], w - 1 - centre["x"], h - 1 - centre["y"])
    edge = edge if edge > 4 else max(h, w) / 2
    return [edge * k / 4 for k in (1, 2, 3)]


def detector_figure(pixels, centre: dict, rings=(), max_side: int = 256) -> dict:
    """The image in log intensity with the beam centre (cross) and guide circles about it."""
    pixels = np.asarray(pixels)
    xs, ys = circle_xy(centre["x"], centre["y"], guide_radii(pixels.shape, centre, rings))
    heatmap = {**detector_heatmap(pixels, max_side=max_side), "showscale": False}
    circles = {
        "type": "scatter",
        "mode": "lines",
        "x": xs,
        "y": ys,
        "hoverinfo": "skip",
        "line": {"color": CENTRE_COLOUR, "width": 1, "dash": "dot"},
    }
    cross = {
        "type": "scatter",
        "mode": "markers",
        "x": [centre["x"]],
        "y": [centre["y"]],
        "marker": {"symbol": "x-thin", "size": 14, "line": {"width": 2, "color": CENTRE_COLOUR}},
        "hovertemplate": "beam centre<br>x %{x:.1f}, y %{y:.1f}<extra></extra>",
    }
    h, w = pixels.shape
    return {
        "data": [heatmap, circles, cross],
        "layout": {
            "height": GRAPH_HEIGHT,
            "margin": {"l": 0, "r": 0, "t": 24, "b": 0},
            "title": {"text": "Detector, beam centre", "font": {"size": 12}, "x": 0.02},
            "showlegend": False,
            "plot_bgcolor": "white",
            "xaxis": {"visible": False, "range": [-0.5, w - 0.5], "constrain": "domain"},
            "yaxis": {
                "visible": False,
                "range": [h - 0.5, -0.5],
                "scaleanchor": "x",
                "constrain": "domain",
            },
        },
    }


def profile_figure(radius, intensity, rings=(), unit: str = "px") -> dict:
    """I(q) as mean intensity per ring against radius, log y; detected rings marked."""
    radius = np.asarray(radius, dtype=float)
    intensity = np.asarray(intensity, dtype=float)
    keep = np.isfinite(intensity) & (intensity > 0)  # log axis: empty or zero rings drop out
    line = {
        "type": "scatter",
        "mode": "lines",
        "x": typed(radius[keep]),
        "y": typed(intensity[keep]),
        "line": {"color": "#1f77b4", "width": 1.5},
        "hovertemplate": f"q %{{x:.1f}} {unit}<br>I %{{y:.3g}}<extra></extra>",
    }
    marks = {
        "type": "scatter",
        "mode": "markers",
        "x": list(rings),
        "y": [float(np.interp(r, radius[keep], intensity[keep])) for r in rings]
        if keep.any()
        else [],
        "marker": {"color": "#d62728", "size": 7, "symbol": "triangle-down"},
        "hovertemplate": f"ring at q %{{x:.1f}} {unit}<extra></extra>",
    }
    return {
        "data": [line, marks],
        "layout": {
            "height": GRAPH_HEIGHT,
            "margin": {"l": 50, "r": 8, "t": 24, "b": 36},
            "title": {"text": "Radial profile I(q)", "font": {"size": 12}, "x": 0.02},
            "showlegend": False,
            "plot_bgcolor": "white",
            "xaxis": {"title": {"text": f"q ({unit} from the beam centre)"}, "gridcolor": "#eee"},
            "yaxis": {"title": {"text": "I (mean counts)"}, "type": "log", "gridcolor": "#eee"},
        },
    }


def polar_figure(radii, angles, polar) -> dict:
    """The image unwrapped about the beam centre: azimuth across, radius down, log intensity."""
    seen = np.isfinite(polar)
    z = np.where(seen, log_intensity(np.where(seen, polar, 0)), np.nan).astype(np.float32)
    zmin, zmax = window(z[seen]) if seen.any() else (0.0, 1.0)
    radii, angles = np.asarray(radii, dtype=float), np.asarray(angles, dtype=float)
    dr = radii[1] - radii[0] if len(radii) > 1 else 1.0
    da = angles[1] - angles[0] if len(angles) > 1 else 1.0
    heatmap = {
        "type": "heatmap",
        "z": typed(z),
        "zmin": zmin,
        "zmax": zmax,
        "colorscale": plotly.colors.get_colorscale(DEFAULT_COLOUR_MAP),
        "x0": angles[0],
        "dx": da,
        "y0": radii[0],
        "dy": dr,
        "showscale": False,
        "hovertemplate": f"azimuth %{{x:.0f}}°, q %{{y:.0f}} px<br>{LOG_UNIT} %{{z:.2f}}"
        "<extra></extra>",
    }
    return {
        "data": [heatmap],
        "layout": {
            "height": GRAPH_HEIGHT,
            "margin": {"l": 50, "r": 8, "t": 24, "b": 36},
            "title": {"text": "Polar view", "font": {"size": 12}, "x": 0.02},
            "plot_bgcolor": "white",
            "xaxis": {
                "title": {"text": "azimuth (°, 0 = +x, 90 = down)"},
                "range": [0, 360],
                "tickvals": [0, 90, 180, 270, 360],
            },
            "yaxis": {"title": {"text": "q (px)"}, "autorange": "reversed"},
        },
    }


def science_view(centre: dict, integrator: str, figures: list[dict]) -> html.Div:
    """The centre estimate and the integrating library as text above the three figures."""
    graphs = [
        html.Div(
            dcc.Graph(figure=fig, config={"displaylogo": False}),
            style={"flex": "1 1 260px", "minWidth": "240px"},
        )
        for fig in figures
    ]
    return html.Div(
        [
            html.Div(centre_summary(centre), className="beam-centre small text-muted"),
            html.Div(f"I(q) and polar view integrated about this centre by {integrator}, "
                     "q in pixels (no detector geometry calibrated)",
                     className="integrator small text-muted mb-1"),
            html.Div(graphs, style={"display": "flex", "flexWrap": "wrap", "gap": "8px"}),
        ]
    )


def science_message(text: str) -> html.Div:
    """What the slot shows when there is no image to analyse."""
    return html.Div(text, className="small text-muted fst-italic")
