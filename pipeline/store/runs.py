"""Runs: written whole, opened once per process with their arrays memory-mapped, checked on
opening so that a run listed as good really opens, and a broken one named with its reason."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.errors import PipelineError
from pipeline.store.files import (
    IMAGE_COLUMNS,
    RUNS,
    SPACES,
    atomic_dir,
    check_array,
    check_id,
    check_images,
    new_id,
    now,
    npy_shape,
    read_npy,
    resolve_data_dir,
    sweep_stale,
    write_attributes,
    write_json,
)
from pipeline.store.located import load_row_image, load_row_images, reference_target


def write_run(data_dir: str | os.PathLike, *, run_id: str | None = None, **parts) -> Path:
    """Check and write one whole run; return its directory (RunDraft.write says what `parts`
    holds). A run whose arrays are computed as it is made writes them into its draft instead
    (run_draft), so that no array of a beamline's day need be held in memory at once."""
    with run_draft(data_dir, run_id, str(parts.get("meta", {}).get("dataset", "run"))) as draft:
        return draft.write(**parts)


@contextlib.contextmanager
def run_draft(data_dir: str | os.PathLike, run_id: str | None = None, label: str = "run"
              ) -> Iterator[RunDraft]:
    """A run being made: a hidden directory in runs/ into which its largest arrays are written
    as they are computed (RunDraft.array), renamed into place once RunDraft.write has written
    the rest. Leaving the block any other way (an error, a stop, a kill: sweep_stale) removes
    it, so no reader ever sees part of a run."""
    data_dir = resolve_data_dir(data_dir)
    run_id = check_id(run_id or new_id(label))
    final = data_dir / RUNS / run_id
    sweep_stale(final.parent) if final.parent.exists() else None
    with atomic_dir(final) as tmp:
        draft = RunDraft(tmp, run_id)
        yield draft
        if not draft.written:
            raise PipelineError(f"run {run_id} was left unfinished; nothing was written")
    open_run.cache_clear()


# The arrays a run may make in its draft as it goes, each N rows: inference's outputs, and the
# neighbour lists of its disagreement (3 × N × k).
DRAFT_ARRAYS = ("prd", "fea", "neighbours")
WORK = ".work"  # a draft's folder of working arrays (RunDraft.scratch), never part of a run


def _new_memmap(file: Path, shape: tuple, dtype) -> np.memmap:
    """A new .npy array file, memory-mapped for writing."""
    return np.lib.format.open_memmap(file, mode="w+", dtype=dtype,
                                     shape=tuple(int(s) for s in shape))


