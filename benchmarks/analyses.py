"""Time of each analysis on runs of 10,000 and 100,000 images: the co-occurrence matrix and the
bootstrap intervals (each answers a gesture: target ≤ 300 ms at 100k), the cross-space
disagreement (computed once per run, then read by every gesture), one saliency map of the detail
view (Grad-CAM of one simulated image, the demo's 256² detector; target ≤ 2 s) for each
architecture at its input size, on the CPU with the web process's threads, then from the cache;
and with --run the robustness probe of a real run's model (target: 500 images in ≤ 2 minutes on
2 CPU cores).

    python benchmarks/analyses.py [--sizes 10000 100000] [--repeat 5] [--disagreement-max 20000]
                                  [--saliency-size 256]
    python benchmarks/analyses.py --sizes --run RUN_ID --data-dir DIR [--probe-n 500]

Arrays are synthetic: 17 attributes in clusters, probabilities that agree with the labels most of
the time, 512-dimensional features. Medians of --repeat runs, with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.analyses.cooccurrence import conditional_errors  # noqa: E402
from pipeline.analyses.disagreement import disagreement  # noqa: E402
from pipeline.analyses.uncertainty import bootstrap_intervals  # noqa: E402


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
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--disagreement-max", type=int, default=20_000,
                        help="largest run the (once per run) disagreement is timed on")
    parser.add_argument("--run", default=None, help="also time the robustness probe of this run")
    parser.add_argument("--data-dir", default=None, help="where --run lives")
    parser.add_argument("--probe-n", type=int, default=500, help="images the probe re-infers")
    parser.add_argument("--saliency-size", type=int, default=256,
                        help="side of the simulated detector image the saliency is timed on")
    args = parser.parse_args()
    if args.run:
        print(probe_time(args.run, args.data_dir, args.probe_n))
    print(f"load average {os.getloadavg()[0]:.1f}; medians of {args.repeat}")
    print(f"{'images':>8s} {'matrix ms':>10s} {'bootstrap ms':>13s} {'disagreement s':>15s}")
    for n in args.sizes:
        print(row(n, args))
    print(f"\nsaliency map of one {args.saliency_size}² image (ms, median of {args.repeat}):")
    print(f"{'model':>16s} {'computed':>9s} {'cached':>7s}")
    for arch, input_size in SALIENCY_MODELS:
        print(saliency_row(arch, input_size, args))


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


def row(n: int, args) -> str:
    """One line of the table: the three analyses on a run of n images."""
    act, prd, fea = arrays(n)
    group = np.arange(0, n, 3)  # a third of the run, as a saved group might be
    matrix = median_ms(lambda: conditional_errors(act, prd, 0.5, "fn"), args.repeat)
    boot = median_ms(lambda: bootstrap_intervals(act[group], prd[group], 0.5), args.repeat)
    if n <= args.disagreement_max:
        dis_text = f"{median_ms(lambda: disagreement(act, fea, prd), 1) / 1000:15.1f}"
    else:
        dis_text = f"{'(not timed)':>15s}"
    return f"{n:8d} {matrix:10.1f} {boot:13.1f} {dis_text}"



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
