"""How much simulated detector images look like real ones, in the figures a beamline scientist
checks first: dynamic range, counts at the beamstop against the detector edge, beamstop sizes,
maximum counts; for N simulated images and for real images (default: the test data's PNG).

Run: python benchmarks/realism.py [--n 200] [--size 256] [--detector pilatus] [--experiment saxs]
     [--real PNG …]
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script, this folder (with its pipeline.py) comes first

from pipeline.readers import read_image  # noqa: E402
from pipeline.scattering import beam_centre  # noqa: E402
from pipeline.simulate import beam_pixel, simulate_image  # noqa: E402

REAL = ROOT / "tests" / "data" / "protein_diffraction_263060g10.png"
EDGE_PX = 3  # the detector edge: pixels this close to the border


def dynamic_range(counts: np.ndarray) -> float:
    """log10(p99.9 / p50) of the recorded values (p50 at least one count)."""
    p50, p999 = np.percentile(counts, [50, 99.9])
    return float(np.log10(max(p999, 1.0) / max(p50, 1.0)))


def dark_pixels(counts: np.ndarray, centre) -> np.ndarray:
    """Pixels at most 5 % of what the detector records at that distance from the beam (the
    90th percentile there, or nearer the beam the brightest such ring farther out, since a
    disc shadows whole rings), where that is at least 20 counts (so Poisson zeros of a faint
    image are not dark); module-gap lines left out."""
    rows, cols = np.indices(counts.shape)
    radius = np.hypot(cols - centre[0], rows - centre[1]).astype(int)
    order = np.argsort(radius, axis=None)
    bins = np.split(counts.ravel()[order], np.cumsum(np.bincount(radius.ravel()))[:-1])
    p90 = np.array([np.percentile(b, 90) if len(b) else 0.0 for b in bins])
    reference = np.maximum.accumulate(p90[::-1])[::-1][radius]
    dark = (counts <= 0.05 * reference) & (reference >= 20)
    dead = counts <= 0
    gaps = np.zeros_like(dead)
    gaps[dead.mean(axis=1) >= 0.9, :] = True
    gaps[:, dead.mean(axis=0) >= 0.9] = True
    return dark & ~gaps


def stop_component(counts: np.ndarray, centre) -> np.ndarray | None:
    """The beamstop's shadow: the dark region nearest the beam (within 2 % of the width)."""
    labels, count = ndimage.label(dark_pixels(counts, centre), structure=np.ones((3, 3), bool))
    if count == 0:
        return None
    rows, cols = np.indices(counts.shape)
    far = np.hypot(cols - centre[0], rows - centre[1])
    nearest = ndimage.minimum(far, labels, index=np.arange(1, count + 1))
    best = int(np.argmin(nearest))
    if nearest[best] > 0.02 * counts.shape[1]:
        return None
    # only near the beam: farther on, a rod may join the flight tube's shadow of the corners
    return (labels == best + 1) & (far <= 0.15 * counts.shape[1])


def stop_sizes(stop: np.ndarray) -> tuple[float, float]:
    """(widest, narrowest) inscribed widths of a shadow as fractions of the image width:
    a disc's diameter and its rod's width, read off the distance transform's ridge."""
    edt = ndimage.distance_transform_edt(stop)
    ridge = stop & (edt >= ndimage.maximum_filter(edt, 3)) & (edt >= 1)
    widths = 2 * edt[ridge] if ridge.any() else 2 * edt[stop]
    return float(widths.max()) / stop.shape[1], float(np.median(widths)) / stop.shape[1]


