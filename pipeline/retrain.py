"""Retraining on corrected labels: fine-tune a run's model, re-infer, re-embed, write a new run.

One job per run at a time (pipeline.jobs); a cancelled or failed job leaves every run untouched.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import corrections, jobs, metrics, store
from pipeline.before_after import ParentMaps
from pipeline.errors import PipelineError, Stopped

FINE_TUNE_EPOCHS = 3
MAX_EPOCHS = 200  # the most a dashboard user may ask for (the form's limit, checked by the server)
FINE_TUNE_LR_FACTOR = 0.25  # fine-tuning starts from trained weights: a gentler peak rate
EXIT_CANCELLED = jobs.EXIT_CANCELLED  # the command line's exit status for a cancelled job
# Share of the whole job each stage reported by train/make_run takes (measured on CPU runs).
STAGES = {"load": (0.0, 0.05), "train": (0.05, 0.65), "infer": (0.65, 0.8),
          "embed": (0.8, 0.99)}
STAGE_NAMES = {"load": "loading images", "train": "fine-tuning", "infer": "re-inferring",
               "embed": "re-embedding", "done": "done"}


# ---------------------------------------------------------------- the job


def corrected_dataset_labels(data_dir, run: store.Run, snapshot: pd.DataFrame | None = None):
    """The run's dataset, its labels with the corrections applied, and how many cells changed.

    `snapshot` (columns image_id, attribute, value) is the corrections in force as the web app
    read them; without it they are read from <data_dir>/corrections.sqlite here. SQLite in WAL
    mode must not be shared across machines, so a job on a Celery worker gets a snapshot.
    """
    dataset_id = run.meta.get("dataset")
    if not dataset_id:
        raise PipelineError(f"run {run.id} names no dataset (run.json 'dataset'); cannot retrain")
    ds = store.open_dataset(dataset_id, data_dir)
    run_ids, ds_ids = run.images["image_id"].astype(str), ds.images["image_id"].astype(str)
    if len(run_ids) != len(ds_ids) or not (run_ids.to_numpy() == ds_ids.to_numpy()).all():
        raise PipelineError(f"run {run.id} does not hold the images of dataset {ds.id} in "
                            "order; retraining needs the run made from the whole dataset")
    if snapshot is None:
        snapshot = corrections.active(data_dir, ds.id)
    act, mask = corrections.apply(ds.act, ds_ids, ds.attributes, snapshot)
    return ds, act, int(mask.sum())


def read_snapshot(path) -> pd.DataFrame:
    """A corrections snapshot written by `write_snapshot` (a JSON list of records)."""
    try:
        records = json.loads(Path(path).read_text())
        frame = pd.DataFrame(records, columns=["image_id", "attribute", "value"])
        frame["value"] = frame["value"].astype(int)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise PipelineError(f"corrections snapshot {path} is unreadable: {err}") from err
    if not frame["value"].isin((0, 1)).all():
        raise PipelineError(f"corrections snapshot {path} holds labels other than 0 and 1")
    return frame


def snapshot_records(data_dir, dataset: str) -> list[dict]:
    """The corrections in force for a dataset as plain records (to hand to a job)."""
    now = corrections.active(data_dir, dataset)
    return [{"image_id": str(i), "attribute": str(a), "value": int(v)}
            for i, a, v in now[["image_id", "attribute", "value"]].itertuples(index=False)]


def fine_tune_settings(run: store.Run, epochs=None, lr=None, batch_size=None) -> dict:
    """Training settings for the fine-tune: what the run's model was trained with, gentler."""
    model = run.meta.get("model") or {}
    training = model.get("training") or {}
    input_size = model.get("input_size")
    if not input_size:
        raise PipelineError(f"run {run.id} does not record its model's input size")
    return {
        "epochs": int(epochs or FINE_TUNE_EPOCHS),
        "lr": float(lr or float(training.get("lr", 2e-3)) * FINE_TUNE_LR_FACTOR),
        "batch_size": int(batch_size or training.get("batch_size", 32)),
        "input_size": int(input_size),
        "seed": int(training.get("seed", 0)),
    }


class Cancelled(PipelineError):
    """The job stopped because it was asked to; nothing of it was kept."""


