"""Label audit: rank (image, attribute) labels by how likely they are annotation errors.

A label is suspect by how far it lies from what the rest of the evidence expects: the model's
probabilities of every attribute and the image's other labels (`label_context`), best on
out-of-fold probabilities (pipeline.folds), which no model learned the label from, and with a
second, label-free view of the image where the folds job saved one (pipeline.image_view: boosted
trees on the full-size image's radial features, over the same folds). The context models are
fitted as if some labels were flipped (`fit_flip_logistic`, the share learned from the labels
themselves), so the wrong labels among those they learn from do not flatten what they expect.

What earned its place (benchmarks/label_audit.py: 1,600 simulated images, 5 % of labels
flipped, precision at K = 1,360; benchmarks/RESULTS.md; at the demo's 4,800 images the audit
reaches 0.79 on two datasets, cleanlab's best 0.71): out-of-fold probabilities over the
run's own (in-sample) ones, the label-context model over raw |ACT − PRD| (+0.08 with the demo's
600-step models), fitting it flip-aware over a plain logistic fit (+0.015, twice its paired
standard error), and the image view's probability of the attribute as one more input (+0.025
and +0.037 on two independent datasets). What did not, and is off by default: the
FEA-neighbour vote (weight < 1 mixes it in; within the noise of the measurement, at a
neighbour search's cost). Left out: ranking by the per-attribute confident-learning thresholds
(worse), pairwise label interactions, boosted trees, the neighbours' labels or the run's FEA
(principal components) in the context model (worse or within the noise), a flip rate per
attribute or per direction (worse), ranking within each attribute (within the noise), refitting
on labels cleaned of the first suspects (no gain), the other labels replaced by their posterior
(worse), the image view's probabilities of all attributes as inputs (worse than its own one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from pipeline.corrections import labels_in_force
from pipeline.errors import PipelineError
from pipeline.folds import fold_assignment, read_image_view, read_oof
from pipeline.neighbours import neighbour_graph, run_neighbour_graph
from pipeline.store import Run, check_array

DEFAULT_K = 10
DEFAULT_WEIGHT = 1.0  # share of the model's doubt in the score; the rest is the neighbour vote
CONTEXT_FOLDS = 5  # cross-fitting of the label-context models without out-of-fold folds
RIDGE = 1.0  # L2 penalty of the label-context models, on standardised inputs
START_FLIP = 0.05  # where the learning of the flipped share starts (fit_flip_logistic)
MAX_FIT_ROWS = 20_000  # rows each label-context model is fitted on, at most (_fitting_rows)
# Rows the flipped share is learned on, at most (spread evenly over the fitting rows): one number
# pooled over the attributes needs fewer rows than their weights.
RATE_ROWS = 5_000
AUDIT_COLUMNS = ("index", "image_id", "attribute", "label", "prd", "expected", "vote",
                 "prd_score", "vote_score", "score", "confident")
PREDICTIONS = ("auto", "out-of-fold", "in-sample")


def confident_thresholds(act, prob) -> tuple[np.ndarray, np.ndarray]:
    """Per attribute, the confident-learning thresholds of the two classes.

    t_pos[j] = mean probability of 1 over the images labelled 1 (the model's typical
    confidence on a positive); t_neg[j] = mean probability of 0 over the images labelled 0.
    An attribute with no image in a class gets 0.5 for that class.
    """
    act = np.asarray(act).astype(bool)
    prob = np.asarray(prob, dtype=np.float64)
    n_pos, n_neg = act.sum(axis=0), (~act).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_pos = np.where(n_pos > 0, (prob * act).sum(axis=0) / np.maximum(n_pos, 1), 0.5)
        t_neg = np.where(n_neg > 0, ((1 - prob) * ~act).sum(axis=0) / np.maximum(n_neg, 1), 0.5)
    return t_pos, t_neg


def confidently_other(act, prob) -> np.ndarray:
    """Confident learning's test for a label error, per image and attribute (N × A bool).

    True where the probability of the label the image does *not* have (prob for a 0,
    1 − prob for a 1) reaches that other class's threshold (`confident_thresholds`): the
    signal is as sure of the other class as it typically is of that class's own members.
    Per-attribute thresholds keep a shy model (all probabilities low) from hiding its doubts.
    """
    act = np.asarray(act).astype(bool)
    prob = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    t_pos, t_neg = confident_thresholds(act, prob)
    other = np.where(act, 1.0 - prob, prob)
    return other >= np.where(act, t_neg, t_pos)


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def fit_logistic(x, y, ridge: float = RIDGE, iterations: int = 30) -> np.ndarray:
    """Weights (one per column of x, then the bias) of a ridge-penalised logistic regression of
    y ∈ {0, 1} on x, by Newton's method (a few milliseconds at audit sizes, deterministic)."""
    x1 = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(x1.shape[1], float(ridge))
    penalty[-1] = 0.0  # the bias is free: a rare attribute keeps its base rate
    w = np.zeros(x1.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x1 @ w)))
        grad = x1.T @ (p - y) + penalty * w
        hess = (x1.T * (p * (1 - p))) @ x1 + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def fit_flip_logistic(x, y, flip: float | None = None, ridge: float = RIDGE):
    """(weights, flip rate) of a logistic model of the *true* label under symmetric label noise:
    P(y = 1 | x) = flip + (1 − 2·flip)·σ(x·w + b), so σ(x·w + b) is the probability that the
    true label is 1 (Bootkrajang & Kabán, ECML PKDD 2012, with one rate for both directions).
    A plain fit lets every wrong label pull its weights; here a wrong label may be a flip.
    `flip` None learns the rate with the weights (in (0, 0.5)); 0 is `fit_logistic`."""
    w0 = fit_logistic(x, y, ridge)
    if flip is not None and flip <= 0:
        return w0, 0.0
    x1 = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(x1.shape[1], float(ridge))
    penalty[-1] = 0.0
    learn = flip is None
    start = np.append(w0, _logit(2 * START_FLIP)) if learn else w0

    def loss(v):
        w = v[: x1.shape[1]]
        e = 0.5 / (1 + np.exp(-v[-1])) if learn else flip
        s = 1.0 / (1.0 + np.exp(-(x1 @ w)))
        q = np.clip(e + (1 - 2 * e) * s, 1e-12, 1 - 1e-12)
        r = (q - y) / (q * (1 - q))
        value = -(y * np.log(q) + (1 - y) * np.log(1 - q)).sum() + 0.5 * (penalty * w * w).sum()
        grad = x1.T @ (r * (1 - 2 * e) * s * (1 - s)) + penalty * w
        if learn:  # d rate / d v[-1] = rate · (1 − 2 · rate)
            grad = np.append(grad, (r * (1 - 2 * s)).sum() * e * (1 - 2 * e))
        return value, grad

    v = minimize(loss, start, jac=True, method="L-BFGS-B").x
    return v[: x1.shape[1]], float(0.5 / (1 + np.exp(-v[-1])) if learn else flip)


