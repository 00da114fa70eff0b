"""The run stage's memory by part (benchmarks/scale.py --sections run-memory): what the three
maps (pipeline.reference.embed_maps) and the run's writing (pipeline.store.write_run, with its
disagreement scores) hold beyond the run's own arrays, at a few image counts, and what
inference (pipeline.infer.predict) holds beyond its outputs.

Maps and writing: for each count a fresh process loads the first N rows of a run's act, fea and
prd (--memory-run, a run directory; by default 448-d clustered features drawn here), then
makes the three maps and writes a run in a scratch folder, as make_run does after inference.
Resident memory is sampled every 10 ms and charged to the part running at the time (the
functions named in PARTS, each wrapped while it runs); numpy's own allocations are traced too
(tracemalloc), each part's peak apart. Memory is independent of the number of t-SNE steps, so
the maps run --memory-steps steps (25 by default) instead of 750, and placing as many.

The whole run stage (stage_section): for each count a fresh process makes a run as make_run
does after the model has seen the images, inference's outputs included: the run's PRD and FEA
written a block at a time where make_run writes them (into the run's draft on disk; in memory
by code older than the draft), then the three maps, the metrics, the disagreement and the
files. Its peak over the start (after imports, before any of the run's arrays exists) is
reported twice:
resident memory (RSS, which counts the pages of the draft's files the process has touched:
the kernel writes them back and drops them under pressure) and the process's anonymous
memory (RssAnon, what it cannot give back). Run with the same script from an older checkout,
it measures that code (the before of a change).

Inference: for each count (--memory-infer) a fresh process runs the untrained compact net over
a dataset of that many images in the chunk store (benchmarks/scale.py bench_dataset) and
reports its peak over the start (after 256 images have warmed torch), less the N × (D + A)
float32 outputs it returns.
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB = 2**20
# (module, function, part): each function is charged to its part while it runs; a part
# called inside another is charged apart.
PARTS = [
    ("pipeline.reference", "embed_maps", "maps: other"),
    ("pipeline.reference", "choose_reference", "maps: choose reference"),
    ("pipeline.reference", "embed_with_reference", "maps: x[rows], x[others]"),
    ("pipeline.reference", "reference_inputs", "maps: reference PCA/jitter"),
    ("pipeline.embed", "prepare", "maps: whole-map PCA/jitter"),
    ("pipeline.embed", "fit_tsne", "maps: t-SNE fit"),
    ("pipeline.reference", "fit_tsne", "maps: t-SNE fit"),
    ("pipeline.reference", "place", "maps: placing"),
    ("pipeline.reference", "place_blocks", "maps: placing"),  # with each block's preparation
    ("pipeline.store.runs", "write_run", "write: files"),
    ("pipeline.store.runs", "_disagreement", "write: disagreement"),
]


class Parts:
    """Peak RSS (MB over the start) and peak traced numpy memory (MB) of each part."""

    def __init__(self):
        import psutil

        self.proc, self.now, self.rss, self.traced = psutil.Process(), "other", {}, {}
        self.start = self._sample()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> float:
        return self.proc.memory_info().rss / MB

    def _watch(self) -> None:
        while not self.done.wait(0.01):
            self._note_rss()

    def _note_rss(self) -> None:
        over = self._sample() - self.start
        self.rss[self.now] = max(self.rss.get(self.now, over), over)

    def switch(self, part: str) -> str:
        """Close the running part's books and start `part`'s; returns the one closed."""
        self._note_rss()
        peak = tracemalloc.get_traced_memory()[1] / MB
        self.traced[self.now] = max(self.traced.get(self.now, 0.0), peak)
        tracemalloc.reset_peak()
        before, self.now = self.now, part
        return before

    def wrap(self, fn, part: str):
        @functools.wraps(fn)
        def charged(*args, **kwargs):
            before = self.switch(part)
            try:
                out = fn(*args, **kwargs)
            finally:
                self.switch(before)
            return out
        return charged


def _inputs(n: int, source: str | None):
    """act, fea, prd and an images table of n rows: the first n of a run's, or drawn here."""
    import pandas as pd

    if source:
        run = Path(source)
        arrays = [np.load(run / f"{name}.npy", mmap_mode="r")[:n] for name in ("act", "fea", "prd")]
        act, fea, prd = (np.array(a) for a in arrays)  # in memory, as predict returns them
        if len(act) < n:
            raise SystemExit(f"{source} has only {len(act)} rows")
    else:
        from scale import clustered_features

        act, fea, prd = clustered_features(n, dims=448)
    ids = [f"img{i:07d}" for i in range(n)]
    images = pd.DataFrame({"image_id": ids, "path": ids, "split": "test", "source": "bench"})
    return act, fea, prd, images


def _write(act, fea, prd, images, reference_n: int | None = None) -> np.ndarray:
    """The three maps and a run written with them in a scratch folder; the reference rows."""
    from pipeline import reference, store

    kw = {} if reference_n is None else {"reference_n": reference_n}
    emb, rows = reference.embed_maps(act, fea, prd, **kw)
    with tempfile.TemporaryDirectory(prefix="xrae-run-memory-") as tmp:
        store.runs.write_run(tmp, attributes=[f"a{i:02d}" for i in range(act.shape[1])],
                             images=images, act=act, prd=prd, fea=fea, emb=emb,
                             meta={"dataset": "bench"}, run_id="run")
    return rows


