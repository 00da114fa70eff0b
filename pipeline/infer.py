"""Inference and the run builder: probabilities and penultimate features for every image, then
embeddings and metrics, written as one run (make_run) that the dashboard can open.

Its commands (`infer`, `metrics`) are registered by pipeline/demo.py, which imports no torch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from itertools import repeat
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline import cluster, metrics, pool, store
from pipeline.checkpoints import file_digest, load_checkpoint, save_checkpoint
from pipeline.embed import embedding_meta
from pipeline.errors import PipelineError, Stopped
from pipeline.infer_shards import prepare_rows
from pipeline.inputs import model_input
from pipeline.model import compute_threads, pick_device
from pipeline.train import as_batch, as_dataset, labels_for

EVAL_SPLIT = "test"
# From this many images on, a pool of processes reads and prepares them for the model. A worker
# takes about 2 s to start (it imports torch); one image about 3 ms.
PREPARE_MIN = 2_000
PREPARE_AHEAD = 4  # batches per worker prepared ahead of the model (a batch of 64 at 224²: 13 MB)


def _batches(n: int, batch_size: int) -> Iterator[range]:
    for start in range(0, n, batch_size):
        yield range(start, min(start + batch_size, n))


def infer(checkpoint, dataset, *, device: str = "auto", batch_size: int = 64,
          multiscale: bool = False, progress: bool = True,
          on_progress: Callable[[str, float], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N × A float32) and penultimate features (N × D float32) for every image.

    With `multiscale` the 15 views of each image (Wang et al., WACV 2017, §3.1) are averaged,
    features and probabilities alike.
    """
    ds = as_dataset(dataset)
    model, info = load_checkpoint(checkpoint, attributes=ds.attributes)
    return predict(model, info, ds, device=device, batch_size=batch_size, multiscale=multiscale,
                   progress=progress, on_progress=on_progress, should_stop=should_stop)


def predict(model, info: dict, ds: store.Dataset, *, device="auto", batch_size=64,
            multiscale=False, progress=True, on_progress=None, should_stop=None, out=None):
    """infer() for a model already loaded with load_checkpoint; with `out` (PRD, FEA: N × A
    and N × D float32, e.g. arrays of a run's draft on disk) the outputs are written there."""
    if batch_size < 1:
        raise PipelineError(f"batch size must be at least 1, got {batch_size}")
    dev = pick_device(device)
    cuda = dev.type == "cuda"
    model = model.to(dev).to(memory_format=torch.channels_last)  # faster on CPU and GPU alike
    n_views = 15 if multiscale else 1
    per_batch = max(1, batch_size // n_views)
    prd, fea = out if out is not None else (
        np.empty((len(ds), len(ds.attributes)), np.float32),
        np.empty((len(ds), model.feature_dim), np.float32))
    bar = tqdm(total=len(ds), desc="infer", unit="img", disable=not progress, leave=False)
    batches = list(_batches(len(ds), per_batch))
    # On a GPU the network waits for images: a pool reads and prepares them. On a CPU it would
    # take the cores from the network (large CPU runs are sharded over Dask workers instead).
    workers = preparers(ds, len(ds)) if cuda else 0
    with (torch.inference_mode(), compute_threads(info["arch"], dev),
          torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda),
          prepared_batches(ds, batches, info, multiscale, workers) as inputs):
        for rows, (x, profile) in zip(batches, inputs, strict=True):
            if should_stop and should_stop():
                raise Stopped("inference stopped; no run was written")
            f = model.features(*as_batch(x, profile, dev))
            p = torch.sigmoid(model.fc(f).float())
            fea[rows.start : rows.stop] = f.float().reshape(len(rows), n_views, -1).mean(1).cpu()
            prd[rows.start : rows.stop] = p.reshape(len(rows), n_views, -1).mean(1).cpu()
            bar.update(len(rows))
            if on_progress:
                on_progress("infer", rows.stop / len(ds))
    bar.close()
    if store.nonfinite_count(prd) or store.nonfinite_count(fea):
        raise PipelineError(f"the model ({info['arch']}) produced NaN or infinite outputs")
    return prd, fea


