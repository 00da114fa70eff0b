"""How fast a browser draws the attribute flowers of one view, three ways: as they are drawn
(layout shapes, one SVG path per attribute and petal style), as scatter traces with
NaN-separated petals (SVG: one element per petal), and as WebGL scatter traces with the same
fill. A bare plotly.js page in headless Chromium draws 500 joint flowers of 17 attributes, then
zooms, then redraws them with new arrays; each figure is the median of three rounds.

    python benchmarks/flowers.py [--flowers 500] [--rounds 3]

Why: flower gestures at 100k spent 2–3 s of browser CPU in plotly drawing a path element per
petal (benchmarks/RESULTS.md, "The views in a real browser").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import plotly

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.browser import browser, wait  # noqa: E402
from components.figures import (  # noqa: E402
    flower_geometry,
    flower_paths,
    flower_templates,
    with_paths,
)

DRAW = """
const done = arguments[arguments.length - 1], data = arguments[0], shapes = arguments[1];
const layout = (r) => ({shapes: JSON.parse(JSON.stringify(shapes)), showlegend: false,
    dragmode: 'select', margin: {l: 2, r: 2, t: 2, b: 2}, xaxis: {range: r}, yaxis: {range: r}});
const painted = () => new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));
const times = [];
let t = performance.now();
Plotly.newPlot('g', data, layout([0, 10])).then(painted).then(() => {
    times.push(performance.now() - t); t = performance.now();
    return Plotly.relayout('g', {'xaxis.range': [2, 8], 'yaxis.range': [2, 8]});
}).then(painted).then(() => {
    times.push(performance.now() - t); t = performance.now();
    return Plotly.react('g', JSON.parse(JSON.stringify(data)), layout([1, 9]));
}).then(painted).then(() => {
    times.push(performance.now() - t);
    done([...times, document.querySelectorAll('#g *').length]);
});"""


def flowers(n: int, seed: int = 0):
    """Joint flowers of n images in a 10 × 10 box: geometry and shapes as the views draw them."""
    rng = np.random.default_rng(seed)
    a = 17
    act = (rng.random((n, a)) < 0.35).astype(np.uint8)
    prd = np.clip(act * 0.7 + rng.normal(0, 0.3, (n, a)), 0, 1).astype(np.float32)
    colours = plotly.colors.qualitative.Dark24[:a]
    geometry = flower_geometry("joint", rng.random((n, 2)) * 10, act, prd, 0.5, range(a),
                               0.3, a)
    shapes = with_paths(flower_templates("joint", [f"a{j}" for j in range(a)], colours),
                        flower_paths(geometry, 0.3))
    return geometry, shapes


def as_traces(geometry, shapes, kind: str) -> list[dict]:
    """The petals as scatter traces (kind "scatter" or "scattergl"), one per shape."""
    traces = []
    for (x, y), shape in zip(geometry, shapes, strict=True):
        traces.append({"type": kind, "mode": "lines", "fill": "toself", "hoverinfo": "skip",
                       "x": np.where(np.isnan(x), None, x).tolist(),
                       "y": np.where(np.isnan(y), None, y).tolist(),
                       "fillcolor": shape["fillcolor"], "line": shape["line"]})
    return traces


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flowers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    geometry, shapes = flowers(args.flowers)
    ways = {"layout shapes (as drawn)": ([], shapes),
            "scatter traces, SVG": (as_traces(geometry, shapes, "scatter"), []),
            "scattergl traces, WebGL": (as_traces(geometry, shapes, "scattergl"), [])}
    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as page:
        page.write(f"<html><body><div id='g' style='width:450px;height:410px'></div>"
                   f"<script src='file://{bundle}'></script></body></html>")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{args.flowers} joint flowers, load average {' '.join(load)}; median ms of "
          f"{args.rounds} rounds")
    print(f"  {'':26s} {'draw':>7s} {'zoom':>7s} {'redraw':>7s} {'DOM elements':>13s}")
    driver = browser()
    try:
        for name, (data, layout_shapes) in ways.items():
            rounds = []
            for _ in range(args.rounds):
                driver.get(f"file://{page.name}")
                wait(lambda: driver.execute_script("return typeof Plotly !== 'undefined'"))
                rounds.append(driver.execute_async_script(DRAW, data, layout_shapes))
            draw, zoom, redraw, elements = (statistics.median(r[k] for r in rounds)
                                            for k in range(4))
            print(f"  {name:26s} {draw:7.0f} {zoom:7.0f} {redraw:7.0f} {elements:13.0f}",
                  flush=True)
    finally:
        driver.quit()
        Path(page.name).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
