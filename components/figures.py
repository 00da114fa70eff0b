"""Pure figure functions: arrays in, plotly figure dicts (or their parts) out.

Figures are plain dicts with base64 typed arrays, which plotly.js decodes natively: building a
go.Figure validates every point and sends numbers as text, both far slower for 100k points.

Attribute flowers are layout shapes, one SVG path per attribute and petal style holding all its
petals as subpaths: a scatter trace with NaN-separated petals draws one SVG element per petal
(about 9,000 a view in joint mode, seconds of browser time per gesture) and WebGL, emulated
without a GPU, is slower still. A large run's pictures have the same petals drawn in
(components.raster.with_petals).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.colors
from PIL import Image

from pipeline.imaging import (
    DEFAULT_COLOUR_MAP,
    LOG_UNIT,
    downsample,
    false_colour,
    log_intensity,
    window,
)

POINTS, GROUPS, SELECTED, CORRECTED = 0, 1, 2, 3  # trace positions in a view
FIRST_FLOWER = 0  # the first petal shape's position in a view's layout.shapes
KEY_HALF_WIDTH = 3.3  # the flower key's x range: ±this, petals 1 long
VIEW_MARGIN = 2  # CSS pixels round a view's plot area (the page measures the area with it)
PETAL_STEPS = 11  # outline vertices per petal
FN_LENGTH = 0.5  # joint mode: a missed label (FN) draws a short, hatched petal
HATCH_LINES = 3  # strokes across a hatched (FN) petal

_DTYPES = {"float32": "f4", "float64": "f8", "uint8": "u1", "int8": "i1", "int32": "i4",
           "uint32": "u4", "int16": "i2", "uint16": "u2"}


def typed(array) -> dict:
    """A numpy array as a plotly.js typed-array spec (base64; int64/float64 narrowed to 32 bits).

    A spec passes through unchanged, so one encoding can serve all three views.
    """
    if isinstance(array, dict):
        return array
    array = np.asarray(array)
    if array.dtype == np.int64:
        array = array.astype(np.int32)
    elif array.dtype == np.float64 or array.dtype == bool:
        array = array.astype(np.float32)
    array = np.ascontiguousarray(array)
    spec = {"dtype": _DTYPES[array.dtype.name], "bdata": base64.b64encode(array).decode()}
    if array.ndim > 1:
        spec["shape"] = ", ".join(str(s) for s in array.shape)
    return spec


# ---------------------------------------------------------------- the embedded views


def points_trace(xy, colour_values, colour_scale, colour_range, opacity, size) -> dict:
    """All images as one WebGL scatter; its point index is the run's row index."""
    return {
        "type": "scattergl", "mode": "markers", "name": "images",
        "x": typed(np.asarray(xy[:, 0], np.float32)), "y": typed(np.asarray(xy[:, 1], np.float32)),
        "marker": {"color": typed(colour_values), "colorscale": colour_scale,
                   "cmin": colour_range[0], "cmax": colour_range[1], "showscale": False,
                   "opacity": typed(opacity),
                   "size": size if np.isscalar(size) else typed(size),
                   "line": {"width": 0}},
        # The tooltip (dcc.Tooltip) replaces plotly's hover label; hoverData still fires.
        "hoverinfo": "none", "hovertemplate": None,
        "unselected": {"marker": {"opacity": 0.06}},
    }


def groups_trace(xy, groups, size: float) -> dict:
    """Saved groups as coloured rings around their members (one trace for all groups)."""
    rows = [np.asarray(g["indices"], dtype=np.int64) for g in groups]
    colours = [c for g, r in zip(groups, rows, strict=True) for c in [g["colour"]] * len(r)]
    rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    xy = np.asarray(xy)
    return {
        "type": "scattergl", "mode": "markers", "name": "groups", "hoverinfo": "skip",
        "x": typed(np.asarray(xy[rows, 0], np.float32)),
        "y": typed(np.asarray(xy[rows, 1], np.float32)),
        "marker": {"symbol": "circle-open", "size": size + 6, "color": colours,
                   "line": {"width": 2, "color": colours}},
    }


