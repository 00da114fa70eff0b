"""What the dashboard's callbacks share: opening the chosen run, checking every value the browser
sends, cached thumbnails (diskcache under <data_dir>/cache, keyed by run id + row), nearest
neighbours in FEA space per run, the labels in force (annotated plus corrections) and the
decision thresholds in force (thresholds_in_force).
"""

from __future__ import annotations

import threading
from functools import lru_cache

import diskcache
import flask
import numpy as np
import pandas as pd
from dash.exceptions import PreventUpdate

from callbacks import rowsets
from components.control import ONE_FOR_ALL, PER_ATTRIBUTE
from components.encoding import full_extent
from components.figures import thumbnail_uri
from pipeline import access, corrections, metrics
from pipeline.analyses.disagreement import run_scores
from pipeline.before_after import moved_since
from pipeline.errors import PipelineError
from pipeline.metrics import error_distance
from pipeline.neighbours import nearest_images
from pipeline.store import Run, get_run, open_run, resolve_data_dir

THUMB_SIZE = 72
MISSING_THUMB = ("data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' width='8' "
                 "height='8'><rect width='8' height='8' fill='%23c9ced6'/></svg>")


class Refused(PipelineError):
    """A value the browser sent that the server will not act on; its message says why."""


def chosen_run(run_id: str | None) -> Run:
    """The chosen run; no run chosen (empty data directory), an id that is not a run's, or a
    run gone from disk leaves the outputs as they are."""
    run = try_run(run_id)
    if run is None:
        raise PreventUpdate
    return run


def try_run(run_id: str | None) -> Run | None:
    """The chosen run, or None when there is none, the id is not a valid run id (checked by
    store.check_id inside get_run) or the run has vanished from disk."""
    if not run_id or not isinstance(run_id, str):
        return None
    try:
        return get_run(run_id)
    except PipelineError:
        return None


def access_settings() -> access.Settings:
    """This server's access settings (app.server.config), else those of the environment."""
    if flask.has_app_context():
        found = flask.current_app.config.get(access.CONFIG_KEY)
        if found is not None:
            return found
    return access.settings_from_env()


def current_user() -> access.User | None:
    """Who sent the request being answered, as the server's sign-in check found them."""
    return flask.g.get("xrae_user") if flask.has_app_context() else None


def signed_in_name() -> str | None:
    """The signed-in user's name; None when the server does not sign people in (typed names)."""
    if not access_settings().authenticates:
        return None
    user = current_user()
    return user.name if user else ""


def refusal(action: str) -> str | None:
    """Why the person asking may not `action` ('correct labels'), or None when they may.

    The check that matters: a disabled button is only a courtesy to the honest browser."""
    return access.refusal(access_settings(), current_user(), action)


def author_of(typed) -> str:
    """Who a correction is recorded under: the signed-in user when the server knows them,
    else the name typed in the form (checked as text)."""
    user = current_user()
    if access_settings().authenticates:
        if user is None:
            raise Refused("sign in to correct labels")
        return user.name
    return text_value(typed, "name", corrections.MAX_AUTHOR)


