"""Scale: disk per image and the writer's memory in the chunk store (sections disk, memory; see
benchmarks/scale_store.py), inference over Dask workers against the single process, maps of
large runs by a reference sample + transform against full openTSNE, new points placed on a
t-SNE map (the reference rebuilt two ways, transform steps), `add` of new images to a
large run, and the whole pipeline (build a dataset in the chunk store, infer, embed, write the
run) at 25,000 and 50,000 images: wall time, disk and peak memory a stage; and the run stage's
memory at a few sizes without the model, in all (inference's outputs included: resident and
anonymous memory) and by part (run-memory; benchmarks/scale_run_memory.py).

    python benchmarks/scale.py [--sections disk memory infer embed place add pipeline run-memory]
        [--disk-n 512] [--size 256] [--detector pilatus] [--memory-n 2500 5000]
        [--n-infer 20000] [--n-embed 1000000] [--n-full 100000] [--reference-n 50000]
        [--features clusters|manifolds]
        [--n-place-ref 50000] [--n-place 10000] [--n-run 100000] [--n-add 10000]
        [--n-pipeline 25000 50000] [--pipeline-scheduler none]
        [--memory-maps-n 25000 50000 100000] [--memory-run RUN_DIR] [--memory-steps 25]
        [--memory-infer-n 4000 8000]

Images are 256² Poisson counts of random discs and rings (the demo's detector size) read by the
compact net at 64²; the t-SNE data are 512-d features in 40 clusters whose label sets (17
attributes) follow the cluster. Scratch data go to $XRAE_BENCH_DIR (default /tmp/xrae-scale),
reused between runs. Figures and the machine load are printed; see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # scale_store, after the project

import numpy as np  # noqa: E402

import pipeline  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)

N_ATTRIBUTES = 17
ATTRIBUTES = [f"a{i:02d}" for i in range(N_ATTRIBUTES)]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} on {os.cpu_count()} cores"


def scratch() -> Path:
    return Path(os.environ.get("XRAE_BENCH_DIR", "/tmp/xrae-scale"))


# ---------------------------------------------------------------- data


def _image(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size] - size / 2
    r = np.hypot(yy, xx)
    act = (rng.random(N_ATTRIBUTES) < 0.3).astype(np.uint8)
    expected = 5.0 + 400.0 * (r < size / 10) * act[0] + 150.0 * (np.abs(r - size / 3) < 2) * act[1]
    return rng.poisson(expected).astype(np.float32), act


def bench_dataset(n: int):
    """A dataset of n images (written once, then reused)."""
    from pipeline import store

    data, dataset_id = scratch() / "data", f"scale-{n}"
    if (data / store.DATASETS / dataset_id / "dataset.json").is_file():
        return store.open_dataset(dataset_id, data)
    rng = np.random.default_rng(0)
    with store.DatasetWriter(data, dataset_id, ATTRIBUTES, meta={"source": "bench"}) as ds:
        for _ in range(n):
            pixels, act = _image(rng)
            ds.add(pixels, act, split="test", source="bench")
    return store.open_dataset(dataset_id, data)


def bench_checkpoint() -> Path:
    """An untrained compact net at the demo's input size: throughput does not need training."""
    import torch

    from pipeline.checkpoints import save_checkpoint
    from pipeline.model import build_model, per_image_normalisation

    path = scratch() / "compact.pt"
    if not path.is_file():
        torch.manual_seed(0)
        save_checkpoint(path, build_model("compact", N_ATTRIBUTES).eval(), arch="compact",
                        attributes=ATTRIBUTES, input_size=64,
                        normalisation=per_image_normalisation())
    return path


def clustered_features(n: int, dims: int = 512, k: int = 40, seed: int = 0):
    """FEA-like features in k clusters, the label set of each point that of its cluster (with
    a little noise), and probabilities near the labels."""
    rng = np.random.default_rng(seed)
    centres, labels = _clusters(rng, k, dims)
    which = rng.integers(0, k, n)
    fea = (centres[which] + rng.normal(0, 0.6, (n, dims))).astype(np.float32)
    act = _labels_of(rng, labels, which)
    prd = np.clip(act * 0.7 + rng.random((n, N_ATTRIBUTES)) * 0.3, 0, 1).astype(np.float32)
    return act, fea, prd