def measure_maps(n: int, source: str | None, steps: int) -> dict:
    """In this process: the maps and the run written for n rows, memory charged to parts."""
    import importlib

    from pipeline import embed, reference

    act, fea, prd, images = _inputs(n, source)
    embed.EARLY_ITER = embed.MAIN_ITER = steps
    reference.place = functools.partial(reference.place, n_iter=steps)
    # both ways of making maps once, and a run written: imports before the start
    _write(*_inputs(300, source))
    _write(*_inputs(300, source), reference_n=200)
    parts = Parts()
    for module, name, part in PARTS:
        mod = importlib.import_module(module)
        if hasattr(mod, name):  # functions of older versions are measured too
            setattr(mod, name, parts.wrap(getattr(mod, name), part))
    tracemalloc.start()
    parts.thread.start()
    started = time.perf_counter()
    rows = _write(act, fea, prd, images)
    parts.switch("other")
    parts.done.set()
    parts.thread.join()
    inputs = (act.nbytes + fea.nbytes + prd.nbytes) / MB
    return {"n": n, "reference": len(rows), "rss": parts.rss, "traced": parts.traced,
            "start": parts.start, "inputs_mb": inputs, "seconds": time.perf_counter() - started}


def anon_mb() -> float:
    """The process's anonymous resident memory (RssAnon), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _drawn_blocks(n: int, dims: int = 448, block: int = 8192, seed: int = 0):
    """scale.clustered_features drawn a block of rows at a time (the same clusters throughout):
    (rows, act, fea, prd) per block, as inference hands over its batches."""
    from scale import N_ATTRIBUTES, _clusters, _labels_of

    rng = np.random.default_rng(seed)
    centres, labels = _clusters(rng, 40, dims)
    for first in range(0, n, block):
        rows = slice(first, min(first + block, n))
        part = np.random.default_rng([seed, first])
        which = part.integers(0, 40, rows.stop - first)
        fea = (centres[which] + part.normal(0, 0.6, (len(which), dims))).astype(np.float32)
        act = _labels_of(part, labels, which)
        prd = np.clip(act * 0.7 + part.random((len(which), N_ATTRIBUTES)) * 0.3, 0, 1)
        yield rows, act, fea, prd.astype(np.float32)


def measure_stage(n: int, steps: int) -> dict:
    """In this process: the run stage of make_run for n drawn images, inference's outputs
    included (see the module's docstring); peak RSS and anonymous memory over the start."""
    import pandas as pd

    from pipeline import embed, reference, store
    from pipeline.infer import evaluate_splits

    embed.EARLY_ITER = embed.MAIN_ITER = steps
    reference.place = functools.partial(reference.place, n_iter=steps)
    _write(*_inputs(300, None))  # imports and first uses before the start
    _write(*_inputs(300, None), reference_n=200)
    drafted = hasattr(store, "run_draft")
    ids = [f"img{i:07d}" for i in range(n)]
    images = pd.DataFrame({"image_id": ids, "path": ids, "split": "test", "source": "bench"})
    proc = __import__("psutil").Process()
    start = {"rss": proc.memory_info().rss / MB, "anon": anon_mb()}
    peak, done = dict(start), threading.Event()

    def watch() -> None:
        while not done.wait(0.01):
            peak["rss"] = max(peak["rss"], proc.memory_info().rss / MB)
            peak["anon"] = max(peak["anon"], anon_mb())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xrae-stage-memory-") as tmp, \
            (store.run_draft(tmp, "run") if drafted else contextlib.nullcontext()) as draft:
        act = np.empty((n, 17), np.uint8)
        if drafted:
            prd, fea = draft.array("prd", (n, 17), np.float32), draft.array("fea", (n, 448),
                                                                            np.float32)
        else:
            prd, fea = np.empty((n, 17), np.float32), np.empty((n, 448), np.float32)
        for rows, *made in _drawn_blocks(n):
            act[rows], fea[rows], prd[rows] = made
        emb, _ = reference.embed_maps(act, fea, prd)
        scores = evaluate_splits(act, prd, images["split"].to_numpy())
        parts = dict(attributes=[f"a{i:02d}" for i in range(17)], images=images, act=act,
                     prd=prd, fea=fea, emb=emb, meta={"dataset": "bench", **scores})
        if drafted:
            draft.write(**parts)
        else:
            store.runs.write_run(tmp, run_id="run", **parts)
    done.set()
    thread.join()
    return {"n": n, "drafted": drafted, "start": start, "peak": peak,
            "seconds": time.perf_counter() - started}


def stage_section(sizes: list[int], steps: int, load) -> None:
    print(f"the whole run stage, inference's outputs included ({steps} t-SNE steps; clustered "
          f"448-d features) ({load()})")
    found = [_child("stage", n, None, steps) for n in sorted(sizes)]
    for f in found:
        rss, anon = (f["peak"][m] - f["start"][m] for m in ("rss", "anon"))
        where = "outputs in the run draft" if f["drafted"] else "outputs in memory"
        print(f"  {f['n']:,} images ({where}): peak over the start: RSS +{rss:.0f} MB, "
              f"anonymous +{anon:.0f} MB ({f['seconds']:.0f} s)")
    for m, name in (("rss", "RSS"), ("anon", "anonymous")):
        peaks = [f["peak"][m] - f["start"][m] for f in found]
        print(f"  {name}{_slope([f['n'] for f in found], peaks)}; per image at the largest: "
              f"{peaks[-1] / found[-1]['n'] * MB / 1024:.2f} KB ({load()})")


def measure_infer(n: int) -> dict:
    """In this process: predict over a chunk-store dataset of n images; peak RSS over the
    start, and the RSS after each quarter of the images (growth inside one run, unlike a
    comparison of two processes, does not depend on how each one's heap began)."""
    import psutil
    from scale import bench_checkpoint, bench_dataset, peak_rss

    from pipeline.checkpoints import load_checkpoint
    from pipeline.infer import predict

    ds = bench_dataset(n)
    model, info = load_checkpoint(bench_checkpoint(), attributes=ds.attributes)
    predict(model, info, bench_dataset(256), device="cpu", progress=False)  # torch's first use
    proc, seen = psutil.Process(), {}

    def heard(_stage: str, done: float) -> None:
        seen[round(done * 4) / 4] = proc.memory_info().rss / MB  # the last at each quarter

    with peak_rss() as memory:
        prd, fea = predict(model, info, ds, device="cpu", progress=False, on_progress=heard)
    outputs = (prd.nbytes + fea.nbytes) / MB
    return {"n": n, "start": memory["start"], "peak": memory["peak"], "outputs_mb": outputs,
            "quarters": [seen.get(q) for q in (0.25, 0.5, 0.75, 1.0)]}


def _child(kind: str, n: int, source: str | None, steps: int) -> dict:
    """One measurement in a fresh process, so that no count inherits another's heap."""
    code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import scale_run_memory as m; "
            f"print(json.dumps(m.measure_{kind}({n}"
            + (f", {source!r}, {steps}" if kind == "maps" else "")
            + (f", {steps}" if kind == "stage" else "") + ")))")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise SystemExit(f"run-memory child ({kind}, {n}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _slope(sizes: list[int], peaks: list[float]) -> str:
    if len(sizes) < 2:
        return ""
    per_10k = (peaks[-1] - peaks[-2]) / (sizes[-1] - sizes[-2]) * 10_000
    return f"; slope {sizes[-2]:,} → {sizes[-1]:,}: {per_10k:+.1f} MB per 10,000 images"


def maps_section(sizes: list[int], source: str | None, steps: int, load) -> None:
    print(f"run stage after inference: maps + run written ({steps} t-SNE steps; "
          f"{source or 'clustered 448-d features'}) ({load()})")
    found = [_child("maps", n, source, steps) for n in sorted(sizes)]
    parts = sorted({p for f in found for p in f["rss"]}, key=lambda p: -found[-1]["rss"].get(p, 0))
    print("  part: peak RSS over the start / peak traced numpy MB, at " +
          ", ".join(f"{f['n']:,}" for f in found))
    for part in parts:
        cells = [f"{f['rss'].get(part, float('nan')):7.0f} / {f['traced'].get(part, 0):5.0f}"
                 for f in found]
        print(f"  {part:30s} " + "  ".join(cells))
    peaks = [max(f["rss"].values()) for f in found]
    print("  peak over the start: " + ", ".join(f"{p:.0f} MB" for p in peaks)
          + _slope([f["n"] for f in found], peaks)
          + "; the run's arrays themselves: "
          + ", ".join(f"{f['inputs_mb']:.0f} MB" for f in found) + f" ({load()})")


def infer_section(sizes: list[int], load) -> None:
    print(f"inference (predict, compact net, one process) ({load()})")
    found = [_child("infer", n, None, 0) for n in sorted(sizes)]
    for f in found:
        print(f"  {f['n']:,} images: RSS {f['start']:.0f} → peak {f['peak']:.0f} MB "
              f"(+{f['peak'] - f['start']:.0f}; outputs {f['outputs_mb']:.0f} MB, "
              f"the rest +{f['peak'] - f['start'] - f['outputs_mb']:.0f}); RSS after each "
              "quarter: " + ", ".join(f"{q:.0f}" for q in f["quarters"]) + " MB")
    rest = [f["peak"] - f["start"] - f["outputs_mb"] for f in found]
    last = found[-1]
    inside = (last["quarters"][-1] - last["quarters"][0]) / (0.75 * last["n"]) * 10_000
    print(f"  beyond the outputs{_slope([f['n'] for f in found], rest)}; within the "
          f"{last['n']:,}, from its first quarter to its end: {inside:+.1f} MB per 10,000 "
          f"images, of which the outputs {last['outputs_mb'] / last['n'] * 10_000:.1f} "
          f"({load()})")
