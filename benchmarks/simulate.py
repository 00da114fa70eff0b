"""How fast the synthetic image generator runs on one CPU core, at 256², 512² and 1024².

Prints images per second (wall clock and process CPU time) and where the time goes:
drawing the scene and judging its tags, rendering the expected counts, recording them by the
detector (Poisson noise, and for a CCD read noise and blooming).
Run: python benchmarks/simulate.py [--n 300] [--sizes 256 512 1024] [--detector pilatus]
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one core, as the target says

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

# The repo root first: run as a script, this folder (with its pipeline.py) would come first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.sim.detector import record  # noqa: E402
from pipeline.simulate import draw_scene  # noqa: E402


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity here)"


def measure(size: int, n: int, detector: str = "pilatus") -> dict:
    """Generate n images exactly as simulate_image does, timing its three stages."""
    stages = {"scene": 0.0, "render": 0.0, "record": 0.0}
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        rng = np.random.default_rng([0, i])
        t0 = time.process_time()
        scene = draw_scene(rng, detector)
        t1 = time.process_time()
        expected = scene.expected(size)
        t2 = time.process_time()
        record(expected, rng, detector)
        t3 = time.process_time()
        stages["scene"] += t1 - t0
        stages["render"] += t2 - t1
        stages["record"] += t3 - t2
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall": n / wall, "cpu": n / cpu, **{k: v / n * 1e3 for k, v in stages.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="images at 256² (fewer at larger sizes)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--detector", default="pilatus", help="pilatus or ccd")
    args = parser.parse_args()
    print(
        f"simulate benchmark ({args.detector}), {pin_to_one_core()}, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )
    measure(64, 5)  # warm-up: imports, cached tables
    print(
        f"{'size':>6s} {'images':>7s} {'img/s wall':>11s} {'img/s cpu':>10s} "
        f"{'scene ms':>9s} {'render ms':>10s} {'record ms':>9s}"
    )
    for size in args.sizes:
        n = max(5, int(args.n * (256 / size) ** 2))
        r = measure(size, n, args.detector)
        print(
            f"{size:>5d}² {n:7d} {r['wall']:11.1f} {r['cpu']:10.1f} "
            f"{r['scene']:9.2f} {r['render']:10.2f} {r['record']:9.2f}"
        )
    print(
        "target: ≥ 100 images/s at 256² on one core; wall-clock figures drop when other "
        "processes share the core (compare the load average)."
    )


if __name__ == "__main__":
    main()