def whole_number(value, low: int, high: int, what: str) -> int:
    """`value` as an int in low..high, or Refused naming `what` and the allowed range.

    The browser's own limits (an input's max, the rows it was shown) are a courtesy: a crafted
    request can send anything JSON holds, so every number is checked here.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Refused(f"{what} must be a whole number from {low} to {high}, not {value!r:.40}")
    return value


def row_index(run: Run, value) -> int:
    """An image row of the run sent by the browser: an int in 0..N-1 (no wrapping of -1)."""
    return whole_number(value, 0, len(run) - 1, f"the image number in run {run.id}")


def row_list(run: Run, values) -> list[int]:
    """A selection sent by the browser: image rows of the run, each checked, sorted, once each;
    a token names rows the server found itself (callbacks.rowsets)."""
    if values is None:
        return []
    if isinstance(values, str):
        if not rowsets.is_token(values):
            raise Refused(f"a selection must be a list of image numbers, not {values!r:.40}")
        return rowsets.rows_of(run, values).tolist()
    if not isinstance(values, list):
        raise Refused(f"a selection must be a list of image numbers, not {values!r:.40}")
    return sorted({row_index(run, v) for v in values})


def selection_rows(run: Run, held) -> np.ndarray:
    """The rows of a selection or saved group the browser holds (a list or a token), as an
    array: for drawing and scoring, where anything that is not a row of the run is dropped."""
    return rowsets.rows_of(run, held)


def run_rows(selection, n: int) -> list[int]:
    """The rows of a selection sent by the browser that are rows of a run of n images, sorted,
    once each; anything else is dropped (for drawing and scoring, where a refusal has no place
    to be shown: row_list refuses instead)."""
    if not isinstance(selection, list):
        return []
    return sorted({r for r in selection
                   if isinstance(r, int) and not isinstance(r, bool) and 0 <= r < n})


def column_index(run: Run, value) -> int:
    """An attribute column of the run sent by the browser: an int in 0..A-1."""
    return whole_number(value, 0, len(run.attributes) - 1, "the attribute number")


def threshold_value(value) -> float:
    """The decision threshold: a finite number in 0..1 (the slider's range); none means 0.5."""
    if value is None:
        return 0.5
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise Refused(f"the threshold must be a number from 0 to 1, not {value!r:.40}")
    return float(value)


THRESHOLD_MODES = (PER_ATTRIBUTE, ONE_FOR_ALL)


def threshold_mode(value) -> str:
    """The threshold choice sent by the browser: per attribute or one for all."""
    if value not in THRESHOLD_MODES:
        raise Refused(f"the threshold choice must be one of {THRESHOLD_MODES}, not {value!r:.40}")
    return value


def run_thresholds(run: Run) -> np.ndarray | None:
    """The run's own per-attribute thresholds (chosen on validation when it was trained); None
    when it has none or they are unusable (threshold_problem says which)."""
    try:
        return metrics.run_thresholds(run.meta, run.attributes)
    except PipelineError:
        return None


def threshold_problem(run: Run) -> str | None:
    """Why the run's own thresholds cannot be used, when it has some that are broken."""
    try:
        metrics.run_thresholds(run.meta, run.attributes)
    except PipelineError as err:
        return str(err)
    return None


def thresholds_in_force(run: Run, mode, value) -> np.ndarray:
    """The decision threshold of every attribute, shape (A,): the dashboard's one definition,
    which every outcome, filter, colour, flower, metric, matrix and export uses.

    Per attribute: the run's own (chosen on validation), or `value` for a run without them;
    one for all: `value` everywhere. Both come from the browser and are checked (Refused).
    float32, as the probabilities are, so every comparison agrees whichever function makes it.
    """
    mode, value = threshold_mode(mode), threshold_value(value)
    own = run_thresholds(run) if mode == PER_ATTRIBUTE else None
    if own is None:
        return np.full(len(run.attributes), value, dtype=np.float32)
    return own.astype(np.float32)


def thresholds_sent(run: Run, mode, value) -> np.ndarray:
    """thresholds_in_force, or no change to the outputs (PreventUpdate) for a crafted choice or
    value: for views and scores, where a refusal has no place to be shown."""
    try:
        return thresholds_in_force(run, mode, value)
    except Refused:
        raise PreventUpdate from None


def threshold_words(run: Run, mode, value) -> str:
    """The thresholds in force in words, for notes: 'the validated per-attribute thresholds'
    or 'threshold 0.50' (after the same checks as thresholds_in_force)."""
    mode, value = threshold_mode(mode), threshold_value(value)
    if mode == PER_ATTRIBUTE and run_thresholds(run) is not None:
        return "the validated per-attribute thresholds"
    return f"threshold {value:.2f}"


def text_value(value, what: str, max_len: int) -> str:
    """Free text sent by the browser (a note, a name): a string of at most max_len characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Refused(f"the {what} must be text, not {type(value).__name__}")
    if len(value) > max_len:
        raise Refused(f"the {what} is {len(value)} characters long; keep it under {max_len}")
    return value.strip()


CACHE_LIMITS = {"thumbnails": 2**30, "science": 2**29,  # bytes on disk, per data directory
                "saliency": 2**28, "selections": 2**28}


@lru_cache(maxsize=8)
def _disk_cache(folder: str, limit: int) -> diskcache.Cache:
    # One Cache object per folder and process; diskcache itself is safe across processes.
    return diskcache.Cache(folder, size_limit=limit)


def disk_cache(run: Run, name: str) -> diskcache.Cache:
    """The run's data directory's cache of derived things `name` (thumbnails, science), kept
    under <data_dir>/cache/<name> and keyed by run id by its users."""
    return _disk_cache(str(run.data_dir / "cache" / name), CACHE_LIMITS[name])


def thumbnail(run: Run, index: int, size: int = THUMB_SIZE) -> str:
    """The PNG data URI of one image's thumbnail, made once per run, row and size.

    An image file that is missing or unreadable gets a grey tile (not cached, so it shows once
    the file is back); the detail view names the problem when that image is opened.
    """
    cache = disk_cache(run, "thumbnails")
    key = f"{run.id}/{int(index)}/{size}"
    uri = cache.get(key)
    if uri is None:
        try:
            pixels = run.load_image(int(index))
        except (PipelineError, OSError, ValueError):
            return MISSING_THUMB
        uri = thumbnail_uri(pixels, size)
        cache.set(key, uri)
    return uri


def neighbours(run: Run, index: int, k: int = 8) -> list[int]:
    """The k images nearest to row `index` in FEA space, nearest first: the tool's one
    definition (pipeline.neighbours), the neighbours the label audit votes with."""
    return nearest_images(run, int(index), k)


@lru_cache(maxsize=16)
def _extent(run_path: str, space: str) -> tuple[float, ...]:
    return tuple(full_extent(np.asarray(open_run(run_path).emb(space))))


def extent(run: Run, space: str) -> list[float]:
    """The box around all points of a view (computed once per run and space)."""
    return list(_extent(str(run.path), space))


@lru_cache(maxsize=8)
def _error(run_path: str, metric: str, version: int) -> np.ndarray:
    # version 0: the annotated labels; else the labels in force of that correction version.
    run = open_run(run_path)
    act = run.act if version == 0 else labels_used(run, WITH_CORRECTIONS)
    error = error_distance(act, run.prd, metric)
    error.flags.writeable = False
    return error


def run_error(run: Run, metric: str, which: str = "with") -> np.ndarray:
    """ACT–PRD error distance per image, on the labels used (computed once per run, metric and
    correction version)."""
    return _error(str(run.path), metric or "cosine", labels_version(run, which))


def labels_version(run: Run, which: str = "with") -> int:
    """Which labels `labels_used` gives: 0 as annotated, else the newest correction in force
    (a key for what is computed from them)."""
    return 0 if which == AS_ANNOTATED else corrections.labels_in_force(run).version


WITH_CORRECTIONS, AS_ANNOTATED = "with", "annotated"


def labels_used(run: Run, which: str = WITH_CORRECTIONS) -> np.ndarray:
    """The labels the panels score, filter, colour and draw: those in force (annotated plus the
    analysts' corrections; the default) or, when the analyst asks, the labels as annotated."""
    return np.asarray(run.act) if which == AS_ANNOTATED else run_labels(run)[0]


def run_labels(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """The run's labels in force and the mask of corrected ones (pipeline.corrections'
    one accessor); the annotated labels while the database is unreadable: the banner names it."""
    labels = corrections.labels_in_force(run, resolve_data_dir())
    return labels.act, labels.corrected


def corrected_rows(run: Run) -> np.ndarray:
    """Rows of the run with at least one label corrected (in force) in its dataset; found once
    per run and correction version (the labels in force are memoised, so a new version is a
    new array), as every redraw of a large run's three pictures asks."""
    _, corrected = run_labels(run)
    with _CORRECTED_LOCK:
        held = _CORRECTED.get(str(run.path))
        if held is None or held[0] is not corrected:
            held = (corrected, np.flatnonzero(corrected.any(axis=1)))
            _CORRECTED[str(run.path)] = held
    return held[1]


_CORRECTED: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_CORRECTED_LOCK = threading.Lock()


def image_labels(run: Run, index: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """One image's labels in force, which of them are corrected, and those corrections (who,
    when, why; empty without a dataset or a readable database)."""
    act, corrected = run_labels(run)
    dataset = str(run.meta.get("dataset", ""))
    image_id = str(run.images["image_id"].iloc[int(index)])
    try:
        now = corrections.active(resolve_data_dir(), dataset, image_id) if dataset else None
    except PipelineError:
        now = None  # unreadable database: the annotated labels, and the banner says why
    return act[int(index)], corrected[int(index)], pd.DataFrame() if now is None else now


def selected_rows(selected_data: dict | None) -> list[int]:
    """Run rows in a plotly selection event: points of the image trace (trace 0) only."""
    if not isinstance(selected_data, dict) or not isinstance(selected_data.get("points"), list):
        return []
    rows = {p["pointIndex"] for p in selected_data["points"]
            if isinstance(p, dict) and p.get("curveNumber") == 0}
    return sorted(r for r in rows if isinstance(r, int) and not isinstance(r, bool) and r >= 0)


def parent_of(run: Run) -> Run | None:
    """The run this one came from (retrained from, or images added to), while it is on disk."""
    parent = run.meta.get("parent_run")
    return try_run(parent) if isinstance(parent, str) and parent != run.id else None


def moved_scores(run: Run) -> dict[str, np.ndarray] | None:
    """Per view, how far each image moved since the parent run, in neighbour spacings of the
    parent's map (pipeline.before_after; NaN for images the parent lacks); None without a
    parent on disk. Computed once per pair of runs and process: runs never change."""
    parent = parent_of(run)
    return None if parent is None else _moved(str(run.path), str(parent.path))


@lru_cache(maxsize=8)
def _moved(child: str, parent: str) -> dict[str, np.ndarray]:
    return moved_since(open_run(child), open_run(parent))


_DISAGREEMENT_LOCK = threading.Lock()


def disagreement_scores(run: Run) -> np.ndarray:
    """Each image's cross-space disagreement in [0, 1] (pipeline.analyses.disagreement), as
    stored with the run. A run written before runs stored it gets it computed once per process;
    the lock makes a second callback that asks while the first computes (the views and the list,
    on the same click) wait for that result instead of computing it again."""
    if run.disagreement is not None:
        return run.disagreement
    with _DISAGREEMENT_LOCK:
        return run_scores(run)


def most_disagreeing(run: Run, share: float = 0.05) -> np.ndarray:
    """Which images are among the `share` most disagreeing of the run (at least one)."""
    score = disagreement_scores(run)
    keep = max(int(round(share * len(score))), 1)
    return score >= np.sort(score)[-keep]


def triggered_ids() -> set[str]:
    """The component ids whose change fired the callback being answered (none when a function
    is called directly, outside a request)."""
    from dash import ctx
    from dash.exceptions import MissingCallbackContextException

    try:
        return {p.rsplit(".", 1)[0] for p in ctx.triggered_prop_ids}
    except MissingCallbackContextException:
        return set()