def selected_trace(xy, rows) -> dict:
    """Flower modes: a blue ring round each selected flower's centre (petals are not dimmed)."""
    rows = np.asarray(rows if rows is not None else [], dtype=np.int64)
    xy = np.asarray(xy)
    return {"type": "scattergl", "mode": "markers", "name": "selected", "hoverinfo": "skip",
            "x": typed(np.asarray(xy[rows, 0], np.float32)),
            "y": typed(np.asarray(xy[rows, 1], np.float32)),
            "marker": {"symbol": "circle-open", "size": 17, "color": "#0d6efd",
                       "line": {"width": 2.5, "color": "#0d6efd"}}}


CORRECTED_COLOUR = "#111111"


def corrected_trace(xy, rows, size: float) -> dict:
    """Images with a corrected label: a black open diamond round each (drawn above the rings)."""
    rows = np.asarray(rows if rows is not None else [], dtype=np.int64)
    xy = np.asarray(xy)
    return {"type": "scattergl", "mode": "markers", "name": "corrected", "hoverinfo": "skip",
            "x": typed(np.asarray(xy[rows, 0], np.float32)),
            "y": typed(np.asarray(xy[rows, 1], np.float32)),
            "marker": {"symbol": "diamond-open", "size": size + 9, "color": CORRECTED_COLOUR,
                       "line": {"width": 1.8, "color": CORRECTED_COLOUR}}}


def flower_styles(mode: str) -> tuple[str, ...]:
    """The petal styles drawn in a point mode, in drawing order (each one trace per attribute)."""
    return {"dots": (), "act": ("act",), "prd": ("prd",), "joint": ("FP", "TP", "FN")}[mode]


def flower_templates(mode: str, attributes, colours) -> list[dict]:
    """Empty petal shapes (path filled by flower_paths), one per attribute and style, under
    every trace: under a small run's WebGL points, so a joint flower's centre dot (its error)
    shows over its petals. (A large run draws them into its picture: components.raster.)"""
    shapes = []
    for style in flower_styles(mode):
        for name, colour in zip(attributes, colours, strict=True):
            shapes.append({"type": "path", "xref": "x", "yref": "y", "layer": "below",
                           "name": f"{name} ({style})", "path": "", "visible": False,
                           # Overlapping petals of one style stay filled (evenodd would hole them).
                           "fillrule": "nonzero", **petal_style(style, colour)})
    return shapes


def petal_style(style: str, colour: str) -> dict:
    """How a petal of one style looks: solid, black-bordered (FP), or short with white fill
    and strokes across it in its colour (FN; the strokes are its geometry, petal_template)."""
    if style == "FP":
        return {"fillcolor": _rgba(colour, 0.22), "line": {"color": "#111111", "width": 1.1}}
    if style == "FN":
        return {"fillcolor": "rgba(255,255,255,0.9)", "line": {"color": colour, "width": 1.2}}
    return {"fillcolor": _rgba(colour, 0.9), "line": {"color": colour, "width": 0.6}}


def petal_path(x, y, decimals: int) -> str:
    """NaN-separated x, y (petals_xy) as one SVG path: a closed subpath per outline or stroke;
    coordinates rounded to `decimals` places (a small share of a petal is enough)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    gap = np.isnan(x) | np.isnan(y)
    if gap.all():
        return ""
    after_gap = np.concatenate([[True], gap[:-1]])
    before_gap = np.concatenate([gap[1:], [True]])
    keep = ~gap
    first, last = (after_gap & keep)[keep].tolist(), (before_gap & keep)[keep].tolist()
    xs = np.round(x[keep], decimals).tolist()
    ys = np.round(y[keep], decimals).tolist()
    return "".join(f"{'M' if f else 'L'}{a},{b}{'Z' if z else ''}"
                   for a, b, f, z in zip(xs, ys, first, last, strict=True))


def flower_paths(geometry, radius) -> list[str]:
    """flower_geometry's (x, y) per petal shape as SVG paths, to a precision of about 1/200 of
    the petal radius."""
    r = min((radius, radius) if np.isscalar(radius) else radius)
    decimals = int(np.clip(np.ceil(-np.log10(max(r, 1e-12) / 200)), 0, 12))
    return [petal_path(x, y, decimals) for x, y in geometry]


def with_paths(shapes: list[dict], paths: list[str]) -> list[dict]:
    """flower_templates' shapes holding their paths (an empty one is hidden)."""
    return [{**shape, "path": path, "visible": bool(path)}
            for shape, path in zip(shapes, paths, strict=True)]


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = plotly.colors.hex_to_rgb(colour)
    return f"rgba({r},{g},{b},{alpha})"


