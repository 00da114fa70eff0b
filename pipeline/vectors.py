"""`python -m pipeline import-vectors`: a run from labels, predictions and features computed
anywhere else, so the dashboard can explore a model it never ran.

Inputs (all matched by image id; the predictions file sets the run's order):
- --labels act.csv and --predictions prd.csv: an id column (named id/image_id/image/file/
  filename/name/path, else the first column) and one column per attribute, with the same names
  in the same order; labels are 0/1, predictions probabilities in [0, 1] (or logits with
  --logits, turned into probabilities by the sigmoid);
- --features: fea.npy (N × D, rows in the order of the predictions file), fea.npz (arrays
  `ids` and `fea`) or fea.csv (id column + D numeric columns), both matched by id;
- --images DIR (optional): each id's image file, found as `ingest` finds them (by path under DIR,
  by path beside the labels CSV, by unique file name or stem) and read as it reads them (up to
  --max-pixels), stored as a dataset of the same id, so the detail view can show them and
  retraining can use them. Without it the run's image paths are empty strings.

A retry with the same --id after a run that was killed between writing its images dataset and
its run reuses that dataset when it holds exactly these images, and says so.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline import store
from pipeline.errors import PipelineError
from pipeline.ingest import (
    Found,
    ImageIndex,
    assign_splits,
    matched_line,
    writing,
)
from pipeline.labels import read_labels
from pipeline.metrics import evaluate
from pipeline.readers import MAX_PIXELS, image_format, read_counts

ID_COLUMNS = ("id", "imageid", "image", "file", "filename", "name", "path")
SHOWN = 5  # how many offending ids a message lists


def _listed(items) -> str:
    items = list(items)
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(repr(i) for i in items[:SHOWN]) + more


# ---------------------------------------------------------------- reading the arrays


def read_table(path, what: str) -> tuple[list[str], list[str], np.ndarray]:
    """(ids, column names, N × A float values) of an id-keyed CSV; bad cells are errors."""
    table = read_labels(path, id_columns=ID_COLUMNS, what=f"{what} file")
    width = len(table.attributes) + 1
    ids, values = [], []
    for line, cells in table.rows:
        if len(cells) != width:
            raise PipelineError(f"{path}: line {line} has {len(cells)} fields, the header {width}")
        record = dict(zip([table.file_column, *table.attributes], cells, strict=True))
        key = record[table.file_column].strip()
        if not key:
            raise PipelineError(f"{path}: line {line} has no id")
        ids.append(key)
        values.append([_number(path, line, name, record[name]) for name in table.attributes])
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if repeated:
        raise PipelineError(f"{path}: ids appear more than once: {_listed(repeated)}")
    return ids, table.attributes, np.array(values, dtype=np.float64)


def _number(path, line: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise PipelineError(
            f"{path}: line {line}, column {column!r}: {cell.strip()!r} is not a number"
        ) from None
    if not np.isfinite(value):
        raise PipelineError(f"{path}: line {line}, column {column!r} holds {cell.strip()}")
    return value


def check_same_attributes(labels_path, label_names, prd_path, prd_names) -> None:
    if label_names == prd_names:
        return
    only_act = [n for n in label_names if n not in prd_names]
    only_prd = [n for n in prd_names if n not in label_names]
    if only_act or only_prd:
        raise PipelineError(
            f"attribute columns differ: only in {labels_path}: {only_act}; "
            f"only in {prd_path}: {only_prd}"
        )
    raise PipelineError(
        f"attribute columns of {labels_path} and {prd_path} are in a different "
        f"order ({label_names} vs {prd_names}); use the same order"
    )


def match_ids(order: list[str], other: list[str], order_name, other_name) -> np.ndarray:
    """Row positions in `other` of each id of `order`; any missing or extra id is an error."""
    where = {key: i for i, key in enumerate(other)}
    wanted = set(order)
    missing = sorted(k for k in order if k not in where)
    extra = sorted(k for k in other if k not in wanted)
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} ids of {order_name} are not in {other_name}: {_listed(missing)}"
            )
        if extra:
            parts.append(
                f"{len(extra)} ids of {other_name} are not in {order_name}: {_listed(extra)}"
            )
        raise PipelineError("; ".join(parts))
    return np.array([where[k] for k in order], dtype=np.int64)


def read_features(path, ids: list[str], prd_path) -> np.ndarray:
    """N × D features in the order of `ids` from .npy (same order), .npz or .csv (by id)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"features file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        fea_ids, _, fea = read_table(path, "features")
    elif suffix in (".npy", ".npz"):
        fea, fea_ids = _load_numpy(path)
    else:
        raise PipelineError(f"features file {path}: expected .npy, .npz or .csv")
    _check_matrix(path, fea)
    if fea_ids is not None:
        _check_feature_ids(path, fea_ids, len(fea))
        fea = fea[match_ids(ids, fea_ids, str(prd_path), str(path))]
    if len(fea) != len(ids):
        raise PipelineError(
            f"features file {path} has {len(fea)} rows but {prd_path} has {len(ids)} images"
        )
    bad = ~np.isfinite(fea)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise PipelineError(
            f"features file {path} holds {int(bad.sum())} NaN or infinite "
            f"values (images {_listed(ids[r] for r in rows)})"
        )
    return fea.astype(np.float32)


