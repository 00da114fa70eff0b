"""Time of each analysis on runs of 10,000 and 100,000 images, as the dashboard answers the
analyst's gestures (target ≤ 300 ms at 100k, 100 ms at 10k): the co-occurrence matrix (drawn for
all images and for a selection; a click on a cell), the bootstrap intervals (the selection's
tiles, the whole run's when nothing is selected, the comparison of the selection with a saved
group) and the cross-space disagreement (the tab's list of the most disagreeing images, the
filter to the top 5 %, colouring the views by it). The disagreement itself is computed once per
run, when the pipeline writes the run (pipeline.store.write_run): that time is printed too.
Then one saliency map of the detail view (Grad-CAM of one simulated image, the demo's 256²
detector; target ≤ 2 s) for each architecture at its input size, on the CPU with the web
process's threads, then from the cache; and with --run the robustness probe of a real run's
model (target: 500 images in ≤ 2 minutes on 2 CPU cores).

    python benchmarks/analyses.py [--sizes 10000 100000] [--repeat 10] [--saliency-size 256]
    python benchmarks/analyses.py --sizes --run RUN_ID --data-dir DIR [--probe-n 500]

Runs are synthetic, written with the run store into a temporary directory: 17 attributes in
clusters, probabilities that agree with the labels most of the time, 512-dimensional features,
no images (a thumbnail is then a grey tile). Each callback is called directly, inside a Dash
callback context, and its output JSON-encoded as Dash would send it (benchmarks/dashboard.py);
median and p95 of --repeat calls, with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dashboard import call, timed  # noqa: E402
from pipeline.attributes import ATTRIBUTES  # noqa: E402
from pipeline.store import write_run  # noqa: E402

TARGET_MS = {10_000: 100, 100_000: 300}


def arrays(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.random((40, 17)) < 0.3
    which = rng.integers(0, 40, n)
    act = (centres[which] ^ (rng.random((n, 17)) < 0.05)).astype(np.uint8)
    prd = np.clip(0.15 + 0.7 * act + rng.normal(0, 0.2, act.shape), 0, 1).astype(np.float32)
    fea = (rng.normal(size=(40, 512))[which] + rng.normal(0, 0.5, (n, 512))).astype(np.float32)
    return act, prd, fea


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--run", default=None, help="also time the robustness probe of this run")
    parser.add_argument("--data-dir", default=None, help="where --run lives")
    parser.add_argument("--probe-n", type=int, default=500, help="images the probe re-infers")
    parser.add_argument("--saliency-size", type=int, default=256,
                        help="side of the simulated detector image the saliency is timed on")
    args = parser.parse_args()
    if args.run:
        print(probe_time(args.run, args.data_dir, args.probe_n))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XRAE_DATA_DIR"] = tmp
        for n in args.sizes:
            print_gestures(Path(tmp), n, args.repeat)
    if args.saliency_size:
        print(f"\nsaliency map of one {args.saliency_size}² image (ms, median of {args.repeat}):")
        print(f"{'model':>16s} {'computed':>9s} {'cached':>7s}")
        for arch, input_size in SALIENCY_MODELS:
            print(saliency_row(arch, input_size, args))


def print_gestures(data_dir: Path, n: int, repeat: int) -> None:
    """Write a run of n images (timing its disagreement) and time each analysis gesture."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    run_id = synthetic_run(data_dir, n)
    from pipeline.store import get_run

    run = get_run(run_id)
    print(f"\n{n:,} images; load average {load:.1f} → {os.getloadavg()[0]:.1f}")
    print(f"  run written in {time.perf_counter() - start:.1f} s, of which the disagreement "
          f"(once per run) {run.meta['timings']['disagreement_s']:.1f} s")
    print(f"  {'gesture (callback + JSON)':46s} {'median':>8s} {'p95':>8s} {'target':>7s}")
    target = TARGET_MS.get(n, 300)
    from components.raster import warm_up

    warm_up()  # numba compiles the picture code once per process, as app.py does at start
    for name, fn in gestures(run, repeat).items():
        median, p95, _ = timed(fn, repeat)
        flag = "ok" if p95 <= target else "SLOW"
        print(f"  {name:46s} {median:6.1f}ms {p95:6.1f}ms {target:5d}ms {flag}")


def synthetic_run(data_dir: Path, n: int) -> str:
    """A run of n images (arrays(n)) written by the run store, as the pipeline writes one."""
    act, prd, fea = arrays(n)
    rng = np.random.default_rng(1)
    emb = {s: rng.normal(size=(n, 2)).astype(np.float32) for s in ("act", "fea", "prd")}
    images = pd.DataFrame({"image_id": [f"img{i:07d}" for i in range(n)],
                           "path": [f"none/{i}.npy" for i in range(n)],
                           "split": "test", "source": "benchmark"})
    run_id = f"analyses-{n}"
    write_run(data_dir, attributes=ATTRIBUTES, images=images, act=act, prd=prd, fea=fea,
              emb=emb, meta={"dataset": f"analyses-{n}", "model": {"arch": "none"}},
              run_id=run_id)
    return run_id