def petal_lengths(style: str, act, prd, threshold: float) -> np.ndarray:
    """Petal length per flower and attribute as a share of the radius; 0 means no petal."""
    act = np.asarray(act).astype(bool)
    prd = np.asarray(prd, dtype=np.float32)
    said = prd >= threshold
    if style == "act":
        return act.astype(np.float32)
    if style == "prd":
        return np.where(prd >= 0.02, prd, 0).astype(np.float32)
    if style == "TP":
        return (act & said).astype(np.float32)
    if style == "FN":
        return np.where(act & ~said, FN_LENGTH, 0).astype(np.float32)
    if style == "FP":
        return (~act & said).astype(np.float32)
    raise ValueError(f"unknown petal style {style!r}")


def petal_angles(n_shown: int) -> np.ndarray:
    """Petal directions: the first shown attribute at 12 o'clock, the rest clockwise."""
    return np.pi / 2 - 2 * np.pi * np.arange(n_shown) / max(n_shown, 1)


def petal_outline(n_shown: int):
    """A unit petal pointing along +x from the origin: an ellipse whose width lets neighbours
    just touch when all petals are full length."""
    t = np.linspace(0, 2 * np.pi, PETAL_STEPS)
    return (1 - np.cos(t)) / 2, petal_width(n_shown) * np.sin(t)


def petal_width(n_shown: int) -> float:
    """A unit petal's half-width."""
    return min(0.26, 0.45 * np.tan(np.pi / max(n_shown, 3)))


def petal_template(n_shown: int, hatched: bool = False):
    """petal_outline then NaN; a hatched petal adds HATCH_LINES parallel strokes across it, each
    two points then NaN. The hatch is geometry, not an SVG fill pattern, so it draws the same
    as a layout path, a WebGL line or an SVG line."""
    u, v = petal_outline(n_shown)
    u, v = [*u, np.nan], [*v, np.nan]
    if hatched:
        width = petal_width(n_shown)
        # Chords of the unit circle along one diagonal, mapped onto the petal's ellipse.
        s = np.linspace(-0.7, 0.7, HATCH_LINES)
        h = np.sqrt(1 - s**2)
        d = np.sqrt(0.5)
        for a, b in zip(s, h, strict=True):
            for sign in (1, -1):
                u.append((1 + d * (a - sign * b)) / 2)
                v.append(width * d * (a + sign * b))
            u.append(np.nan)
            v.append(np.nan)
    return np.asarray(u), np.asarray(v)


def petals_xy(centres, lengths, angle: float, radius, n_shown: int, hatched: bool = False):
    """x and y of the petals of one attribute (NaN after each petal and each hatch stroke) for
    flowers with length > 0.

    `radius` is one number, or (rx, ry) when the axes have different data scales.
    """
    keep = lengths > 0
    if not keep.any():
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    rx, ry = (radius, radius) if np.isscalar(radius) else radius
    c = np.asarray(centres, dtype=np.float64)[keep]
    scale = lengths[keep][:, None]
    u, v = petal_template(n_shown, hatched)
    cos, sin = np.cos(angle), np.sin(angle)
    x = c[:, :1] + rx * scale * (u * cos - v * sin)
    y = c[:, 1:] + ry * scale * (u * sin + v * cos)
    return x.ravel().astype(np.float32), y.ravel().astype(np.float32)


def flower_geometry(mode: str, centres, act, prd, threshold: float, shown, radius,
                    n_attributes: int):
    """(x, y) per petal shape of flower_templates, for the given flowers.

    `shown` lists the attribute indices that get petals; others get none (a hidden shape).
    """
    shown = [int(j) for j in shown]
    angles = dict(zip(shown, petal_angles(len(shown)), strict=True))
    empty = (np.zeros(0, np.float32), np.zeros(0, np.float32))
    out = []
    for style in flower_styles(mode):
        lengths = petal_lengths(style, act, prd, threshold)
        for j in range(n_attributes):
            if j in angles and len(centres):
                out.append(petals_xy(centres, lengths[:, j], angles[j], radius, len(shown),
                                      hatched=style == "FN"))
            else:
                out.append(empty)
    return out


