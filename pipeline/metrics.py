"""Multi-label metrics: per-attribute outcomes and scores (Huang et al., IEEE VIS 2020), AP and mAP
(Wang et al., WACV 2017), and the multi-label measures of Czyzewski et al. (Expert Syst. Appl.
2021: macro P/R/F1, Jaccard index, exact match ratio).

0/0 rules, everywhere the same:
- accuracy, precision, recall: NaN ("undefined", shown as "–") when the denominator is 0;
- F1 = 2·TP / (2·TP + FP + FN), which equals the harmonic mean of precision and recall whenever
  both are defined, and is NaN only when TP = FP = FN = 0;
- AP of an attribute with no positive label: NaN; mAP averages the defined APs only;
- Jaccard index of an image with no label and no prediction: 1 (the two empty sets agree);
- macro averages skip NaN entries; an average of nothing is NaN.

A `threshold` is one number for every attribute, or an (A,) array with one per attribute (the
run's own, chosen on a validation share at training time): comparisons broadcast over the
attribute axis, so every function here takes either.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

from pipeline.errors import PipelineError

OUTCOMES = ("TP", "FP", "FN", "TN")


def _as_bool(array) -> np.ndarray:
    return np.asarray(array).astype(bool)


def outcomes(act, prd, threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """Per image and attribute, the outcome as an index into OUTCOMES (N × A int8)."""
    truth = _as_bool(act)
    said = np.asarray(prd) >= threshold
    # TP=0, FP=1, FN=2, TN=3
    return np.where(truth, np.where(said, 0, 2), np.where(said, 1, 3)).astype(np.int8)


def counts(act, prd, threshold: float | np.ndarray = 0.5) -> dict[str, np.ndarray]:
    """TP, FP, FN, TN per attribute (length-A integer arrays) at the threshold."""
    truth = _as_bool(act)
    said = np.asarray(prd) >= threshold
    # Three column counts give all four.
    n = truth.shape[0]
    tp = np.count_nonzero(truth & said, axis=0)
    positive, predicted = np.count_nonzero(truth, axis=0), np.count_nonzero(said, axis=0)
    return {"TP": tp, "FP": predicted - tp, "FN": positive - tp,
            "TN": n - positive - predicted + tp}


def _ratio(num, den) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def scores(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall and F1 from counts (scalars or arrays), with the 0/0 rules."""
    tp, fp, fn, tn = (np.asarray(x, dtype=float) for x in (tp, fp, fn, tn))
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def average_precision(act, prd) -> np.ndarray:
    """AP per attribute; NaN for an attribute with no positive label."""
    truth = _as_bool(act)
    prd = np.asarray(prd, dtype=float)
    ap = np.full(truth.shape[1], np.nan)
    for j in range(truth.shape[1]):
        if truth[:, j].any():
            ap[j] = average_precision_score(truth[:, j], prd[:, j])
    return ap


def nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def jaccard(act, prd, threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """Per-image Jaccard index |ACT ∩ PRD| / |ACT ∪ PRD|; 1 where both are empty."""
    truth = _as_bool(act)
    said = np.asarray(prd) >= threshold
    inter = (truth & said).sum(axis=1)
    union = (truth | said).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def group_summary(act, prd, threshold: float | np.ndarray = 0.5) -> dict:
    """Everything the selection manager shows for one group of images.

    overall: counts pooled over all (image, attribute) pairs and the scores of those (micro);
    per_attribute: counts and scores for each attribute (length-A lists).
    """
    c = counts(act, prd, threshold)
    per = scores(c["TP"], c["FP"], c["FN"], c["TN"])
    pooled = {k: int(v.sum()) for k, v in c.items()}
    overall = {k: float(v) for k, v in scores(*(pooled[k] for k in OUTCOMES)).items()}
    return {
        "n_images": int(np.asarray(act).shape[0]),
        "overall": {**pooled, **overall},
        "per_attribute": {**{k: v.tolist() for k, v in c.items()},
                          **{k: v.tolist() for k, v in per.items()}},
    }


def threshold_columns(threshold: float | np.ndarray, columns) -> float | np.ndarray:
    """The threshold(s) of some attribute columns: one number stays itself, an (A,) array gives
    those columns' own, so that `prd[:, columns] >= threshold_columns(t, columns)` holds."""
    return threshold if np.ndim(threshold) == 0 else np.asarray(threshold)[columns]


def run_thresholds(meta: dict, attributes: list[str]) -> np.ndarray | None:
    """A run's own per-attribute thresholds (run.json "thresholds", chosen on a validation share
    when the model was trained) in attribute order; None when the run has none (imported
    vectors, older runs). Anything but one number in 0..1 per attribute is a PipelineError."""
    chosen = meta.get("thresholds")
    if chosen is None:
        return None
    if not isinstance(chosen, dict) or set(chosen) != set(attributes):
        raise PipelineError(f"run {meta.get('id')}: its thresholds do not name each of its "
                            f"{len(attributes)} attributes once")
    values = [chosen[a] for a in attributes]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
               for v in values):
        raise PipelineError(f"run {meta.get('id')}: its thresholds must be numbers from 0 to 1")
    return np.array(values, dtype=float)


