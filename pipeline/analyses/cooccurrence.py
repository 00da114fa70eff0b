"""Co-occurrence and conditional error: how the error rate of attribute j changes when attribute
i is present in the labels, against when it is absent (Huang et al., IEEE VIS 2020, ask "how does
the co-existence of attributes affect the classification results?").

Error kinds:
- "fn": missed labels, FN / (TP + FN), over the images that carry attribute j;
- "fp": false alarms, FP / (FP + TN), over the images that do not.
A rate over no image is NaN (shown as undefined). The threshold is a scalar or one per attribute.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError

ERROR_KINDS = ("fn", "fp")


def _errors_and_base(act, prd, threshold, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(N × A wrong, N × A counted): which images err on j, and which images j's rate is over."""
    if kind not in ERROR_KINDS:
        raise PipelineError(f"unknown error kind {kind!r}; choose one of {ERROR_KINDS}")
    truth = np.asarray(act).astype(bool)
    said = np.asarray(prd) >= np.asarray(threshold, dtype=np.float32)
    if kind == "fn":
        return truth & ~said, truth
    return ~truth & said, ~truth


def _rate(num, den) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def conditional_errors(act, prd, threshold=0.5, kind: str = "fn", rows=None) -> dict:
    """The A × A conditional error table of the images in `rows` (default: all).

    with_i[i, j]    = rate of j's errors over the images that carry i (and are counted for j);
    without_i[i, j] = the same over the images that do not carry i;
    change[i, j]    = with_i − without_i (NaN on the diagonal: i present is j present there);
    own[j]          = j's error rate over all the images;
    n_with, n_without, errors_with, errors_without: the counts behind the rates.
    """
    act = np.asarray(act)
    if rows is not None:
        act, prd = act[rows], np.asarray(prd)[rows]
    wrong, base = _errors_and_base(act, prd, threshold, kind)
    present = act.astype(np.float32)
    # Counts by matrix products: present.T @ wrong counts, for each (i, j), the images that carry
    # i and err on j — one pass over the images for all A² cells (exact below 2²⁴ images).
    errors_with = present.T @ wrong.astype(np.float32)
    n_with = present.T @ base.astype(np.float32)
    errors_without = wrong.sum(axis=0)[None, :] - errors_with
    n_without = base.sum(axis=0)[None, :] - n_with
    with_i, without_i = _rate(errors_with, n_with), _rate(errors_without, n_without)
    change = with_i - without_i
    np.fill_diagonal(change, np.nan)
    return {
        "kind": kind,
        "with_i": with_i,
        "without_i": without_i,
        "change": change,
        "own": _rate(wrong.sum(axis=0), base.sum(axis=0)),
        "n_with": n_with.astype(np.int64),
        "n_without": n_without.astype(np.int64),
        "errors_with": errors_with.astype(np.int64),
        "errors_without": errors_without.astype(np.int64),
    }


def cell_rows(act, prd, threshold, i: int, j: int, kind: str = "fn", rows=None) -> np.ndarray:
    """The images behind cell (i, j): they carry attribute i and attribute j is wrong on them
    (of the `kind` counted); on the diagonal, simply the images wrong on j."""
    act = np.asarray(act)
    n_attributes = act.shape[1]
    if not (0 <= i < n_attributes and 0 <= j < n_attributes):
        raise PipelineError(f"no cell ({i}, {j}) in a table of {n_attributes} attributes")
    index = np.arange(len(act)) if rows is None else np.asarray(rows, dtype=np.int64)
    wrong, _ = _errors_and_base(act[index], np.asarray(prd)[index], threshold, kind)
    hit = wrong[:, j] if i == j else wrong[:, j] & act[index, i].astype(bool)
    return index[hit]
