"""The embedded views of large runs drawn on the server: each view is a picture of its points
(binned with numpy on pixels the callbacks keep per view, spread and stacked by datashader),
the selection is found on the server from the box or lasso the user drew.

Above `raster_above()` images a scattergl trace of every point costs the browser minutes (it
draws and selects client-side); a picture of the view at its pixel size costs it nothing.
Pure functions: arrays in, images, figure parts or row numbers out.
"""

from __future__ import annotations

import base64
import io
import os
from functools import lru_cache

import numpy as np
import pandas as pd
import plotly.colors

from pipeline.errors import PipelineError

# Images; runs above it are drawn as pictures (XRAE_RASTER_ABOVE). In a browser without a GPU
# (software WebGL), pictures answer every gesture 5-15x faster at 2,000 and 10,000 images too
# (benchmarks/RESULTS.md); small runs keep their points, which a GPU draws at once.
RASTER_ABOVE = 10_000
DEFAULT_SIZE = (440, 406)  # plot-area pixels of one view before the browser reports its own
MAX_SIDE = 2400  # pixels: a larger size from the browser is clipped
MAX_RATIO = 2.0  # device pixels per CSS pixel drawn, at most: a HiDPI screen's; more is bytes
HOVER_CELLS = 128  # hover surface cells along each axis
MAX_LASSO = 20_000  # lasso vertices accepted from the browser
FOCUS_ALPHA, BACKGROUND_ALPHA = 235, 26  # of the points shown, and of the faded ones
PETAL_SUPERSAMPLING = 2  # petals are drawn at this many times the picture's pixels, averaged down


class SelectionRefused(PipelineError):
    """A selection event from the browser that is not a box or lasso of finite numbers."""


def raster_above() -> int:
    """Image count above which the views are pictures: XRAE_RASTER_ABOVE, else 10,000."""
    value = os.environ.get("XRAE_RASTER_ABOVE", "")
    try:
        return max(int(value), 0) if value.strip() else RASTER_ABOVE
    except ValueError:
        raise PipelineError(f"XRAE_RASTER_ABOVE must be a whole number, not {value!r}") from None


def is_raster(n_images: int) -> bool:
    return n_images > raster_above()


def pixel_size(size) -> tuple[int, int]:
    """The picture's size in device pixels: the plot area the browser reported ([width, height]
    in CSS pixels, then its device pixel ratio) times that ratio, clipped; else the default."""
    if (isinstance(size, list) and len(size) in (2, 3)
            and all(isinstance(v, (int, float)) and np.isfinite(v) for v in size[:2])):
        ratio = pixel_ratio(size)
        return tuple(int(np.clip(round(v * ratio), 16, MAX_SIDE)) for v in size[:2])
    return DEFAULT_SIZE


def pixel_ratio(size) -> float:
    """Device pixels per CSS pixel that the browser reported with the plot area's size (a
    HiDPI screen's 2), between 1 and MAX_RATIO; 1 when it sent none or nonsense."""
    if not (isinstance(size, list) and len(size) == 3 and isinstance(size[2], (int, float))
            and np.isfinite(size[2])):
        return 1.0
    return float(np.clip(size[2], 1.0, MAX_RATIO))


# ---------------------------------------------------------------- drawing


def scale_colours(scale, n: int = 256) -> list[str]:
    """A plotly colour scale ([[0, c0], …, [1, c1]]) as n hex colours, for datashader."""
    stops = [float(s) for s, _ in scale]
    rgb = np.array([plotly.colors.hex_to_rgb(c) if c.startswith("#")
                    else plotly.colors.unlabel_rgb(c) for _, c in scale], float)
    t = np.linspace(0, 1, n)
    # A stepped scale repeats a stop: interp then takes the later colour, as plotly does.
    channels = [np.interp(t, stops, rgb[:, k]) for k in range(3)]
    return ["#" + "".join(f"{int(round(c[i])):02x}" for c in channels) for i in range(n)]


def pixel_of(xy, box, size) -> np.ndarray:
    """Each point's pixel in a picture of `size` (width, height) over `box`, numbered row by
    row from the bottom (int32), or -1 outside the box. Edges belong to the box, as in
    datashader; the same for every layer and gesture, so the callbacks keep it per view."""
    xy = np.asarray(xy)
    x0, x1, y0, y1 = (float(v) for v in box)
    width, height = int(size[0]), int(size[1])
    cols = np.floor((xy[:, 0] - x0) * (width / (x1 - x0))).astype(np.int64)
    rows = np.floor((xy[:, 1] - y0) * (height / (y1 - y0))).astype(np.int64)
    cols[xy[:, 0] == x1] = width - 1
    rows[xy[:, 1] == y1] = height - 1
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    return np.where(inside, rows * width + cols, -1).astype(np.int32)