def _check_matrix(path: Path, fea: np.ndarray) -> None:
    if fea.ndim != 2 or fea.shape[1] == 0:
        raise PipelineError(f"features file {path} has shape {fea.shape}, expected N × D")
    if np.iscomplexobj(fea):  # casting would keep the real part and drop the rest silently
        raise PipelineError(
            f"features file {path} holds complex numbers ({fea.dtype}); expected real features"
        )
    if not np.issubdtype(fea.dtype, np.number):
        raise PipelineError(f"features file {path} is not numeric (dtype {fea.dtype})")


def _check_feature_ids(path: Path, fea_ids: list[str], n_rows: int) -> None:
    """One id per row, each once: a repeated id would silently take the later row."""
    if len(fea_ids) != n_rows:
        raise PipelineError(
            f"features file {path} holds {len(fea_ids)} ids but {n_rows} rows of features"
        )
    repeated = sorted(key for key, n in Counter(fea_ids).items() if n > 1)
    if repeated:
        raise PipelineError(f"features file {path}: ids appear more than once: {_listed(repeated)}")


def _load_numpy(path: Path) -> tuple[np.ndarray, list[str] | None]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise PipelineError(f"features file {path} cannot be read: {err}") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        names = set(loaded.files)
        key = next((k for k in ("fea", "features") if k in names), None)
        if key is None or "ids" not in names:
            raise PipelineError(
                f"features file {path} must hold arrays 'ids' and 'fea' (it holds {sorted(names)})"
            )
        try:
            fea, ids = loaded[key], loaded["ids"]
        except (OSError, ValueError, EOFError) as err:  # object arrays, a damaged member
            raise PipelineError(f"features file {path} cannot be read: {err}") from None
    if ids.ndim != 1:
        raise PipelineError(f"features file {path}: 'ids' has shape {ids.shape}, expected N")
    return fea, [str(i) for i in ids]