class RunDraft:
    """The hidden directory of a run being made (run_draft) and the arrays made in it."""

    def __init__(self, path: Path, run_id: str):
        self.path, self.id, self.written = Path(path), run_id, False
        self.arrays: dict[str, np.memmap] = {}
        self.n_scratch = 0

    def scratch(self, shape: tuple, dtype) -> np.memmap:
        """A working array on disk, in the draft's WORK folder, which write() removes before
        the run is in place: what a computation over every image keeps at hand (the
        neighbour searches' points, 0.6 KB an image) need not be held in memory."""
        (self.path / WORK).mkdir(exist_ok=True)
        self.n_scratch += 1
        return _new_memmap(self.path / WORK / f"{self.n_scratch}.npy", shape, dtype)

    def array(self, name: str, shape: tuple, dtype) -> np.memmap:
        """A new array of the run (`name`.npy) on disk, to be filled by the caller and kept
        as it is by write(): 1.8 KB of features an image need not fit in memory."""
        if name not in DRAFT_ARRAYS or name in self.arrays:
            raise PipelineError(f"a run draft cannot make the array {name!r} (again)")
        made = _new_memmap(self.path / f"{name}.npy", shape, dtype)
        self.arrays[name] = made
        return made

    def _save(self, name: str, array: np.ndarray) -> None:
        made = self.arrays.get(name)
        if made is None:
            np.save(self.path / f"{name}.npy", array)
        elif array.shape == made.shape and array.dtype == made.dtype and \
                np.shares_memory(array, made):
            made.flush()  # written where it lies
        else:
            raise PipelineError(f"{name} was made in the run's draft; write that array")

    def write(self, *, attributes: Sequence[str], images: pd.DataFrame, act, prd, fea,
              emb: Mapping[str, np.ndarray], meta: Mapping, colours: Sequence[str] | None = None,
              extra_files: Mapping[str, Callable[[Path], None]] | None = None,
              disagreement=None) -> Path:
        """Check and write the rest of the run; it is in place when the run_draft block ends.

        `meta` holds dataset id, model, threshold, metrics, timings and device (run.json).
        `extra_files` maps a file name to a function that writes it (e.g. the model
        checkpoint). `disagreement`: the run's neighbourhoods and disagreement when already
        known (pipeline.analyses.disagreement.Neighbourhoods: a run re-embedded keeps its
        arrays, `add` extends its parent's), or the scores alone (a run re-embedded from one
        written before runs stored their neighbourhoods); by default they are computed here,
        once, so the dashboard only reads them.
        """
        if self.written:
            raise PipelineError(f"run {self.id} is already written")
        n, a = len(images), len(attributes)
        # No copies of arrays already of the stored type: FEA alone is 1.8 KB an image.
        act = check_array("act", act, (n, a), binary=True).astype(np.uint8, copy=False)
        prd = check_array("prd", prd, (n, a), unit=True).astype(np.float32, copy=False)
        fea = check_array("fea", fea, (n, None)).astype(np.float32, copy=False)
        embs = {s: check_array(f"emb_{s}", emb[s], (n, 2)).astype(np.float32, copy=False)
                for s in SPACES}
        images = check_images(images, n)
        scores, lists, basis, timing = _disagreement(act, fea, prd, disagreement, n, self)
        shutil.rmtree(self.path / WORK, ignore_errors=True)  # what the searches worked on
        tmp = self.path
        for name, writer in (extra_files or {}).items():
            writer(tmp / check_id(name, "file"))
        for name, array in (("act", act), ("prd", prd), ("fea", fea),
                            *((f"emb_{s}", c) for s, c in embs.items())):
            self._save(name, array)
        if scores is not None:
            np.save(tmp / DISAGREEMENT_FILE, scores)
        if lists is not None:
            self._save(NEIGHBOURS_FILE.removesuffix(".npy"), lists)
            np.save(tmp / BASIS_FILE, basis)
        images.to_parquet(tmp / "images.parquet", index=False)
        write_attributes(tmp, attributes, colours)
        record = {
            "id": self.id,
            "created": now(),
            "pipeline_version": __version__,
            "n_images": n,
            "n_attributes": a,
            "threshold": 0.5,
            **dict(meta),
        }
        if timing is not None:
            record["timings"] = {**(record.get("timings") or {}), "disagreement_s": timing}
        write_json(tmp / "run.json", record)  # written last: a run.json means the rest is there
        self.written = True
        return tmp.parent / self.id


DISAGREEMENT_FILE = "disagreement.npy"  # optional: runs written before it lack it
# Optional too, written with the score: each image's nearest others in ACT, FEA and PRD
# (3 × N × k int32) and the feature basis FEA's were found in ((1 + d) × D float32).
NEIGHBOURS_FILE = "neighbours.npy"
BASIS_FILE = "fea_basis.npy"