def _rgb_table(scale) -> np.ndarray:
    return _table(tuple((float(stop), str(colour)) for stop, colour in scale))


@lru_cache(maxsize=32)
def _table(scale: tuple) -> np.ndarray:
    table = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in scale_colours(scale)],
                     np.float64)
    table.flags.writeable = False
    return table


def _layer_rgba(index, values, table, crange, alpha: int, size, categories: int | None):
    """One layer as RGBA (rows from the bottom): the mean value per pixel through the colour
    table, or, for codes, the count-weighted mix of their categories' colours, as datashader
    shades them; every drawn pixel at opacity `alpha`. `index` is each point's pixel, or for
    codes pixel × categories + code. Only pixels with points are coloured (most of a view's
    pixels have none, and a matrix product over all of them cost tens of milliseconds)."""
    n_pixels = size[0] * size[1]
    lo, hi = crange
    if categories:
        counts = np.bincount(index, minlength=n_pixels * categories).reshape(n_pixels,
                                                                           categories)
        total = counts.sum(axis=1)
        hit = np.flatnonzero(total)
        steps = [int(round(255 * (k - lo) / max(hi - lo, 1e-9))) for k in range(categories)]
        colours = table[np.clip(steps, 0, 255)]
        mixed = sum(counts[hit, k, None] * colours[k] for k in range(categories))
        rgb = mixed / total[hit, None]
    else:
        total = np.bincount(index, minlength=n_pixels)
        hit = np.flatnonzero(total)
        sums = np.bincount(index, weights=values, minlength=n_pixels)[hit]
        share = np.clip((sums / total[hit] - lo) / max(hi - lo, 1e-12), 0, 1)
        ramp = np.linspace(0, 1, len(table))
        rgb = np.stack([np.interp(share, ramp, table[:, k]) for k in range(3)], axis=1)
    rgba = np.zeros((n_pixels, 4), np.uint8)
    rgba[hit, :3] = np.rint(rgb).clip(0, 255)
    rgba[hit, 3] = alpha
    return rgba.reshape(size[1], size[0], 4)


def _image(rgba, box, size):
    import datashader.transfer_functions as tf

    x0, x1, y0, y1 = box
    xs = x0 + (np.arange(size[0]) + 0.5) * (x1 - x0) / size[0]
    ys = y0 + (np.arange(size[1]) + 0.5) * (y1 - y0) / size[1]
    packed = np.ascontiguousarray(rgba).view(np.uint32).reshape(size[1], size[0])
    return tf.Image(packed, coords={"y": ys, "x": xs}, dims=["y", "x"])


def render_view(xy, values, scale, crange, focus, box, size, categories: int | None = None,
                pixels=None, ratio: float = 1.0):
    """The view as an RGBA array (rows top to bottom): points in `focus` (matching the filter
    and, when there is a selection, selected) drawn vivid over the others, faded.

    `box` is [x0, x1, y0, y1] in data units, `size` (width, height) in pixels; `categories`
    says the values are codes 0..categories-1 (outcomes), mixed per pixel rather than averaged;
    `pixels` is pixel_of(xy, box, size) when the caller has it; `ratio` the screen's device
    pixels per CSS pixel, so an isolated point spreads as far on a HiDPI screen. Points are
    binned with numpy (one pass per layer); datashader spreads isolated pixels and stacks the
    layers.
    """
    import datashader.transfer_functions as tf

    size = (int(size[0]), int(size[1]))
    pixels = pixel_of(xy, box, size) if pixels is None else pixels
    focus = np.asarray(focus, bool)
    inside = pixels >= 0
    if categories:  # pixel and code in one number: one bincount per layer
        codes = np.clip(np.asarray(values, np.float32).astype(np.int32), 0, categories - 1)
        index, values = pixels * np.int32(categories) + codes, None
    else:
        index, values = pixels, np.asarray(values, np.float64)
    table = _rgb_table(scale)
    layers = []
    for chosen, alpha in ((~focus, BACKGROUND_ALPHA), (focus, FOCUS_ALPHA)):
        if alpha == BACKGROUND_ALPHA and not chosen.any():
            continue
        keep = chosen & inside
        rgba = _layer_rgba(index[keep], None if values is None else values[keep], table, crange,
                           alpha, size, categories)
        layers.append(tf.dynspread(_image(rgba, box, size), threshold=0.5,
                                   max_px=round(2 * ratio)))
    picture = tf.stack(*layers) if len(layers) > 1 else layers[0]
    return np.asarray(picture.to_pil(origin="lower"))