def preparers(ds, n_images: int) -> int:
    """Processes to read and prepare n_images of `ds` for a model: one per core for a large
    stored dataset, else none (this process does it)."""
    return pool.workers_for(n_images, PREPARE_MIN) if isinstance(ds, store.Dataset) else 0


@contextlib.contextmanager
def prepared_batches(ds, batches: list, info: dict, multiscale: bool = False, workers: int = 0):
    """The model's inputs (model_input) for each batch of rows of `ds`, in order: read and
    prepared here, or by `workers` processes (see preparers), the same to the last bit.

    Reading and preparing an image takes about 3 ms for the compact net's inputs on a CPU
    core, four times its network's time (benchmarks/RESULTS.md).
    """
    if not workers:
        yield (model_input(ds.load_images(rows), info, multiscale) for rows in batches)
        return
    needed = {k: info[k] for k in ("input_size", "normalisation", "inputs") if k in info}
    with pool.ordered_map(workers, chunk=1, ahead=PREPARE_AHEAD) as mapped:
        arrays = mapped(prepare_rows, repeat(str(ds.path)), batches, repeat(needed),
                        repeat(multiscale))
        yield ((torch.from_numpy(x), None if p is None else torch.from_numpy(p))
               for x, p in arrays)


def evaluate_splits(act, prd, splits, threshold: float = 0.5,
                    thresholds: np.ndarray | None = None) -> dict:
    """Metrics on the held-out test split (when there is one) and on every image, at the global
    threshold; with per-attribute `thresholds`, the evaluation split's metrics at those too."""
    test = np.asarray(splits) == EVAL_SPLIT
    rows, split = (test, EVAL_SPLIT) if test.any() else (np.ones(len(act), bool), "all")
    scope = {"split": split, "n_images": int(rows.sum())}
    out = {"metrics": {**metrics.evaluate(act[rows], prd[rows], threshold), **scope}}
    if test.any():
        out["metrics_all"] = {**metrics.evaluate(act, prd, threshold), "split": "all",
                              "n_images": len(act)}
    if thresholds is not None:
        out["metrics_at_thresholds"] = {**metrics.evaluate(act[rows], prd[rows], thresholds),
                                        **scope}
    return out


def thresholds_of(info: dict, attributes: list[str]) -> np.ndarray | None:
    """A checkpoint's per-attribute thresholds in attribute order (None when it has none)."""
    chosen = info.get("thresholds")
    return None if chosen is None else np.array([chosen[a] for a in attributes], float)


def _scores(info: dict, ds: store.Dataset, act, prd) -> dict:
    """A run's metrics, and its checkpoint's per-attribute thresholds when it has them."""
    thresholds = thresholds_of(info, ds.attributes)
    scores = evaluate_splits(act, prd, ds.images["split"].to_numpy(), thresholds=thresholds)
    if thresholds is not None:
        scores["thresholds"] = dict(zip(ds.attributes, thresholds.tolist(), strict=True))
    return scores


def _images_table(ds: store.Dataset, data_dir: Path):
    """The dataset's image table, with paths made absolute when the run lives elsewhere."""
    images = ds.images.copy()
    if ds.data_dir.resolve() != Path(data_dir).resolve():
        images["path"] = [str(ds.image_path(i)) for i in range(len(images))]
    return images