def view_figure(points: dict, groups: dict, selected: dict, corrected: dict, flowers: list[dict],
                uirevision, picture: dict | None = None, extent=None) -> dict:
    """One embedded view: points, group rings, selection rings and corrected-label diamonds as
    traces, and the flowers' petal shapes (flower_templates with their paths).

    Axes are not locked to equal scale, so elongated maps use the whole plot; petals are sized
    per axis (petal_radius) and so stay round. A large run's points come as a `picture` (a
    layout image) over the axes' `extent`, which a double-click returns to.
    """
    axis = {"showticklabels": False, "showgrid": False, "zeroline": False, "showline": True,
            "mirror": True, "linecolor": "#d0d4da", "ticks": ""}
    figure = _view_layout(points, groups, selected, corrected, flowers, uirevision, axis)
    if picture is not None:
        figure["layout"]["images"] = [picture]
        figure["layout"]["xaxis"] = {**axis, "range": list(extent[:2]), "autorange": False}
        figure["layout"]["yaxis"] = {**axis, "range": list(extent[2:]), "autorange": False}
    return figure


def _view_layout(points, groups, selected, corrected, flowers, uirevision, axis) -> dict:
    return {
        "data": [points, groups, selected, corrected],
        "layout": {
            "shapes": flowers,
            "margin": dict.fromkeys("lrtb", VIEW_MARGIN), "dragmode": "select",
            "hovermode": "closest", "showlegend": False, "uirevision": uirevision,
            "plot_bgcolor": "white", "paper_bgcolor": "white", "selectionrevision": 0,
            "xaxis": axis, "yaxis": axis,
        },
    }


def empty_figure(message: str) -> dict:
    """A blank plot area carrying one centred message (no run, nothing selected …)."""
    return {"data": [], "layout": {
        "xaxis": {"visible": False}, "yaxis": {"visible": False},
        "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "plot_bgcolor": "white",
        "annotations": [{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                         "x": 0.5, "y": 0.5, "font": {"color": "#6c757d", "size": 13}}]}}


# ---------------------------------------------------------------- the flower legend


def legend_figure(mode: str, attributes, colours, shown) -> dict:
    """The key: a flower with every shown attribute labelled, then one example petal per style
    with what it means, drawn with the same geometry as the views."""
    shown = [int(j) for j in shown] or list(range(len(attributes)))
    n = len(attributes)
    key_mode = "act" if mode in ("dots", "act") else mode
    act = np.zeros((1, n), np.uint8)
    act[0, shown] = 1
    prd = act.astype(np.float32)
    if key_mode == "prd":
        prd[0, shown] = np.linspace(1.0, 0.4, len(shown))
    geometry = flower_geometry(key_mode, [[0, 0]], act, prd, 0.5, shown, 1.0, n)
    shapes = with_paths(flower_templates(key_mode, attributes, colours),
                        flower_paths(geometry, 1.0))
    labels = []
    for j, a in zip(shown, petal_angles(len(shown)), strict=True):
        c, s = np.cos(a), np.sin(a)
        side = "left" if c > 0.02 else "right" if c < -0.02 else "center"
        name, bullet = _short(attributes[j]), f"<span style='color:{colours[j]}'>■</span>"
        text = f"{name} {bullet}" if side == "right" else f"{bullet} {name}"
        # Farther out in y than in x: the names above and below the flower crowd otherwise.
        labels.append({"x": 1.1 * c, "y": 1.5 * s, "text": text, "showarrow": False,
                       "xanchor": side, "yanchor": "middle",
                       "font": {"size": 9, "color": "#3b4a5e"}})
    examples, dots, notes = _style_examples(mode, colours[shown[0]])
    return {"data": dots, "layout": {
        "shapes": shapes + examples,
        "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "showlegend": False,
        "plot_bgcolor": "white", "paper_bgcolor": "white", "dragmode": False,
        # Wide enough for a 16-letter name beside the flower in the side panel (about 260 px).
        "xaxis": {"visible": False, "range": [-KEY_HALF_WIDTH, KEY_HALF_WIDTH],
                  "fixedrange": True},
        "yaxis": {"visible": False, "range": [-4.75, 1.7], "scaleanchor": "x",
                  "fixedrange": True},
        "annotations": labels + notes}}


