"""`python -m pipeline ingest`: a folder of real detector images plus a labels CSV → a dataset.

Reads TIFF, EDF, CBF, HDF5/NeXus, PNG and JPEG one image at a time; every bad row or file is a
reported problem (or, with --strict, a failure with nothing written).

Conventions:
- the labels CSV's image column is the one named file/filename/image/path (any case), else the
  first column; every other column is a 0/1 attribute, under any name;
- rows are matched to files by relative path, else by unique file name or stem anywhere under
  the folder; paths leading outside it (../, absolute) are refused as problems;
- HDF5/NeXus: --h5-path names the dataset; without it the NeXus default plottable signal, else
  /entry/data/data; a file without it is a problem that lists the image-like datasets found;
- a multi-frame TIFF, EDF or HDF5 stack contributes its first frame;
- colour images (PNG, JPEG, RGB TIFF) become luminance 0.299 R + 0.587 G + 0.114 B;
- --inverted turns exported images with dark = intense back into counts: full scale − value,
  where full scale is the integer type's maximum (255 for 8-bit) or the image maximum for floats;
- pixels flagged negative by the detector (gaps, bad pixels) and NaN/inf become 0 counts; how
  many per image is recorded in images.parquet column `flagged_pixels`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.store import DatasetWriter, check_id, resolve_data_dir

FORMATS = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".edf": "edf",
    ".cbf": "cbf",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".nxs": "hdf5",
    ".nx5": "hdf5",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}
NEXUS_DEFAULT = "/entry/data/data"
FILE_COLUMNS = ("file", "filename", "image", "path", "filepath", "imagefile", "imagepath")
LUMINANCE = np.array([0.299, 0.587, 0.114])


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


# ---------------------------------------------------------------- image readers


def read_image(path, *, inverted: bool = False, h5_path: str | None = None) -> np.ndarray:
    """One detector image as a 2-D float32 array of counts; PipelineError names file and problem."""
    path = Path(path)
    try:
        pixels, _ = read_counts(path, inverted=inverted, h5_path=h5_path)
    except PipelineError as err:
        raise PipelineError(f"{path}: {err}") from None
    except Exception as err:  # every library has its own errors for a corrupt file
        raise PipelineError(f"{path}: {_describe(err)}") from None
    return pixels


def image_format(path: Path) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def read_counts(path: Path, *, inverted: bool, h5_path: str | None) -> tuple[np.ndarray, int]:
    """(float32 counts, number of flagged pixels set to 0) for one file of a known format."""
    fmt = image_format(path)
    if fmt is None:
        raise PipelineError(f"unsupported format {path.suffix or '(no extension)'!r}")
    if not path.is_file():
        raise PipelineError("file not found")
    raw, full_scale = READERS[fmt](path, h5_path)
    raw = np.asarray(raw)
    if raw.ndim != 2 or min(raw.shape) < 2:
        raise PipelineError(f"image has shape {raw.shape}, expected a 2-D image")
    pixels = raw.astype(np.float64)
    if inverted:
        pixels = (np.nanmax(pixels) if full_scale is None else full_scale) - pixels
    flagged = ~np.isfinite(pixels) | (pixels < 0)
    if flagged.all():
        raise PipelineError("no pixel holds a finite, non-negative value")
    pixels[flagged] = 0
    return pixels.astype(np.float32), int(flagged.sum())


def _full_scale(array: np.ndarray) -> float | None:
    """The value of a saturated pixel for integer types; None (use the maximum) for floats."""
    if array.dtype == bool:
        return 1.0
    if np.issubdtype(array.dtype, np.integer):
        return float(np.iinfo(array.dtype).max)
    return None


def _luminance(array: np.ndarray, channels_last: bool = True) -> np.ndarray:
    if not channels_last:
        array = np.moveaxis(array, 0, -1)
    return array[..., :3].astype(np.float64) @ LUMINANCE


def _read_tiff(path: Path, _h5_path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise PipelineError("TIFF holds no image")
        page = tif.pages[0]  # a stack contributes its first frame
        array = page.asarray()
        scale = _full_scale(array)
        if array.ndim == 3 and page.samplesperpixel in (3, 4):
            planar = array.shape[0] == page.samplesperpixel and array.shape[-1] not in (3, 4)
            array = _luminance(array, channels_last=not planar)
    return array, scale


def _read_fabio(path: Path, _h5_path):
    import fabio

    with _quiet("fabio"), fabio.open(str(path)) as img:
        if getattr(img, "incomplete_file", False) or getattr(img, "incomplete_data", False):
            raise PipelineError("file is truncated (data shorter than its header says)")
        array = np.array(img.data)  # first frame of a multi-frame file
    return array, _full_scale(array)


def _read_hdf5(path: Path, h5_path: str | None):
    import h5py

    with h5py.File(path, "r") as f:
        key = h5_path or _nexus_signal(f) or NEXUS_DEFAULT
        if key not in f:
            found = ", ".join(_image_datasets(f)[:5]) or "none"
            hint = "" if h5_path else "; name the dataset with --h5-path"
            raise PipelineError(f"no dataset {key}{hint} (image-like datasets here: {found})")
        ds = f[key]
        if not isinstance(ds, h5py.Dataset):
            raise PipelineError(f"{key} is a group, not a dataset")
        if ds.ndim == 3:
            array = ds[0]  # a stack contributes its first frame, read alone
        elif ds.ndim == 2:
            array = ds[()]
        else:
            raise PipelineError(f"dataset {key} has shape {ds.shape}, expected 2-D or a 3-D stack")
    return array, _full_scale(array)


def _nexus_signal(f) -> str | None:
    """The NeXus default plottable data (root@default → entry@default → NXdata@signal), if set."""
    try:
        entry = f[_text(f.attrs["default"])]
        data = entry[_text(entry.attrs["default"])]
        return data[_text(data.attrs["signal"])].name
    except (KeyError, TypeError, ValueError):
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _image_datasets(f) -> list[str]:
    names: list[str] = []

    def visit(name, obj):
        if getattr(obj, "ndim", 0) in (2, 3):
            names.append("/" + name)

    f.visititems(visit)
    return names


def _read_pillow(path: Path, _h5_path):
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # a truncated file fails here, not later
        if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
            array = np.asarray(img)
            if img.mode == "I" and array.size and array.max() <= 65535:
                return array, 65535.0  # Pillow may open 16-bit greyscale as 32-bit "I"
            return array, _full_scale(array)
        if img.mode == "LA":
            return np.asarray(img)[..., 0], 255.0
        return _luminance(np.asarray(img.convert("RGB"))), 255.0


READERS = {
    "tiff": _read_tiff,
    "edf": _read_fabio,
    "cbf": _read_fabio,
    "hdf5": _read_hdf5,
    "png": _read_pillow,
    "jpeg": _read_pillow,
}


@contextlib.contextmanager
def _quiet(logger_name: str):
    """fabio logs warnings about damaged files; we report those ourselves, once."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _describe(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"cannot read the image ({type(err).__name__}{': ' + text if text else ''})"