def new_group() -> None:
    """Forget the resamples and summaries of groups already shown: each call times a group
    seen first."""
    from callbacks.selection import _SUMMARIES, _SUMMARIES_LOCK
    from pipeline.analyses.uncertainty import _resampled

    _resampled.cache_clear()
    with _SUMMARIES_LOCK:
        _SUMMARIES.clear()


def gestures(run, repeat: int) -> dict:
    """Each gesture of the analyses as the callbacks answer it: a selection of a tenth of the
    run, a saved group of a third."""
    from callbacks import analyses, selection, views

    n, run_id, every = len(run), run.id, list(range(len(run.attributes)))
    picked = np.sort(np.random.default_rng(2).choice(n, n // 10, replace=False)).tolist()
    groups = [{"run": run_id, "name": "a third", "colour": "#1f77b4",
               "indices": list(range(0, n, 3))}]
    cell = {"points": [{"x": 0, "y": 0}]}  # the images that miss attribute 0
    unfiltered = ([], "any", "act", [])

    def matrix(group, chosen):
        return call(analyses.draw_cooccurrence, "radio-cooccurrence-kind.value", "fn", group,
                    0.5, *unfiltered, chosen, groups, run_id)

    return {
        "co-occurrence: all images": lambda: matrix("all", None),
        "co-occurrence: the selection (10 %)": lambda: matrix("selection", picked),
        "co-occurrence: a saved group (a third)": lambda: matrix("0", picked),
        "co-occurrence: click a cell (selects)": lambda: call(
            analyses.select_cell, "cooccurrence-matrix.clickData", cell, "fn", "all", 0.5,
            *unfiltered, None, groups, run_id),
        "intervals: selection tiles (10 %)": lambda: new_group() or call(
            selection.summarise_selection, "store-selection.data", picked, 0.5, run_id),
        "intervals: nothing selected (whole run)": lambda: new_group() or call(
            selection.summarise_selection, "store-selection.data", None, 0.5, run_id),
        "intervals: selection vs saved group": lambda: new_group() or call(
            selection.compare_groups, "dropdown-compare-b.value", "selection", "0", groups,
            picked, 0.5, run_id),
        "disagreement: tab's top list": lambda: call(
            analyses.list_disagreeing, "tabs-selection.active_tab", "disagreement", "error", [],
            run_id),
        "disagreement: filter to the top 5 %": lambda: call(
            views.fade_filtered, "checklist-filter-disagreeing.value", [], "any", "act", 0.5,
            run_id, "with", 0, ["top"]),
        "disagreement: colour the views by it": lambda: call(
            views.draw_views, "radio-colour-by.value", run_id, "dots", every, "disagreement",
            0, "cosine", 500, 0.5, [], "any", "act", [], [], None, None, None),
    }


def probe_time(run_id: str, data_dir, n: int) -> str:
    """One robustness probe of n images (17 inferences each), timed once: torch's import and
    the checkpoint's load are outside the timing, as in a job already started."""
    import pipeline.infer  # noqa: F401  (torch's import, seconds, is not the probe's)
    from pipeline.robustness import probe, variants
    from pipeline.store import get_run

    run = get_run(run_id, data_dir)
    before = os.getloadavg()[0]
    start = time.perf_counter()
    probe(run, n=n, device="cpu")
    seconds = time.perf_counter() - start
    images = min(n, len(run)) * len(variants())
    return (f"robustness probe, run {run.id}: {min(n, len(run))} images × {len(variants())} "
            f"variants in {seconds:.1f} s ({images / seconds:.0f} images/s); load average "
            f"{before:.1f} → {os.getloadavg()[0]:.1f}")


SALIENCY_MODELS = (("compact", 64), ("resnet18", 224), ("resnet50", 224))  # the demo's first


def saliency_row(arch: str, input_size: int, args) -> str:
    """One saliency map, computed (a new attribute each time, as a user picks them) and then
    brought from the cached coarse map to the detector's pixels."""
    import torch

    from pipeline.attributes import ATTRIBUTES
    from pipeline.inputs import default_inputs
    from pipeline.model import build_model, per_image_normalisation
    from pipeline.saliency import coarse_map, saliency_map, to_detector
    from pipeline.simulate import simulate_image

    torch.manual_seed(0)  # the time does not depend on the weights, only on the architecture
    model = build_model(arch, len(ATTRIBUTES)).eval()
    info = {"attributes": list(ATTRIBUTES), "input_size": input_size,
            "normalisation": per_image_normalisation(), "inputs": default_inputs(arch)}
    image, _, _ = simulate_image(np.random.default_rng(0), args.saliency_size)
    saliency_map(model, info, image, 0)  # the first call pays for torch's own warm-up
    picks = iter(range(1, 1 + args.repeat))
    computed = median_ms(lambda: saliency_map(model, info, image, next(picks)), args.repeat)
    cam = coarse_map(model, info, image, 0)
    cached = median_ms(lambda: to_detector(cam, image.shape), args.repeat)
    return f"{arch + f' @ {input_size}':>16s} {computed:9.0f} {cached:7.1f}"


if __name__ == "__main__":
    main()