def label_context(act, prd, folds, flip: float | None = None, view=None) -> np.ndarray:
    """Per image and attribute, the probability that its true label is 1 given everything but
    that label itself (N × A): a logistic model of each attribute's label on the logits of every
    attribute's probability and the image's other labels (co-occurrence: attributes that come
    together), and with `view` (N × A probabilities from a second, independent model of the
    image: pipeline.image_view) the logit of that attribute's, fitted as if a share `flip` of
    the labels were flipped (fit_flip_logistic).

    Cross-fitted: the images of fold f are scored by models fitted on the other folds, so no
    label is scored by a model that saw it. `flip` None learns the share on each fold's fitting
    rows: learned per attribute, then their mean for all (one attribute's estimate is noisy).
    An attribute with one class only in a fold's fitting rows gets that class's share.
    """
    act = np.asarray(act, dtype=np.float64)
    inputs = _standardised(np.hstack([_logit(prd), act]))  # attribute j's leaves out act[:, j]
    # The view's own attribute only: all 17 of its logits measured worse (they repeat the CNN's).
    seen = None if view is None else _standardised(_logit(view))
    folds = np.asarray(folds)
    out = np.empty_like(act)
    # Hundreds of tiny matrix products: BLAS threads only wait for each other (on a loaded
    # 2-core machine one thread measured 0.4 s where the default took 31 s).
    with threadpool_limits(1, user_api="blas"):
        fits = {f: _fitting_rows(folds != f) for f in np.unique(folds)}
        rates = {f: flip if flip is not None else
                 _fold_flip_rate(act, inputs, _every_nth(fit, RATE_ROWS))
                 for f, fit in fits.items()}
        for j in range(act.shape[1]):
            x = np.delete(inputs, act.shape[1] + j, axis=1)
            if seen is not None:
                x = np.hstack([x, seen[:, [j]]])
            for f, fit in fits.items():
                held, y = folds == f, act[fit, j]
                if y.min() == y.max():
                    out[held, j] = y.mean()
                    continue
                w, _ = fit_flip_logistic(x[fit], y, rates[f])
                out[held, j] = 1.0 / (1.0 + np.exp(-(x[held] @ w[:-1] + w[-1])))
    return out


