"""Pure array logic of how the embedded views encode a run: colour values, dot sizes, the
current viewport and which points in it are drawn as flowers (level of detail). Which images a
filter keeps (pipeline.filters) and the ACT–PRD error distance (pipeline.metrics) are domain
logic and live in the pipeline.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.metrics import OUTCOMES, error_distance, outcomes, threshold_columns

POINT_MODES = ("dots", "act", "prd", "joint")
COLOUR_BYS = ("error", "outcome", "label", "probability")
DEFAULT_CAP = 500

OUTCOME_COLOURS = {"TP": "#1a9850", "FP": "#d73027", "FN": "#7b3294", "TN": "#c7c7c7"}
ERROR_SCALE = [[0.0, "#3b6fb6"], [0.5, "#f2d36b"], [1.0, "#c8102e"]]


def colour_values(colour_by: str, act, prd, threshold, attribute: int, colour: str,
                  metric: str = "cosine"):
    """Per-point colour numbers with the colour scale and range that turn them into colours.
    `threshold`: one number or one per attribute (the attribute's own decides its outcome)."""
    j = int(attribute)
    if colour_by == "label":
        return np.asarray(act[:, j], np.float32), [[0, "#d4d4d4"], [1, colour]], (0, 1)
    if colour_by == "probability":
        return np.asarray(prd[:, j], np.float32), [[0, "#e3e3e3"], [1, colour]], (0, 1)
    if colour_by == "outcome":
        codes = outcomes(act[:, [j]], prd[:, [j]], threshold_columns(threshold, [j]))[:, 0]
        codes = codes.astype(np.float32)
        return codes, outcome_scale(), (0, 3)
    if colour_by == "error":
        return error_distance(act, prd, metric), ERROR_SCALE, (0, 1)
    raise ValueError(f"unknown colour-by {colour_by!r}; expected one of {COLOUR_BYS}")


# Moved since the parent run, in neighbour spacings of the parent's map (pipeline.before_after):
# 0 stayed, MOVED_FAR or more moved far; images the parent lacks, or a run without a parent,
# get NOT_IN_PARENT, grey on a step below the scale.
MOVED_FAR, NOT_IN_PARENT = 10.0, -1.0
MOVED_COLOURS = ("#fff0dc", "#fd8d3c", "#7f2704")
NOT_IN_PARENT_COLOUR = "#b0b0b0"
MOVED_RANGE = (NOT_IN_PARENT, MOVED_FAR)
_STEP = (0 - NOT_IN_PARENT) / (MOVED_FAR - NOT_IN_PARENT)  # where 0 moved sits on the scale
MOVED_SCALE = [[0.0, NOT_IN_PARENT_COLOUR], [_STEP, NOT_IN_PARENT_COLOUR],
               [_STEP, MOVED_COLOURS[0]], [(1 + _STEP) / 2, MOVED_COLOURS[1]],
               [1.0, MOVED_COLOURS[2]]]


def moved_colours(scores: dict[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray]:
    """Per view, colour numbers for how far each image moved (`scores`: before_after's, NaN
    where the parent lacks the image; None: no parent, every image NOT_IN_PARENT)."""
    if scores is None:
        return dict.fromkeys(("act", "fea", "prd"), np.full(n, NOT_IN_PARENT, np.float32))
    return {s: np.where(np.isnan(v), NOT_IN_PARENT, np.minimum(v, MOVED_FAR)).astype(np.float32)
            for s, v in scores.items()}


def outcome_scale() -> list:
    """A stepped colour scale for the outcome codes 0..3 (TP, FP, FN, TN) over the range 0..3."""
    cuts = [0, 1 / 6, 1 / 2, 5 / 6, 1]
    scale = []
    for k, name in enumerate(OUTCOMES):
        scale += [[cuts[k], OUTCOME_COLOURS[name]], [cuts[k + 1], OUTCOME_COLOURS[name]]]
    return scale


def dot_size(n: int) -> float:
    """Marker size in pixels: big enough to see for a few points, small enough for 100k."""
    return float(np.clip(11 - 1.6 * np.log10(max(n, 1)), 3, 8))


def full_extent(xy) -> list[float]:
    """[x0, x1, y0, y1] around all points with a 5 % margin."""
    xy = np.asarray(xy)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = np.maximum(hi - lo, 1e-6) * 0.05
    return [float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]),
            float(hi[1] + pad[1])]


def viewport_from_relayout(relayout: dict | None, previous=None):
    """The axis box after a relayout event; None means 'everything' (autorange).

    Events without axis ranges (hover, selection boxes, resizes) keep the previous viewport.
    """
    relayout = relayout or {}
    if relayout.get("xaxis.autorange") or relayout.get("yaxis.autorange"):
        return None
    keys = ("xaxis.range[0]", "xaxis.range[1]", "yaxis.range[0]", "yaxis.range[1]")
    if all(k in relayout for k in keys):
        x0, x1, y0, y1 = (float(relayout[k]) for k in keys)
    elif "xaxis.range" in relayout and "yaxis.range" in relayout:
        (x0, x1), (y0, y1) = relayout["xaxis.range"], relayout["yaxis.range"]
    else:
        return previous
    return [min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)]


@lru_cache(maxsize=8)
def priority_order(n: int) -> np.ndarray:
    """A fixed shuffled rank per point, so the capped flowers are spread evenly over the view and
    the same points keep their flowers while the user pans."""
    rank = np.empty(n, dtype=np.int64)
    rank[np.random.default_rng(0).permutation(n)] = np.arange(n)
    rank.flags.writeable = False  # shared by every call through the cache
    return rank


def flower_subset(xy, viewport, eligible, cap: int = DEFAULT_CAP):
    """Rows drawn as flowers: eligible points inside the viewport, at most `cap` of them.

    Returns (rows, n_in_view); the rows kept are those of lowest fixed priority rank.
    """
    xy = np.asarray(xy)
    box = viewport or full_extent(xy)
    inside = ((xy[:, 0] >= box[0]) & (xy[:, 0] <= box[1]) & (xy[:, 1] >= box[2])
              & (xy[:, 1] <= box[3]) & np.asarray(eligible, dtype=bool))
    rows = np.flatnonzero(inside)
    if len(rows) > cap:
        rank = priority_order(len(xy))[rows]
        rows = np.sort(rows[np.argpartition(rank, cap - 1)[:cap]]) if cap > 0 else rows[:0]
    return rows, int(inside.sum())


def petal_radius(viewport, n_flowers: int) -> tuple[float, float]:
    """Flower radius (x, y) in data units: a share of each visible span, so flowers are round on
    a square plot whatever the axes' scales; the share grows as fewer flowers are in view, so
    glyphs stay legible zoomed out and do not balloon zoomed in."""
    share = float(np.clip(0.45 / np.sqrt(max(n_flowers, 1)), 0.015, 0.07))
    return share * (viewport[1] - viewport[0]), share * (viewport[3] - viewport[2])
