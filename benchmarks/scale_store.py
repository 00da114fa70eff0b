"""The dataset store's sections of benchmarks/scale.py: disk per image, and the writer's peak
memory as the number of images grows.

1. Disk per image (--disk-n, --size, --detector): `simulate_dataset` writes --disk-n images at the
   default simulated size and detector; prints the dataset's bytes per image, split into the chunk
   store's arrays (full-size images, thumbnails) and the tables, the number of files, and what
   the layout before the chunk store took (one float32 .npy per image). Then the same images,
   held in memory, are written again through DatasetWriter (the store's own write rate, without
   the simulation), and read back: each full-size image, and every thumbnail in one batch.
2. Peak memory (--memory-n A B): for each count a fresh process streams that many size² images
   (Poisson counts about a ring, with a JSON parameter string per row as simulate writes)
   through DatasetWriter, after one image has warmed its imports; prints the peak resident
   memory (psutil, sampled every 10 ms) and how it grew from the smaller count to the larger.
   Shards are written whole as they fill, so the pixels' share stays flat; what grows is the
   images table (a row per image), which every reader holds in memory anyway.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB, KB = 2**20, 1024

MEMORY_CHILD = """
import json, sys, threading, time
import numpy as np, psutil
from pipeline.store import DatasetWriter
data_dir, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proc, peak_rss, done = psutil.Process(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak_rss[0] = max(peak_rss[0], proc.memory_info().rss)
        time.sleep(0.01)
y, x = np.mgrid[0:size, 0:size]
r = np.hypot(x - size * 0.45, y - size * 0.55)
pattern = 3000 / (1 + (r / (size / 40)) ** 2) + 15 + 400 * np.exp(-((r - size / 4) ** 2) / 20)
rng = np.random.default_rng(0)
with DatasetWriter(data_dir, "warm", ["a", "b"]) as ds:  # imports and first calls (zarr)
    ds.add(rng.poisson(pattern), [0, 1], params="{}")
threading.Thread(target=sample, daemon=True).start()
before = proc.memory_info().rss
started = time.perf_counter()
with DatasetWriter(data_dir, "mem", ["a", "b"]) as ds:
    for i in range(n):
        params = json.dumps({"seed": i, "beam": {"x": rng.random(), "y": rng.random()},
                             "modules": [{"kind": "ring", "q": rng.random()}] * 12})
        ds.add(rng.poisson(pattern), [i % 2, 1], params=params)
seconds = time.perf_counter() - started
done.set()
print(json.dumps({"n": n, "rss_before": before,
                  "rss_peak": max(peak_rss[0], proc.memory_info().rss), "seconds": seconds}))
"""


def disk_section(workdir: Path, n: int, size: int, detector: str) -> None:
    from pipeline.simulate import simulate_dataset

    started = time.perf_counter()
    path = simulate_dataset(workdir / "disk", n, size=size, seed=0, dataset_id="disk",
                            detector=detector, progress=False)
    seconds = time.perf_counter() - started
    files = [p for p in path.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    print(f"## disk per image: {n} simulated {size}² images ({detector}), "
          f"simulated and written in {seconds:.0f} s ({n / seconds:.1f} images/s)")
    print(f"  dataset           {total / n / KB:7.1f} KB/image  ({total / MB:.1f} MB, "
          f"{len(files)} files)")
    store = path / "images.zarr"
    for part in sorted({p.relative_to(store).parts[0] for p in store.rglob("*") if p.is_dir()}):
        shards = (store / part).rglob("c/*/0/0")
        for array in sorted({p.parent.parent.parent.parent for p in shards}):
            size_b = sum(p.stat().st_size for p in array.rglob("*") if p.is_file())
            print(f"    {str(array.relative_to(store)):16s} {size_b / n / KB:7.1f} KB/image")
    tables = sum(p.stat().st_size for p in files if store not in p.parents)
    print(f"    {'tables':16s} {tables / n / KB:7.1f} KB/image")
    old = size * size * 4 + 128  # float32 pixels and the .npy header
    print(f"  before the store  {old / KB:7.1f} KB/image ({n} files): {old * n / total:.1f}× "
          "the chunk store")
    write_section(workdir, path)
    read_section(path)


def write_section(workdir: Path, path: Path, repeat: int = 3) -> None:
    """The store's own share of writing: the dataset's images (held in memory) written again
    through DatasetWriter, with their table columns, without the simulation."""
    from pipeline.store import DatasetWriter, open_dataset

    dataset = open_dataset(path)
    images = [dataset.load_image(i) for i in range(len(dataset))]
    rows = dataset.images.to_dict("records")
    times = []
    for k in range(repeat):
        started = time.perf_counter()
        with DatasetWriter(workdir / "rewrite", f"again-{k}", dataset.attributes) as ds:
            for image, row, act in zip(images, rows, dataset.act, strict=True):
                ds.add(image, act, params=row["params"], split=row["split"])
        times.append(time.perf_counter() - started)
    median = sorted(times)[repeat // 2]
    print(f"## the store alone: {len(images)} images written (median of {repeat}) in "
          f"{median:.1f} s, {len(images) / median:.0f} images/s")


def read_section(path: Path, repeat: int = 3) -> None:
    """Full-size images read back one at a time (as training and inference read them), and
    the thumbnails of every row in one batch."""
    from pipeline.store import open_dataset

    dataset = open_dataset(path)
    n = len(dataset)
    full, thumbs = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        for i in range(n):
            dataset.load_image(i)
        full.append(time.perf_counter() - started)
        started = time.perf_counter()
        dataset.load_thumbnails(range(n))
        thumbs.append(time.perf_counter() - started)
    full_s, thumbs_s = sorted(full)[repeat // 2], sorted(thumbs)[repeat // 2]
    print(f"## reading {n} rows back (median of {repeat})")
    print(f"  full-size images, one at a time   {n / full_s:8.0f} images/s")
    print(f"  thumbnails, one batch             {n / thumbs_s:8.0f} images/s")


def memory_section(workdir: Path, counts: list[int], size: int) -> None:
    print(f"## peak memory writing {size}² images through DatasetWriter (fresh process each)")
    results = []
    for n in counts:
        folder = workdir / f"mem-{n}"
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(folder), str(n),
                              str(size)], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        grown = (result["rss_peak"] - result["rss_before"]) / MB
        print(f"  n={n:6d}: RSS peak "
              f"{result['rss_peak'] / MB:7.1f} MB (+{grown:.1f} MB over the start), "
              f"{n / result['seconds']:.0f} images/s")
        shutil.rmtree(folder, ignore_errors=True)
    first, last = results[0], results[-1]
    extra = last["n"] - first["n"]
    grown = last["rss_peak"] - first["rss_peak"]
    print(f"  RSS peak: ×{last['rss_peak'] / first['rss_peak']:.2f} for "
          f"×{last['n'] / first['n']:.1f} images ({grown / MB:+.1f} MB, "
          f"{grown / extra:+.0f} bytes per extra image)")