def _short(name: str, most: int = 15) -> str:
    """An attribute's name as the key writes it: whole up to `most` letters, else cut with …."""
    return name if len(name) <= most else name[: most - 1] + "…"


def _style_examples(mode: str, colour: str):
    """Example petal shapes (and a trace of centre dots) with their meaning, in rows under the
    key flower."""
    rows = {
        "dots": [],
        "act": [("act", 1.0, "petal: the image is labelled (ACT = 1)")],
        "prd": [("prd", 1.0, "petal length = probability (here 1.0)"),
                ("prd", 0.5, "probability 0.5")],
        "joint": [("TP", 1.0, "TP: labelled and predicted (solid)"),
                  ("FN", FN_LENGTH, "FN: labelled but missed (short, hatched)"),
                  ("FP", 1.0, "FP: predicted, not labelled (black rim)")],
    }[mode]
    shapes, traces, notes = [], [], []
    text = {"showarrow": False, "xanchor": "left", "font": {"size": 10, "color": "#333"}}
    for k, (style, length, meaning) in enumerate(rows):
        y = -2.15 - 0.68 * k
        x, yy = petals_xy([[-2.9, y - 0.3]], np.array([length]), np.pi / 2, 0.6, 5,
                          hatched=style == "FN")
        shapes.append({"type": "path", "xref": "x", "yref": "y", "layer": "above",
                       "path": petal_path(x, yy, 4), **petal_style(style, colour)})
        notes.append({"x": -2.55, "y": y, "text": meaning, **text})
    if mode == "joint":
        y = -2.15 - 0.68 * len(rows)
        traces.append({"type": "scatter", "mode": "markers", "hoverinfo": "skip",
                       "x": [-3.0, -2.75], "y": [y, y], "marker": {"size": [4, 12],
                                                                  "color": "#555"}})
        notes.append({"x": -2.55, "y": y, "text": "centre dot: ACT–PRD error (small = agree)",
                      **text})
    if mode == "dots":
        notes.append({"x": -3.1, "y": -2.2, "text": "Choose a Flowers point mode to draw<br>"
                      "one flower per image with these petals.", "align": "left", **text})
    return shapes, traces, notes


def centre_sizes(error, base: float) -> np.ndarray:
    """Joint mode: the centre dot grows with the ACT–PRD error distance (0 → base, 1 → base+9)."""
    return (base + 9 * np.asarray(error, np.float32)).astype(np.float32)


# ---------------------------------------------------------------- group characteristics


def f1_figure(group_f1, all_f1, attributes, colours, group_name: str = "selection") -> dict:
    """Per attribute, the group's F1 (bar in the attribute's colour) against all images' F1
    (grey tick): where a group is worse than the model overall shows at a glance."""
    group_f1 = [None if f is None or np.isnan(f) else float(f) for f in group_f1]
    all_f1 = [None if f is None or np.isnan(f) else float(f) for f in all_f1]
    names = list(attributes)
    bars = {"type": "bar", "orientation": "h", "y": names, "x": group_f1, "name": group_name,
            "marker": {"color": list(colours)}, "width": 0.62,
            "hovertemplate": "%{y}: F1 %{x:.2f} (" + group_name + ")<extra></extra>"}
    ticks = {"type": "scatter", "mode": "markers", "y": names, "x": all_f1, "name": "all images",
             "marker": {"symbol": "line-ns", "size": 14, "line": {"width": 2.5,
                                                                  "color": "#333"}},
             "hovertemplate": "%{y}: F1 %{x:.2f} (all images)<extra></extra>"}
    return {"data": [bars, ticks], "layout": {
        "height": 60 + 15 * len(names), "margin": {"l": 112, "r": 8, "t": 24, "b": 28},
        "barmode": "overlay", "plot_bgcolor": "white", "paper_bgcolor": "white",
        "title": {"text": f"F1 per attribute: bars {group_name}, ticks all images",
                  "font": {"size": 11.5}, "x": 0.01, "y": 0.985},
        "xaxis": {"range": [0, 1.02], "dtick": 0.25, "gridcolor": "#eceff3", "zeroline": False,
                  "tickfont": {"size": 10}, "fixedrange": True},
        "yaxis": {"autorange": "reversed", "tickfont": {"size": 10}, "fixedrange": True},
        "showlegend": False}}


