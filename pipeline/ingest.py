"""`python -m pipeline ingest`: a folder of real detector images plus a labels CSV → a dataset.

Reads TIFF, EDF, CBF, HDF5/NeXus, PNG and JPEG one image at a time; every bad row or file is a
reported problem (or, with --strict, a failure with nothing written).

Conventions:
- the labels CSV's image column is the one named file/filename/image/path (any case), else the
  first column; every other column is a 0/1 attribute, under any name;
- rows are matched to files by path under the images folder, else by path beside the labels CSV
  (as `./data/img_001.tif` in a CSV next to data/), else by unique file name or stem anywhere
  under the images folder; a path leading outside both folders (../, absolute, a symbolic link)
  is refused as a problem;
- each image is read by pipeline.readers (formats, --max-pixels, --h5-path, --inverted, flagged
  pixels: see there); how many pixels each image had flagged is recorded in images.parquet
  column `flagged_pixels`;
- no pixel is copied: the dataset references each file in place (relative to the images folder
  or the labels CSV's folder) and reads it again when the image is shown; only its thumbnail
  is stored (pipeline.store.chunks). Moving or deleting the files after
  the ingest makes those images unreadable, each named in the error.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import pool
from pipeline.errors import PipelineError
from pipeline.labels import LabelTable, parse_row, read_labels
from pipeline.readers import (
    MAX_PIXELS,
    describe_error,
    image_format,
    read_counts,
)
from pipeline.store import DatasetWriter, check_id, resolve_data_dir
from pipeline.store.datasets import Thumbnailed, thumbnailed

# From this many images on, reading and thumbnailing (most of an ingest's time) run in a pool of
# processes, one per core, in order, while this process alone writes the dataset. Below it one
# process is quicker: each worker takes about a second to start (it imports the readers).
PARALLEL_MIN = 500
POOL_CHUNK = 16  # images a worker reads per task: few round trips, little waiting at the end
AHEAD = 8  # tasks per worker handed out ahead of the writer (their results wait in memory)

UNDER, BESIDE, BY_NAME = (
    "by path under the images folder",
    "by path beside the labels CSV",
    "by unique file name",
)


@dataclass
class Problem:
    """One row or file left out, and why."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class IngestProblems(PipelineError):
    """The ingest stopped (--strict, or no good image) after finding these problems."""

    def __init__(self, message: str, problems: list[Problem]):
        super().__init__(message)
        self.problems = problems


# ---------------------------------------------------------------- finding images safely


@dataclass(frozen=True)
class Found:
    """An image file a row names: where it is, its id, and the rule that matched it."""

    path: Path  # resolved, inside the images folder or the labels CSV's folder
    rel: str  # relative to the images folder, else to the labels CSV's folder
    rule: str  # UNDER, BESIDE or BY_NAME
    root: Path  # the folder `rel` is relative to (resolved)


class ImageIndex:
    """The image files under a folder, found by path there or beside the labels CSV, or by name.

    `beside` is the labels CSV's folder: labs write paths relative to it (`./data/img_001.tif`).
    """

    def __init__(self, root: Path, beside: Path | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise PipelineError(f"images folder {root} not found")
        self.beside = Path(beside).resolve() if beside is not None else None
        self.files = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file()
            and image_format(p)
            and not _hidden(p.relative_to(self.root))
            and p.resolve().is_relative_to(self.root)  # a link leading out is no candidate
        )
        self.by_name: dict[str, list[str]] = {}
        for rel in self.files:
            self.by_name.setdefault(Path(rel).name, []).append(rel)
            self.by_name.setdefault(Path(rel).stem, []).append(rel)

    def _bases(self) -> list[tuple[Path, str]]:
        if self.beside is None or self.beside == self.root:
            return [(self.root, UNDER)]
        return [(self.root, UNDER), (self.beside, BESIDE)]

    def locate(self, entry: str) -> tuple[Found | None, str | None]:
        """(Found, None) or (None, reason). A path leading outside every folder is refused."""
        entry = entry.strip().replace("\\", "/")
        if not entry:
            return None, "no image file named"
        escaped = False
        for base, rule in self._bases():
            target = (base / entry).resolve()  # an absolute entry replaces the base here
            if not target.is_relative_to(base):
                escaped = True
            elif target.is_file():
                if image_format(target) is None:
                    return None, f"unsupported format {target.suffix or '(no extension)'!r}"
                return self._found(target, rule), None
        if escaped:
            folders = " and the labels CSV's folder" if len(self._bases()) > 1 else ""
            return None, f"refused: the path leads outside the images folder{folders}"
        return self._by_name(entry.rsplit("/", 1)[-1])

    def _found(self, target: Path, rule: str) -> Found:
        base = self.root if target.is_relative_to(self.root) else self.beside
        return Found(target, target.relative_to(base).as_posix(), rule, base)

    def _by_name(self, name: str) -> tuple[Found | None, str | None]:
        matches = sorted(set(self.by_name.get(name, [])))
        if len(matches) == 1:
            return Found((self.root / matches[0]).resolve(), matches[0], BY_NAME,
                         self.root), None
        if matches:
            return None, f"ambiguous: matches {', '.join(matches[:3])}"
        return None, f"no such image file in {self.root}"


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def matched_line(matched: Counter) -> str:
    """'matched 120 rows by path under the images folder, 30 by …', rules in their order."""
    counts = [(matched[rule], rule) for rule in (UNDER, BESIDE, BY_NAME) if matched[rule]]
    (first, rule), rest = counts[0], counts[1:]
    text = f"matched {first} row{'' if first == 1 else 's'} {rule}"
    return text + "".join(f", {n} {other}" for n, other in rest)