def with_petals(rgba, shapes, geometry, box, ratio: float = 1.0) -> np.ndarray:
    """The picture (RGBA, rows top to bottom) laid on the views' white background with flower
    petals drawn over it, as plotly would draw `shapes` (components.figures.flower_templates:
    fill, outline colour and width of each attribute and petal style) holding `geometry`
    (flower_geometry: x, y per shape in data units, NaN after each petal and hatch stroke).

    Drawn into the picture, a view's flowers cost the browser nothing: as layout shapes plotly
    parses every vertex of every petal twice on each redraw, about a second for three views in
    joint mode. Petals are drawn at PETAL_SUPERSAMPLING× and box-averaged for smooth edges;
    pixels away from a petal keep their colour exactly. Outlines are `ratio` (device pixels per
    CSS pixel) times as wide as plotly's, so they look alike on a HiDPI screen.
    """
    from PIL import Image, ImageDraw

    rgba = np.asarray(rgba, np.uint8)
    height, width = rgba.shape[:2]
    base = Image.new("RGB", (width, height), "white")
    base.paste(Image.fromarray(rgba, "RGBA"), mask=Image.fromarray(rgba[..., 3], "L"))
    k = PETAL_SUPERSAMPLING
    canvas = base.resize((width * k, height * k), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas, "RGBA")
    x0, x1, y0, y1 = (float(v) for v in box)
    sx, sy = width * k / (x1 - x0), height * k / (y1 - y0)
    for shape, (x, y) in zip(shapes, geometry, strict=True):
        parts = _subpaths((np.asarray(x, np.float64) - x0) * sx,
                          (y1 - np.asarray(y, np.float64)) * sy)
        if not parts:
            continue
        line = shape["line"]
        fill, stroke = css_rgba(shape["fillcolor"]), css_rgba(line["color"])
        line_width = max(1, round(float(line["width"]) * ratio * k))
        for part in parts:  # the fill of every petal first, then the outlines, as one path
            if len(part) > 4:
                draw.polygon(part, fill=fill)
        for part in parts:
            draw.line(part + part[:2] if len(part) > 4 else part, fill=stroke,
                      width=line_width, joint="curve")
    shrunk = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(shrunk.convert("RGBA"))


def _subpaths(px: np.ndarray, py: np.ndarray) -> list[list[float]]:
    """NaN-separated pixel coordinates as flat [x, y, x, y, …] lists, one per petal or stroke."""
    valid = ~(np.isnan(px) | np.isnan(py))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], valid.astype(np.int8), [0]])))
    flat = np.stack([px, py], axis=1).ravel().tolist()
    return [flat[2 * a : 2 * b] for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(),
                                                 strict=True) if b - a >= 2]


def css_rgba(colour: str) -> tuple[int, int, int, int]:
    """A plotly colour string ("#rrggbb", "#rgb" or "rgba(r,g,b,a)") as an RGBA tuple."""
    text = colour.strip()
    if text.startswith("#"):
        digits = text[1:] if len(text) == 7 else "".join(c * 2 for c in text[1:4])
        return (*(int(digits[i:i + 2], 16) for i in (0, 2, 4)), 255)
    inside = text[text.index("(") + 1 : text.rindex(")")].split(",")
    r, g, b = (int(round(float(v))) for v in inside[:3])
    alpha = float(inside[3]) if len(inside) > 3 else 1.0
    return r, g, b, int(round(255 * alpha))


def png_uri(rgba) -> str:
    """An RGBA array as a PNG data URI (fast compression: it is sent once per gesture)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgba, np.uint8), "RGBA").save(buffer, format="PNG",
                                                             compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def layout_image(uri: str, box) -> dict:
    """The picture placed on the view's axes, stretched over the box it was drawn for."""
    x0, x1, y0, y1 = box
    return {"source": uri, "xref": "x", "yref": "y", "x": x0, "y": y1, "sizex": x1 - x0,
            "sizey": y1 - y0, "xanchor": "left", "yanchor": "top", "sizing": "stretch",
            "layer": "below"}


def hover_surface(xy, box, cells: int = HOVER_CELLS) -> dict:
    """An invisible heatmap over the box whose cells answer hover and click: plotly reports the
    cell's centre and its z, 1 where the cell or a neighbour holds an image (the server then
    finds the image nearest to the centre), 0 where none is near. One byte a cell keeps it
    small to send."""
    import datashader as ds

    from components.figures import typed

    xy = np.asarray(xy)
    x0, x1, y0, y1 = box
    canvas = ds.Canvas(plot_width=cells, plot_height=cells, x_range=(x0, x1), y_range=(y0, y1))
    counts = canvas.points(pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]}), "x", "y", ds.count())
    held = np.pad(np.asarray(counts.values) > 0, 1)
    # A cell next to one holding an image answers too: the mouse on an image's dot may be
    # just over the edge of the image's own cell.
    z = np.zeros((cells, cells), np.uint8)
    for dy_ in range(3):
        for dx_ in range(3):
            z |= held[dy_:dy_ + cells, dx_:dx_ + cells]
    dx, dy = (x1 - x0) / cells, (y1 - y0) / cells
    return {"type": "heatmap", "name": "images", "z": typed(z), "x0": x0 + dx / 2, "dx": dx,
            "y0": y0 + dy / 2, "dy": dy, "opacity": 0, "showscale": False,
            "hoverinfo": "none", "hovertemplate": None,
            "colorscale": [[0, "white"], [1, "white"]], "zmin": 0, "zmax": 1}


