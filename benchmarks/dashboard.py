"""Server-side speed of the dashboard's callbacks on runs of 10,000 and 100,000 images, and the
bytes a linked-selection update sends against the bytes of the three full figures.

    python benchmarks/dashboard.py [--sizes 10000 100000] [--repeat 20]

Runs are synthetic arrays written with the run store into a temporary directory (no images
are needed: none of the timed callbacks opens one). Each callback is called directly, inside a
Dash callback context, and its output is JSON-encoded as Dash would send it; the time covers
both. One image in a hundred carries a label correction (SQLite, as in use). Targets (p95):
100 ms at 10k and 300 ms at 100k in dots mode; flowers at the cap 300 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextvars import copy_context
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dash._callback_context import context_value  # noqa: E402
from dash._utils import AttributeDict, to_json  # noqa: E402

from pipeline.attributes import ATTRIBUTES  # noqa: E402
from pipeline.store import write_run  # noqa: E402

TARGET_MS = {10_000: 100, 100_000: 300}


def synthetic_run(data_dir: Path, n: int, seed: int = 0) -> str:
    """A run of n images in clusters, with labels, probabilities and features that agree often."""
    rng = np.random.default_rng(seed)
    a = len(ATTRIBUTES)
    cluster = rng.integers(0, 12, n)
    profile = rng.random((12, a)) < 0.3
    act = (profile[cluster] ^ (rng.random((n, a)) < 0.05)).astype(np.uint8)
    prd = np.clip(0.15 + 0.7 * act + rng.normal(0, 0.2, (n, a)), 0, 1).astype(np.float32)
    # Features in the same clusters, as a model's are: a run's neighbour searches (stored with
    # it) pass over far clusters; structureless features would make a million images' searches
    # every pair (half an hour on 2 cores) for nothing the benchmarks show.
    fea = (rng.normal(0, 3, (12, 32))[cluster] + rng.normal(size=(n, 32))).astype(np.float32)
    centres = rng.normal(0, 30, (12, 2))
    emb = {s: (centres[cluster] + rng.normal(0, 4, (n, 2))).astype(np.float32)
           for s in ("act", "fea", "prd")}
    images = pd.DataFrame({"image_id": [f"img{i:07d}" for i in range(n)],
                           "path": [f"none/{i}.npy" for i in range(n)],
                           "split": "test", "source": "benchmark"})
    run_id = f"bench-{n}"
    write_run(data_dir, attributes=ATTRIBUTES, images=images, act=act, prd=prd, fea=fea, emb=emb,
              meta={"dataset": f"bench-{n}", "model": {"arch": "none"}}, run_id=run_id)
    return run_id


def call(callback, trigger: str, *args):
    """Run a callback's own function as Dash would, with `trigger` as ctx.triggered_id."""
    def inside():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": trigger, "value": None}]))
        return callback(*args)  # hooks.callback returns the function itself
    return copy_context().run(inside)


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Median and p95 in ms of fn() + JSON encoding of its result; returns the last result."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        to_json(out)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times)), float(np.percentile(times, 95)), out


def correct_labels(run, share: float = 0.01) -> int:
    """Label corrections on a share of the run's images, as analysts would have made them."""
    from pipeline import corrections

    rng = np.random.default_rng(2)
    rows = rng.choice(len(run), int(share * len(run)), replace=False)
    data_dir, dataset = os.environ["XRAE_DATA_DIR"], run.meta["dataset"]
    event = 0
    for i in rows:
        j = int(rng.integers(len(run.attributes)))
        event = corrections.set_label(data_dir, dataset, run.images["image_id"].iloc[i],
                                      run.attributes[j], 1 - int(run.act[i, j]), author="bench")
    return event