def _clusters(rng: np.random.Generator, k: int, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """k cluster centres in `dims` dimensions and each cluster's label set."""
    return rng.normal(0, 1, (k, dims)), rng.random((k, N_ATTRIBUTES)) < 0.3


def _labels_of(rng: np.random.Generator, labels: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Each point's labels: its cluster's, 2 % of them flipped."""
    return (labels[which] ^ (rng.random((len(which), N_ATTRIBUTES)) < 0.02)).astype(np.uint8)


def manifold_features(n: int, dims: int = 512, k: int = 40, within: int = 3, seed: int = 0,
                      chunk: int = 100_000):
    """Like clustered_features, but each cluster a curved `within`-dimensional sheet (spread 3,
    a sine bend into as many more directions, isotropic noise 0.02): a point's nearest
    neighbours are then its neighbours on the sheet, which a map can keep. Isotropic clusters
    in 512-d have no such structure: there every neighbour within a cluster is as near as any
    other, and no map, full or placed, keeps them."""
    rng = np.random.default_rng(seed)
    centres, labels = _clusters(rng, k, dims)
    bases = [np.linalg.qr(rng.normal(size=(dims, 2 * within)))[0].T for _ in range(k)]
    which = rng.integers(0, k, n)
    fea = np.empty((n, dims), np.float32)
    for start in range(0, n, chunk):
        part = which[start : start + chunk]
        u = rng.normal(0, 3, (len(part), within))
        sheet = np.concatenate([u, 2 * np.sin(u)], axis=1)
        offset = centres[part] + rng.normal(0, 0.02, (len(part), dims))
        for c in range(k):
            offset[part == c] += sheet[part == c] @ bases[c]
        fea[start : start + chunk] = offset
    return _labels_of(rng, labels, which), fea


# ---------------------------------------------------------------- inference


def _in_process(checkpoint, ds, threads: int) -> float:
    import torch

    from pipeline.infer import infer

    os.environ["OMP_NUM_THREADS"] = str(threads)  # compute_threads then keeps what we set
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        infer(checkpoint, ds, device="cpu", progress=False)
        return len(ds) / (time.perf_counter() - started)
    finally:
        del os.environ["OMP_NUM_THREADS"]


def _on_cluster(checkpoint, ds, workers: int) -> tuple[float, float]:
    """(images/s once the workers are warm, seconds to start and warm the cluster)."""
    from pipeline.cluster import connect
    from pipeline.infer_shards import infer_on_cluster, infer_shard

    started = time.perf_counter()
    with connect("local", n_workers=workers) as client:
        shared = {"checkpoint": str(checkpoint), "dataset": str(ds.path), "device": "cpu",
                  "multiscale": False, "batch_size": 64}
        warm = [client.submit(infer_shard, 0, 8, **shared, pure=False, workers=[w])
                for w in client.nthreads()]
        client.gather(warm)  # torch imported and the model loaded on every worker
        ready = time.perf_counter() - started
        started = time.perf_counter()
        infer_on_cluster(client, checkpoint, ds, device="cpu", progress=False)
        return len(ds) / (time.perf_counter() - started), ready


def bench_inference(n: int) -> None:
    ds, checkpoint = bench_dataset(n), bench_checkpoint()
    print(f"inference, compact net at 64² from 256² images, {n} images ({load()})")
    for threads in (1, 2):
        rate = _in_process(checkpoint, ds, threads)
        print(f"  single process, {threads} torch thread(s): {rate:7.1f} images/s ({load()})")
    rates = {}
    for workers in (1, 2):
        rates[workers], ready = _on_cluster(checkpoint, ds, workers)
        print(f"  Dask, {workers} worker(s) × 1 thread: {rates[workers]:7.1f} images/s "
              f"(cluster start and warm-up {ready:.1f} s; {load()})")
    print(f"  2 workers / 1 worker: {rates[2] / rates[1]:.2f}×")


# ---------------------------------------------------------------- embedding


def knn_preserved(z: np.ndarray, coords: np.ndarray, k: int = 10, n_probe: int = 2000,
                  seed: int = 0, among: np.ndarray | None = None) -> float:
    """Mean share of each probed point's k nearest neighbours in `z` that are also among its k
    nearest on the map; probes drawn from the rows `among` (default: all)."""
    from sklearn.neighbors import NearestNeighbors

    among = np.arange(len(z)) if among is None else np.asarray(among)
    probe = np.random.default_rng(seed).choice(among, min(n_probe, len(among)), replace=False)
    high = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z[probe])[1][:, 1:]
    low = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords[probe])[1][:, 1:]
    return float(np.mean([len(set(h) & set(m)) / k for h, m in zip(high, low, strict=True)]))


def _reference_map(fea, act, reference_n: int) -> tuple[np.ndarray, float]:
    from pipeline.reference import choose_reference, embed_with_reference

    started = time.perf_counter()
    rows = choose_reference(act, reference_n)
    coords = embed_with_reference(fea, space="fea", rows=rows)
    return coords, time.perf_counter() - started


def bench_embedding(n: int, reference_n: int, n_full: int, full: bool = True,
                    features: str = "clusters") -> None:
    """FEA maps by a reference sample + transform of n points and of the first n_full of them,
    and full openTSNE of those n_full: wall time and the 10 nearest neighbours each keeps."""
    from pipeline.embed import embed, prepare

    act, fea = clustered_features(n)[:2] if features == "clusters" else manifold_features(n)
    print(f"features: {features}")
    sizes = [n] if n_full >= n else [n, n_full]
    times = {}
    for size in sizes:
        print(f"FEA map of {size} points, reference {reference_n} ({load()})")
        with peak_rss() as memory:
            coords, times[size] = _reference_map(fea[:size], act[:size], reference_n)
        kept = knn_preserved(prepare(fea[:size], "fea"), coords)
        print(f"  reference + transform: {times[size]:7.1f} s, 10-NN preserved {kept:.3f}, "
              f"RSS {memory['start']:.0f} → peak {memory['peak']:.0f} MB ({load()})")
    if not full:
        return
    size = min(n, n_full)
    started = time.perf_counter()
    whole = embed(fea[:size], space="fea")
    t_full = time.perf_counter() - started
    print(f"  full openTSNE of {size}: {t_full:7.1f} s, 10-NN preserved "
          f"{knn_preserved(prepare(fea[:size], 'fea'), whole):.3f} ({load()})")
    for done in sizes:
        print(f"  time ratio, reference + transform of {done} / full openTSNE of {size}: "
              f"{times[done] / t_full:.2f}")


# ---------------------------------------------------------------- placing on a map


def bench_place(n_ref: int, n_new: int) -> None:
    """n_new points placed on a real t-SNE map of n_ref (FEA-like features): the reference
    rebuilt as openTSNE builds it (Annoy neighbours and affinities of every reference point)
    against pipeline.reference.rebuild (exact neighbours of the new points only), at several
    transform step counts; time, and how well the placed points keep their neighbours."""
    from openTSNE import TSNEEmbedding
    from openTSNE.affinity import PerplexityBasedNN
    from sklearn.neighbors import NearestNeighbors

    from pipeline import reference
    from pipeline.embed import _jobs, fit_tsne, gradient_method

    act, fea, _ = clustered_features(n_ref + n_new, seed=5)
    z_ref, prepare_new = reference.reference_inputs(fea[:n_ref], "fea")
    print(f"placing {n_new} points on a t-SNE map of {n_ref} ({load()})")
    started = time.perf_counter()
    coords = np.asarray(fit_tsne(z_ref), np.float32)
    print(f"  t-SNE of the reference: {time.perf_counter() - started:.1f} s ({load()})")
    z_all = np.concatenate([z_ref, prepare_new(fea[n_ref:])])
    label = act @ (1 << np.arange(N_ATTRIBUTES))
    for how in ("openTSNE's PerplexityBasedNN", "pipeline.reference.rebuild"):
        started = time.perf_counter()
        embedding = reference.rebuild(fea[:n_ref], coords, space="fea")[0] if "rebuild" in how \
            else TSNEEmbedding(coords.astype(np.float64), PerplexityBasedNN(
                z_ref, perplexity=30, n_jobs=_jobs(), random_state=0),
                negative_gradient_method=gradient_method(n_ref), random_state=0, n_jobs=_jobs())
        print(f"  rebuild by {how}: {time.perf_counter() - started:.1f} s ({load()})")
        for steps in (250, 100, 50):
            started = time.perf_counter()
            placed = reference.place(embedding, z_all[n_ref:], n_iter=steps)
            seconds = time.perf_counter() - started
            nearest = NearestNeighbors(n_neighbors=1).fit(coords).kneighbors(placed)[1][:, 0]
            kept = knn_preserved(z_all, np.concatenate([coords, placed]),
                                 among=np.arange(n_ref, n_ref + n_new))
            print(f"    {steps:3d} steps: {seconds:5.1f} s, 10-NN kept {kept:.3f}, nearest "
                  f"reference point of the same label set "
                  f"{np.mean(label[nearest] == label[n_ref:]):.3f} ({load()})")


# ---------------------------------------------------------------- add


def _big_run(n: int, checkpoint: Path) -> str:
    """A run of n images' arrays (no image files) with the compact net's FEA width; its maps
    are PCA layouts scaled like t-SNE maps: the time of `add` does not depend on their shape."""
    import pandas as pd

    from pipeline import store
    from pipeline.checkpoints import load_checkpoint
    from pipeline.reference import REFERENCE_FILE, choose_reference

    run_id = f"scale-run-{n}"
    data = scratch() / "data"
    if (data / store.RUNS / run_id / "run.json").is_file():
        return run_id
    act, fea, prd = clustered_features(n, dims=load_checkpoint(checkpoint)[0].feature_dim)
    emb = {s: _layout(x) for s, x in (("act", act), ("fea", fea), ("prd", prd))}
    images = pd.DataFrame({"image_id": [f"r{i}" for i in range(n)], "path": [""] * n,
                           "split": ["test"] * n, "source": ["bench"] * n})
    store.write_run(data, attributes=ATTRIBUTES, images=images, act=act, prd=prd, fea=fea,
                    emb=emb, meta={"dataset": "none", "embedding": {"seed": 0, "perplexity": 30}},
                    run_id=run_id,
                    extra_files={"model.pt": lambda p: p.write_bytes(checkpoint.read_bytes()),
                                 REFERENCE_FILE: lambda p: np.save(p, choose_reference(act))})
    return run_id


def _layout(x: np.ndarray) -> np.ndarray:
    centred = np.asarray(x, np.float64) - np.mean(x, axis=0)
    coords = centred @ np.linalg.svd(centred[:5000], full_matrices=False)[2][:2].T
    return (30 * coords / coords.std(axis=0)).astype(np.float32)


def _image_folder(n: int) -> Path:
    from PIL import Image

    folder = scratch() / f"incoming-{n}"
    if folder.is_dir():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    rng, rows = np.random.default_rng(1), []
    for i in range(n):
        pixels, act = _image(rng)
        Image.fromarray(pixels.astype(np.uint16)).save(tmp / f"new{i:06d}.tif")
        rows.append(",".join([f"new{i:06d}.tif", *map(str, act)]))
    (tmp / "labels.csv").write_text("\n".join([",".join(["file", *ATTRIBUTES]), *rows]) + "\n")
    tmp.rename(folder)
    return folder


def bench_add(n_run: int, n_add: int, scheduler: str) -> None:
    from pipeline import store
    from pipeline.add import add_images

    checkpoint = bench_checkpoint()
    run_id, folder = _big_run(n_run, checkpoint), _image_folder(n_add)
    print(f"add {n_add} images to a run of {n_run}, scheduler {scheduler} ({load()})")
    started = time.perf_counter()
    path = add_images(scratch() / "data", run_id, folder, folder / "labels.csv",
                      scheduler=scheduler, device="cpu", progress=False)
    seconds = time.perf_counter() - started
    run = store.get_run(path.name, scratch() / "data")
    print(f"  {seconds:.1f} s in all; {run.meta['timings']} ({load()})")


# ---------------------------------------------------------------- the whole pipeline


@contextlib.contextmanager
def peak_rss():
    """Yield a dict whose "peak" is, after the block, the largest resident memory seen in it
    (psutil, sampled every 20 ms) and "start" the memory when it began, in MB; "anon_start"
    and "anon_peak" the same of anonymous memory (RssAnon: resident memory less the pages of
    files, such as a run's draft, that the kernel can write back and drop)."""
    import psutil
    from scale_run_memory import anon_mb

    proc, seen, done = psutil.Process(), {}, threading.Event()
    seen["start"] = seen["peak"] = proc.memory_info().rss / 2**20
    seen["anon_start"] = seen["anon_peak"] = anon_mb()

    def sample() -> None:
        while not done.wait(0.02):
            seen["peak"] = max(seen["peak"], proc.memory_info().rss / 2**20)
            seen["anon_peak"] = max(seen["anon_peak"], anon_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
        seen["peak"] = max(seen["peak"], proc.memory_info().rss / 2**20)


def bench_pipeline(n: int, scheduler: str) -> None:
    """Build a dataset of n images in the chunk store, then infer, embed and write its run
    (pipeline.infer.make_run), in a fresh data directory: wall time, disk and memory a stage."""
    from pipeline import store
    from pipeline.infer import make_run

    checkpoint = bench_checkpoint()
    data = scratch() / f"pipeline-{n}"
    shutil.rmtree(data, ignore_errors=True)
    print(f"pipeline at {n} images of 256², compact net, scheduler {scheduler} ({load()})")
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with peak_rss() as memory, store.DatasetWriter(data, "build", ATTRIBUTES) as ds:
        for _ in range(n):
            pixels, act = _image(rng)
            ds.add(pixels, act, split="test", source="bench")
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (data / store.DATASETS).rglob("*") if p.is_file())
    print(f"  build: {seconds:7.1f} s ({n / seconds:.0f} images/s), {size / n / 1024:.1f} KB "
          f"per image, RSS {memory['start']:.0f} → peak {memory['peak']:.0f} MB ({load()})")
    started = time.perf_counter()
    with peak_rss() as memory:
        path = make_run(data, "build", checkpoint, device="cpu", progress=False,
                        scheduler=scheduler, run_id="run")
    seconds = time.perf_counter() - started
    timings = store.get_run(path.name, data).meta["timings"]
    run_size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(f"  infer: {timings['infer_s']:7.1f} s ({n / timings['infer_s']:.0f} images/s), "
          f"embed: {timings['embed_s']:.1f} s, run written in {seconds:.1f} s in all, "
          f"{run_size / n / 1024:.2f} KB per image, RSS {memory['start']:.0f} → peak "
          f"{memory['peak']:.0f} MB, anonymous {memory['anon_start']:.0f} → peak "
          f"{memory['anon_peak']:.0f} MB ({load()})")
    shutil.rmtree(data, ignore_errors=True)


SECTIONS = ["disk", "memory", "infer", "embed", "place", "add", "pipeline", "run-memory"]


def store_sections(args) -> None:
    """The chunk store's disk and memory sections, in a scratch folder of their own."""
    if not {"disk", "memory"} & set(args.sections):
        return
    from scale_store import disk_section, memory_section

    workdir = Path(tempfile.mkdtemp(prefix="xrae-scale-store-"))
    try:
        if "disk" in args.sections:
            disk_section(workdir, args.disk_n, args.size, args.detector)
        if "memory" in args.sections:
            memory_section(workdir, sorted(args.memory_n), args.size)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", default=SECTIONS, choices=SECTIONS)
    parser.add_argument("--disk-n", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--detector", default="pilatus")
    parser.add_argument("--memory-n", type=int, nargs=2, default=[2500, 5000],
                        help="the two image counts to compare")
    parser.add_argument("--n-infer", type=int, default=20_000)
    parser.add_argument("--n-embed", type=int, default=1_000_000)
    parser.add_argument("--reference-n", type=int, default=50_000)
    parser.add_argument("--n-full", type=int, default=100_000,
                        help="points of the full openTSNE map (the first of --n-embed's)")
    parser.add_argument("--no-full", action="store_true", help="skip the full openTSNE map")
    parser.add_argument("--features", choices=["clusters", "manifolds"], default="clusters",
                        help="the embed section's points: isotropic clusters, or each cluster a "
                             "curved 3-d sheet")
    parser.add_argument("--n-place-ref", type=int, default=50_000)
    parser.add_argument("--n-place", type=int, default=10_000)
    parser.add_argument("--n-run", type=int, default=100_000)
    parser.add_argument("--n-add", type=int, default=10_000)
    parser.add_argument("--add-scheduler", default="local")
    parser.add_argument("--n-pipeline", type=int, nargs="+", default=[25_000, 50_000],
                        help="dataset sizes of the whole-pipeline section")
    parser.add_argument("--pipeline-scheduler", default="none")
    parser.add_argument("--memory-maps-n", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    parser.add_argument("--memory-run", help="a run directory whose first rows the run-memory "
                                             "section maps (default: 448-d clusters drawn here)")
    parser.add_argument("--memory-steps", type=int, default=25,
                        help="t-SNE and placing steps of the run-memory section")
    parser.add_argument("--memory-infer-n", type=int, nargs="+", default=[4_000, 8_000])
    args = parser.parse_args()
    store_sections(args)
    if "infer" in args.sections:
        bench_inference(args.n_infer)
    if "embed" in args.sections:
        bench_embedding(args.n_embed, args.reference_n, args.n_full,
                        full=not args.no_full, features=args.features)
    if "place" in args.sections:
        bench_place(args.n_place_ref, args.n_place)
    if "add" in args.sections:
        bench_add(args.n_run, args.n_add, args.add_scheduler)
    if "pipeline" in args.sections:
        for n in args.n_pipeline:
            bench_pipeline(n, args.pipeline_scheduler)
    if "run-memory" in args.sections:
        from scale_run_memory import infer_section, maps_section, stage_section

        stage_section(args.memory_maps_n, args.memory_steps, load)
        maps_section(args.memory_maps_n, args.memory_run, args.memory_steps, load)
        infer_section(args.memory_infer_n, load)


if __name__ == "__main__":
    main()