def check_labels(path, ids, names, act: np.ndarray) -> np.ndarray:
    bad = ~np.isin(act, (0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise PipelineError(
            f"{path}: labels must be 0 or 1; image {ids[r]!r}, column "
            f"{names[c]!r} holds {act[r, c]:g} ({int(bad.sum())} such values)"
        )
    return act.astype(np.uint8)


def check_probabilities(path, ids, names, prd: np.ndarray, logits: bool) -> np.ndarray:
    if logits:
        return (1 / (1 + np.exp(-prd))).astype(np.float32)
    bad = (prd < 0) | (prd > 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise PipelineError(
            f"{path}: predictions must be probabilities in [0, 1]; image "
            f"{ids[r]!r}, column {names[c]!r} holds {prd[r, c]:g} "
            f"({int(bad.sum())} such values; pass --logits if they are logits)"
        )
    return prd.astype(np.float32)


# ---------------------------------------------------------------- building the run


def locate_images(images_dir, ids: list[str], labels) -> tuple[ImageIndex, list[Found]]:
    """Each id's image file, found as `ingest` finds them; ids without exactly one are an error."""
    index = ImageIndex(Path(images_dir), beside=Path(labels).parent)
    found, problems = [], []
    for key in ids:
        image, reason = index.locate(key)
        if reason:
            problems.append(f"{key!r} ({reason})")
        found.append(image)
    if problems:
        raise PipelineError(
            f"{len(problems)} ids have no usable image in {images_dir}: "
            + "; ".join(problems[:SHOWN])
        )
    return index, found


def write_images(
    data_dir,
    dataset_id,
    attributes,
    index: ImageIndex,
    files: list[Found],
    ids,
    act,
    splits,
    max_pixels: int = MAX_PIXELS,
    progress: bool = True,
) -> pd.DataFrame:
    """Stream the matched images into dataset `dataset_id`; return the run's images table."""
    meta = {"source": "import-vectors", "images_dir": str(index.root)}
    with store.DatasetWriter(data_dir, dataset_id, attributes, meta) as ds:
        for i, image in enumerate(tqdm(files, desc="images", unit="img", disable=not progress)):
            try:
                pixels, flagged = read_counts(
                    image.path, inverted=False, h5_path=None, max_pixels=max_pixels
                )
            except PipelineError as err:
                raise PipelineError(f"{image.path}: {err}") from None
            except Exception as err:  # each reader library has its own errors
                raise PipelineError(f"{image.path}: cannot read the image ({err})") from None
            ds.add_reference(  # read in place: only its thumbnail is stored
                pixels,
                image.rel,
                image.root,
                act[i],
                reader={"inverted": False, "h5_path": None, "max_pixels": max_pixels},
                image_id=ids[i],
                split=splits[i],
                source="import-vectors",
                file=image.rel,
                format=image_format(image.path),
                flagged_pixels=flagged,
            )
    return _images_table(ds.final)


def _images_table(dataset_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(dataset_dir / "images.parquet").drop(columns=["index"])


def reusable_images(data_dir: Path, dataset_id: str, names, index, files, ids, act):
    """The images table of an existing dataset `dataset_id` if an earlier import of exactly these
    images wrote it (then killed before its run); None if there is none; else an error."""
    path = data_dir / store.DATASETS / dataset_id
    if not path.exists():
        return None
    ds = store.open_dataset(path)
    same = (
        ds.meta.get("source") == "import-vectors"
        and ds.meta.get("images_dir") == str(index.root)
        and ds.attributes == list(names)
        and ds.images["image_id"].tolist() == list(ids)
        and ds.images.get("file", pd.Series(dtype=str)).tolist() == [f.rel for f in files]
        and np.array_equal(ds.act, act)
    )
    if not same:
        raise PipelineError(
            f"dataset {dataset_id} already exists in {path.parent} and holds other images; "
            "choose another --id"
        )
    return _images_table(path)


def _images_dataset(data_dir, run_id, names, found, ids, act, splits, max_pixels, progress, say):
    """The run's images table from its images dataset: reused if complete, else written now."""
    index, files = found
    images = reusable_images(data_dir, run_id, names, index, files, ids, act)
    if images is not None:
        say(f"reusing dataset {run_id}, written by an earlier import of these images")
        return images
    with writing(f"dataset {run_id}", data_dir / store.DATASETS):
        return write_images(
            data_dir, run_id, names, index, files, ids, act, splits, max_pixels, progress
        )


def read_inputs(labels, predictions, features, logits: bool):
    """(ids in the predictions' order, attribute names, act, prd, fea), all checked and matched."""
    act_ids, act_names, act = read_table(labels, "labels")
    prd_ids, prd_names, prd = read_table(predictions, "predictions")
    check_same_attributes(labels, act_names, predictions, prd_names)
    act = check_labels(labels, act_ids, act_names, act)[
        match_ids(prd_ids, act_ids, str(predictions), str(labels))
    ]
    prd = check_probabilities(predictions, prd_ids, prd_names, prd, logits)
    fea = read_features(features, prd_ids, predictions)
    return prd_ids, prd_names, act, prd, fea


def import_vectors(
    labels,
    predictions,
    features,
    data_dir=None,
    *,
    images_dir=None,
    run_id: str | None = None,
    logits: bool = False,
    seed: int = 0,
    max_pixels: int = MAX_PIXELS,
    progress: bool = True,
    say: Callable[[str], None] = lambda line: None,
) -> Path:
    """Check, match, embed and write one run (and its images dataset); return the run dir.

    `say` receives lines worth telling the user (how images were matched, a reused dataset).
    """
    started = time.perf_counter()
    ids, names, act, prd, fea = read_inputs(labels, predictions, features, logits)
    data_dir = store.resolve_data_dir(data_dir)
    run_id = store.check_id(run_id or store.new_id(Path(predictions).stem))
    if (data_dir / store.RUNS / run_id).exists():
        raise PipelineError(f"run {run_id} already exists in {data_dir}; choose another --id")
    splits = assign_splits(len(ids), 0.2, seed)
    images = pd.DataFrame(
        {"image_id": ids, "path": "", "split": splits, "source": "import-vectors"}
    )
    if images_dir is not None:
        found = locate_images(images_dir, ids, labels)
        say(matched_line(Counter(f.rule for f in found[1])))
        images = _images_dataset(
            data_dir, run_id, names, found, ids, act, splits, max_pixels, progress, say
        )
    meta = {
        "dataset": run_id if images_dir is not None else "",
        "source": "import-vectors",
        "device": "external",
        "model": {
            "arch": "external",
            "labels": str(labels),
            "predictions": str(predictions),
            "features": str(features),
            "logits": logits,
            "feature_dim": int(fea.shape[1]),
        },
    }
    try:
        with writing(f"run {run_id}", data_dir / store.RUNS):
            return _embed_and_write(
                data_dir, run_id, names, images, (act, prd, fea), meta, seed, started, progress
            )
    except BaseException:
        if images_dir is not None:  # the run failed: its images dataset must not linger alone
            shutil.rmtree(data_dir / store.DATASETS / run_id, ignore_errors=True)
        raise


def _embed_and_write(data_dir, run_id, names, images, arrays, meta, seed, started, progress):
    from pipeline.embed import embed_all  # openTSNE is slow to import; only this path needs it

    act, prd, fea = arrays
    t0 = time.perf_counter()
    emb = embed_all(act, fea, prd, seed=seed, progress=progress)
    timings = {
        "embed_s": round(time.perf_counter() - t0, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }
    metrics = {**evaluate(act, prd), "split": "all", "n_images": len(act)}
    return store.write_run(
        data_dir,
        attributes=names,
        images=images,
        act=act,
        prd=prd,
        fea=fea,
        emb=emb,
        meta={**meta, "metrics": metrics, "timings": timings},
        run_id=run_id,
    )
