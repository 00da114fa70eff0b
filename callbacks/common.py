"""What the dashboard's callbacks share: opening the chosen run, cached thumbnails (diskcache
under <data_dir>/cache, keyed by run id + row) and nearest neighbours in FEA space per run.
"""

from __future__ import annotations

from functools import lru_cache

import diskcache
import numpy as np
import pandas as pd
from dash.exceptions import PreventUpdate
from sklearn.neighbors import NearestNeighbors

from components.encoding import error_distance, full_extent
from components.figures import thumbnail_uri
from pipeline import corrections
from pipeline.audit import corrected_run_labels
from pipeline.errors import PipelineError
from pipeline.store import Run, get_run, open_run, resolve_data_dir

THUMB_SIZE = 72
MISSING_THUMB = ("data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' width='8' "
                 "height='8'><rect width='8' height='8' fill='%23c9ced6'/></svg>")


def chosen_run(run_id: str | None) -> Run:
    """The chosen run; no run chosen (empty data directory) leaves the outputs as they are."""
    if not run_id:
        raise PreventUpdate
    return get_run(run_id)


def try_run(run_id: str | None) -> Run | None:
    """The chosen run, or None when there is none or it has vanished from disk."""
    try:
        return get_run(run_id) if run_id else None
    except PipelineError:
        return None


@lru_cache(maxsize=8)
def _thumb_cache(folder: str) -> diskcache.Cache:
    # One Cache object per folder and process; diskcache itself is safe across processes.
    return diskcache.Cache(folder, size_limit=2**30)


def thumbnail(run: Run, index: int, size: int = THUMB_SIZE) -> str:
    """The PNG data URI of one image's thumbnail, made once per run, row and size.

    An image file that is missing or unreadable gets a grey tile (not cached, so it shows once
    the file is back); the detail view names the problem when that image is opened.
    """
    cache = _thumb_cache(str(run.data_dir / "cache" / "thumbnails"))
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


@lru_cache(maxsize=4)
def _neighbour_index(run_path: str) -> NearestNeighbors:
    # Runs never change once written, so the fitted index is valid for the process lifetime.
    fea = open_run(run_path).fea
    return NearestNeighbors(n_neighbors=min(9, len(fea))).fit(np.asarray(fea, np.float32))


def neighbours(run: Run, index: int, k: int = 8) -> list[int]:
    """The k images nearest to row `index` in FEA space (Euclidean), nearest first."""
    model = _neighbour_index(str(run.path))
    _, found = model.kneighbors(np.asarray(run.fea[[int(index)]], np.float32),
                                n_neighbors=min(k + 1, len(run)))
    return [int(i) for i in found[0] if i != int(index)][:k]


@lru_cache(maxsize=16)
def _extent(run_path: str, space: str) -> tuple[float, ...]:
    return tuple(full_extent(np.asarray(open_run(run_path).emb(space))))


def extent(run: Run, space: str) -> list[float]:
    """The box around all points of a view (computed once per run and space)."""
    return list(_extent(str(run.path), space))


@lru_cache(maxsize=8)
def _error(run_path: str, metric: str) -> np.ndarray:
    run = open_run(run_path)
    error = error_distance(run.act, run.prd, metric)
    error.flags.writeable = False
    return error


def run_error(run: Run, metric: str) -> np.ndarray:
    """ACT–PRD error distance per image (computed once per run and metric)."""
    return _error(str(run.path), metric or "cosine")


def corrected_rows(run: Run) -> np.ndarray:
    """Rows of the run with at least one label corrected (in force) in its dataset."""
    _, corrected = corrected_run_labels(run, resolve_data_dir())
    return np.flatnonzero(corrected.any(axis=1))


def image_labels(run: Run, index: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """One image's labels with the corrections in force applied, which of them are corrected,
    and those corrections (who, when, why; empty without a dataset)."""
    act = np.asarray(run.act[[int(index)]], dtype=np.uint8)
    dataset = str(run.meta.get("dataset", ""))
    if not dataset:
        return act[0], np.zeros(act.shape[1], dtype=bool), pd.DataFrame()
    image_id = str(run.images["image_id"].iloc[int(index)])
    now = corrections.active(resolve_data_dir(), dataset, image_id)  # an indexed lookup
    act, corrected = corrections.apply(act, [image_id], run.attributes, now)
    return act[0], corrected[0], now


def selected_rows(selected_data: dict | None) -> list[int]:
    """Run rows in a plotly selection event: points of the image trace (trace 0) only."""
    if not selected_data:
        return []
    rows = {int(p["pointIndex"]) for p in selected_data.get("points", [])
            if p.get("curveNumber") == 0 and "pointIndex" in p}
    return sorted(rows)
