"""CSV files that are safe to open in a spreadsheet: every export of the dashboard and the command
line goes through `formula_safe`, and files are written whole or not at all.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError

# A text cell starting with one of these is run as a formula by Excel, LibreOffice and Google
# Sheets (OWASP, "CSV Injection"): a typed note such as =HYPERLINK(...) would become a live link.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _escape(value):
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value  # the quote makes the spreadsheet show the text as typed
    return value


def formula_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells and column names cannot start a formula.

    Only text is escaped: numbers (a probability, a label, -0.5) stay numbers.
    """
    safe = frame.rename(columns=_escape)
    for column, dtype in safe.dtypes.items():
        if not _is_number(dtype):
            safe[column] = safe[column].map(_escape)
    return safe


def _is_number(dtype) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def write_csv(frame: pd.DataFrame, out) -> None:
    """`formula_safe(frame)` as CSV to an open file, or to a path, replacing it only when whole.

    A folder that does not exist or cannot be written is a PipelineError naming it.
    """
    safe = formula_safe(frame)
    if not isinstance(out, (str, os.PathLike)):
        safe.to_csv(out, index=False)
        return
    path = Path(out)
    if not path.parent.is_dir():
        raise PipelineError(f"cannot write {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise PipelineError(f"cannot write {path}: it is a folder; name a file in it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise PipelineError(f"cannot write in {path.parent}: {err.strerror or err}") from err
    try:
        os.chmod(tmp, 0o644)  # an export to share, not mkstemp's owner-only file
        with os.fdopen(fd, "w", newline="") as fh:
            safe.to_csv(fh, index=False)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise PipelineError(f"cannot write {path}: {err.strerror or err}") from err
        raise
