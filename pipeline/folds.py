"""Out-of-fold predictions for the label audit: K models of a run's architecture and training
settings, each trained on the other folds and scoring only the images it never saw.

A model's probabilities on its own training images have partly learned the wrong labels, so they
hide the very errors the audit looks for. `run_folds` trains K copies (pipeline.train's `train`,
pipeline.infer's `predict`) and saves oof_prd.npy (N × A) and oof_fold.npy (N: the fold each
image was held out in) beside the run, with a note in run.json; `read_oof` returns them whole or
not at all. Its command is `python -m pipeline audit --run R --folds K`. The same job saves a
second, label-free view cross-fitted over the same folds (pipeline.image_view: boosted trees on
each full-size image's radial features) as oof_image.npy (`read_image_view`); `add_image_view`
makes it for a run whose out-of-fold predictions predate it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pipeline import jobs, store
from pipeline.corrections import labels_in_force
from pipeline.errors import PipelineError, Stopped
from pipeline.store.files import now, read_npy

OOF_PRD, OOF_FOLD, NOTE_KEY = "oof_prd.npy", "oof_fold.npy", "oof"
OOF_IMAGE = "oof_image.npy"  # the image view's out-of-fold probabilities (pipeline.image_view)
FOLD_SEED_STREAM = 7  # fold assignment's random stream, apart from the training seed's uses
# Share of one fold's time per stage (roughly its share on the CPU) for the one progress bar.
STAGES = {"load": (0.0, 0.05), "train": (0.05, 0.95), "infer": (0.95, 1.0)}


class Cancelled(PipelineError):
    """The folds job stopped because it was asked to; the run was left as it was."""


def fold_assignment(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Fold of each of n images (int8 in 0..k-1): a seeded permutation dealt round-robin, so the
    folds differ in size by at most one image."""
    check_folds(k, n)
    folds = np.empty(n, np.int8)
    folds[np.random.default_rng([seed, FOLD_SEED_STREAM]).permutation(n)] = np.arange(n) % k
    return folds


