"""Inference over a Dask cluster: the dataset cut into row ranges, each run by infer.predict on a
worker that loads the checkpoint once and keeps it for the shards that follow.

The checkpoint and the dataset are read by path, so a remote worker must see the same files
(a shared file system), as it would on a SLURM cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline import cluster, store

# Per worker process: (checkpoint path, mtime, attributes) → (model, info), and datasets by path.
# A rewritten checkpoint has a new mtime, so a stale model is never reused.
_MODELS: dict[tuple, tuple] = {}
_DATASETS: dict[str, store.Dataset] = {}


class RowView:
    """Rows start..stop of a dataset, seen as a dataset of their own by infer.predict."""

    def __init__(self, ds: store.Dataset, rows: range):
        self.ds, self.rows = ds, rows
        self.attributes = ds.attributes

    def load_image(self, i: int) -> np.ndarray:
        return self.ds.load_image(self.rows[i])

    def load_images(self, rows) -> list[np.ndarray]:
        return self.ds.load_images([self.rows[i] for i in rows])

    def __len__(self) -> int:
        return len(self.rows)


def dataset_rows(ds: store.Dataset, rows: range) -> RowView:
    """The one place a shard reads images from the store."""
    return RowView(ds, rows)


def _cached_model(checkpoint: str, attributes: tuple[str, ...]):
    from pipeline.checkpoints import load_checkpoint

    key = (str(Path(checkpoint).resolve()), os.stat(checkpoint).st_mtime_ns, attributes)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker at a time: a new checkpoint replaces the old
        _MODELS[key] = load_checkpoint(checkpoint, attributes=list(attributes))
    return _MODELS[key]


def prepare_rows(path: str, rows, info: dict, multiscale: bool
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """inputs.model_input of these rows of the dataset at `path`, in a process pool's worker
    (infer.prepared_batches); as arrays, since torch would hand tensors over in shared memory,
    a file per tensor. Kept here, in a light module: a worker starts by importing it."""
    import torch

    from pipeline.inputs import model_input

    torch.set_num_threads(1)
    x, profile = model_input(cached_dataset(path).load_images(rows), info, multiscale)
    return x.numpy(), None if profile is None else profile.numpy()


def cached_dataset(path: str) -> store.Dataset:
    if path not in _DATASETS:
        _DATASETS[path] = store.Dataset(Path(path))
    return _DATASETS[path]


def _worker_threads() -> None:
    """Torch uses as many threads as the worker was given (not every core of the machine)."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return
    try:
        from distributed import get_worker

        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except ValueError:  # not on a worker (called directly): leave torch as it is
        pass


def infer_shard(start: int, stop: int, *, checkpoint: str, dataset: str, device: str,
                multiscale: bool, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """PRD and FEA of rows start..stop, computed on a worker."""
    from pipeline.infer import predict

    _worker_threads()
    ds = cached_dataset(dataset)
    model, info = _cached_model(checkpoint, tuple(ds.attributes))
    return predict(model, info, dataset_rows(ds, range(start, stop)), device=device,
                   batch_size=batch_size, multiscale=multiscale, progress=False)


def infer_on_cluster(client, checkpoint, ds: store.Dataset, *, device: str = "auto",
                     batch_size: int = 64, multiscale: bool = False, progress: bool = True,
                     on_progress=None, should_stop=None, shard_size: int | None = None,
                     out: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """infer.infer() of every image of `ds`, sharded over the client's workers; each shard's
    outputs are written into `out` (PRD, FEA; by default made here) as the shard arrives."""
    size = shard_size or cluster.shard_size(len(ds), cluster.n_workers(client))
    parts = cluster.shards(len(ds), size)
    prd, fea = out if out is not None else (None, None)

    def arrived(i: int, result: tuple[np.ndarray, np.ndarray]) -> None:
        nonlocal prd, fea
        if prd is None:  # the feature width is known from the first shard
            prd = np.empty((len(ds), result[0].shape[1]), np.float32)
            fea = np.empty((len(ds), result[1].shape[1]), np.float32)
        rows = slice(parts[i].start, parts[i].stop)
        prd[rows], fea[rows] = result

    cluster.gather(
        client, infer_shard, [(r.start, r.stop) for r in parts], desc="infer",
        progress=progress, on_progress=on_progress, should_stop=should_stop,
        sizes=[len(r) for r in parts], checkpoint=str(Path(checkpoint).resolve()),
        dataset=str(ds.path.resolve()), device=device, multiscale=multiscale,
        batch_size=batch_size, on_result=arrived)
    return prd, fea
