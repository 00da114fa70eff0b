"""The run store: the contract between the pipeline, which writes runs, and the dashboard.

Every run and dataset is written whole into a hidden temporary directory and renamed into place,
so a reader sees all of it or none of it. files.py holds the ground rules (paths, ids, atomic
writes, checks), runs.py the runs, datasets.py the datasets; this package's names are the API.

Layout under a data directory D:

    D/datasets/<id>/  dataset.json, attributes.json, images.parquet, act.npy, [true_act.npy],
                      images.zarr/ (chunk store: model inputs, thumbnails, and the full-size
                      images that have no file of their own; see chunks.py). Ingested images
                      stay where they are, referenced from images.parquet (located.py).
                      Datasets written before the chunk store hold images/000000.npy … (one
                      float32 image per file) instead, and are read as before.
    D/runs/<id>/      run.json, attributes.json, images.parquet, act.npy, prd.npy, fea.npy,
                      emb_act.npy, emb_fea.npy, emb_prd.npy, [model.pt]
"""

from pipeline.store.chunks import THUMB_SIZE
from pipeline.store.datasets import Dataset, DatasetWriter, open_dataset
from pipeline.store.files import (
    DATA_DIR_ENV,
    DATASETS,
    IMAGE_COLUMNS,
    RUNS,
    SPACES,
    TMP_PREFIX,
    atomic_dir,
    check_array,
    check_id,
    load_pixels,
    new_id,
    nonfinite_count,
    pid_running,
    resolve_data_dir,
    scratch_dir,
    sweep_stale,
)
from pipeline.store.runs import (
    Run,
    RunDraft,
    get_run,
    list_runs,
    open_run,
    run_draft,
    scan_runs,
    write_run,
)

__all__ = [
    "DATASETS", "DATA_DIR_ENV", "IMAGE_COLUMNS", "RUNS", "SPACES", "THUMB_SIZE",
    "TMP_PREFIX", "Dataset", "RunDraft",
    "DatasetWriter", "Run", "atomic_dir", "check_array", "check_id", "get_run", "list_runs",
    "load_pixels", "new_id", "nonfinite_count", "open_dataset", "open_run", "pid_running",
    "resolve_data_dir", "run_draft", "scan_runs", "scratch_dir", "sweep_stale", "write_run",
]