# ---------------------------------------------------------------- images


def detector_heatmap(pixels, colour_map: str = DEFAULT_COLOUR_MAP, max_side: int = 512) -> dict:
    """A detector image as a heatmap trace: log intensity in its percentile window, drawn as the
    thumbnails and the montage draw it (pipeline.imaging). Pixel (x, y) is centred on integer
    (x, y), the coordinates of the beam centre."""
    pixels = np.asarray(pixels)
    logged = log_intensity(pixels)
    zmin, zmax = window(logged)
    z = downsample(logged, max_side)
    step = max(pixels.shape) / max(z.shape)
    return {
        "type": "heatmap", "z": typed(z.astype(np.float32)), "zmin": zmin, "zmax": zmax,
        # Spelled out: plotly.js itself knows only some scale names (not Inferno or Magma).
        "colorscale": plotly.colors.get_colorscale(colour_map),
        "dx": step, "dy": step, "x0": (step - 1) / 2, "y0": (step - 1) / 2,
        "hovertemplate": f"x %{{x:.0f}}, y %{{y:.0f}}<br>{LOG_UNIT} %{{z:.2f}}<extra></extra>",
    }


def image_figure(pixels, colour_map: str = DEFAULT_COLOUR_MAP, max_side: int = 512) -> dict:
    """The large detail image: zoomable, the chosen false-colour map, a colour bar."""
    heatmap = detector_heatmap(pixels, colour_map, max_side)
    heatmap["colorbar"] = {"thickness": 10, "len": 0.9,
                           "title": {"text": LOG_UNIT, "side": "right"}}
    return {"data": [heatmap], "layout": {
        "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "dragmode": "zoom",
        "xaxis": {"visible": False, "constrain": "domain"},
        "yaxis": {"visible": False, "autorange": "reversed", "scaleanchor": "x",
                  "constrain": "domain"},
        "plot_bgcolor": "white"}}


# The saliency overlay: clear where the model did not look, then cyan to white where it did, so
# it reads over every colour map the detail image offers (none of them holds cyan).
SALIENCY_SCALE = [[0.0, "rgba(0,229,255,0)"], [0.35, "rgba(0,229,255,0.35)"],
                  [0.7, "rgba(0,229,255,0.8)"], [1.0, "rgba(255,255,255,1)"]]


def saliency_layer(saliency, attribute: str, opacity: float, method: str,
                   max_side: int = 512) -> dict:
    """A saliency map (H × W in 0..1, the detector image's shape) as a heatmap trace over
    detector_heatmap's, on the same pixel grid, with a colour bar under the image saying what
    it shows."""
    saliency = np.asarray(saliency, np.float32)
    z = downsample(saliency, max_side)
    step = max(saliency.shape) / max(z.shape)
    return {
        "type": "heatmap", "name": f"saliency · {attribute}", "z": typed(z), "zmin": 0, "zmax": 1,
        "colorscale": SALIENCY_SCALE, "opacity": float(opacity),
        "dx": step, "dy": step, "x0": (step - 1) / 2, "y0": (step - 1) / 2,
        "colorbar": {"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.02,
                     "yanchor": "top", "thickness": 8, "len": 0.9, "tickvals": [0, 0.5, 1],
                     # Two lines: one is wider than the detail image for a long name.
                     "title": {"text": f"where the model looked for<br>{attribute} ({method})",
                               "side": "top", "font": {"size": 11}}},
        "hovertemplate": (f"x %{{x:.0f}}, y %{{y:.0f}}<br>saliency for {attribute} %{{z:.2f}}"
                          "<extra></extra>"),
    }


def with_saliency(figure: dict, layer: dict) -> dict:
    """image_figure's figure with a saliency layer on top and room below for its colour bar."""
    layout = {**figure["layout"], "margin": {**figure["layout"]["margin"], "b": 66}}
    return {"data": [*figure["data"], layer], "layout": layout}


def thumbnail_uri(pixels, size: int = 72, colour_map: str = DEFAULT_COLOUR_MAP) -> str:
    """A small PNG data URI of an image, drawn as everywhere else (pipeline.imaging)."""
    pil = Image.fromarray(false_colour(pixels, size, colour_map), "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