# ---------------------------------------------------------------- planning and ingesting


@dataclass
class Planned:
    rel: str
    labels: np.ndarray
    line: int
    path: Path
    root: Path  # the folder `rel` is relative to: the images folder or the labels CSV's




def plan_rows(
    table: LabelTable, index: ImageIndex
) -> tuple[list[Planned], list[Problem], Counter]:
    """Match rows to files; every row or file that cannot be used becomes a Problem.

    Also returns how many rows each rule (UNDER, BESIDE, BY_NAME) matched.
    """
    problems: list[Problem] = []
    by_file: dict[Path, list[Planned]] = {}
    named: set[Path] = set()  # files some row names, usable or not: they have a row
    matched: Counter = Counter()
    for line, cells in table.rows:
        entry, labels, reason = parse_row(table, cells)
        found, missing = index.locate(entry)
        if found is not None:
            named.add(found.path)
            matched[found.rule] += 1
        reason = reason or missing
        if reason is not None:
            problems.append(Problem(entry or table.path.name, f"row {line}: {reason}"))
            continue
        by_file.setdefault(found.path, []).append(
            Planned(found.rel, labels, line, found.path, found.root)
        )
    plan = []
    for rows in by_file.values():
        plan += _one_per_file(rows, problems)
    problems += [
        Problem(rel, f"no row in {table.path.name}; not ingested")
        for rel in index.files
        if (index.root / rel).resolve() not in named
    ]
    return sorted(plan, key=lambda p: p.line), problems, matched


def _one_per_file(rows: list[Planned], problems: list[Problem]) -> list[Planned]:
    """The row to use for one file: repeats that agree are ignored, ones that disagree skip it."""
    if all(np.array_equal(r.labels, rows[0].labels) for r in rows):
        problems += [
            Problem(r.rel, f"row {r.line}: duplicate of row {rows[0].line}; ignored")
            for r in rows[1:]
        ]
        return [rows[0]]
    lines = ", ".join(str(r.line) for r in rows)
    problems.append(Problem(rows[0].rel, f"rows {lines} give different labels; image skipped"))
    return []


def assign_splits(n: int, test_fraction: float, seed: int = 0) -> np.ndarray:
    """'train' / 'test' per planned image: a seeded random round(n × fraction) are test."""
    if not 0 <= test_fraction < 1:
        raise PipelineError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    splits = np.full(n, "train", dtype=object)
    splits[np.random.default_rng(seed).permutation(n)[: round(n * test_fraction)]] = "test"
    return splits


@contextlib.contextmanager
def writing(what: str, where: Path):
    """An OSError while writing `what` into `where` (a full disk, no permission) becomes one line.

    Wrap the writer's whole block: its temporary directory is gone before this message.
    """
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = f"the disk is full ({err.strerror})"
        else:
            reason = err.strerror or str(err)
        raise PipelineError(f"cannot write {what} in {where}: {reason}; nothing written") from None


