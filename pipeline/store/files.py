"""The store's ground rules: where a data directory is, what an id may be, how a directory is
written whole or not at all (and what a killed writer left is swept), and the checks every array
and table passes before it is written."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

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


def now() -> str:
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


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_attributes(folder: Path, attributes: Sequence[str], colours: Sequence[str] | None):
    names = [str(a) for a in attributes]
    if not names:
        raise PipelineError("no attributes given")
    if len(set(names)) != len(names):
        raise PipelineError(f"attribute names repeat: {names}")
    colours = list(colours) if colours is not None else colours_for(names)
    write_json(folder / "attributes.json", {"names": names, "colours": colours})


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
    bad = nonfinite_count(array)
    if bad:
        raise PipelineError(f"{name} holds {bad} NaN or infinite values")
    if binary and array.size and not np.isin(array, (0, 1)).all():
        raise PipelineError(f"{name} must hold only 0 and 1")
    if unit and array.size and (array.min() < 0 or array.max() > 1):
        raise PipelineError(f"{name} must be probabilities in [0, 1]")
    return array


# Rows of a run's arrays handled at a time where a whole array would not fit in memory: a block
# of the compact net's 704-d float32 features is 185 MB, of ResNet-50's 2,048-d ones 512 MB.
BLOCK_ROWS = 65_536


def nonfinite_count(array: np.ndarray, rows: int = BLOCK_ROWS) -> int:
    """How many values of `array` are NaN or infinite, counted a block of rows at a time: the
    mask of a run's features at once would be 704 bytes an image."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.inexact):
        return 0  # whole numbers and booleans are always finite
    if array.ndim == 0:
        return int(not np.isfinite(array))
    return sum(int(array[i : i + rows].size - np.isfinite(array[i : i + rows]).sum())
               for i in range(0, len(array), rows))


def check_images(images: pd.DataFrame, n: int) -> pd.DataFrame:
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


# numpy parses an .npy header with ast.literal_eval, and CPython 3.11 can fail compiling in two
# threads at once ("AST constructor recursion depth mismatch"), as the threaded web server does:
# one .npy file is opened at a time. A stored image is small, and a memory map reads only its
# header here, so the lock costs milliseconds.
_NPY_LOCK = threading.Lock()


def read_npy(path, mmap_mode: str | None = None) -> np.ndarray:
    """np.load of one .npy file (no pickles), one thread at a time."""
    with _NPY_LOCK:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


def npy_shape(path) -> tuple[int, ...]:
    """The shape an .npy file declares, read from its header alone."""
    with open(path, "rb") as fh, _NPY_LOCK:
        major, _ = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if major == 1
                else np.lib.format.read_array_header_2_0)
        return read(fh)[0]


def load_pixels(path: Path) -> np.ndarray:
    """A stored detector image as float32; a missing or damaged file is a clear error."""
    if not Path(path).is_file():
        raise PipelineError(f"image file {path} is missing")
    try:
        return read_npy(path).astype(np.float32, copy=False)
    except (OSError, ValueError, EOFError) as err:  # numpy's kinds for a damaged .npy
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise PipelineError(f"image file {path} cannot be read ({reason})") from None
