"""Durable label corrections: an append-only event log in SQLite at <data_dir>/corrections.sqlite,
and the one accessor of the labels in force (annotated plus corrections) that every panel uses.

A correction sets one label (dataset id + image id + attribute) to 0 or 1; undo appends an event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.spreadsheet import write_csv
from pipeline.store import Run, open_run, resolve_data_dir

FILE_NAME = "corrections.sqlite"
BUSY_TIMEOUT_MS = 30_000
MAX_NOTE = 2000
MAX_AUTHOR = 100
COLUMNS = ("event", "created", "dataset", "image_id", "attribute", "action", "value", "undoes",
           "author", "note")

# Every write is one row: 'set' gives a label its new value; 'undo' cancels the latest
# still-active 'set' of the same key (named in `undoes`). Nothing is ever updated or deleted,
# so the history is the table itself and two writers can only add, never overwrite.
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event     INTEGER PRIMARY KEY AUTOINCREMENT,
    created   TEXT    NOT NULL,
    dataset   TEXT    NOT NULL,
    image_id  TEXT    NOT NULL,
    attribute TEXT    NOT NULL,
    action    TEXT    NOT NULL CHECK (action IN ('set', 'undo')),
    value     INTEGER CHECK (value IN (0, 1)),
    undoes    INTEGER REFERENCES events(event),
    author    TEXT    NOT NULL,
    note      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_key ON events (dataset, image_id, attribute);
"""


def db_path(data_dir=None) -> Path:
    return resolve_data_dir(data_dir) / FILE_NAME


@contextlib.contextmanager
def connect(data_dir=None) -> Iterator[sqlite3.Connection]:
    """A connection in WAL mode with a busy timeout; closed when the block ends."""
    path = db_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE) so that a
        # writer takes the write lock before it reads what it builds on.
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.Error as err:
        raise PipelineError(f"cannot open corrections database {path}: {err}") from err
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _prepare(conn)
        yield conn
    except sqlite3.DatabaseError as err:
        raise PipelineError(f"corrections database {path}: {err}") from err
    finally:
        conn.close()


def _prepare(conn: sqlite3.Connection) -> None:
    """WAL mode and the schema. Writers racing to set up a new file can be told 'locked' at once
    (SQLite skips the busy handler where waiting could deadlock), so setting up is retried."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.05))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _clean_key(dataset: str, image_id: str, attribute: str) -> tuple[str, str, str]:
    key = tuple(str(x).strip() for x in (dataset, image_id, attribute))
    for name, value in zip(("a dataset id", "an image id", "an attribute"), key, strict=True):
        if not value:
            raise PipelineError(f"a label correction needs {name}")
    return key  # type: ignore[return-value]


def _clean_text(author: str | None, note: str | None) -> tuple[str, str]:
    author = (author or "").strip() or "anonymous"
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise PipelineError(f"the note is {len(note)} characters long; keep it under {MAX_NOTE}")
    return author[:MAX_AUTHOR], note


def _active_set(conn: sqlite3.Connection, key: tuple[str, str, str]) -> int | None:
    """The latest 'set' event of the key that no 'undo' cancelled, or None."""
    row = conn.execute(
        """SELECT event FROM events s
           WHERE action = 'set' AND dataset = ? AND image_id = ? AND attribute = ?
             AND NOT EXISTS (SELECT 1 FROM events u WHERE u.action = 'undo' AND u.undoes = s.event)
           ORDER BY event DESC LIMIT 1""",
        key,
    ).fetchone()
    return row[0] if row else None


def set_label(data_dir, dataset: str, image_id: str, attribute: str, value: int, *,
              author: str | None = None, note: str | None = None) -> int:
    """Record that the label of (dataset, image, attribute) is `value` (0 or 1); return its id."""
    key = _clean_key(dataset, image_id, attribute)
    if value not in (0, 1, True, False):
        raise PipelineError(f"a corrected label must be 0 or 1, not {value!r}")
    author, note = _clean_text(author, note)
    with connect(data_dir) as conn:
        cur = conn.execute(
            "INSERT INTO events (created, dataset, image_id, attribute, action, value, author,"
            " note) VALUES (?, ?, ?, ?, 'set', ?, ?, ?)",
            (_now(), *key, int(value), author, note),
        )  # one statement = one transaction in autocommit mode
        return int(cur.lastrowid)


def undo(data_dir, dataset: str, image_id: str, attribute: str, *,
         author: str | None = None, note: str | None = None) -> int:
    """Cancel the latest active correction of the key by appending an 'undo' event; return it."""
    key = _clean_key(dataset, image_id, attribute)
    author, note = _clean_text(author, note)
    with connect(data_dir) as conn:
        conn.execute("BEGIN IMMEDIATE")  # two analysts undoing at once undo two events, not one
        try:
            target = _active_set(conn, key)
            if target is None:
                raise PipelineError(f"no correction of {key[2]!r} on image {key[1]!r} to undo")
            cur = conn.execute(
                "INSERT INTO events (created, dataset, image_id, attribute, action, undoes,"
                " author, note) VALUES (?, ?, ?, ?, 'undo', ?, ?, ?)",
                (_now(), *key, target, author, note),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(cur.lastrowid)


def history(data_dir, dataset: str | None = None, image_id: str | None = None) -> pd.DataFrame:
    """Every event, oldest first (optionally of one dataset, and of one image in it)."""
    if not db_path(data_dir).is_file():
        return pd.DataFrame(columns=list(COLUMNS))
    query = f"SELECT {', '.join(COLUMNS)} FROM events"
    params: tuple = ()
    if dataset is not None:
        query, params = query + " WHERE dataset = ?", (str(dataset),)
        if image_id is not None:  # an undo names a set of its own key, so one image is whole
            query, params = query + " AND image_id = ?", (*params, str(image_id))
    with connect(data_dir) as conn:
        rows = conn.execute(query + " ORDER BY event", params).fetchall()
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"value": "Int64", "undoes": "Int64"})


def latest_event(data_dir, dataset: str) -> int:
    """Id of the newest event of a dataset (0 when it has none): a cheap version number that
    dashboards poll to learn of other analysts' corrections."""
    if not db_path(data_dir).is_file():
        return 0
    with connect(data_dir) as conn:
        row = conn.execute("SELECT MAX(event) FROM events WHERE dataset = ?",
                           (str(dataset),)).fetchone()
    return int(row[0] or 0)