def _disagreement(act, fea, prd, given, n: int, draft: RunDraft):
    """The disagreement scores, neighbour lists and feature basis to store (checked when given,
    else computed, the lists in the draft; None for a run too small or too large, see
    to_store) and the seconds their computation took."""
    if given is not None and not hasattr(given, "score"):  # the scores alone
        return check_array("disagreement", given, (n,), unit=True).astype(np.float32), None, \
            None, None
    from pipeline.analyses import disagreement  # it reads runs: import late

    started = time.perf_counter()
    made = disagreement.to_store(act, fea, prd, lists=lambda shape: draft.array(
        NEIGHBOURS_FILE.removesuffix(".npy"), shape, np.int32), allocate=draft.scratch) \
        if given is None else given
    if made is None:
        return None, None, None, None
    scores = check_array("disagreement", made.score, (n,), unit=True).astype(np.float32)
    lists = check_array("neighbour lists", made.found, (3, n, None)).astype(np.int32,
                                                                             copy=False)
    if lists.size and (lists.min() < 0 or lists.max() >= n):
        raise PipelineError(f"neighbour lists name rows outside the run's {n} images")
    basis = check_array("feature basis", made.basis, (None, fea.shape[1])).astype(np.float32)
    timing = None if given is not None else round(time.perf_counter() - started, 2)
    return scores, lists, basis, timing


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
        if (self.path / DISAGREEMENT_FILE).exists():
            _check_npy(self.path / DISAGREEMENT_FILE, (n,))
        if (self.path / NEIGHBOURS_FILE).exists():
            _check_npy(self.path / NEIGHBOURS_FILE, (3, n, None))
            _check_npy(self.path / BASIS_FILE, (None, npy_shape(self.path / "fea.npy")[1]))

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
        return read_npy(file, mmap_mode="r")

    @cached_property
    def act(self) -> np.ndarray:
        return self._array("act")

    @cached_property
    def prd(self) -> np.ndarray:
        return self._array("prd")

    @cached_property
    def fea(self) -> np.ndarray:
        return self._array("fea")

    @cached_property
    def disagreement(self) -> np.ndarray | None:
        """Each image's cross-space disagreement as stored with the run; None for a run written
        before runs stored it (pipeline.analyses.disagreement.run_scores computes it then)."""
        if not (self.path / DISAGREEMENT_FILE).is_file():
            return None
        return self._array(DISAGREEMENT_FILE.removesuffix(".npy"))

    @cached_property
    def neighbour_lists(self) -> np.ndarray | None:
        """Each image's nearest other images in ACT, FEA and PRD (3 × N × k, memory-mapped),
        as stored with the run; None for a run written before runs stored them."""
        if not (self.path / NEIGHBOURS_FILE).is_file():
            return None
        return self._array(NEIGHBOURS_FILE.removesuffix(".npy"))

    @cached_property
    def fea_basis(self) -> np.ndarray | None:
        """The basis the run's features are reduced by for every FEA neighbour search
        (pipeline.neighbours.fit_basis), as stored with the run; None for a run written
        before runs stored it (the basis is then fitted to its features)."""
        if not (self.path / BASIS_FILE).is_file():
            return None
        return np.array(self._array(BASIS_FILE.removesuffix(".npy")))

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
        row = self.images.iloc[int(index)]
        if str(row.get("root") or ""):
            return reference_target(row["root"], stored)
        path = Path(stored)
        return path if path.is_absolute() else self.data_dir / path

    def load_image(self, index: int) -> np.ndarray:
        """Row `index`'s full-size image, read as its dataset reads it (pipeline.store.located)."""
        self.image_path(index)  # a row without an image says so
        return load_row_image(self.images.iloc[int(index)], self.data_dir)

    def load_images(self, rows) -> list[np.ndarray]:
        """load_image of each of `rows`, those in the chunk store read in one batch per array."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        for index in rows:
            self.image_path(index)  # a row without an image says so
        return load_row_images(self.images.iloc[rows].to_dict("records"), self.data_dir)

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
        found = npy_shape(file)
    except (OSError, ValueError, EOFError) as err:
        raise PipelineError(f"{file} is not a readable array ({_first_line(err)})") from err
    fits = len(found) == len(shape) and all(s in (None, f) for s, f in zip(shape, found,
                                                                           strict=True))
    if not fits:
        want = "×".join("?" if s is None else str(s) for s in shape)
        raise PipelineError(f"{file} has shape {found}, expected {want}")




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
