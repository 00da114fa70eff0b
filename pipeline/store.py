"""The run store: the contract between the pipeline, which writes runs, and the dashboard.

Every run and dataset is written whole into a hidden temporary directory and renamed into place,
so a reader sees all of it or none of it.

Layout under a data directory D:

    D/datasets/<id>/  dataset.json, attributes.json, images.parquet, act.npy, [true_act.npy],
                      images/000000.npy …  (one float32 detector image per file, any size)
    D/runs/<id>/      run.json, attributes.json, images.parquet, act.npy, prd.npy, fea.npy,
                      emb_act.npy, emb_fea.npy, emb_prd.npy, [model.pt]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from pipeline import __version__
from pipeline.attributes import colours_for
from pipeline.errors import PipelineError

DATA_DIR_ENV = "XRAE_DATA_DIR"
RUNS, DATASETS = "runs", "datasets"
SPACES = ("act", "fea", "prd")
TMP_PREFIX = ".tmp-"
IMAGE_COLUMNS = ("image_id", "path", "split", "source")


# ---------------------------------------------------------------- paths and ids


def resolve_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else $XRAE_DATA_DIR, else ./data; never a file."""
    given, source = (path, "--data-dir") if path else (os.environ.get(DATA_DIR_ENV), None)
    source = source or (f"${DATA_DIR_ENV}" if given else "the data directory")
    resolved = Path(given or "data").expanduser().resolve()
    if resolved.is_file():
        raise PipelineError(f"{source} {resolved} is a file, not a directory")
    return resolved


