"""Moving a data directory of the layout before the chunk store (one .npy file per image) into
it, whole or not at all.

1. Build: every dataset without an images.zarr is written again, image by image, through
   DatasetWriter into a staging directory (`<data dir>/.tmp-<pid>-migrate-…`, swept like any
   writer's leftovers if the process dies): its full-size images go to the chunk store
   (losslessly: the float32 pixels read back bit for bit), its labels, attributes, metadata and
   extra table columns are kept. Every run whose images table names one of those .npy files
   gets a new table naming the same image in the chunk store. Nothing live is touched yet.
2. Switch: the staging directory is renamed `<data dir>/.migrate-switch` (never swept); each
   old dataset folder and run table is moved into it and the new one moved into place. A switch
   cut short is completed by the next `migrate` (each step can be redone).
3. Only then is `.migrate-switch`, with the old files, removed.

Datasets of the old layout open without migrating (pipeline.store.located).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.store.chunks import STORE
from pipeline.store.datasets import Dataset, DatasetWriter
from pipeline.store.files import (
    DATASETS,
    RUNS,
    TMP_PREFIX,
    resolve_data_dir,
    sweep_stale,
    write_json,
)

SWITCH = ".migrate-switch"  # the staging directory while it is being switched in
PLAN = "plan.json"
# Columns DatasetWriter sets itself; every other column of an old table is carried over.
OWN_COLUMNS = {"index", "image_id", "path", "root", "frame", "reader", "split", "source",
               "height", "width"}
# What DatasetWriter writes anew (and the old image files); anything else in an old dataset's
# folder is copied over as it is.
REWRITTEN = {"images", "images.parquet", "act.npy", "true_act.npy", "attributes.json",
             "dataset.json"}


@dataclass(frozen=True)
class Migrated:
    datasets: list[str]
    runs: list[str]
    images: int
    resumed: bool  # an interrupted switch was completed first


def old_datasets(data_dir: Path) -> list[Path]:
    """The dataset folders of the layout before the chunk store (no images.zarr)."""
    root = data_dir / DATASETS
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if not p.name.startswith(".") and p.is_dir()
            and (p / "dataset.json").is_file() and not (p / STORE).exists()]


def migrate(data_dir, progress: bool = True) -> Migrated:
    """Move every old-layout dataset of `data_dir` (and the runs naming its images) into the
    chunk store; refuse a directory with nothing to move."""
    data_dir = resolve_data_dir(data_dir)
    if not data_dir.is_dir():
        raise PipelineError(f"data directory {data_dir} does not exist")
    resumed = (data_dir / SWITCH).is_dir()
    if resumed:
        _switch(data_dir)
    sweep_stale(data_dir)
    folders = old_datasets(data_dir)
    if not folders:
        if resumed:
            return Migrated([], [], 0, True)
        if not any((data_dir / DATASETS).glob("*/dataset.json")):
            raise PipelineError(f"data directory {data_dir} holds no datasets: nothing to migrate")
        raise PipelineError(f"data directory {data_dir} is already migrated: no dataset in it "
                            "keeps one .npy file per image")
    staging = data_dir / f"{TMP_PREFIX}{os.getpid()}-migrate-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        images, moved = _build(data_dir, staging, folders, progress)
        runs = _build_runs(data_dir, staging, moved)
        write_json(staging / PLAN, {"datasets": [f.name for f in folders], "runs": runs})
        os.rename(staging, data_dir / SWITCH)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _switch(data_dir)
    return Migrated([f.name for f in folders], runs, images, resumed)


def _build(data_dir: Path, staging: Path, folders: list[Path],
           progress: bool) -> tuple[int, dict[Path, str]]:
    """Write each old dataset anew under staging; return the image count and, for each old
    image file (resolved), the path its row has now."""
    datasets = [Dataset(f) for f in folders]
    moved: dict[Path, str] = {}
    total = sum(len(d) for d in datasets)
    with tqdm(total=total, desc="migrate", unit="img", disable=not progress) as bar:
        for dataset in datasets:
            moved.update(_build_dataset(data_dir, staging, dataset, bar))
            _carry_over(dataset.path, staging / DATASETS / dataset.path.name)
    return total, moved


def _carry_over(old: Path, new: Path) -> None:
    for entry in old.iterdir():
        if entry.name in REWRITTEN:
            continue
        if entry.is_dir():
            shutil.copytree(entry, new / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, new / entry.name, follow_symlinks=False)


def _build_dataset(data_dir: Path, staging: Path, dataset: Dataset, bar) -> dict[Path, str]:
    # Named by its folder, as the image locators and every reader name it (dataset.json's id
    # follows).
    meta = {k: v for k, v in dataset.meta.items() if k not in ("id", "n_images")}
    meta["migrated"] = "from one .npy file per image into the chunk store"
    table = dataset.images
    extra = [c for c in table.columns if c not in OWN_COLUMNS]
    moved = {}
    with DatasetWriter(staging, dataset.path.name, dataset.attributes, meta=meta,
                       colours=dataset.colours) as ds:
        for i, row in enumerate(table.to_dict("records")):
            true_row = None if dataset.true_act is None else dataset.true_act[i]
            common = {"image_id": row["image_id"], "split": row["split"],
                      "source": row["source"], "true_row": true_row,
                      **{c: row[c] for c in extra}}
            if str(row.get("root") or ""):  # referenced in place: only its thumbnail is new
                ds.add_reference(dataset.load_image(i), row["path"], row["root"],
                                 dataset.act[i], frame=int(row.get("frame", 0)),
                                 reader=json.loads(row.get("reader") or "{}"), **common)
            else:
                ds.add(dataset.load_image(i), dataset.act[i], **common)
                moved[dataset.image_path(i).resolve()] = ds.rows[-1]["path"]
            bar.update()
    return moved


def _build_runs(data_dir: Path, staging: Path, moved: dict[Path, str]) -> list[str]:
    """New images tables for the runs that name moved image files; return their ids."""
    root, changed = data_dir / RUNS, []
    if not root.is_dir():
        return changed
    folders = [p for p in sorted(root.iterdir())
               if not p.name.startswith(".") and (p / "images.parquet").is_file()]
    for folder in folders:
        table = pd.read_parquet(folder / "images.parquet")
        paths = _new_paths(data_dir, table, moved, folder.name)
        if paths is None:
            continue
        table["path"] = paths
        (staging / RUNS / folder.name).mkdir(parents=True)
        table.to_parquet(staging / RUNS / folder.name / "images.parquet", index=False)
        changed.append(folder.name)
    return changed


def _new_paths(data_dir: Path, table: pd.DataFrame, moved: dict[Path, str],
               run: str) -> list[str] | None:
    """The run's `path` column with moved files renamed; None when it names none of them."""
    roots = table["root"] if "root" in table.columns else pd.Series([""] * len(table))
    olds = {p.parent for p in moved}
    paths, hit = [], False
    for path, root in zip(table["path"], roots, strict=True):
        path = "" if path is None or (isinstance(path, float) and np.isnan(path)) else str(path)
        if not path or str(root or "") or "#" in path:
            paths.append(path)
            continue
        file = Path(path) if Path(path).is_absolute() else data_dir / path
        file = file.resolve()
        if file in moved:
            paths.append(moved[file])
            hit = True
        elif file.parent in olds:
            raise PipelineError(f"run {run} names image {path}, which its dataset does not "
                                "list; nothing was migrated")
        else:
            paths.append(path)
    return paths if hit else None


def _switch(data_dir: Path) -> None:
    """Move the staged datasets and run tables into place, the old ones into the staging
    directory, then remove it. Each step is skipped once done, so this can be run again."""
    switch = data_dir / SWITCH
    plan = json.loads((switch / PLAN).read_text())
    pairs = [(Path(DATASETS) / d, Path(DATASETS) / d) for d in plan["datasets"]]
    pairs += [(Path(RUNS) / r / "images.parquet",) * 2 for r in plan["runs"]]
    for live, staged in pairs:
        new, old = switch / staged, switch / "old" / live
        if not new.exists():
            continue  # switched already
        if (data_dir / live).exists():
            old.parent.mkdir(parents=True, exist_ok=True)
            os.rename(data_dir / live, old)
        os.rename(new, data_dir / live)
    shutil.rmtree(switch)