def _standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)


def _fold_flip_rate(act: np.ndarray, inputs: np.ndarray, rows: np.ndarray) -> float:
    """The share of flipped labels learned on `rows` of one fold's fitting rows: the mean of the
    rates fit_flip_logistic learns per attribute (attributes with one class only left out)."""
    n_attr, x = act.shape[1], inputs[rows]
    rates = [fit_flip_logistic(np.delete(x, n_attr + j, axis=1), act[rows, j])[1]
             for j in range(n_attr) if act[rows, j].min() != act[rows, j].max()]
    return float(np.mean(rates)) if rates else 0.0


def _fitting_rows(rows: np.ndarray) -> np.ndarray:
    """The rows a fold's model is fitted on: all of `rows` (a mask) up to MAX_FIT_ROWS, else
    that many of them drawn evenly at random (fixed seed). 35 weights are pinned down long before
    20,000 rows, and at 100,000 images the full fits took 20 s of the audit tab's 23 s."""
    found = np.flatnonzero(rows)
    if len(found) <= MAX_FIT_ROWS:
        return found
    return np.sort(np.random.default_rng(0).choice(found, MAX_FIT_ROWS, replace=False))


def _every_nth(rows: np.ndarray, most: int) -> np.ndarray:
    """At most `most` of `rows`, evenly spread over them."""
    return rows[:: -(-len(rows) // most)] if len(rows) > most else rows


def neighbour_vote(act, nbr) -> np.ndarray:
    """Per image and attribute, the share of its neighbours labelled 1 (N × A in [0, 1])."""
    return np.asarray(act, dtype=np.float64)[nbr].mean(axis=1)


def audit_scores(act, prd, fea, *, k: int = DEFAULT_K, weight: float = DEFAULT_WEIGHT,
                 nbr=None, context: bool = True, folds=None, view=None) -> dict[str, np.ndarray]:
    """Suspicion of every (image, attribute) label; arrays of shape N × A.

    expected   = label_context(act, prd, folds) with `context`, else prd: the probability that
                 the true label is 1, from the model's probabilities of all attributes and the
                 image's other labels;
    prd_score  = |expected − act|: the probability that the true label is the other one;
    vote_score = |vote − act|: the share of the image's k nearest neighbours in FEA space
                 (pipeline.neighbours) that carry the other label;
    score      = weight · prd_score + (1 − weight) · vote_score, in [0, 1];
    confident  = confidently_other(act, prd): the per-attribute threshold test, shown as a flag.
    `folds` (N ints) cross-fits the context models: the out-of-fold predictions' own folds when
    they are used, else a seeded 5-fold split. `view` (N × A, pipeline.image_view's out-of-fold
    probabilities over those folds) adds the image's second view to each context model.
    """
    act = check_array("act", act, (None, None), binary=True)
    prd = check_array("prd", prd, act.shape, unit=True)
    fea = check_array("fea", fea, (act.shape[0], None))
    view = None if view is None else check_array("image view", view, act.shape, unit=True)
    if not 0.0 <= weight <= 1.0:
        raise PipelineError(f"the audit weight must lie in [0, 1], not {weight}")
    if weight < 1.0:
        nbr = neighbour_graph(fea, k) if nbr is None else nbr
        vote = neighbour_vote(act, nbr)
    else:  # the neighbours play no part: skip their search
        vote = np.full(act.shape, np.nan)
    if context:
        folds = default_folds(len(act)) if folds is None else folds
        expected = label_context(act, prd, folds, view=view)
    else:
        expected = prd.astype(np.float64)
    prd_score = np.abs(expected - act)
    vote_score = np.abs(vote - act)
    score = prd_score if weight == 1.0 else weight * prd_score + (1 - weight) * vote_score
    return {"expected": expected, "vote": vote, "prd_score": prd_score,
            "vote_score": vote_score, "score": score, "confident": confidently_other(act, prd)}


def default_folds(n: int) -> np.ndarray:
    """The seeded split that cross-fits the context models when no folds are given."""
    return np.arange(n) % CONTEXT_FOLDS if n < CONTEXT_FOLDS else \
        fold_assignment(n, CONTEXT_FOLDS)


def rank_labels(act, prd, fea, image_ids, attributes, *, k: int = DEFAULT_K,
                weight: float = DEFAULT_WEIGHT, top: int | None = 50, skip=None,
                nbr=None, context: bool = True, folds=None, view=None) -> pd.DataFrame:
    """The most suspicious labels first, one row per (image, attribute), AUDIT_COLUMNS.

    `skip` (N × A bool) hides cells an analyst already reviewed (corrected labels).
    """
    act = np.asarray(act)
    s = audit_scores(act, prd, fea, k=k, weight=weight, nbr=nbr, context=context, folds=folds,
                     view=view)
    score = s["score"].copy()
    if skip is not None:
        score[np.asarray(skip, dtype=bool)] = -np.inf
    flat = np.argsort(-score, axis=None, kind="stable")
    flat = flat[np.isfinite(score.ravel()[flat])]
    if top is not None:
        flat = flat[: max(int(top), 0)]
    rows, cols = np.unravel_index(flat, act.shape)
    names = np.asarray(list(attributes), dtype=object)
    return pd.DataFrame({
        "index": rows,
        "image_id": np.asarray(list(image_ids), dtype=object)[rows],
        "attribute": names[cols],
        "label": act[rows, cols].astype(int),
        "prd": np.asarray(prd)[rows, cols].astype(float),
        "expected": s["expected"][rows, cols],
        "vote": s["vote"][rows, cols],
        "prd_score": s["prd_score"][rows, cols],
        "vote_score": s["vote_score"][rows, cols],
        "score": s["score"][rows, cols],
        "confident": s["confident"][rows, cols],
    }, columns=list(AUDIT_COLUMNS))


def audit_run(run: Run, *, act=None, skip=None, k: int = DEFAULT_K,
              weight: float = DEFAULT_WEIGHT, top: int | None = 50,
              predictions: str = "auto") -> pd.DataFrame:
    """`rank_labels` for a run, on its labels in force; the corrected cells are not ranked (an
    analyst reviewed them). `act` and `skip` replace those labels and that mask.

    predictions: "out-of-fold" (pipeline.folds; an error when the run has none), "in-sample"
    (the run's own PRD) or "auto" (out-of-fold when saved). The ranking's attrs["predictions"]
    says in words which were used.
    """
    if predictions not in PREDICTIONS:
        raise PipelineError(f"predictions must be one of {', '.join(PREDICTIONS)}, not "
                            f"{predictions!r}")
    if act is None:
        labels = labels_in_force(run)
        act, skip = labels.act, (labels.corrected if skip is None else skip)
    prd, folds, view, source = run_predictions(run, predictions)
    nbr = run_neighbour_graph(run, k) if weight < 1.0 else None
    ranking = rank_labels(act, prd, run.fea, run.images["image_id"], run.attributes,
                          k=k, weight=weight, top=top, skip=skip, nbr=nbr, folds=folds, view=view)
    ranking.attrs["predictions"] = source
    return ranking


def run_predictions(run: Run, predictions: str = "auto"
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str]:
    """(probabilities, their folds, the image view's probabilities, a phrase naming them) the
    audit ranks a run on; folds and view are None for in-sample predictions, the view also
    when the out-of-fold job saved none."""
    oof = read_oof(run) if predictions != "in-sample" else None
    if oof is not None:
        prd, folds, note = oof
        view = read_image_view(run, oof)
        source = (f"out-of-fold predictions ({note['folds']} models, {note['steps']} steps, "
                  f"{str(note.get('created', ''))[:10]})")
        return prd, folds, view, source + (" and the image view" if view is not None else "")
    if predictions == "out-of-fold":
        raise PipelineError(f"run {run.id} has no out-of-fold predictions; make them with "
                            f"`python -m pipeline audit --run {run.id} --folds 5`")
    return run.prd, None, None, "in-sample predictions (the run's model trained on these labels)"


def precision_at_k(ranking: pd.DataFrame, wrong, attributes, k: int) -> float:
    """Share of the first k ranked labels that are wrong (`wrong`: N × A bool, e.g. true != act)."""
    wrong = np.asarray(wrong, dtype=bool)
    if k <= 0 or len(ranking) < k:
        raise PipelineError(f"precision at k needs 1 <= k <= {len(ranking)} ranked rows, not {k}")
    col_of = {name: j for j, name in enumerate(attributes)}
    top = ranking.head(k)
    cols = top["attribute"].map(col_of).to_numpy()
    return float(wrong[top["index"].to_numpy(), cols].sum()) / k


def format_ranking(ranking: pd.DataFrame) -> str:
    if ranking.empty:
        return "(nothing to rank)"
    columns = ["index", "image_id", "attribute", "label", "prd", "expected", "vote", "score",
               "confident"]
    if ranking["vote"].isna().all():  # the neighbours took no part in the score
        columns.remove("vote")
    shown = ranking[columns]
    return shown.to_string(index=False, float_format=lambda x: f"{x:.3f}")
