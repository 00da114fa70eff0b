"""2-D maps of the three spaces (ACT labels, FEA features, PRD probabilities) with openTSNE: the
same coordinates for the same input and seed. `python -m pipeline embed` (demo.py) re-embeds a run.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from openTSNE import TSNE
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from pipeline import store
from pipeline.before_after import initialisation, onto
from pipeline.errors import PipelineError, Stopped

# A parent's map is a converged layout, not a fresh guess (pipeline.before_after): openTSNE's
# warning about a wide start, meant for a guess, would only alarm whoever reads the log.
logging.getLogger("openTSNE.tsne").addFilter(
    lambda record: not record.getMessage().startswith("Standard deviation of embedding"))

SPACES = ("act", "fea", "prd")
PCA_DIMS = 50  # FEA is reduced first, as is usual before t-SNE of CNN features
ACT_JITTER = 0.05  # far below the distance 1 between label sets that differ in one attribute
EARLY_ITER, MAIN_ITER = 250, 500
# From a parent's map, 250 steps kept unchanged images as near their place as 500 did (1.4 and
# 1.7 neighbour spacings, 2,000 points in 12 clusters) in half the time.
PARENT_ITER = 250
CALLBACK_EVERY = 25
MIN_TSNE_POINTS = 5  # fewer points than this get a PCA layout instead
# FFT-interpolated gradients cost a fixed grid per step, which dominates below ~10k points; there
# Barnes–Hut measured 3–4× faster here (benchmarks/RESULTS.md). openTSNE's own "auto" uses the
# same threshold.
FFT_MIN_POINTS = 10_000


def gradient_method(n: int, method: str = "auto") -> str:
    if method not in ("auto", "fft", "bh"):
        raise PipelineError(f"unknown t-SNE gradient method {method!r}; use auto, fft or bh")
    return ("fft" if n >= FFT_MIN_POINTS else "bh") if method == "auto" else method


def prepare(x: np.ndarray, space: str, seed: int = 0) -> np.ndarray:
    """What t-SNE sees for each space.

    act: repeated label sets are exact duplicates, which give t-SNE zero distances; a tiny
    deterministic jitter keeps each label combination a tight, separate cluster.
    fea: PCA to 50 dimensions. prd: the probabilities as they are.
    """
    if space not in SPACES:
        raise PipelineError(f"unknown space {space!r}; expected one of {SPACES}")
    x = np.asarray(x, dtype=np.float64)
    if space == "act":
        return x + np.random.default_rng(seed).normal(0, ACT_JITTER, x.shape)
    if space == "fea" and x.shape[1] > PCA_DIMS and len(x) > PCA_DIMS:
        return PCA(n_components=PCA_DIMS, random_state=seed).fit_transform(x)
    return x


def embed(x: np.ndarray, *, space: str, seed: int = 0, perplexity: float = 30,
          progress: bool = False, on_iteration: Callable[[int], None] | None = None,
          method: str = "auto", start: np.ndarray | None = None) -> np.ndarray:
    """N × 2 float32 openTSNE coordinates (fixed random_state: same input, same map).

    Gradients: FFT interpolation from 10,000 points up, Barnes–Hut below (method="auto").

    Perplexity is lowered for small N (t-SNE needs N > 3·perplexity); below 5 points the map is
    the first two principal components. `on_iteration(done)` hears of progress every 25 steps.
    With `start` (N × 2, e.g. a parent run's map: pipeline.before_after) the map starts from
    that layout and ends on its scale and place.
    """
    name = f"{space.upper()} array"
    x = store.check_array(name, x, (None, None))
    if len(x) == 0:
        return np.zeros((0, 2), np.float32)
    z = prepare(x, space, seed)
    if len(z) < MIN_TSNE_POINTS:
        return _pca_layout(z) if start is None else np.asarray(start, np.float32)
    embedding = fit_tsne(z, seed=seed, perplexity=perplexity, progress=progress,
                         on_iteration=on_iteration, method=method, desc=f"embed {space}",
                         start=start)
    coords = as_coords(embedding, name)
    return coords if start is None else onto(coords, start)


def as_coords(embedding, name: str) -> np.ndarray:
    """N × 2 float32 coordinates, refused when any is not finite."""
    coords = np.asarray(embedding, dtype=np.float32)
    if not np.isfinite(coords).all():
        raise PipelineError(f"t-SNE of the {name} gave non-finite coordinates")
    return coords


def fit_tsne(z: np.ndarray, *, seed: int = 0, perplexity: float = 30, progress: bool = False,
             on_iteration: Callable[[int], None] | None = None, method: str = "auto",
             desc: str = "embed", start: np.ndarray | None = None):
    """openTSNE's TSNEEmbedding of prepared inputs `z` (at least MIN_TSNE_POINTS rows); with
    `start` (N × 2) initialised from that layout at its own scale, without early exaggeration."""
    perplexity = float(min(perplexity, (len(z) - 1) / 3))
    if not perplexity > 0:
        raise PipelineError(f"perplexity must be positive, got {perplexity}")
    bar = tqdm(total=tsne_steps(start), desc=desc, unit="it", disable=not progress,
               leave=False)
    done = [0]

    def tick(iteration, error, embedding):
        bar.update(CALLBACK_EVERY)
        done[0] += CALLBACK_EVERY
        if on_iteration:
            on_iteration(done[0])
        return False

    tsne = TSNE(n_components=2, perplexity=perplexity, metric="euclidean",
                negative_gradient_method=gradient_method(len(z), method), random_state=seed,
                n_jobs=_jobs(), initialization="pca" if start is None else initialisation(start),
                early_exaggeration_iter=EARLY_ITER if start is None else 0,
                n_iter=MAIN_ITER if start is None else PARENT_ITER, callbacks=tick,
                callbacks_every_iters=CALLBACK_EVERY, verbose=False)
    try:
        return tsne.fit(z)
    finally:
        bar.close()


def tsne_steps(start=None) -> int:
    """Optimisation steps of one map: a map started from a parent's layout skips the early
    exaggeration (which would first pull it into clusters of its own) and needs fewer steps."""
    return EARLY_ITER + MAIN_ITER if start is None else PARENT_ITER


def _jobs() -> int:
    """Every core (up to 8); openTSNE's OpenMP threads wait passively (pipeline/__init__.py),
    without which a second thread measured 16× slower on a busy 2-core machine."""
    return max(1, min(8, os.cpu_count() or 1))


def _pca_layout(z: np.ndarray) -> np.ndarray:
    """The first two principal components (zeros where there are fewer): for tiny inputs."""
    centred = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    out = np.zeros((len(z), 2), np.float32)
    out[:, : coords.shape[1]] = coords
    return out


def embed_all(act, fea, prd, *, seed: int = 0, progress: bool = False,
              on_progress: Callable[[str, float], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              starts: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """{"act", "fea", "prd"} → N × 2 coordinates, one openTSNE map per space; each started
    from `starts[space]` when given (a parent run's maps: pipeline.before_after)."""
    arrays = {"act": act, "fea": fea, "prd": prd}
    lengths = {s: len(a) for s, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise PipelineError(f"ACT, FEA and PRD must have one row per image; got {lengths}")
    steps = tsne_steps(starts)
    out = {}
    for k, space in enumerate(SPACES):
        def heard(done, k=k):
            if should_stop and should_stop():
                raise Stopped("embedding stopped; no run was written")
            if on_progress:
                on_progress("embed", (k * steps + done) / (len(SPACES) * steps))

        out[space] = embed(arrays[space], space=space, seed=seed, progress=progress,
                           on_iteration=heard, start=None if starts is None else starts[space])
    return out


def reembed_run(run: store.Run, *, seed: int = 0, perplexity: float = 30.0,
                run_id: str | None = None, progress: bool = True) -> Path:
    """A new run with the same arrays as `run` and freshly computed maps; returns its directory."""
    started = time.perf_counter()
    arrays = {"act": np.asarray(run.act), "fea": np.asarray(run.fea), "prd": np.asarray(run.prd)}
    emb = {s: embed(arrays[s], space=s, seed=seed, perplexity=perplexity, progress=progress)
           for s in SPACES}
    meta = {k: v for k, v in run.meta.items()
            if k not in ("id", "created", "pipeline_version", "n_images", "n_attributes")}
    meta["embedded_from"] = run.id
    meta["embedding"] = embedding_meta(len(run), seed, perplexity)
    meta["timings"] = {**meta.get("timings", {}),
                       "embed_s": round(time.perf_counter() - started, 2)}
    from pipeline.analyses.disagreement import stored

    kept = stored(run)  # the same arrays: the same neighbourhoods and scores
    extra = {}
    if run.checkpoint is not None:
        extra["model.pt"] = lambda path: shutil.copyfile(run.checkpoint, path)
    return store.write_run(run.data_dir, attributes=run.attributes, colours=run.colours,
                           images=run.images.drop(columns=["index"], errors="ignore"),
                           act=arrays["act"], prd=arrays["prd"], fea=arrays["fea"], emb=emb,
                           meta=meta, extra_files=extra, run_id=run_id,
                           disagreement=kept if kept is not None else run.disagreement)


def embedding_meta(n: int, seed: int = 0, perplexity: float = 30.0) -> dict:
    """How the maps were made, as recorded in run.json."""
    return {"method": "openTSNE", "gradient": gradient_method(n), "seed": seed,
            "perplexity": float(min(perplexity, max((n - 1) / 3, 0))), "pca_dims_fea": PCA_DIMS,
            "act_jitter": ACT_JITTER}