def measure(run_id: str, n: int, repeat: int) -> list[tuple[str, float, float, float]]:
    from callbacks import corrections as correction_callbacks
    from callbacks import selection, views
    from components.raster import is_raster
    from pipeline.store import get_run

    run = get_run(run_id)
    latest = correct_labels(run)
    every = list(range(len(run.attributes)))
    rng = np.random.default_rng(1)
    picked = np.sort(rng.choice(n, n // 10, replace=False))
    selected = {"points": [{"curveNumber": 0, "pointIndex": int(i), "pointNumber": int(i)}
                           for i in picked]}
    xy = np.asarray(run.emb("fea"))
    c = xy.mean(axis=0)
    zoom = [float(c[0] - 12), float(c[0] + 12), float(c[1] - 12), float(c[1] + 12)]
    viewports = (None, zoom, None)

    def draw(mode):
        return call(views.draw_views, "radio-point-mode.value", run_id, mode, every, "outcome", 2,
                    "cosine", 500, 0.5, [2, 5], "any", "act", [], [], *viewports)

    if is_raster(n):
        from components.raster import warm_up

        warm_up()  # numba compiles the picture code once per process, as app.py does at start
        cases = raster_cases(run, run_id, latest, every, zoom)
        return [(name, *timed(fn, repeat)[:2], TARGET_MS[n] if "flowers" not in name else 300)
                for name, fn in cases.items()]
    cases = {
        "filter (FN on 2 attributes, ANY)": lambda: call(
            views.fade_filtered, "radio-filter-on.value", [2, 5], "any", "FN", 0.5, run_id),
        "linked selection (10 % box in FEA)": lambda: (
            call(views.select, "view-fea.selectedData", None, selected, None, None, [], run_id, []),
            call(views.highlight_selection, "store-selection.data", picked.tolist(), "fea")),
        "threshold (outcome colours + metrics)": lambda: (
            call(views.recolour_on_threshold, "slider-threshold.value", 0.4, run_id, "outcome", 2),
            call(selection.summarise_selection, "slider-threshold.value", picked.tolist(), 0.4,
                 run_id)),
        "mode → dots (3 full figures)": lambda: draw("dots"),
        "mode → joint flowers (cap 500)": lambda: draw("joint"),
        "zoom → joint flowers (cap 500)": lambda: call(
            views.draw_flowers, ids_viewport("fea"), None, zoom, None, 0.5, [], "any", "act",
            run_id, "joint", every, 500),
        "corrections poll, nothing new": lambda: call(
            correction_callbacks.notice_other_corrections, "interval-corrections-poll.n_intervals",
            1, latest, run_id),
        "new correction → diamonds (1 % corrected)": lambda: call(
            views.mark_corrected, "store-corrections-version.data", latest, run_id, "drawn"),
    }
    rows = []
    for name, fn in cases.items():
        median, p95, _ = timed(fn, repeat)
        rows.append((name, median, p95, TARGET_MS[n] if "flowers" not in name else 300))
    return rows


def raster_cases(run, run_id: str, latest: int, every: list[int], zoom: list[float]) -> dict:
    """The same gestures on a run drawn as pictures (above XRAE_RASTER_ABOVE): each redraws
    the pictures of the views it changes (callbacks.raster) besides its own callbacks."""
    from callbacks import corrections as correction_callbacks
    from callbacks import raster, selection, views

    xy = np.asarray(run.emb("fea"))
    (x0, y0), (x1, y1) = np.quantile(xy, [0.35, 0.65], axis=0)
    box = {"range": {"x": [float(x0), float(x1)], "y": [float(y0), float(y1)]}}
    held = call(views.select, "view-fea.selectedData", None, box, None, None, [], run_id, [])[0]
    size = [440, 406]

    def pictures(trigger, threshold=0.5, filters=(), viewport=None, colour="error", held=held):
        return call(raster.redraw_pictures, trigger, held, threshold, "one", list(filters), "any",
                    "act", [], "with", latest, [], None, viewport, None, size, size, size,
                    run_id, "dots", colour, 2, "cosine")

    def draw(mode):
        return call(views.draw_views, "radio-point-mode.value", run_id, mode, every, "outcome", 2,
                    "cosine", 500, 0.5, [2, 5], "any", "act", held, [], None, zoom, None, "with",
                    [], "one", size, size, size)

    return {
        "filter (FN on 2 attributes, ANY)": lambda: (
            call(views.fade_filtered, "radio-filter-on.value", [2, 5], "any", "FN", 0.5, run_id),
            pictures("radio-filter-on.value", filters=[2, 5])),
        f"linked selection (box in FEA, {selection_rows(run, held).size:,} images)": lambda: (
            call(views.select, "view-fea.selectedData", None, box, None, None, [], run_id, []),
            pictures("store-selection.data"),
            call(views.highlight_selection, "store-selection.data", held, "fea", "dots", run_id),
            call(selection.summarise_selection, "store-selection.data", held, 0.5, run_id)),
        "threshold (outcome colours + metrics)": lambda: (
            pictures("slider-threshold.value", threshold=0.4, colour="outcome"),
            call(selection.summarise_selection, "slider-threshold.value", held, 0.4, run_id)),
        "mode → dots (3 full figures)": lambda: draw("dots"),
        "mode → joint flowers (cap 500)": lambda: draw("joint"),
        "zoom → joint flowers (cap 500)": lambda: (
            call(views.draw_flowers, ids_viewport("fea"), None, zoom, None, 0.5, [], "any", "act",
                 run_id, "joint", every, 500),
            pictures(ids_viewport("fea"), viewport=zoom)),
        "corrections poll, nothing new": lambda: call(
            correction_callbacks.notice_other_corrections, "interval-corrections-poll.n_intervals",
            1, latest, run_id),
    }


def selection_rows(run, held):
    from callbacks.common import selection_rows as rows

    return rows(run, held)


def ids_viewport(space: str) -> str:
    from components import ids

    return f"{ids.STORE_VIEWPORTS[space]}.data"


def payload_bytes(run_id: str, n: int) -> tuple[int, int]:
    """JSON bytes of the linked-selection Patches against the three full figures."""
    from callbacks import views
    from components.raster import is_raster

    every = list(range(17))
    picked = list(range(0, n, 10))
    patch = call(views.highlight_selection, "store-selection.data", picked, "fea")
    if is_raster(n):  # the pictures are drawn again instead (and the rows stay on the server)
        from callbacks import raster

        held = call(views.select, "view-fea.selectedData", None,
                    {"range": {"x": [-1e9, 1e9], "y": [-1e9, 1e9]}}, None, None, [], run_id, [])
        patch = call(raster.redraw_pictures, "store-selection.data", held[0], 0.5, "one", [],
                     "any", "act", [], "with", 0, [], None, None, None, None, None, None, run_id,
                     "dots", "error", 0, "cosine")
        patch = [*patch, held]
    full = call(views.draw_views, "radio-point-mode.value", run_id, "dots", every, "error", 0,
                "cosine", 500, 0.5, [], "any", "act", picked, [], None, None, None)
    patch_json = to_json(patch)
    return len(patch_json), len(to_json(list(full[:3])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    from components.raster import is_raster

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XRAE_DATA_DIR"] = tmp
        for n in args.sizes:
            run_id = synthetic_run(Path(tmp), n)
            print(f"\n{n:,} images ({args.repeat} calls each; callback + JSON encoding)")
            print(f"  {'callback':40s} {'median':>8s} {'p95':>8s} {'target':>7s}")
            for name, median, p95, target in measure(run_id, n, args.repeat):
                flag = "ok" if p95 <= target else "SLOW"
                print(f"  {name:40s} {median:6.1f}ms {p95:6.1f}ms {target:5d}ms {flag}")
            sent, full = payload_bytes(run_id, n)
            what = ("of every image (its rows kept on the server) redraws three pictures: it"
                    if is_raster(n) else f"of {n // 10:,} images")
            print(f"  linked selection {what} sends {sent:,} bytes; the three "
                  f"full figures are {full:,} bytes ({full / sent:.0f}× more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