def new_id(label: str) -> str:
    """A sortable, unique id such as 20261120-143501-demo-3fa2c1."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "run"
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{slug}-{uuid.uuid4().hex[:6]}"


def check_id(name: str, what: str = "run") -> str:
    """Reject ids that could escape their directory (hostile paths such as '../x' or '/etc')."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name or "") or ".." in name:
        raise PipelineError(f"invalid {what} id {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- all-or-nothing writes


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes `final` only if the block completes.

    The temporary name starts with a dot and carries the writer's pid, so listings skip it and
    `sweep_stale` can remove what a killed writer left behind.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise PipelineError(f"{final} already exists; choose another id")
    tmp = final.parent / f"{TMP_PREFIX}{os.getpid()}-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sweep_stale(parent: Path) -> list[Path]:
    """Remove temporary directories whose writing process no longer exists; return them."""
    removed = []
    for tmp in Path(parent).glob(f"{TMP_PREFIX}*"):
        pid = tmp.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not pid_running(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def scratch_dir(parent: Path, label: str) -> Iterator[Path]:
    """A private working directory in `parent`, removed on exit; named like atomic_dir's, so
    the leftovers of a killed process are swept (here, at the next start, and by write_run)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(parent)
    path = parent / f"{TMP_PREFIX}{os.getpid()}-{label}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pid_running(pid: int) -> bool:
    """Whether a process runs; a killed one not yet reaped by its parent (a zombie) does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _write_attributes(folder: Path, attributes: Sequence[str], colours: Sequence[str] | None):
    names = [str(a) for a in attributes]
    if not names:
        raise PipelineError("no attributes given")
    if len(set(names)) != len(names):
        raise PipelineError(f"attribute names repeat: {names}")
    colours = list(colours) if colours is not None else colours_for(names)
    _write_json(folder / "attributes.json", {"names": names, "colours": colours})


# ---------------------------------------------------------------- validation


def check_array(name: str, array, shape: tuple, *, binary: bool = False, unit: bool = False):
    """Return `array` as a numpy array after checking shape (None = any) and values."""
    array = np.asarray(array)
    fits = array.ndim == len(shape) and all(
        s is None or s == a for s, a in zip(shape, array.shape, strict=True)
    )
    if not fits:
        want = "×".join("?" if s is None else str(s) for s in shape)
        raise PipelineError(f"{name} has shape {array.shape}, expected {want}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise PipelineError(f"{name} is not numeric (dtype {array.dtype})")
    if array.size and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise PipelineError(f"{name} holds {bad} NaN or infinite values")
    if binary and array.size and not np.isin(array, (0, 1)).all():
        raise PipelineError(f"{name} must hold only 0 and 1")
    if unit and array.size and (array.min() < 0 or array.max() > 1):
        raise PipelineError(f"{name} must be probabilities in [0, 1]")
    return array


def _check_images(images: pd.DataFrame, n: int) -> pd.DataFrame:
    missing = [c for c in IMAGE_COLUMNS if c not in images.columns]
    if missing:
        raise PipelineError(f"images table lacks columns {missing}")
    if len(images) != n:
        raise PipelineError(f"images table has {len(images)} rows but the arrays have {n}")
    if images["image_id"].duplicated().any():
        dup = images["image_id"][images["image_id"].duplicated()].iloc[0]
        raise PipelineError(f"image id {dup!r} appears more than once")
    images = images.reset_index(drop=True).drop(columns=["index"], errors="ignore")
    images.insert(0, "index", np.arange(n))
    return images


# ---------------------------------------------------------------- runs


def write_run(
    data_dir: str | os.PathLike,
    *,
    attributes: Sequence[str],
    images: pd.DataFrame,
    act,
    prd,
    fea,
    emb: Mapping[str, np.ndarray],
    meta: Mapping,
    colours: Sequence[str] | None = None,
    extra_files: Mapping[str, Callable[[Path], None]] | None = None,
    run_id: str | None = None,
) -> Path:
    """Check and write one whole run; return its directory.

    `meta` holds dataset id, model, threshold, metrics, timings and device (run.json).
    `extra_files` maps a file name to a function that writes it (e.g. the model checkpoint).
    """
    n, a = len(images), len(attributes)
    act = check_array("act", act, (n, a), binary=True).astype(np.uint8)
    prd = check_array("prd", prd, (n, a), unit=True).astype(np.float32)
    fea = check_array("fea", fea, (n, None)).astype(np.float32)
    embs = {s: check_array(f"emb_{s}", emb[s], (n, 2)).astype(np.float32) for s in SPACES}
    images = _check_images(images, n)

    data_dir = resolve_data_dir(data_dir)
    run_id = check_id(run_id or new_id(str(meta.get("dataset", "run"))))
    final = data_dir / RUNS / run_id
    sweep_stale(final.parent) if final.parent.exists() else None
    with atomic_dir(final) as tmp:
        for name, writer in (extra_files or {}).items():
            writer(tmp / check_id(name, "file"))
        np.save(tmp / "act.npy", act)
        np.save(tmp / "prd.npy", prd)
        np.save(tmp / "fea.npy", fea)
        for space, coords in embs.items():
            np.save(tmp / f"emb_{space}.npy", coords)
        images.to_parquet(tmp / "images.parquet", index=False)
        _write_attributes(tmp, attributes, colours)
        record = {
            "id": run_id,
            "created": _now(),
            "pipeline_version": __version__,
            "n_images": n,
            "n_attributes": a,
            "threshold": 0.5,
            **dict(meta),
        }
        _write_json(tmp / "run.json", record)  # written last: a run.json means the rest is there
    open_run.cache_clear()
    return final


class Run:
    """A run on disk; arrays are memory-mapped on first use and shared by every request.

    Opening checks run.json, attributes.json, images.parquet and the arrays' shapes, so a run
    that opens can be shown; a broken one is a PipelineError naming the file at fault.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "run.json").is_file():
            raise PipelineError(f"{self.path} is not a run (no run.json)")
        self.meta = _check_run_json(self.path / "run.json", self.path.name)
        self._attributes = _check_attributes_json(self.path / "attributes.json")
        n, a = int(self.meta["n_images"]), len(self._attributes["names"])
        _check_images_file(self.path / "images.parquet", n)
        for name in ("act", "prd", "fea", *(f"emb_{s}" for s in SPACES)):
            want = {"act": (n, a), "prd": (n, a), "fea": (n, None)}.get(name, (n, 2))
            _check_npy(self.path / f"{name}.npy", want)

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def m_ap(self) -> float | None:
        """The run's mAP on its evaluation split, None when it was not scored."""
        scores = self.meta.get("metrics")
        m_ap = scores.get("mAP") if isinstance(scores, dict) else None
        if isinstance(m_ap, bool) or not isinstance(m_ap, (int, float)):
            return None
        return float(m_ap)

    @property
    def data_dir(self) -> Path:
        return self.path.parent.parent

    @property
    def attributes(self) -> list[str]:
        return self._attributes["names"]

    @property
    def colours(self) -> list[str]:
        return self._attributes["colours"]

    @cached_property
    def images(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "images.parquet")

    def _array(self, name: str) -> np.ndarray:
        file = self.path / f"{name}.npy"
        if not file.is_file():
            raise PipelineError(f"run {self.path.name} lacks {file.name}")
        return np.load(file, mmap_mode="r")

    @cached_property
    def act(self) -> np.ndarray:
        return self._array("act")

    @cached_property
    def prd(self) -> np.ndarray:
        return self._array("prd")

    @cached_property
    def fea(self) -> np.ndarray:
        return self._array("fea")

    def emb(self, space: str) -> np.ndarray:
        if space not in SPACES:
            raise PipelineError(f"unknown space {space!r}; expected one of {SPACES}")
        return self._array(f"emb_{space}")

    @property
    def checkpoint(self) -> Path | None:
        file = self.path / "model.pt"
        return file if file.is_file() else None

    def image_path(self, index: int) -> Path:
        """The stored image of row `index`; relative paths are relative to the data directory."""
        stored = str(self.images["path"].iloc[int(index)] or "")
        if not stored:
            raise PipelineError(f"run {self.path.name} holds no image for row {index} "
                                "(its vectors were imported without --images)")
        path = Path(stored)
        return path if path.is_absolute() else self.data_dir / path

    def load_image(self, index: int) -> np.ndarray:
        return load_pixels(self.image_path(index))

    def __len__(self) -> int:
        return int(self.meta["n_images"])

    def __repr__(self) -> str:
        return f"Run({self.path.name!r})"


def _read_json_object(file: Path) -> dict:
    try:
        obj = json.loads(file.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{file} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise PipelineError(f"{file} is not readable JSON ({_first_line(err)})") from err
    if not isinstance(obj, dict):
        raise PipelineError(f"{file} holds a JSON {type(obj).__name__}, not an object")
    return obj


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _check_run_json(file: Path, folder: str) -> dict:
    check_id(folder)  # the picker and the command line name a run by its folder
    meta = _read_json_object(file)
    if meta.get("id") != folder:
        raise PipelineError(f"{file} names the run {meta.get('id')!r}, not its folder {folder!r}")
    n = meta.get("n_images")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise PipelineError(f"{file} lacks a whole number n_images (found {n!r})")
    return meta


def _check_attributes_json(file: Path) -> dict:
    attrs = _read_json_object(file)
    names, colours = attrs.get("names"), attrs.get("colours")
    if not (isinstance(names, list) and names and all(isinstance(x, str) for x in names)):
        raise PipelineError(f"{file} lacks a list of attribute names")
    if not (isinstance(colours, list) and len(colours) == len(names)
            and all(isinstance(x, str) for x in colours)):
        raise PipelineError(f"{file} lacks one colour per attribute")
    return attrs


def _check_images_file(file: Path, n: int) -> None:
    """The image table's schema and row count, read from the parquet footer alone (cheap)."""
    import pyarrow.parquet as pq

    if not file.is_file():
        raise PipelineError(f"{file} is missing")
    try:
        table = pq.ParquetFile(file)
        rows, columns = table.metadata.num_rows, table.schema_arrow.names
    except Exception as err:  # arrow, OS and format errors all mean "not a table we can read"
        raise PipelineError(f"{file} is unreadable ({_first_line(err)})") from err
    missing = [c for c in IMAGE_COLUMNS if c not in columns]
    if missing:
        raise PipelineError(f"{file} lacks columns {missing}")
    if rows != n:
        raise PipelineError(f"{file} has {rows} rows but run.json says {n} images")


def _check_npy(file: Path, shape: tuple) -> None:
    """An array file's shape, read from its header alone; None in `shape` means any size."""
    if not file.is_file():
        raise PipelineError(f"{file} is missing")
    try:
        with open(file, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if major == 1
                    else np.lib.format.read_array_header_2_0)
            found = read(fh)[0]
    except (OSError, ValueError, EOFError) as err:
        raise PipelineError(f"{file} is not a readable array ({_first_line(err)})") from err
    fits = len(found) == len(shape) and all(s in (None, f) for s, f in zip(shape, found,
                                                                           strict=True))
    if not fits:
        want = "×".join("?" if s is None else str(s) for s in shape)
        raise PipelineError(f"{file} has shape {found}, expected {want}")


def load_pixels(path: Path) -> np.ndarray:
    """A stored detector image as float32; a missing file is a clear error."""
    if not Path(path).is_file():
        raise PipelineError(f"image file {path} is missing")
    return np.load(path).astype(np.float32, copy=False)


@lru_cache(maxsize=32)
def open_run(path: str | os.PathLike) -> Run:
    """The run at `path`, memoised: runs never change once written."""
    return Run(Path(path))


def get_run(run_id: str, data_dir: str | os.PathLike | None = None) -> Run:
    """The run `run_id` in the data directory (the one accessor the dashboard uses)."""
    path = resolve_data_dir(data_dir) / RUNS / check_id(run_id)
    if not (path / "run.json").is_file():
        raise PipelineError(f"no run {run_id!r} in {path.parent}")
    return open_run(str(path))


def scan_runs(data_dir: str | os.PathLike | None = None
              ) -> tuple[list[Run], list[tuple[Path, str]]]:
    """The runs that open, oldest first, and the broken ones as (folder, reason); never raises
    for a bad run, so one broken folder cannot hide the others. Temporary directories are
    skipped."""
    root = resolve_data_dir(data_dir) / RUNS
    if not root.is_dir():
        return [], []
    runs, broken = [], []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            runs.append(open_run(str(path)))
        except PipelineError as err:
            broken.append((path, str(err)))
    runs.sort(key=lambda r: (str(r.meta.get("created", "")), r.id))
    return runs, broken


def list_runs(data_dir: str | os.PathLike | None = None) -> list[Run]:
    """The runs in the data directory that open, oldest first (broken ones: see scan_runs)."""
    return scan_runs(data_dir)[0]


# ---------------------------------------------------------------- datasets


class DatasetWriter:
    """Stream images and labels into a new dataset, which appears only when the block ends well.

        with DatasetWriter(data_dir, "demo", ATTRIBUTES, meta={...}) as ds:
            ds.add(pixels, act_row, split="train", source="simulate", true_row=...)
    """

    def __init__(self, data_dir, dataset_id: str, attributes: Sequence[str], meta=None,
                 colours: Sequence[str] | None = None):
        self.data_dir = resolve_data_dir(data_dir)
        self.id = check_id(dataset_id, "dataset")
        self.attributes = [str(a) for a in attributes]
        self.colours = colours
        self.meta = dict(meta or {})
        self.final = self.data_dir / DATASETS / self.id
        self.rows: list[dict] = []
        self.act: list[np.ndarray] = []
        self.true_act: list[np.ndarray] = []
        self._cm = None

    def __enter__(self) -> DatasetWriter:
        if self.final.parent.exists():
            sweep_stale(self.final.parent)
        self._cm = atomic_dir(self.final)
        self.tmp = self._cm.__enter__()
        (self.tmp / "images").mkdir()
        return self

    def add(self, pixels, act_row, *, image_id: str | None = None, split: str = "train",
            source: str = "", true_row=None, **extra) -> int:
        """Store one image (2-D, finite) with its annotated 0/1 labels; return its index."""
        index = len(self.rows)
        image_id = str(image_id if image_id is not None else f"img{index:06d}")
        pixels = check_array(f"image {image_id}", pixels, (None, None)).astype(np.float32)
        a = len(self.attributes)
        self.act.append(check_array(f"labels of {image_id}", act_row, (a,), binary=True))
        if true_row is not None:
            self.true_act.append(check_array(f"true labels of {image_id}", true_row, (a,),
                                             binary=True))
        rel = f"{DATASETS}/{self.id}/images/{index:06d}.npy"
        np.save(self.tmp / "images" / f"{index:06d}.npy", pixels)
        self.rows.append({"image_id": image_id, "path": rel, "split": split, "source": source,
                          "height": pixels.shape[0], "width": pixels.shape[1], **extra})
        return index

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self._finish()
            except BaseException as err:  # the temporary directory goes, then the error rises
                self._cm.__exit__(type(err), err, err.__traceback__)
                raise
        return self._cm.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        if not self.rows:
            raise PipelineError(f"dataset {self.id} would hold no images")
        if self.true_act and len(self.true_act) != len(self.act):
            raise PipelineError("true labels were given for some images but not all")
        images = _check_images(pd.DataFrame(self.rows), len(self.rows))
        images.to_parquet(self.tmp / "images.parquet", index=False)
        np.save(self.tmp / "act.npy", np.stack(self.act).astype(np.uint8))
        if self.true_act:
            np.save(self.tmp / "true_act.npy", np.stack(self.true_act).astype(np.uint8))
        _write_attributes(self.tmp, self.attributes, self.colours)
        _write_json(self.tmp / "dataset.json", {"id": self.id, "created": _now(),
                                                "n_images": len(self.rows), **self.meta})


class Dataset:
    """A dataset on disk: labels in memory, images loaded one at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "dataset.json").is_file():
            raise PipelineError(f"{self.path} is not a dataset (no dataset.json)")
        self.meta = json.loads((self.path / "dataset.json").read_text())
        attrs = json.loads((self.path / "attributes.json").read_text())
        self.attributes: list[str] = attrs["names"]
        self.colours: list[str] = attrs["colours"]
        self.images = pd.read_parquet(self.path / "images.parquet")
        self.act = np.load(self.path / "act.npy")
        true = self.path / "true_act.npy"
        self.true_act = np.load(true) if true.is_file() else None

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def data_dir(self) -> Path:
        return self.path.parent.parent

    def image_path(self, index: int) -> Path:
        path = Path(self.images["path"].iloc[int(index)])
        return path if path.is_absolute() else self.data_dir / path

    def load_image(self, index: int) -> np.ndarray:
        return load_pixels(self.image_path(index))

    def indices(self, split: str | None = None) -> np.ndarray:
        if split is None:
            return np.arange(len(self.images))
        return np.flatnonzero(self.images["split"].to_numpy() == split)

    def __len__(self) -> int:
        return len(self.images)


def open_dataset(ref: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Dataset:
    """A dataset by path, or by id inside the data directory."""
    path = Path(ref)
    if not (path / "dataset.json").is_file():
        path = resolve_data_dir(data_dir) / DATASETS / check_id(str(ref), "dataset")
    if not (path / "dataset.json").is_file():
        raise PipelineError(f"no dataset {str(ref)!r} (looked for {path}/dataset.json)")
    return Dataset(path)