# ---------------------------------------------------------------- the labels CSV


@dataclass
class LabelTable:
    """A parsed labels CSV: which column names the files, the attribute names, the data rows."""

    path: Path
    file_column: str
    attributes: list[str]
    rows: list[tuple[int, list[str]]] = field(default_factory=list)  # (line number, cells)


def read_labels(path, id_columns=FILE_COLUMNS, what: str = "labels file") -> LabelTable:
    """Parse a labels CSV; a file that cannot be a labels table is a PipelineError.

    The key column is the first of `id_columns` present (compared lower-case, without spaces,
    '_' or '-'), else the first column; `what` names the file in messages.
    """
    path = Path(path)
    lines = _csv_rows(path, what)
    header = [h.strip() for h in lines[0][1]]
    for i, name in enumerate(header):
        if not name:
            raise PipelineError(f"{what} {path}: column {i + 1} of the header has no name")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise PipelineError(f"{what} {path}: column names repeat: {repeated}")
    key = _file_column(header, id_columns)
    attributes = [h for h in header if h != key]
    if not attributes:
        raise PipelineError(f"{what} {path} has no attribute columns (only {header})")
    if all(_binary(h) is not None for h in attributes):
        raise PipelineError(
            f"{what} {path}: the first row looks like data, not a header; "
            "add a header row naming the image column and the attributes"
        )
    if len(lines) == 1:
        raise PipelineError(f"{what} {path} has a header but no rows")
    return LabelTable(path, key, attributes, lines[1:])


