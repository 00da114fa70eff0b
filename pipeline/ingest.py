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
- an image declaring more than --max-pixels pixels (default 25,000,000, above an Eiger 16M) is
  refused from its header, before its pixels are decoded: a few KB can declare gigabytes;
- HDF5/NeXus: --h5-path names the dataset; without it the NeXus default plottable signal, else
  /entry/data/data; a file without it is a problem that lists the image-like datasets found;
- a multi-frame TIFF, EDF or HDF5 stack contributes its first frame;
- colour images (PNG, JPEG, RGB TIFF) become luminance 0.299 R + 0.587 G + 0.114 B;
- --inverted turns exported images with dark = intense back into counts: full scale − value,
  where full scale is the integer type's maximum (255 for 8-bit) or the image maximum for floats;
- pixels flagged negative by the detector (gaps, bad pixels) and NaN/inf become 0 counts; how
  many per image is recorded in images.parquet column `flagged_pixels`; complex pixels are
  refused, not cut to their real part.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import io
import logging
import math
import re
import warnings
from collections import Counter
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
# A Pilatus 6M frame is 2463×2527 ≈ 6.2 M pixels, an Eiger 16M 4150×4371 ≈ 18 M: real detectors
# fit; a 12 KB file declaring 20000² (400 M pixels, 3 GB as float64) does not.
MAX_PIXELS = 25_000_000
MIN_SIDE = 2
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


# ---------------------------------------------------------------- image readers


