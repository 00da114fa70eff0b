"""The labels CSV of a dataset: which column names the images, the attribute names, the rows.

The image (or id) column is the one named file/filename/image/path (any case, ignoring spaces,
'_' and '-'), else the first column; every other column is a 0/1 attribute, under any name.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.readers import image_format

FILE_COLUMNS = ("file", "filename", "image", "path", "filepath", "imagefile", "imagepath")

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
