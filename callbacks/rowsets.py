"""Selections and saved groups as the browser holds them: the row numbers themselves when few,
else a short token naming rows that stay on the server.

A selection of a large run can hold hundreds of thousands of rows. Held in a dcc.Store, that
list travelled to the browser on every box select and back with every callback that reads the
selection; at 100,000 images the Dash renderer alone spent seconds per gesture on it. Above
INLINE_ROWS the server keeps the rows (memory, then the data directory's disk cache, so that
every worker process and a restarted server find them) and the browser gets "rows:<digest>".

Nothing the browser sends is trusted: a list is checked row by row, a token only names rows the
server itself found and stored for that run; an unknown token, or one of another run, is an
empty selection.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict

import numpy as np

from pipeline.store import Run

INLINE_ROWS = 1_000  # rows sent to the browser as they are; a larger set goes by token
TOKEN = re.compile(r"rows:[0-9a-f]{32}")
MEMORY_SETS = 32  # row sets kept in memory (the disk cache holds the rest)

_MEMORY: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
_LOCK = threading.Lock()


def keep_rows(run: Run, rows) -> list[int] | str:
    """Rows of `run` (found by the server) as the browser is to hold them: a sorted list of
    at most INLINE_ROWS, else a token for the rows kept here."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if len(rows) <= INLINE_ROWS:
        return rows.tolist()
    packed = rows.astype(np.int32 if len(run) < 2**31 else np.int64)
    packed.flags.writeable = False
    digest = hashlib.blake2b(run.id.encode() + b"\0" + packed.tobytes(), digest_size=16)
    token = f"rows:{digest.hexdigest()}"
    _remember(token, run.id, packed)
    _disk(run).set(token, (run.id, packed))
    return token


def rows_of(run: Run, held) -> np.ndarray:
    """The rows a selection or group the browser holds stands for (int64, sorted, once each,
    each a row of the run): a token's rows, or those of a list that are rows of the run
    (anything else dropped); none for anything else."""
    if isinstance(held, str):
        return _token_rows(run, held)
    if isinstance(held, np.ndarray) and held.dtype.kind in "iu":  # resolved here already
        rows = np.unique(held.astype(np.int64))
    elif isinstance(held, list) and held:
        whole = [r for r in held if type(r) is int]  # not bool, float or str
        rows = np.unique(np.asarray(whole, dtype=np.int64))
    else:
        return np.zeros(0, dtype=np.int64)
    return rows[(rows >= 0) & (rows < len(run))]


def is_token(held) -> bool:
    return isinstance(held, str) and TOKEN.fullmatch(held) is not None


def _token_rows(run: Run, token: str) -> np.ndarray:
    if not is_token(token):
        return np.zeros(0, dtype=np.int64)
    with _LOCK:
        found = _MEMORY.get(token)
        if found is not None:
            _MEMORY.move_to_end(token)
    if found is None:
        found = _disk(run).get(token)
        if found is not None:
            _remember(token, *found)
    if found is None or found[0] != run.id:
        return np.zeros(0, dtype=np.int64)
    rows = np.asarray(found[1], dtype=np.int64)
    return rows[rows < len(run)]  # the run was written again smaller: its own rows only


def _remember(token: str, run_id: str, rows: np.ndarray) -> None:
    with _LOCK:
        _MEMORY[token] = (run_id, rows)
        _MEMORY.move_to_end(token)
        while len(_MEMORY) > MEMORY_SETS:
            _MEMORY.popitem(last=False)


def _disk(run: Run):
    from callbacks.common import disk_cache  # common imports this module

    return disk_cache(run, "selections")