def check_folds(k, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise PipelineError(f"--folds must be a whole number of at least 2, not {k!r}")
    if k > n:
        raise PipelineError(f"--folds {k} is more than the run's {n} images; each fold needs "
                            "an image")


def fold_settings(run: store.Run, steps: int | None = None) -> dict:
    """The run's architecture and training settings (from scratch, not a fine-tune's):
    arch, input_size, steps, batch_size, lr, seed. `steps` shortens (or lengthens) training."""
    model = run.meta.get("model") or {}
    training = model.get("training") or {}
    parent = run.meta.get("parent_run")
    if run.meta.get("retrained") and parent:  # a fine-tune: its parent trained from scratch
        try:
            return fold_settings(store.get_run(parent, run.data_dir), steps)
        except PipelineError:
            pass
    missing = [k for k in ("steps", "batch_size", "lr") if k not in training]
    if not model.get("arch") or not model.get("input_size") or (missing and steps is None):
        raise PipelineError(f"run {run.id} does not record how its model was trained "
                            f"(run.json model.training lacks {', '.join(missing) or 'arch'})")
    return {"arch": str(model["arch"]), "input_size": int(model["input_size"]),
            "steps": int(steps if steps is not None else training["steps"]),
            "batch_size": int(training.get("batch_size", 32)),
            "lr": float(training.get("lr", 2e-3)), "seed": int(training.get("seed", 0))}


def run_dataset(run: store.Run) -> store.Dataset:
    """The dataset a run was made from, checked to hold the run's images in the same order."""
    dataset_id = run.meta.get("dataset")
    if not dataset_id:
        raise PipelineError(f"run {run.id} names no dataset (run.json 'dataset'); out-of-fold "
                            "models need its images")
    ds = store.open_dataset(dataset_id, run.data_dir)
    ids, ds_ids = run.images["image_id"].astype(str), ds.images["image_id"].astype(str)
    if len(ids) != len(ds_ids) or not (ids.to_numpy() == ds_ids.to_numpy()).all():
        raise PipelineError(f"run {run.id} does not hold the images of dataset {ds.id} in order")
    return ds


def subset(ds: store.Dataset, rows, act, *, train_rows=None) -> store.Dataset:
    """A view of `ds` with only `rows` (and those rows of `act` as its labels); the rows in
    `train_rows` form its "train" split and the others a "held-out" one. Reads the same files."""
    rows = np.asarray(rows)
    view = copy.copy(ds)
    images = ds.images.iloc[rows].reset_index(drop=True)
    if train_rows is not None:
        images["split"] = np.where(np.isin(rows, train_rows), "train", "held-out")
    view.images, view.act = images, np.asarray(act)[rows]
    view.true_act = None
    return view


def out_of_fold(ds: store.Dataset, act, folds: np.ndarray, settings: dict, scratch: Path, *,
                device: str = "auto", progress: bool = True,
                should_stop: Callable[[], bool] | None = None,
                on_progress: Callable[[int, str, float], None] | None = None) -> np.ndarray:
    """N × A probabilities, each row from the fold model that did not train on it."""
    oof = np.full(np.shape(act), np.nan, np.float32)
    for f in range(int(folds.max()) + 1):
        report = None if on_progress is None else (lambda s, x, f=f: on_progress(f, s, x))
        held, oof[held] = fold_predictions(ds, act, folds, f, settings, scratch, device=device,
                                           progress=progress, should_stop=should_stop,
                                           on_progress=report)
    if not np.isfinite(oof).all():
        raise PipelineError("an image was left without an out-of-fold prediction")
    return oof


def fold_predictions(ds: store.Dataset, act, folds: np.ndarray, f: int, settings: dict,
                     scratch: Path, *, device: str = "auto", progress: bool = True,
                     should_stop=None, on_progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(rows of fold f, their probabilities) from a model trained on every other fold's images
    with `settings` (no validation share: these models need no decision thresholds)."""
    from pipeline.checkpoints import load_checkpoint
    from pipeline.infer import predict
    from pipeline.train import train

    act = np.asarray(act)
    held, kept = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
    checkpoint = train(subset(ds, np.arange(len(ds)), act, train_rows=kept),
                       arch=settings["arch"], steps=settings["steps"],
                       input_size=settings["input_size"], batch_size=settings["batch_size"],
                       lr=settings["lr"], device=device, seed=settings["seed"] + f,
                       checkpoint_out=scratch / f"fold{f}.pt", act=act, val_fraction=0.0,
                       progress=progress, should_stop=should_stop, on_progress=on_progress)
    model, info = load_checkpoint(checkpoint, attributes=ds.attributes)
    prd, _ = predict(model, info, subset(ds, held, act), device=device, progress=progress,
                     should_stop=should_stop, on_progress=on_progress)
    return held, prd


# ---------------------------------------------------------------- stored with the run, whole


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _tmp_name(folder: Path, name: str) -> Path:
    """A temporary file named like store.atomic_dir's (pid inside), removed by `_sweep`."""
    return folder / f"{store.TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}"


def _sweep(folder: Path) -> None:
    """Remove temporary files a killed folds job left in the run directory."""
    for tmp in folder.glob(f"{store.TMP_PREFIX}*"):
        pid = tmp.name[len(store.TMP_PREFIX):].split("-", 1)[0]
        if tmp.is_file() and pid.isdigit() and not store.pid_running(int(pid)):
            tmp.unlink(missing_ok=True)


def write_oof(run: store.Run, oof_prd, folds, note: dict, image_view=None) -> None:
    """Save the out-of-fold probabilities and folds (and the image view's, when given) beside
    the run, then the note in run.json.

    Each file is written under a temporary name and renamed; run.json goes last and records the
    files' digests, so a reader (`read_oof`, `read_image_view`) takes them only when the note
    vouches for exactly these bytes: whole or not at all, even if the process dies between two
    renames.
    """
    n, a = len(run), len(run.attributes)
    oof_prd = store.check_array("out-of-fold prd", oof_prd, (n, a), unit=True).astype(np.float32)
    folds = store.check_array("folds", folds, (n,)).astype(np.int8)
    arrays = [(OOF_PRD, oof_prd), (OOF_FOLD, folds)]
    if image_view is not None:
        arrays.append((OOF_IMAGE, store.check_array("image view", image_view, (n, a),
                                                    unit=True).astype(np.float32)))
    folder = run.path
    _sweep(folder)
    staged = {}
    try:
        for name, array in arrays:
            staged[name] = _tmp_name(folder, name)
            with open(staged[name], "wb") as fh:
                np.save(fh, array)
        digests = {name: _digest(tmp) for name, tmp in staged.items()}
        meta = json.loads((folder / "run.json").read_text())
        meta[NOTE_KEY] = {**note, "files": digests}
        staged["run.json"] = _tmp_name(folder, "run.json")
        staged["run.json"].write_text(json.dumps(meta, indent=2) + "\n")
        for name, _ in arrays:
            os.replace(staged[name], folder / name)
        os.replace(staged["run.json"], folder / "run.json")
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    store.open_run.cache_clear()


def oof_note(run: store.Run) -> dict | None:
    """The out-of-fold note as run.json holds it now on disk (a memoised Run's meta predates a
    folds job that finished after it was opened)."""
    try:
        note = json.loads((run.path / "run.json").read_text()).get(NOTE_KEY)
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) and isinstance(note.get("files"), dict) else None


def read_oof(run: store.Run) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(oof_prd N × A, folds N, note) when the run has out-of-fold predictions whose files
    match the note in run.json; None otherwise (never made, or a job died half-way)."""
    note = oof_note(run)
    if note is None:
        return None
    try:
        if any(_digest(run.path / name) != note["files"].get(name) for name in (OOF_PRD,
                                                                               OOF_FOLD)):
            return None
        oof_prd = store.check_array("oof_prd.npy", read_npy(run.path / OOF_PRD),
                                    (len(run), len(run.attributes)), unit=True)
        folds = store.check_array("oof_fold.npy", read_npy(run.path / OOF_FOLD),
                                  (len(run),))
    except (OSError, ValueError, PipelineError):
        return None
    return oof_prd, folds, note


def read_image_view(run: store.Run, oof: tuple | None = None) -> np.ndarray | None:
    """The image view's out-of-fold probabilities (N × A) saved with the run's out-of-fold
    predictions, when the note vouches for them; None otherwise (made before it existed).
    `oof`: what read_oof gave the caller, so the predictions are not read and checked twice."""
    oof = read_oof(run) if oof is None else oof
    if oof is None or not oof[2]["files"].get(OOF_IMAGE):
        return None
    note = oof[2]
    try:
        if _digest(run.path / OOF_IMAGE) != note["files"][OOF_IMAGE]:
            return None
        return store.check_array(OOF_IMAGE, read_npy(run.path / OOF_IMAGE),
                                 (len(run), len(run.attributes)), unit=True)
    except (OSError, ValueError, PipelineError):
        return None


def image_view_of(ds: store.Dataset, act, folds: np.ndarray, *, seed: int = 0,
                  progress: bool = True, should_stop=None) -> np.ndarray:
    """The image view's out-of-fold probabilities of `act` over `folds` (pipeline.image_view)."""
    from pipeline import image_view

    features = image_view.dataset_features(ds, progress=progress, should_stop=should_stop)
    return image_view.out_of_fold_view(features, act, folds, seed=seed)


def add_image_view(data_dir, run_id: str, *, progress: bool = True) -> dict:
    """Make and save the image view of a run whose out-of-fold predictions lack it, over their
    folds and the labels in force; return the note. An error when the run has none."""
    data_dir = store.resolve_data_dir(data_dir)
    run = store.get_run(run_id, data_dir)
    found = read_oof(run)
    if found is None:
        raise PipelineError(f"run {run.id} has no out-of-fold predictions; make them with "
                            f"`python -m pipeline audit --run {run.id} --folds 5`")
    oof, folds, note = found
    with jobs.run_lock(data_dir, run.id, job="given its image view"):
        view = image_view_of(run_dataset(run), labels_in_force(run, data_dir).act, folds,
                             seed=int(note.get("fold_seed", 0)), progress=progress)
        write_oof(run, oof, folds, {k: v for k, v in note.items() if k != "files"},
                  image_view=view)
    return oof_note(store.get_run(run.id, data_dir))


# ---------------------------------------------------------------- the job


class _Bar:
    """One progress bar over all folds, fed by each fold's on_progress(stage, fraction)."""

    def __init__(self, k: int, enabled: bool, lock: Path | None, on_progress=None):
        self.k, self.lock, self.on_progress, self.touched = k, lock, on_progress, 0.0
        self.bar = tqdm(total=1000, desc="folds", disable=not enabled,
                        bar_format="{desc:<14}{percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def __call__(self, fold: int, stage: str, fraction: float) -> None:
        start, end = STAGES.get(stage, (None, None))
        if start is None:
            return
        if self.lock and time.time() - self.touched > jobs.HEARTBEAT_S:
            jobs.touch(self.lock)
            self.touched = time.time()
        done = (fold + start + (end - start) * min(max(fraction, 0.0), 1.0)) / self.k
        self.bar.set_description_str(f"fold {fold + 1}/{self.k}", refresh=False)
        if int(1000 * done) > self.bar.n:
            self.bar.update(int(1000 * done) - self.bar.n)
        if self.on_progress:
            self.on_progress(f"fold {fold + 1}/{self.k}: {stage}", done)

    def close(self) -> None:
        self.bar.close()


def run_folds(data_dir, run_id: str, k: int, *, steps: int | None = None, seed: int = 0,
              device: str = "auto", progress: bool = True,
              should_stop: Callable[[], bool] | None = None,
              on_progress: Callable[[str, float], None] | None = None) -> dict:
    """Train the K fold models of a run and save its out-of-fold predictions; return the note.

    The run's labels in force (corrections applied) are what the fold models learn. The job
    holds the run's lock; should_stop(), jobs.request_cancel() or Ctrl-C stop it with the run
    left exactly as it was (the fold models live in a scratch directory removed on exit).
    """
    data_dir = store.resolve_data_dir(data_dir)
    run = store.get_run(run_id, data_dir)
    check_folds(k, len(run))
    settings = fold_settings(run, steps)
    ds = run_dataset(run)
    labels = labels_in_force(run, data_dir)
    folds = fold_assignment(len(run), k, seed)
    started, stop = time.time(), should_stop or (lambda: False)

    def stopping() -> bool:
        return stop() or jobs.cancel_requested(data_dir, run.id, started)

    try:
        with (jobs.run_lock(data_dir, run.id, job="audited with out-of-fold models") as lock,
              store.scratch_dir(data_dir / store.RUNS, "folds") as scratch):
            bar = _Bar(k, progress, lock, on_progress)
            try:
                oof = out_of_fold(ds, labels.act, folds, settings, scratch, device=device,
                                  progress=False, should_stop=stopping, on_progress=bar)
            finally:
                bar.close()
            view = image_view_of(ds, labels.act, folds, seed=seed, progress=progress,
                                 should_stop=stopping)
            note = {"folds": int(k), "fold_seed": int(seed), **settings,
                    "corrected_labels": int(labels.corrected.sum()), "created": now(),
                    "seconds": round(time.time() - started, 1)}
            write_oof(run, oof, folds, note, image_view=view)
    except Stopped as err:
        raise Cancelled(f"the out-of-fold models of run {run.id} were cancelled; the run is "
                        "unchanged") from err
    finally:
        if jobs.cancel_requested(data_dir, run.id, started):
            jobs.cancel_path(data_dir, run.id).unlink(missing_ok=True)
    return oof_note(store.get_run(run.id, data_dir))
