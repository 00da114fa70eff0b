"""`python -m pipeline add`: new images put on an existing run's three maps, written as a new run
whose parent is the old one; every old point keeps its coordinates bit for bit.

The images are ingested into a dataset of their own (pipeline/ingest.py), inferred with the run's
checkpoint and placed by openTSNE's transform against the run's reference embedding (rebuilt from
its reference rows and their coordinates). Without a labels CSV the model's own calls at the
run's thresholds stand in as the new images' ACT (the run records that they are predicted).
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import cluster, metrics, store
from pipeline.embed import SPACES
from pipeline.errors import PipelineError
from pipeline.reference import REFERENCE_FILE, REFERENCE_N, place, rebuild
from pipeline.store.files import BLOCK_ROWS, read_npy

ADDED_SPLIT = "added"
KEPT_META = ("id", "created", "pipeline_version", "n_images", "n_attributes", "timings",
             "parent_run", "added", "scheduler", "embedded_from", "retrained")


def add_images(data_dir, run_id: str, images_dir, labels=None, *, dataset_id: str | None = None,
               new_run_id: str | None = None, device: str = "auto", scheduler: str | None = None,
               progress: bool = True, **ingest_options) -> Path:
    """Ingest `images_dir` (with `labels`, a CSV, when given), infer, place, write a new run.

    A failure at any step leaves no new run and no new dataset behind.
    """
    data_dir = store.resolve_data_dir(data_dir)
    run = store.get_run(run_id, data_dir)
    if run.checkpoint is None:
        raise PipelineError(f"run {run.id} has no model.pt; images can be added only to a run "
                            "made from a checkpoint")
    reference = reference_rows(run)
    cluster.resolve(scheduler, 0)  # a bad scheduler is refused before anything is read
    if labels is not None:
        _check_attributes(labels, run)
    dataset_id = store.check_id(dataset_id or store.new_id(f"{run.id[-24:]} added"), "dataset")
    started = time.perf_counter()
    ds = _ingest(data_dir, run, images_dir, labels, dataset_id, progress, ingest_options)
    timings = {"ingest_s": round(time.perf_counter() - started, 2)}
    try:
        return _infer_place_write(data_dir, run, ds, reference, labelled=labels is not None,
                                  new_run_id=new_run_id, device=device, scheduler=scheduler,
                                  progress=progress, timings=timings)
    except BaseException:
        shutil.rmtree(ds.path, ignore_errors=True)  # the new images belong to no run: gone
        raise


def reference_rows(run: store.Run) -> np.ndarray:
    """The rows the run's maps were fitted on: its stored reference, else (older runs) all rows
    of a run small enough to have been embedded whole."""
    file = run.path / REFERENCE_FILE
    if file.is_file():
        rows = read_npy(file)
        if rows.ndim != 1 or len(rows) == 0 or rows.min() < 0 or rows.max() >= len(run):
            raise PipelineError(f"{file} does not hold row numbers of run {run.id}")
        return rows.astype(np.int64)
    if len(run) > REFERENCE_N:
        raise PipelineError(f"run {run.id} has no {REFERENCE_FILE}; re-embed it "
                            "(python -m pipeline embed) before adding images")
    return np.arange(len(run))


def _ingest(data_dir: Path, run: store.Run, images_dir, labels, dataset_id: str, progress: bool,
            options: dict) -> store.Dataset:
    from pipeline.ingest import ingest

    with tempfile.TemporaryDirectory(prefix="xrae-add-") as scratch:
        csv_file = Path(labels) if labels is not None else _blank_labels(
            Path(images_dir), run.attributes, Path(scratch) / "labels.csv")
        result = ingest(images_dir, csv_file, data_dir, dataset_id=dataset_id, test_fraction=0.0,
                        progress=progress, **options)
    return store.open_dataset(result.path)


def _check_attributes(labels, run: store.Run) -> None:
    from pipeline.labels import read_labels

    found = read_labels(labels).attributes
    if list(found) != list(run.attributes):
        raise PipelineError(f"labels CSV {labels} has attributes {found}, but run {run.id} has "
                            f"{run.attributes}")


def _blank_labels(images_dir: Path, attributes: list[str], out: Path) -> Path:
    """A labels CSV naming every image file of the folder, all labels 0 (replaced later)."""
    from pipeline.ingest import ImageIndex

    files = ImageIndex(images_dir).files
    if not files:
        raise PipelineError(f"images folder {images_dir} holds no image file we can read")
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", *attributes])
        writer.writerows([rel, *[0] * len(attributes)] for rel in files)
    return out


def _infer_place_write(data_dir: Path, run: store.Run, ds: store.Dataset, reference, *,
                       labelled: bool, new_run_id, device, scheduler, progress,
                       timings: dict) -> Path:
    from pipeline.checkpoints import load_checkpoint
    from pipeline.infer import infer_all

    started = time.perf_counter()
    model, info = load_checkpoint(run.checkpoint, attributes=ds.attributes)
    n_old, n = len(run), len(run) + len(ds)
    if info["feature_dim"] != run.fea.shape[1]:
        raise PipelineError(f"run {run.id}'s model gives {info['feature_dim']} features, but "
                            f"its fea.npy holds {run.fea.shape[1]}")
    # The new run's PRD and FEA are made in its draft on disk, the old rows copied a block at a
    # time and the new ones written by inference: a million images' features are 1.8 GB.
    with (store.run_draft(data_dir, new_run_id, f"{run.id[-24:]} added") as draft,
          cluster.maybe_client(cluster.resolve(scheduler, len(ds))) as client):
        prd = draft.array("prd", (n, len(run.attributes)), np.float32)
        fea = draft.array("fea", (n, run.fea.shape[1]), np.float32)
        for first in range(0, n_old, BLOCK_ROWS):
            rows = slice(first, min(first + BLOCK_ROWS, n_old))
            prd[rows], fea[rows] = run.prd[rows], run.fea[rows]
        timings["cluster_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        infer_all(client, run.checkpoint, model, info, ds, device=device, progress=progress,
                  out=(prd[n_old:], fea[n_old:]))
        timings["infer_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        act_new = ds.act if labelled else _predicted_labels(run, prd[n_old:])
        new = {"act": act_new, "fea": fea[n_old:], "prd": prd[n_old:]}
        stages = _Stages(progress)
        emb = {}
        for s in SPACES:
            stages.start(f"place on {s.upper()}")
            emb[s] = np.concatenate([np.asarray(run.emb(s)),
                                     _placed(run, s, reference, new[s], client, timings)])
        timings["place_s"] = round(time.perf_counter() - started, 2)
        act = np.concatenate([np.asarray(run.act), act_new])
        stages.start("neighbourhoods")
        neighbourhoods = _neighbourhoods(run, act, fea, prd, timings)
        stages.start("write the run")
        meta = {k: v for k, v in run.meta.items() if k not in KEPT_META}
        meta.update(parent_run=run.id, timings=timings, added={
            "dataset": ds.id, "n_images": len(ds),
            "labels": "annotated" if labelled else "predicted"})
        if labelled:
            meta["added"]["metrics"] = metrics.evaluate(new["act"], new["prd"], _thresholds(run))
        written = draft.write(
            attributes=run.attributes, colours=run.colours, images=_images(run, ds),
            act=act, prd=prd, fea=fea, emb=emb, meta=meta,
            extra_files={"model.pt": lambda path: shutil.copyfile(run.checkpoint, path),
                         REFERENCE_FILE: lambda path: np.save(path, reference)},
            disagreement=neighbourhoods)
    stages.close()
    return written


class _Stages:
    """One bar over what follows inference, a step a stage, named as it starts: placing on each
    map, the neighbourhoods, writing the run. At a million old images they take a minute or
    more, which would otherwise pass without a word after inference's bar."""

    COUNT = 5  # three maps, the neighbourhoods, the writing

    def __init__(self, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.COUNT, desc="add", disable=not enabled, leave=False,
                        bar_format="{desc:<24}{n_fmt}/{total_fmt} stages, {elapsed}")
        self.started = False

    def start(self, name: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_description_str(f"add: {name}")

    def close(self) -> None:
        self.bar.update(1)
        self.bar.close()


def _neighbourhoods(run: store.Run, act, fea, prd, timings: dict):
    """The new run's neighbourhoods, extended from those the old run stores (its old images keep
    their feature basis; the search grows with old × new images, not all², so a run past
    disagreement.STORED_UP_TO keeps them too). None (computed whole when the run is written, if
    it is not too large) for an old run that stores none, or one too small to have had the full
    number of neighbours."""
    from pipeline.analyses import disagreement

    parent = disagreement.stored(run)
    if parent is None or parent.found.shape[2] != min(disagreement.DEFAULT_K, len(act) - 1):
        return None
    started = time.perf_counter()
    made = disagreement.extended(parent, act, fea, prd)
    timings["disagreement_s"] = round(time.perf_counter() - started, 2)
    return made


def _placed(run: store.Run, space: str, reference: np.ndarray, x_new: np.ndarray,
            client, timings: dict) -> np.ndarray:
    """The new rows' coordinates on the run's map of `space` (seconds to rebuild the reference
    and to place the rows added to `timings`)."""
    setting = run.meta.get("embedding") or {}
    x_old = {"act": run.act, "fea": run.fea, "prd": run.prd}[space]
    started = time.perf_counter()
    embedding, prepare_new = rebuild(
        np.asarray(x_old[reference]), np.asarray(run.emb(space))[reference], space=space,
        seed=int(setting.get("seed", 0)), perplexity=float(setting.get("perplexity", 30.0)))
    timings[f"rebuild_{space}_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    placed = place(embedding, prepare_new(x_new), client)
    timings[f"transform_{space}_s"] = round(time.perf_counter() - started, 2)
    return placed


def _thresholds(run: store.Run) -> np.ndarray | float:
    """The run's per-attribute thresholds, else its global threshold."""
    chosen = run.meta.get("thresholds")
    if isinstance(chosen, dict) and set(chosen) == set(run.attributes):
        return np.array([float(chosen[a]) for a in run.attributes])
    return float(run.meta.get("threshold", 0.5))


def _predicted_labels(run: store.Run, prd: np.ndarray) -> np.ndarray:
    """The model's calls at the run's thresholds: the ACT of images added without labels."""
    return (prd >= _thresholds(run)).astype(np.uint8)


def _images(run: store.Run, ds: store.Dataset) -> pd.DataFrame:
    """The run's image table followed by the new images (split "added"); new ids that clash
    with old ones are prefixed with the new dataset's id."""
    old = run.images.drop(columns=["index"], errors="ignore")
    new = ds.images.copy()
    new["split"] = ADDED_SPLIT
    ids = new["image_id"].astype(str)
    if ids.isin(set(old["image_id"].astype(str))).any():
        new["image_id"] = ds.id + "/" + ids
    return pd.concat([old, new], ignore_index=True)
