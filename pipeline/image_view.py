"""A second, label-free view of each image for the label audit: radial features measured on the
full-size image about its beam centre, and out-of-fold probabilities learned from them alone.

The out-of-fold CNNs see each image shrunk to the model's input size (64² in the demo), where a
faint ring or a diffuse tail is a pixel or two. The radial profile of the full-size image keeps
them. Each image becomes, in RINGS log-spaced rings about its beam centre: the mean log
intensity, its spread over SECTORS azimuthal sectors (texture: spots, anisotropy, beamstop arms)
and the height of its sharpest peak above the running median of the 1-px profile (a sharp
ring). Per attribute, boosted trees (scikit-learn's HistGradientBoosting, which takes the rings
no valid pixel reaches as missing) learn the label from these alone, cross-fitted over the
out-of-fold models' own folds: no image is scored by trees that saw its labels. pipeline.folds
saves the result beside the run; pipeline.audit weighs it in each label's context model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from pipeline.errors import Stopped
from pipeline.scattering import beam_centre, valid_pixels

RINGS = 24  # log-spaced rings from INNER_PX to the image's diagonal
SECTORS = 16  # azimuthal sectors per ring, for the spread
INNER_PX = 3.0
PEAK_WINDOW_PX = 15  # running median of the 1-px profile that a sharp ring stands above
N_FEATURES = 3 * RINGS
MAX_FIT_ROWS = 20_000  # rows the trees of one attribute and fold are fitted on, at most
TREES = {"max_iter": 100, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 20,
         "l2_regularization": 1.0, "early_stopping": False}


def radial_features(image, centre) -> np.ndarray:
    """N_FEATURES floats of one image about centre (x, y): per ring, the mean log(1 + counts),
    its spread over the sectors and its peak height; NaN where a ring has no valid pixel."""
    image = np.asarray(image, dtype=np.float64)
    h, w = image.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(xx - centre[0], yy - centre[1])
    good = valid_pixels(image)
    logi = np.log1p(np.clip(np.where(good, image, 0.0), 0.0, None))
    edges = np.geomspace(INNER_PX, max(np.hypot(h, w), 2 * INNER_PX), RINGS + 1)
    ring = np.digitize(r, edges) - 1
    sector = ((np.arctan2(yy - centre[1], xx - centre[0]) + np.pi) / (2 * np.pi)
              * SECTORS).astype(int) % SECTORS
    inside = good & (ring >= 0) & (ring < RINGS)
    cells = _cell_means(ring[inside] * SECTORS + sector[inside], logi[inside],
                        RINGS * SECTORS).reshape(RINGS, SECTORS)
    seen = np.isfinite(cells)
    count = seen.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.where(seen, cells, 0).sum(axis=1) / count, np.nan)
        spread = np.sqrt(np.where(seen, (cells - mean[:, None]) ** 2, 0).sum(axis=1) / count)
    spread[count == 0] = np.nan
    return np.concatenate([mean, spread, _peaks(r, good, logi, edges)])


def _cell_means(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    n = np.bincount(index, minlength=size)
    total = np.bincount(index, values, minlength=size)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _peaks(r: np.ndarray, good: np.ndarray, logi: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per ring, the highest point of the 1-px profile above its running median (NaN where the
    profile has no valid point in the ring)."""
    radius = r[good].astype(int)
    size = int(np.ceil(edges[-1])) + 1
    profile = _cell_means(np.minimum(radius, size - 1), logi[good], size)
    known = np.isfinite(profile)
    out = np.full(RINGS, np.nan)
    if known.sum() < 2:
        return out
    filled = np.interp(np.arange(size), np.flatnonzero(known), profile[known])
    height = np.where(known, filled - ndimage.median_filter(filled, PEAK_WINDOW_PX,
                                                            mode="nearest"), np.nan)
    which = np.digitize(np.arange(size) + 0.5, edges) - 1
    for k in range(RINGS):
        part = height[(which == k) & known]
        out[k] = part.max() if part.size else np.nan
    return out


def image_centre(ds, row: int, image: np.ndarray) -> tuple[float, float]:
    """The beam centre (x, y) the dataset records for a row, else the one estimated from the
    image (pipeline.scattering.beam_centre)."""
    images = ds.images
    if {"beam_x", "beam_y"} <= set(images.columns):
        x, y = images["beam_x"].iat[row], images["beam_y"].iat[row]
        if np.isfinite(x) and np.isfinite(y):
            return float(x), float(y)
    found = beam_centre(image)
    return found.x, found.y


def dataset_features(ds, *, progress: bool = True, should_stop=None,
                     on_progress: Callable[[float], None] | None = None) -> np.ndarray:
    """N × N_FEATURES radial features of every image of a dataset, in its row order."""
    out = np.empty((len(ds), N_FEATURES), np.float32)
    for i in tqdm(range(len(ds)), desc="image view", disable=not progress):
        if should_stop is not None and should_stop():
            raise Stopped("stopped while measuring the images")
        image = ds.load_image(i)
        out[i] = radial_features(image, image_centre(ds, i, image))
        if on_progress is not None and i % 64 == 0:
            on_progress(i / len(ds))
    return out


def out_of_fold_view(features, act, folds, seed: int = 0) -> np.ndarray:
    """N × A probabilities of each label from the image features alone: per attribute and fold,
    boosted trees fitted on the other folds' images (at most MAX_FIT_ROWS of them) score it.
    An attribute with one class only in a fold's fitting rows gets that class's share."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    features = np.asarray(features, dtype=np.float64)
    act = np.asarray(act).astype(np.uint8)
    folds = np.asarray(folds)
    out = np.empty(act.shape, np.float32)
    for f in np.unique(folds):
        held, fit = folds == f, _capped(np.flatnonzero(folds != f), seed)
        # A feature no fitting image has (a ring beyond every image's corner) is left out:
        # the trees cannot bin a column with no value.
        x = features[:, np.isfinite(features[fit]).any(axis=0)]
        for j in range(act.shape[1]):
            y = act[fit, j]
            if y.min() == y.max():
                out[held, j] = y.mean()
                continue
            trees = HistGradientBoostingClassifier(**TREES, random_state=seed)
            out[held, j] = trees.fit(x[fit], y).predict_proba(x[held])[:, 1]
    return out


def _capped(rows: np.ndarray, seed: int) -> np.ndarray:
    if len(rows) <= MAX_FIT_ROWS:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, MAX_FIT_ROWS, replace=False))