class _Progress:
    """Maps the stages of train/make_run to one 0..1 fraction, and keeps the lock alive."""

    def __init__(self, on_progress, lock: Path | None):
        self.on_progress, self.lock, self.last_touch = on_progress, lock, 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        start, end = STAGES.get(stage, (None, None))
        if start is None:  # a sub-stage we do not know: keep the overall figure where it is
            return
        if self.lock and time.time() - self.last_touch > jobs.HEARTBEAT_S:
            jobs.touch(self.lock)
            self.last_touch = time.time()
        if self.on_progress:
            total = start + (end - start) * min(max(float(fraction), 0.0), 1.0)
            self.on_progress(STAGE_NAMES.get(stage, stage), total)


def retrain_run(data_dir, run_id: str, *, epochs: int | None = None, lr: float | None = None,
                batch_size: int | None = None, device: str = "auto",
                new_run_id: str | None = None, progress: bool = True,
                snapshot: pd.DataFrame | None = None,
                should_stop: Callable[[], bool] | None = None,
                on_progress: Callable[[str, float], None] | None = None,
                max_jobs: int | None = None, scheduler: str | None = None) -> Path:
    """Fine-tune `run_id`'s model on the corrected labels and write the result as a new run.

    The corrections come from `snapshot` when given, else from the data directory's database.
    With `max_jobs`, the job refuses to start while that many others run on the data directory.
    `scheduler` (default $XRAE_DASK_SCHEDULER, see pipeline.cluster) is where inference and
    embedding run. The new maps start from the parent run's (pipeline.before_after), so an image
    stays where it was unless the fine-tuned model sees it differently.

    on_progress(stage name, fraction of the whole job in 0..1). should_stop() → True, or a
    jobs.request_cancel() for the run, stops the job with Cancelled (a PipelineError). A stopped or
    failed job leaves no new run, no temporary file and no lock; existing runs are only read.
    """
    data_dir = store.resolve_data_dir(data_dir)
    run = store.get_run(run_id, data_dir)
    if run.checkpoint is None:
        raise PipelineError(f"run {run_id} has no model.pt; only runs made from a checkpoint "
                            "can be retrained")
    started, stop = time.time(), should_stop or (lambda: False)
    settings = fine_tune_settings(run, epochs, lr, batch_size)

    def stopping() -> bool:
        return stop() or jobs.cancel_requested(data_dir, run.id, started)

    try:
        with (jobs.run_lock(data_dir, run.id) as lock,
              store.scratch_dir(data_dir / store.RUNS, "retrain") as scratch):
            jobs.check_job_room(data_dir, max_jobs, holding=True)
            path = _fine_tune_and_write(
                data_dir, run, settings, scratch, device=device, progress=progress,
                new_run_id=new_run_id, snapshot=snapshot, should_stop=stopping,
                report=_Progress(on_progress, lock), scheduler=scheduler)
    except Stopped as err:
        raise Cancelled(f"retraining of run {run.id} was cancelled; no run was written") from err
    finally:
        if jobs.cancel_requested(data_dir, run.id, started):  # the request was for this job: done
            jobs.cancel_path(data_dir, run.id).unlink(missing_ok=True)
    if on_progress:
        on_progress(STAGE_NAMES["done"], 1.0)
    return path


def _fine_tune_and_write(data_dir: Path, run: store.Run, settings: dict, scratch: Path, *,
                         device, progress, new_run_id, snapshot, should_stop, report,
                         scheduler=None) -> Path:
    from pipeline.infer import make_run
    from pipeline.train import train

    ds, act, n_corrected = corrected_dataset_labels(data_dir, run, snapshot)
    t0 = time.perf_counter()
    checkpoint = train(ds, arch=run.meta["model"].get("arch", "resnet18"),
                       epochs=settings["epochs"], input_size=settings["input_size"],
                       batch_size=settings["batch_size"], lr=settings["lr"], device=device,
                       seed=settings["seed"], checkpoint_out=scratch / "model.pt",
                       init_checkpoint=run.checkpoint, act=act, progress=progress,
                       should_stop=should_stop, on_progress=report)
    meta = {"parent_run": run.id,
            "retrained": {"from_run": run.id, "corrected_labels": n_corrected,
                          "corrections": "snapshot" if snapshot is not None else
                          corrections.FILE_NAME, **settings},
            "timings": {"fine_tune_s": round(time.perf_counter() - t0, 2)}}
    return make_run(data_dir, ds, checkpoint, act=act, device=device,
                    run_id=new_run_id or store.new_id(f"{ds.id} retrained"), meta_extra=meta,
                    progress=progress, should_stop=should_stop, on_progress=report,
                    scheduler=scheduler, parent=ParentMaps.of(run))




