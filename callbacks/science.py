"""Behaviour of the detail panel's scientific views: beam centre, I(q) and polar view of the image
shown large, computed once per run and row (diskcache under <data_dir>/cache/science).
"""

from __future__ import annotations

from dash import Input, Output, hooks

from callbacks.common import Refused, disk_cache, row_index
from components import ids
from components.science import (
    detector_figure,
    polar_figure,
    profile_figure,
    science_message,
    science_view,
)
from pipeline.errors import PipelineError
from pipeline.integrate import image_geometry
from pipeline.store import Run, get_run

CACHE_VERSION = 2  # bump when the computation changes, so stale results are not reused
NO_IMAGE = "Open an image to see its beam centre, radial profile I(q) and polar view."
NO_FILES = (
    "This run carries no image files (its vectors were imported without --images), "
    "so there is no beam centre, I(q) or polar view to show."
)


def geometry(run: Run, index: int, pixels=None) -> dict:
    """image_geometry of run row `index`, memoised on disk by run id and row."""
    cache = disk_cache(run, "science")
    key = f"{run.id}/{int(index)}/v{CACHE_VERSION}"
    found = cache.get(key)
    if found is None:
        found = image_geometry(run.load_image(index) if pixels is None else pixels)
        cache.set(key, found)
    return found


def science_for(run: Run, index: int):
    """The slot's content for one row: the three figures, or a short message why not."""
    if not 0 <= index < len(run):
        return science_message(f"Row {index} is not in run {run.id}.")
    if not str(run.images["path"].iloc[index]):
        return science_message(NO_FILES)
    try:
        pixels = run.load_image(index)
    except PipelineError as err:
        return science_message(f"The image cannot be shown: {err}")
    found = geometry(run, index, pixels)
    return science_view(
        found["centre"], found["integrator"],
        [
            detector_figure(pixels, found["centre"], found["rings"]),
            profile_figure(found["radius"], found["intensity"], found["rings"]),
            polar_figure(found["radii"], found["angles"], found["polar"]),
        ],
    )


@hooks.callback(
    Output(ids.DETAIL_SCIENCE, "children"),
    Input(ids.STORE_DETAIL_INDEX, "data"),
    Input(ids.RUN_PICKER, "value"),
)
def show_science(index, run_id):
    """Beam centre, I(q) and polar view of the image shown large."""
    if not isinstance(run_id, str) or not run_id or index is None:
        return science_message(NO_IMAGE)
    try:
        run = get_run(run_id)
        row = row_index(run, index)
    except Refused:  # the browser sent a row the run does not have
        return science_message(f"Image {index!r:.20} is not in run {run.id}.")
    except PipelineError as err:  # the run is gone, or its id is not one
        return science_message(str(err))
    return science_for(run, row)