def select_thresholds(act, prd, default: float = 0.5) -> np.ndarray:
    """Per attribute, the decision threshold of best F1 on these (validation) images.

    Candidates are `default` and the midpoints between consecutive distinct probabilities (and
    below the lowest and above the highest), so a chosen threshold keeps the widest margin the
    data allow; among equal F1, the candidate closest to `default` wins. An attribute with no
    positive label keeps `default`: F1 is 0 at every threshold there.
    """
    truth = _as_bool(act)
    prd = np.asarray(prd, dtype=float)
    chosen = np.full(truth.shape[1], float(default))
    for j in range(truth.shape[1]):
        if truth[:, j].any():
            chosen[j] = _best_f1_threshold(truth[:, j], prd[:, j], default)
    return chosen


def _best_f1_threshold(truth: np.ndarray, prob: np.ndarray, default: float) -> float:
    edges = np.concatenate([[0.0], np.unique(prob), [1.0]])
    candidates = np.concatenate([[default], (edges[:-1] + edges[1:]) / 2])
    said = prob[None, :] >= candidates[:, None]
    tp = (said & truth).sum(axis=1)
    f1 = 2 * tp / (said.sum(axis=1) + truth.sum())
    best = np.flatnonzero(np.isclose(f1, f1.max(), rtol=0, atol=1e-12))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - default))]])


def evaluate(act, prd, threshold: float | np.ndarray = 0.5) -> dict:
    """The metrics recorded in run.json: per-attribute AP/P/R/F1 and the multi-label measures.

    `threshold` is one number for every attribute or one per attribute (recorded as a list).
    """
    act = _as_bool(act)
    prd = np.asarray(prd, dtype=float)
    c = counts(act, prd, threshold)
    per = scores(c["TP"], c["FP"], c["FN"], c["TN"])
    ap = average_precision(act, prd)
    said = prd >= threshold
    return {
        "threshold": float(threshold) if np.ndim(threshold) == 0 else
        np.asarray(threshold, dtype=float).tolist(),
        "mAP": nanmean(ap),
        "macro_precision": nanmean(per["precision"]),
        "macro_recall": nanmean(per["recall"]),
        "macro_f1": nanmean(per["f1"]),
        "jaccard": float(jaccard(act, prd, threshold).mean()) if len(act) else float("nan"),
        "exact_match": float((said == act).all(axis=1).mean()) if len(act) else float("nan"),
        "per_attribute": {
            "AP": ap.tolist(),
            **{k: v.tolist() for k, v in per.items()},
            **{k: v.tolist() for k, v in c.items()},
        },
    }


def format_ap_table(attributes, metrics: dict) -> str:
    """A plain-text table of per-attribute AP, precision, recall and F1, ending with mAP; with
    per-attribute thresholds, a column shows each attribute's."""
    per = metrics["per_attribute"]
    width = max(len(a) for a in attributes)
    own = metrics.get("threshold") if isinstance(metrics.get("threshold"), list) else None
    lines = [f"{'attribute':{width}s}  {'AP':>6s} {'P':>6s} {'R':>6s} {'F1':>6s} {'pos':>5s}"
             + ("  threshold" if own else "")]

    def cell(x):
        return "     –" if x is None or not np.isfinite(x) else f"{x:6.3f}"

    for j, name in enumerate(attributes):
        pos = per["TP"][j] + per["FN"][j]
        lines.append(f"{name:{width}s}  {cell(per['AP'][j])} {cell(per['precision'][j])} "
                     f"{cell(per['recall'][j])} {cell(per['f1'][j])} {pos:5d}"
                     + (f"  {own[j]:9.3f}" if own else ""))
    lines.append(f"{'mAP':{width}s}  {cell(metrics['mAP'])}")
    return "\n".join(lines)


def error_distance(act, prd, metric: str = "cosine") -> np.ndarray:
    """ACT–PRD distance per image in [0, 1]: cosine distance, or Euclidean over sqrt(A).

    Cosine is undefined for an all-zero vector: two empty vectors agree (0), one empty and one
    not are as far apart as it gets (1).
    """
    act = np.asarray(act, dtype=np.float32)
    prd = np.asarray(prd, dtype=np.float32)
    if metric == "euclidean":
        return np.sqrt(((act - prd) ** 2).sum(axis=1) / act.shape[1]).astype(np.float32)
    norms = np.linalg.norm(act, axis=1) * np.linalg.norm(prd, axis=1)
    dot = (act * prd).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1), np.nan)
    empty_a, empty_p = ~act.any(axis=1), ~(prd > 0).any(axis=1)
    dist = np.where(np.isnan(cos), np.where(empty_a & empty_p, 0.0, 1.0), 1.0 - cos)
    return np.clip(dist, 0, 1).astype(np.float32)
