"""Ingest benchmark: images per second for 1024×1024 16-bit TIFFs, and the peak memory while
ingesting 2,000 of them (the images are streamed, so memory must not grow with their number).

    python benchmarks/ingest.py [--n 2000] [--size 1024] [--workdir DIR]

The TIFFs (Poisson counts of a ring pattern) and their labels CSV are generated first in a
temporary directory (or --workdir, kept); the ingest then runs in this process while a thread
samples its resident memory (psutil) every 10 ms. Prints images/s, MB/s read, the peak RSS, its
growth over the RSS before the ingest, and what holding every image in memory would take.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.attributes import ATTRIBUTES  # noqa: E402
from pipeline.ingest import ingest  # noqa: E402

MB = 2**20


def make_tiffs(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """n uint16 TIFFs of Poisson counts about a shared ring pattern, and labels.csv for them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    r = np.hypot(x - size * 0.45, y - size * 0.55)
    pattern = 4000 / (1 + (r / (size / 40)) ** 2) + 20 + 500 * np.exp(-((r - size / 4) ** 2) / 20)
    rows = ["file," + ",".join(f'"{a}"' if "," in a else a for a in ATTRIBUTES)]
    for i in tqdm(range(n), desc="writing TIFFs", unit="img"):
        counts = np.minimum(rng.poisson(pattern), 65535).astype(np.uint16)
        tifffile.imwrite(folder / f"frame_{i:05d}.tif", counts)
        rows.append(f"frame_{i:05d}.tif," + ",".join(map(str, rng.integers(0, 2, 17))))
    labels = folder / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels


class PeakRSS:
    """Samples this process's resident memory in a thread; .peak is the largest seen (bytes)."""

    def __init__(self, every_s: float = 0.01):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._process = psutil.Process()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of TIFFs (default 2000)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--workdir", default=None, help="keep the TIFFs and dataset here")
    args = parser.parse_args(argv)

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="xrae-ingest-"))
    try:
        images = root / "tiffs"
        labels = make_tiffs(images, args.n, args.size)
        data = root / "data"
        shutil.rmtree(data / "datasets" / "bench", ignore_errors=True)
        before = psutil.Process().memory_info().rss
        started = time.perf_counter()
        with PeakRSS() as rss:
            result = ingest(images, labels, data, dataset_id="bench", progress=True)
        seconds = time.perf_counter() - started
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    read_mb = args.n * args.size**2 * 2 / MB
    print(
        f"ingested {result.n_images} TIFFs of {args.size}×{args.size} uint16 "
        f"({len(result.problems)} problems) in {seconds:.1f} s"
    )
    print(f"  speed:        {args.n / seconds:8.1f} images/s   {read_mb / seconds:8.1f} MB/s read")
    print(
        f"  peak RSS:     {rss.peak / MB:8.1f} MB (sampled every 10 ms); "
        f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB"
    )
    print(
        f"  RSS growth:   {(rss.peak - before) / MB:8.1f} MB over the {before / MB:.1f} MB "
        "before the ingest"
    )
    print(f"  all images held as float32 would need {args.n * args.size**2 * 4 / MB:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