def read_image(
    path, *, inverted: bool = False, h5_path: str | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """One detector image as a 2-D float32 array of counts; PipelineError names file and problem."""
    path = Path(path)
    try:
        pixels, _ = read_counts(path, inverted=inverted, h5_path=h5_path, max_pixels=max_pixels)
    except PipelineError as err:
        raise PipelineError(f"{path}: {err}") from None
    except Exception as err:  # every library has its own errors for a corrupt file
        raise PipelineError(f"{path}: {_describe(err)}") from None
    return pixels


def image_format(path: Path) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def read_counts(
    path: Path, *, inverted: bool, h5_path: str | None, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, int]:
    """(float32 counts, number of flagged pixels set to 0) for one file of a known format."""
    fmt = image_format(path)
    if fmt is None:
        raise PipelineError(f"unsupported format {path.suffix or '(no extension)'!r}")
    if not path.is_file():
        raise PipelineError("file not found")
    raw, full_scale = READERS[fmt](path, h5_path, max_pixels)
    raw = np.asarray(raw)
    _check_image(raw)
    pixels = raw.astype(np.float64)
    if inverted:
        pixels = (np.nanmax(pixels) if full_scale is None else full_scale) - pixels
    flagged = ~np.isfinite(pixels) | (pixels < 0)
    if flagged.all():
        raise PipelineError("no pixel holds a finite, non-negative value")
    pixels[flagged] = 0
    return pixels.astype(np.float32), int(flagged.sum())


def check_size(shape, max_pixels: int) -> None:
    """Refuse an image whose declared shape is over the limit; called before pixels are decoded."""
    dims = [int(n) for n in shape]
    pixels = math.prod(dims)
    if pixels > max_pixels:
        raise PipelineError(
            f"image is {'×'.join(map(str, dims))} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} (raise it with --max-pixels)"
        )


def _check_image(raw: np.ndarray) -> None:
    """A real-valued 2-D image of at least MIN_SIDE² pixels, or a PipelineError saying why not."""
    if np.iscomplexobj(raw):  # casting would keep the real part and drop the rest silently
        raise PipelineError(f"pixels are complex numbers ({raw.dtype}); expected real counts")
    if raw.ndim != 2:
        raise PipelineError(f"image has shape {raw.shape}, expected a 2-D image")
    if min(raw.shape) < MIN_SIDE:
        raise PipelineError(
            f"image is {raw.shape[0]}×{raw.shape[1]} pixels, too small: "
            f"at least {MIN_SIDE}×{MIN_SIDE} are needed"
        )


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


def _read_tiff(path: Path, _h5_path, max_pixels: int):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise PipelineError("TIFF holds no image")
        page = tif.pages[0]  # a stack contributes its first frame
        depth = (page.imagedepth,) if page.imagedepth > 1 else ()
        check_size((*depth, page.imagelength, page.imagewidth), max_pixels)
        array = page.asarray()
        scale = _full_scale(array)
        if array.ndim == 3 and page.samplesperpixel in (3, 4):
            planar = array.shape[0] == page.samplesperpixel and array.shape[-1] not in (3, 4)
            array = _luminance(array, channels_last=not planar)
    return array, scale


def _read_fabio(path: Path, _h5_path, max_pixels: int):
    import fabio

    with _quiet("fabio"):
        declared = fabio.openheader(str(path)).shape  # CBF decodes on open: check the header first
        if declared:
            check_size(declared, max_pixels)
        with fabio.open(str(path)) as img:
            if getattr(img, "incomplete_file", False) or getattr(img, "incomplete_data", False):
                raise PipelineError("file is truncated (data shorter than its header says)")
            array = np.array(img.data)  # first frame of a multi-frame file
    return array, _full_scale(array)


def _read_hdf5(path: Path, h5_path: str | None, max_pixels: int):
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
        if ds.ndim not in (2, 3):
            raise PipelineError(f"dataset {key} has shape {ds.shape}, expected 2-D or a 3-D stack")
        check_size(ds.shape[-2:], max_pixels)
        array = ds[0] if ds.ndim == 3 else ds[()]  # a stack contributes its first frame, alone
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


def _read_pillow(path: Path, _h5_path, max_pixels: int):
    with _pillow_opened(path, max_pixels) as img:
        img.load()  # a truncated file fails here, not later
        if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
            array = np.asarray(img)
            if img.mode == "I" and array.size and array.max() <= 65535:
                return array, 65535.0  # Pillow may open 16-bit greyscale as 32-bit "I"
            return array, _full_scale(array)
        if img.mode == "LA":
            return np.asarray(img)[..., 0], 255.0
        return _luminance(np.asarray(img.convert("RGB"))), 255.0


@contextlib.contextmanager
def _pillow_opened(path: Path, max_pixels: int):
    """The image with only its header read and its size within the limit.

    Pillow's own bomb check refuses more than twice Image.MAX_IMAGE_PIXELS on open: that global
    is our limit while opening, and its refusal becomes our message with the declared shape.
    """
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():  # above the limit is refused just below, not warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        Image.MAX_IMAGE_PIXELS = None  # only to read the declared size for the message
        with Image.open(path) as img:
            check_size((img.height, img.width), max_pixels)
        raise
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    with img:
        check_size((img.height, img.width), max_pixels)
        yield img


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
    key = _file_column(header, id_columns)
    attributes = [h for h in header if h != key]
    if _looks_like_data(header, attributes):  # before the repeat check: '0' repeats in data rows
        raise PipelineError(
            f"{what} {path}: the first row looks like data, not a header; "
            "add a header row naming the image column and the attributes"
        )
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise PipelineError(f"{what} {path}: column names repeat: {repeated}")
    if not attributes:
        raise PipelineError(f"{what} {path} has no attribute columns (only {header})")
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


def _looks_like_data(header: list[str], attributes: list[str]) -> bool:
    """Whether a first row is data: every cell a number or a file name, or every label 0/1."""
    if attributes and all(_binary(h) is not None for h in attributes):
        return True
    return all(_number_like(h) or image_format(h) or "/" in h for h in header)


def _number_like(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


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


@dataclass(frozen=True)
class Found:
    """An image file a row names: where it is, its id, and the rule that matched it."""

    path: Path  # resolved, inside the images folder or the labels CSV's folder
    rel: str  # relative to the images folder, else to the labels CSV's folder
    rule: str  # UNDER, BESIDE or BY_NAME


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
        return Found(target, target.relative_to(base).as_posix(), rule)

    def _by_name(self, name: str) -> tuple[Found | None, str | None]:
        matches = sorted(set(self.by_name.get(name, [])))
        if len(matches) == 1:
            return Found((self.root / matches[0]).resolve(), matches[0], BY_NAME), None
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
        by_file.setdefault(found.path, []).append(Planned(found.rel, labels, line, found.path))
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
    """Read each planned image into the dataset; one that cannot be read becomes a Problem."""
    for item, split in zip(
        tqdm(plan, desc="ingest", unit="img", disable=not progress), splits, strict=True
    ):
        try:
            pixels, flagged = read_counts(item.path, **reading)
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


def _default_id(root: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", root.name).strip("-.") or "ingest"
    return slug[:100]


# ---------------------------------------------------------------- command line


def summary_lines(n_images: int, problems: list[Problem], matched: Counter | None = None):
    """The report printed after an ingest; its last line counts images and problems."""
    lines = [f"problems ({len(problems)}):"] if problems else []
    lines += [f"  {p}" for p in problems]
    lines += [matched_line(matched)] if matched else []
    return [*lines, f"ingested {n_images} images, {len(problems)} problems"]


def pixel_limit(text: str) -> int:
    """--max-pixels: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of pixels above 0, got {text!r}"
        )
    return value


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels",
        type=pixel_limit,
        default=MAX_PIXELS,
        help=f"refuse images declaring more pixels than this (default {MAX_PIXELS:,})",
    )


def register(subparsers) -> None:
    from pipeline.cli import add_data_dir, non_negative_int

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
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the train/test split")
    add_max_pixels(p)
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
            max_pixels=args.max_pixels,
        )
    except IngestProblems as err:
        print("\n".join(summary_lines(0, err.problems)))
        raise
    print(f"dataset {result.path.name} written to {result.path}")
    print("\n".join(summary_lines(result.n_images, result.problems, result.matched)))
    return 0