@dataclass
class IngestResult:
    path: Path
    n_images: int
    problems: list[Problem]
    matched: Counter = field(default_factory=Counter)


def ingest(
    images_dir,
    labels,
    data_dir=None,
    *,
    dataset_id: str | None = None,
    strict: bool = False,
    inverted: bool = False,
    h5_path: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_pixels: int = MAX_PIXELS,
    progress: bool = True,
) -> IngestResult:
    """Stream the labelled images of `images_dir` into a new dataset; see the module docstring.

    Raises IngestProblems (nothing written) with --strict and any problem, or with no good image.
    """
    index = ImageIndex(Path(images_dir), beside=Path(labels).parent)
    table = read_labels(labels)
    plan, problems, matched = plan_rows(table, index)
    if strict and problems:
        raise IngestProblems(f"--strict: {len(problems)} problems; nothing written", problems)
    if not plan:
        raise IngestProblems(
            f"no image could be ingested ({len(problems)} problems); nothing written", problems
        )
    splits = assign_splits(len(plan), test_fraction, seed)
    dataset_id = check_id(dataset_id or _default_id(index.root), "dataset")
    meta = {
        "source": "ingest",
        "images_dir": str(index.root),
        "labels": str(table.path),
        "file_column": table.file_column,
        "inverted": inverted,
        "h5_path": h5_path,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    writer = DatasetWriter(resolve_data_dir(data_dir), dataset_id, table.attributes, meta)
    reading = {"inverted": inverted, "h5_path": h5_path, "max_pixels": max_pixels}
    with writing(f"dataset {dataset_id}", writer.final.parent), writer as ds:
        _read_into(ds, plan, splits, problems, reading, progress)
        if strict and problems:
            raise IngestProblems(f"--strict: {len(problems)} problems; nothing written", problems)
        if not ds.rows:
            raise IngestProblems(
                f"no image could be read ({len(problems)} problems); nothing written", problems
            )
        ds.meta["problems"] = [str(p) for p in problems]
    return IngestResult(ds.final, len(ds.rows), problems, matched)


def _read_into(ds: DatasetWriter, plan, splits, problems: list[Problem], reading, progress):
    """Read each planned image into the dataset, in plan order; one that cannot be read becomes a
    Problem. Large plans are read by a pool of processes (see PARALLEL_MIN); the rows, problems and
    bytes written are the same either way."""
    paths, rels = [item.path for item in plan], [item.rel for item in plan]
    workers = pool.workers_for(len(plan), PARALLEL_MIN)
    with pool.ordered_map(workers, chunk=POOL_CHUNK, ahead=AHEAD) as mapped:
        results = mapped(_read_one, paths, rels, repeat(reading), repeat(ds.chunks.thumb_size))
        for item, split, (image, reason) in zip(
            tqdm(plan, desc="ingest", unit="img", disable=not progress), splits, results,
            strict=True,
        ):
            if image is None:
                problems.append(Problem(item.rel, reason))
                continue
            ds.add_reference(
                image[0],
                item.rel,
                item.root,
                item.labels,
                reader=reading,
                image_id=item.rel,
                split=split,
                source="ingest",
                format=image_format(Path(item.rel)),
                flagged_pixels=image[1],
            )


def _read_one(
    path: Path, rel: str, reading: dict, thumb_size: int
) -> tuple[tuple[Thumbnailed, int] | None, str | None]:
    """((the image's shape and thumbnail, its flagged pixels), None), or (None, why it cannot be
    read). Runs in a pool's worker for large plans: only the small thumbnail comes back."""
    try:
        pixels, flagged = read_counts(path, **reading)
    except PipelineError as err:
        return None, str(err)
    except Exception as err:  # every reader library raises its own kinds
        return None, describe_error(err)
    return (thumbnailed(pixels, rel, thumb_size), flagged), None


def _default_id(root: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", root.name).strip("-.") or "ingest"
    return slug[:100]


def summary_lines(n_images: int, problems: list[Problem], matched: Counter | None = None):
    """The report printed after an ingest; its last line counts images and problems."""
    lines = [f"problems ({len(problems)}):"] if problems else []
    lines += [f"  {p}" for p in problems]
    lines += [matched_line(matched)] if matched else []
    return [*lines, f"ingested {n_images} images, {len(problems)} problems"]