def stop_vs_edge(counts: np.ndarray, stop: np.ndarray | None, centre) -> float:
    """Mean counts in a 3-px ring just outside the beamstop (or 2–6 px from an unblocked beam)
    over the mean counts at the detector edge, both on pixels that record anything."""
    lit = counts > 0
    if stop is not None:
        ring = ndimage.binary_dilation(stop, iterations=3) & ~stop & lit
    else:
        rows, cols = np.indices(counts.shape)
        far = np.hypot(cols - centre[0], rows - centre[1])
        ring = (far >= 2) & (far <= 6) & lit
    edge = np.zeros_like(lit)
    edge[:EDGE_PX, :] = edge[-EDGE_PX:, :] = edge[:, :EDGE_PX] = edge[:, -EDGE_PX:] = True
    edge &= lit
    if not ring.any() or not edge.any():
        return float("nan")
    return float(counts[ring].mean() / max(counts[edge].mean(), 1e-9))


def measure(counts: np.ndarray, centre) -> dict:
    stop = stop_component(counts, centre)
    sizes = stop_sizes(stop) if stop is not None else (np.nan, np.nan)
    return {
        "range": dynamic_range(counts),
        "stop/edge": stop_vs_edge(counts, stop, centre),
        "disc": sizes[0],
        "rod": sizes[1],
        "max": float(counts.max()),
    }


def simulated(n: int, size: int, detector: str, experiment: str = "saxs") -> list[dict]:
    out = []
    for i in range(n):
        image, _, params = simulate_image(
            np.random.default_rng([0, i]), size, detector, experiment
        )
        bx, by = beam_pixel(params, size)
        if not (0 <= bx < size and 0 <= by < size):
            continue  # beam off the detector: no beamstop, no near-beam ring to compare
        row = measure(image, (bx, by))
        stop = params["beamstop"]
        row["kind"] = stop["kind"] if stop else None
        row["drawn stop"] = _drawn_size(stop)
        out.append(row)
    return out


def _drawn_size(stop: dict | None) -> float:
    if stop is None:
        return np.nan
    return {"circular": 2 * stop.get("radius", 0), "linear": stop.get("width", 0)}.get(
        stop["kind"], np.nan
    )


def summary(rows: list[dict], key: str, kind: str | None = None) -> str:
    """Median [p10–p90] of one figure, over the images with a beamstop of `kind` if given."""
    values = np.array([r[key] for r in rows if kind is None or r.get("kind") == kind], float)
    values = values[np.isfinite(values)]
    if not len(values):
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3g}"
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return f"{p50:.3g} [{p10:.3g}–{p90:.3g}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--detector", default="pilatus")
    parser.add_argument("--experiment", default="saxs", help="saxs, waxs or gisaxs")
    parser.add_argument("--real", nargs="*", default=[str(REAL)], help="real images (inverted)")
    args = parser.parse_args()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"realism benchmark: {args.n} simulated images {args.size}² ({args.detector}, "
          f"{args.experiment}), load average {load}")
    sim = simulated(args.n, args.size, args.detector, args.experiment)
    real = []
    for path in args.real:
        counts = read_image(path, inverted=True)
        found = beam_centre(counts)
        real.append(measure(counts, (found.x, found.y)))
    ratios = np.array([r["stop/edge"] for r in sim])
    print(f"beam-on simulated images: {len(sim)}; stop ring > 2× edge in "
          f"{np.mean(ratios[np.isfinite(ratios)] > 2):.0%}")
    print(f"{'figure':38s} {'simulated: median [p10–p90]':>30s} {'real':>12s}")
    lines = [
        ("dynamic range log10(p99.9/p50)", "range", None),
        ("counts beside the stop / at the edge", "stop/edge", None),
        ("disc stops: disc diameter (of width)", "disc", "circular"),
        ("disc stops: arm width (of width)", "rod", "circular"),
        ("rod stops: rod width (of width)", "rod", "linear"),
        ("maximum counts", "max", None),
    ]
    for label, key, kind in lines:
        print(f"{label:38s} {summary(sim, key, kind):>30s} {summary(real, key):>12s}")
    for kind, what in (("circular", "disc diameter"), ("linear", "rod width")):
        label = f"drawn {what}"
        print(f"{label:38s} {summary(sim, 'drawn stop', kind):>30s}")
    print("real images are 8-bit exports: their maximum is 255 and their range is cut at 2.4.")


if __name__ == "__main__":
    main()