def in_view(xy, rows, box, cap: int) -> np.ndarray:
    """Those of `rows` inside the box, at most `cap` of them (the first by row): what an overlay
    trace (group rings, diamonds, selection rings) draws over the picture."""
    rows = np.asarray(rows if rows is not None else [], dtype=np.int64)
    if len(rows) == 0:
        return rows
    xy = np.asarray(xy)[rows]
    inside = ((xy[:, 0] >= box[0]) & (xy[:, 0] <= box[1]) & (xy[:, 1] >= box[2])
              & (xy[:, 1] <= box[3]))
    return rows[inside][:cap]


# ---------------------------------------------------------------- selection on the server


def _numbers(values, what: str, limit: int) -> np.ndarray:
    if (not isinstance(values, list) or not 0 < len(values) <= limit
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise SelectionRefused(f"the selection's {what} must be a list of at most {limit} "
                               f"numbers, not {values!r:.40}")
    array = np.asarray(values, np.float64)
    if not np.isfinite(array).all():
        raise SelectionRefused(f"the selection's {what} holds a number that is not finite")
    return array


def drawn_shape(selected_data) -> tuple[str, np.ndarray, np.ndarray] | None:
    """The box ("range") or lasso ("lasso") of a plotly selection event as (kind, xs, ys);
    None for an event without one. Anything malformed is refused (SelectionRefused)."""
    if not isinstance(selected_data, dict):
        return None
    for key, kind, limit in (("range", "range", 2), ("lassoPoints", "lasso", MAX_LASSO)):
        shape = selected_data.get(key)
        if shape is None:
            continue
        if not isinstance(shape, dict) or not {"x", "y"} <= set(shape):
            raise SelectionRefused(f"the selection's {key} must hold x and y, not {shape!r:.40}")
        xs, ys = _numbers(shape["x"], f"{key} x", limit), _numbers(shape["y"], f"{key} y", limit)
        if len(xs) != len(ys) or len(xs) < (2 if kind == "range" else 3):
            raise SelectionRefused(f"the selection's {key} has {len(xs)} x and {len(ys)} y")
        return kind, xs, ys
    return None


def rows_in_box(xy, xs, ys) -> np.ndarray:
    """Rows whose point lies in the box spanned by xs and ys (edges included)."""
    xy = np.asarray(xy)
    return np.flatnonzero((xy[:, 0] >= xs.min()) & (xy[:, 0] <= xs.max())
                          & (xy[:, 1] >= ys.min()) & (xy[:, 1] <= ys.max()))


def rows_in_lasso(xy, xs, ys) -> np.ndarray:
    """Rows whose point lies inside the lasso polygon (even-odd rule, as plotly's own lasso)."""
    candidates = rows_in_box(xy, xs, ys)
    px, py = (np.asarray(xy)[candidates, k].astype(np.float64) for k in (0, 1))
    inside = np.zeros(len(candidates), bool)
    x2, y2 = np.roll(xs, 1), np.roll(ys, 1)
    for ax, ay, bx, by in zip(xs, ys, x2, y2, strict=True):
        crosses = (ay > py) != (by > py)
        if not crosses.any():
            continue
        at = ax + (py - ay) * (bx - ax) / np.where(by == ay, 1, by - ay)
        inside ^= crosses & (px < at)
    return candidates[inside]


def rows_in_shape(xy, selected_data) -> list[int] | None:
    """The rows a box or lasso selection event encloses (sorted); None when the event has no
    shape (plotly's redraw without an outline)."""
    shape = drawn_shape(selected_data)
    if shape is None:
        return None
    kind, xs, ys = shape
    rows = rows_in_box(xy, xs, ys) if kind == "range" else rows_in_lasso(xy, xs, ys)
    return rows.tolist()


def warm_up() -> None:
    """Draw a tiny picture of each kind once, so that numba compiles datashader's kernels
    (seconds) before the first user waits for them rather than during their first draw."""
    rng = np.random.default_rng(0)
    xy = rng.random((64, 2)).astype(np.float32)
    codes = rng.integers(0, 4, 64).astype(np.float32)
    focus = np.arange(64) % 2 == 0
    box = [0.0, 1.0, 0.0, 1.0]
    render_view(xy, codes, [[0, "#000000"], [1, "#ffffff"]], (0, 1), focus, box, (32, 32))
    render_view(xy, codes, [[0, "#000000"], [1, "#ffffff"]], (0, 3), focus, box, (32, 32), 4)
    hover_surface(xy, box, 8)