def _csv_rows(path: Path, what: str) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PipelineError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise PipelineError(f"{what} {path} is a directory") from None
    except UnicodeDecodeError:
        raise PipelineError(f"{what} {path} is not UTF-8 text") from None
    except OSError as err:
        raise PipelineError(f"{what} {path} cannot be read: {err.strerror}") from None
    if not text.strip():
        raise PipelineError(f"{what} {path} is empty")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        reader = csv.reader(io.StringIO(text), dialect)
        return [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except csv.Error as err:
        raise PipelineError(f"{what} {path} is not valid CSV: {err}") from None


def _file_column(header: list[str], candidates) -> str:
    normal = {re.sub(r"[\s_\-]", "", h.lower()): h for h in header}
    for name in candidates:
        if name in normal:
            return normal[name]
    return header[0]


def _binary(cell: str) -> int | None:
    """1 or 0 for '1', '0', '1.0', '0.0'; None for anything else."""
    cell = cell.strip()
    try:
        value = float(cell)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def parse_row(table: LabelTable, cells: list[str]) -> tuple[str, np.ndarray | None, str | None]:
    """(entry, 0/1 labels, None) or (entry, None, reason) for one data row."""
    header_len = len(table.attributes) + 1
    names = [table.file_column, *table.attributes]
    if len(cells) != header_len:
        entry = cells[names.index(table.file_column)].strip() if cells else ""
        return entry, None, f"{len(cells)} fields where the header has {header_len}"
    record = dict(zip(names, cells, strict=True))
    entry = record[table.file_column].strip()
    labels, bad = [], []
    for name in table.attributes:
        value = _binary(record[name])
        if value is None:
            bad.append(f"{name!r}={record[name].strip()!r}")
        labels.append(value)
    if bad:
        return entry, None, f"values other than 0/1: {', '.join(bad[:4])}"
    return entry, np.array(labels, dtype=np.uint8), None


# ---------------------------------------------------------------- finding images safely


class ImageIndex:
    """The image files under a folder, found by relative path, file name or stem."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise PipelineError(f"images folder {root} not found")
        self.files = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and image_format(p) and not _hidden(p.relative_to(self.root))
        )
        self.by_name: dict[str, list[str]] = {}
        for rel in self.files:
            self.by_name.setdefault(Path(rel).name, []).append(rel)
            self.by_name.setdefault(Path(rel).stem, []).append(rel)

    def locate(self, entry: str) -> tuple[str | None, str | None]:
        """(relative path, None) or (None, reason). Paths leading outside the folder are refused."""
        entry = entry.strip().replace("\\", "/")
        if not entry:
            return None, "no image file named"
        target = (self.root / entry).resolve()  # an absolute entry replaces the root here
        if not target.is_relative_to(self.root):
            return None, "refused: the path leads outside the images folder"
        if target.is_file():
            if image_format(target) is None:
                return None, f"unsupported format {target.suffix or '(no extension)'!r}"
            return target.relative_to(self.root).as_posix(), None
        if "/" not in entry:
            matches = sorted(set(self.by_name.get(entry, [])))
            if len(matches) == 1:
                return matches[0], None
            if matches:
                return None, f"ambiguous: matches {', '.join(matches[:3])}"
        return None, f"no such image file in {self.root}"


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


# ---------------------------------------------------------------- planning and ingesting


@dataclass
class Planned:
    rel: str
    labels: np.ndarray
    line: int


def plan_rows(table: LabelTable, index: ImageIndex) -> tuple[list[Planned], list[Problem]]:
    """Match rows to files; every row or file that cannot be used becomes a Problem."""
    problems: list[Problem] = []
    by_file: dict[str, list[Planned]] = {}
    named: set[str] = set()  # files some row names, usable or not: they have a row
    for line, cells in table.rows:
        entry, labels, reason = parse_row(table, cells)
        rel, missing = index.locate(entry)
        named.add(rel)
        reason = reason or missing
        if reason is not None:
            problems.append(Problem(entry or table.path.name, f"row {line}: {reason}"))
            continue
        by_file.setdefault(rel, []).append(Planned(rel, labels, line))
    plan = []
    for rel, rows in by_file.items():
        lines = ", ".join(str(r.line) for r in rows)
        if all(np.array_equal(r.labels, rows[0].labels) for r in rows):
            plan.append(rows[0])
            problems += [
                Problem(rel, f"row {r.line}: duplicate of row {rows[0].line}; ignored")
                for r in rows[1:]
            ]
        else:
            problems.append(Problem(rel, f"rows {lines} give different labels; image skipped"))
    problems += [
        Problem(rel, f"no row in {table.path.name}; not ingested")
        for rel in index.files
        if rel not in named
    ]
    return sorted(plan, key=lambda p: p.line), problems


def assign_splits(n: int, test_fraction: float, seed: int = 0) -> np.ndarray:
    """'train' / 'test' per planned image: a seeded random round(n × fraction) are test."""
    if not 0 <= test_fraction < 1:
        raise PipelineError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    splits = np.full(n, "train", dtype=object)
    splits[np.random.default_rng(seed).permutation(n)[: round(n * test_fraction)]] = "test"
    return splits


@dataclass
class IngestResult:
    path: Path
    n_images: int
    problems: list[Problem]


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
    progress: bool = True,
) -> IngestResult:
    """Stream the labelled images of `images_dir` into a new dataset; see the module docstring.

    Raises IngestProblems (nothing written) with --strict and any problem, or with no good image.
    """
    index = ImageIndex(Path(images_dir))
    table = read_labels(labels)
    plan, problems = plan_rows(table, index)
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
    with DatasetWriter(resolve_data_dir(data_dir), dataset_id, table.attributes, meta) as ds:
        for item, split in zip(
            tqdm(plan, desc="ingest", unit="img", disable=not progress), splits, strict=True
        ):
            try:
                pixels, flagged = read_counts(
                    index.root / item.rel, inverted=inverted, h5_path=h5_path
                )
            except PipelineError as err:
                problems.append(Problem(item.rel, str(err)))
                continue
            except Exception as err:  # every reader library raises its own kinds
                problems.append(Problem(item.rel, _describe(err)))
                continue
            ds.add(
                pixels,
                item.labels,
                image_id=item.rel,
                split=split,
                source="ingest",
                format=image_format(Path(item.rel)),
                flagged_pixels=flagged,
            )
        if strict and problems:
            raise IngestProblems(f"--strict: {len(problems)} problems; nothing written", problems)
        if not ds.rows:
            raise IngestProblems(
                f"no image could be read ({len(problems)} problems); nothing written", problems
            )
        ds.meta["problems"] = [str(p) for p in problems]
    return IngestResult(ds.final, len(ds.rows), problems)


def _default_id(root: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", root.name).strip("-.") or "ingest"
    return slug[:100]


# ---------------------------------------------------------------- command line


def summary_lines(n_images: int, problems: list[Problem]) -> list[str]:
    """The report printed after an ingest; its last line counts images and problems."""
    lines = [f"problems ({len(problems)}):"] if problems else []
    lines += [f"  {p}" for p in problems]
    return [*lines, f"ingested {n_images} images, {len(problems)} problems"]


def register(subparsers) -> None:
    from pipeline.cli import add_data_dir

    p = subparsers.add_parser(
        "ingest",
        help="turn a folder of detector images and a labels CSV into a dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", required=True, help="folder holding the image files")
    p.add_argument(
        "--labels", required=True, help="CSV: image file column + one 0/1 column per attribute"
    )
    p.add_argument("--id", default=None, help="dataset id (default: the images folder's name)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail, writing nothing, if any row or file has a problem",
    )
    p.add_argument(
        "--inverted",
        action="store_true",
        help="images were exported with inverted contrast (dark = intense)",
    )
    p.add_argument(
        "--h5-path",
        default=None,
        help=f"dataset inside HDF5/NeXus files (default: NeXus signal or {NEXUS_DEFAULT})",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of images put in the test split (default 0.2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    add_data_dir(p)
    p.set_defaults(func=cmd_ingest)


def cmd_ingest(args) -> int:
    try:
        result = ingest(
            args.images,
            args.labels,
            args.data_dir,
            dataset_id=args.id,
            strict=args.strict,
            inverted=args.inverted,
            h5_path=args.h5_path,
            test_fraction=args.test_fraction,
            seed=args.seed,
        )
    except IngestProblems as err:
        print("\n".join(summary_lines(0, err.problems)))
        raise
    print(f"dataset {result.path.name} written to {result.path}")
    print("\n".join(summary_lines(result.n_images, result.problems)))
    return 0