# ---------------------------------------------------------------- before / after


def compare_runs(before: store.Run, after: store.Run, act=None,
                 threshold: float | None = None) -> pd.DataFrame:
    """Per-attribute AP, precision, recall, F1 of two runs judged against the same labels.

    `act` (default: the newer run's labels, i.e. with corrections) is the yardstick for both,
    so a change in a score is the model's, not the labels'. Each run decides at its own
    validated per-attribute thresholds (0.5 where it has none), as the dashboard does by
    default, unless one `threshold` is given for both. Scores are on the test split when the
    runs have one, else on every image. Rows: attributes, then 'mean' (macro, NaN skipped).
    """
    if list(before.attributes) != list(after.attributes) or len(before) != len(after):
        raise PipelineError(f"runs {before.id} and {after.id} do not share images and attributes")
    act = np.asarray(after.act if act is None else act)
    rows = np.asarray(after.images["split"]) == "test"
    rows = rows if rows.any() else np.ones(len(after), bool)
    table = {"attribute": list(after.attributes) + ["mean"]}
    for name, run in (("before", before), ("after", after)):
        scores = metrics.evaluate(act[rows], np.asarray(run.prd)[rows],
                                  _decided_at(run) if threshold is None else threshold)
        per = scores["per_attribute"]
        for key, label in (("AP", "AP"), ("precision", "P"), ("recall", "R"), ("f1", "F1")):
            values = list(per[key])
            table[f"{label} {name}"] = values + [metrics.nanmean(values)]
    return pd.DataFrame(table)


def _decided_at(run: store.Run) -> np.ndarray | float:
    own = metrics.run_thresholds(run.meta, list(run.attributes))
    return 0.5 if own is None else own


# ---------------------------------------------------------------- from a web worker


def retrain_in_subprocess(data_dir, run_id: str, *, epochs: int | None = None,
                          device: str = "auto", snapshot: list[dict] | None = None,
                          on_progress: Callable[[str, float], None] | None = None,
                          max_jobs: int | None = None) -> Path:
    """`retrain_run` in a fresh Python process, relaying its progress; returns the new run.

    Dash's diskcache jobs are forked from the web server. A forked child that runs torch hangs
    when the parent had used OpenMP threads, and must never initialise CUDA; a fresh
    interpreter has neither problem and uses every core. Killing this process's children (as
    Dash's cancel does) ends the job; so does jobs.request_cancel, which it polls.
    """
    data_dir = store.resolve_data_dir(data_dir)
    cmd = [sys.executable, "-m", "pipeline", "retrain", "--run", store.check_id(run_id),
           "--data-dir", str(data_dir), "--device", device, "--json-progress"]
    if epochs:
        cmd += ["--epochs", str(int(epochs))]
    if max_jobs:
        cmd += ["--max-jobs", str(int(max_jobs))]
    with tempfile.TemporaryDirectory(prefix="xrae-retrain-") as scratch:
        if snapshot is not None:
            path = Path(scratch) / "corrections.json"
            path.write_text(json.dumps(list(snapshot)))
            cmd += ["--corrections-json", str(path)]
        return _run_job(cmd, data_dir, on_progress)


def _run_job(cmd: list[str], data_dir: Path, on_progress) -> Path:
    code, result, message = jobs.run_child(cmd, on_progress)
    if code == 0 and result.get("run"):
        return data_dir / store.RUNS / result["run"]
    if code == EXIT_CANCELLED:
        raise Cancelled(message.removeprefix("cancelled: "))
    raise PipelineError(message.removeprefix("error: ") or f"retraining exited with {code}")