def make_run(data_dir, dataset, checkpoint, *, act=None, device: str = "auto",
             multiscale: bool = False, run_id: str | None = None, meta_extra: dict | None = None,
             progress: bool = True, should_stop: Callable[[], bool] | None = None,
             on_progress: Callable[[str, float], None] | None = None,
             scheduler: str | None = None, parent=None,
             on_scores: Callable[[dict], None] | None = None) -> Path:
    """infer → metrics → embed → one run written whole; returns the run directory.

    `act` replaces the dataset's labels as the run's ACT (e.g. corrected labels after a review).
    The checkpoint goes into the run as model.pt (our format, with no optimizer state).
    `scheduler` (see pipeline.cluster) says where inference (see sharded) and embedding run;
    `parent` (before_after.ParentMaps, e.g. of the run a retrained one came from) starts each
    map from the parent's coordinates of the same images. `on_scores` is given the run's metrics
    as soon as inference ends, before the maps (minutes for a large run).
    """
    from pipeline.before_after import placement, starting_maps
    from pipeline.reference import REFERENCE_FILE, embed_maps

    data_dir = store.resolve_data_dir(data_dir)
    ds = as_dataset(dataset, data_dir)
    act = labels_for(ds, act).astype(np.uint8)
    timings = {}
    model, info = load_checkpoint(checkpoint, attributes=ds.attributes)
    where = cluster.resolve(scheduler, len(ds))
    # Inference's outputs go straight to the run's files (its draft), and everything after
    # reads them from there: no array of a beamline's day is held in memory whole.
    with store.run_draft(data_dir, run_id, ds.id) as draft:
        prd = draft.array("prd", (len(ds), len(ds.attributes)), np.float32)
        fea = draft.array("fea", (len(ds), info["feature_dim"]), np.float32)
        with cluster.maybe_client(where) as client:
            started = time.perf_counter()
            infer_all(client, checkpoint, model, info, ds, device=device,
                      multiscale=multiscale, progress=progress, on_progress=on_progress,
                      should_stop=should_stop, out=(prd, fea))
            timings["infer_s"] = round(time.perf_counter() - started, 2)
            scores = _scores(info, ds, act, prd)
            if on_scores:
                on_scores(scores)
            started = time.perf_counter()
            starts = None if parent is None else starting_maps(
                parent, ds.images["image_id"], {"act": act, "fea": fea, "prd": prd})
            emb, reference = embed_maps(act, fea, prd, progress=progress, client=client,
                                        starts=starts, on_progress=on_progress,
                                        should_stop=should_stop)
            timings["embed_s"] = round(time.perf_counter() - started, 2)
        meta = {"dataset": ds.id, "model": _model_meta(checkpoint, info, multiscale),
                "device": str(pick_device(device)), **scores, "timings": timings,
                "embedding": {**embedding_meta(len(ds)), "reference_n": len(reference),
                              "from_parent": starts is not None,
                              "placed": placement(parent, starts)},
                "scheduler": where or "none",
                **(meta_extra or {})}
        if meta_extra and "timings" in meta_extra:
            meta["timings"] = {**meta_extra["timings"], **timings}

        def write_model(path: Path) -> None:
            extra = {"training": info["training"]} if info.get("training") else {}
            if info.get("thresholds") is not None:
                extra["thresholds"] = info["thresholds"]
            save_checkpoint(path, model, arch=info["arch"], attributes=info["attributes"],
                            input_size=info["input_size"], normalisation=info["normalisation"],
                            inputs=info["inputs"], extra=extra)

        return draft.write(attributes=ds.attributes, colours=ds.colours,
                           images=_images_table(ds, data_dir), act=act, prd=prd, fea=fea,
                           emb=emb, meta=meta,
                           extra_files={"model.pt": write_model,
                                        REFERENCE_FILE: lambda path: np.save(path, reference)})


def infer_all(client, checkpoint, model, info, ds, **kw) -> tuple[np.ndarray, np.ndarray]:
    """predict() here, or sharded over the Dask client's workers (see sharded)."""
    if not sharded(client, pick_device(kw.get("device", "auto"))):
        return predict(model, info, ds, **kw)
    from pipeline.infer_shards import infer_on_cluster

    return infer_on_cluster(client, checkpoint, ds, **kw)


def sharded(client, dev: torch.device) -> bool:
    """Whether inference is sharded over a Dask client's workers: when there is a client and the
    model is on a CPU. A GPU infers here, faster than CPU workers would, each opening the GPU
    again; the client still places a large run's map points."""
    return client is not None and dev.type != "cuda"


TRAINING_KEPT = ("dataset", "steps", "epochs", "batch_size", "lr", "seed", "n_train",
                 "n_validation", "val_fraction", "device", "cpu_threads", "history")


def _model_meta(checkpoint, info: dict, multiscale: bool) -> dict:
    training = info.get("training") or {}
    return {"arch": info["arch"], "weights_sha256": file_digest(checkpoint),
            "source": str(checkpoint), "input_size": info["input_size"],
            "feature_dim": info["feature_dim"], "multiscale": multiscale,
            "normalisation": info["normalisation"],
            "training": {k: training[k] for k in TRAINING_KEPT if k in training}}