def active(data_dir, dataset: str, image_id: str | None = None) -> pd.DataFrame:
    """The corrections in force for a dataset (or one image of it): one row per key, its latest
    active 'set' event."""
    events = history(data_dir, dataset, image_id)
    undone = set(events["undoes"].dropna().astype(int))
    sets = events[(events["action"] == "set") & ~events["event"].isin(undone)]
    latest = sets.sort_values("event").groupby(["image_id", "attribute"], sort=False).tail(1)
    keep = ["image_id", "attribute", "value", "author", "note", "created", "event"]
    return latest[keep].sort_values("event").reset_index(drop=True)


def apply(act, image_ids: Sequence[str], attributes: Sequence[str], corrections: pd.DataFrame):
    """Labels with the corrections applied, and a mask of the cells they changed or confirmed.

    Returns (corrected N × A uint8 copy, N × A bool mask of corrected cells). Corrections of
    images or attributes that the arrays do not hold are ignored (another run, another subset).
    """
    corrected = np.array(act, dtype=np.uint8, copy=True)
    mask = np.zeros(corrected.shape, dtype=bool)
    if corrections is None or corrections.empty:
        return corrected, mask
    # One correction per key (as `active` gives), so assignment order does not matter; image ids
    # are unique within a run (the store refuses duplicates), so a hash lookup finds each row.
    rows = pd.Index(np.asarray(image_ids).astype(str)).get_indexer(
        corrections["image_id"].astype(str))
    cols = pd.Index([str(a) for a in attributes]).get_indexer(corrections["attribute"].astype(str))
    known = (rows >= 0) & (cols >= 0)
    rows, cols = rows[known], cols[known]
    corrected[rows, cols] = corrections["value"].to_numpy(dtype=np.uint8)[known]
    mask[rows, cols] = True
    return corrected, mask


def corrected_labels(data_dir, dataset: str, act, image_ids, attributes):
    """`apply` with the corrections in force for `dataset` read from the data directory."""
    return apply(act, image_ids, attributes, active(data_dir, dataset))


@dataclass(frozen=True)
class LabelsInForce:
    """A run's labels as the analysts now hold them: annotated, with the corrections applied."""

    act: np.ndarray  # N × A uint8, read-only
    corrected: np.ndarray  # N × A bool: cells set by a correction in force
    version: int  # the newest correction event they include (0: none)
    problem: str | None = None  # why corrections could not be read (then: the annotated labels)


def labels_in_force(run: Run, data_dir=None) -> LabelsInForce:
    """The labels in force of a run: its dataset's corrections over the annotated labels.

    Every panel and command that shows or scores labels takes them from here. They are memoised
    per run and correction version, so a panel may ask on every request: asking costs one
    indexed query for the newest event. An unreadable database gives the annotated labels, with
    the reason in `problem` (the dashboard shows it in a banner).
    """
    data_dir = resolve_data_dir(data_dir or run.data_dir)
    dataset = str(run.meta.get("dataset", ""))
    try:
        version = latest_event(data_dir, dataset) if dataset else 0
        return _labels_at(str(run.path), str(data_dir), version)
    except PipelineError as err:
        return _labels_at(str(run.path), str(data_dir), 0, problem=str(err))


@lru_cache(maxsize=16)
def _labels_at(run_path: str, data_dir: str, version: int, problem: str | None = None):
    run = open_run(run_path)
    if version:
        act, corrected = corrected_labels(data_dir, str(run.meta["dataset"]), run.act,
                                          run.images["image_id"], run.attributes)
    else:
        act, corrected = np.array(run.act, dtype=np.uint8), np.zeros(run.act.shape, dtype=bool)
    act.flags.writeable = corrected.flags.writeable = False  # shared by every request
    return LabelsInForce(act, corrected, version, problem)


def export_csv(data_dir, out, dataset: str | None = None) -> int:
    """Write the full history (every event, undo included) as CSV to a path or file; return rows.

    Typed notes and names are escaped so that a spreadsheet shows them and never runs them."""
    events = history(data_dir, dataset)
    write_csv(events, out)
    return len(events)


def unavailable(data_dir=None) -> str | None:
    """Why the corrections database cannot be used (a sentence naming the file), or None when it
    can be, or does not exist yet (the first correction makes it)."""
    path = db_path(data_dir)
    if not path.exists():
        return None
    try:
        with connect(data_dir) as conn:
            conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events LIMIT 1").fetchall()
    except PipelineError as err:
        cause = err.__cause__ if isinstance(err.__cause__, sqlite3.Error) else err
        return f"{path} is not a corrections database ({cause})"
    return None
