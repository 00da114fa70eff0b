"""How well a run's model stands up to poorer images: smear, Gaussian noise, a lower dose and a
coarser detector, each at a few levels, re-inferred and scored (after Liu, Yager et al.'s study of
how these degrade x-ray scattering classifiers).

Level 0 of every perturbation is the image itself. The model is loaded lazily (torch is imported
only by `probe`), so the dashboard's web process can import this module for its constants.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from pipeline import jobs, metrics, store
from pipeline.errors import PipelineError, Stopped

DEFAULT_N = 500
CHUNK = 32  # images perturbed and re-inferred together: memory stays at CHUNK × 17 images
# Strength per level (index = level; level 0 is always the clean image).
SMEAR = (0.0, 0.01, 0.02, 0.04, 0.08)  # motion-blur length, as a share of the image's side
GAUSSIAN = (0.0, 0.02, 0.05, 0.1, 0.25)  # read-noise σ, in units of the image's mean count
DOSE = (1.0, 0.3, 0.1, 0.03, 0.01)  # share of the photons kept (counts rescaled back)
RESOLUTION = (1, 2, 4, 8, 16)  # detector pixels this many times larger on each side
LEVELS = {"smear": SMEAR, "gaussian": GAUSSIAN, "poisson": DOSE, "resolution": RESOLUTION}
PERTURBATIONS = tuple(LEVELS)
TITLES = {"smear": "Smear (motion blur)", "gaussian": "Gaussian noise",
          "poisson": "Lower dose (Poisson)", "resolution": "Lower resolution"}
MEAN = "mean"  # the table's row for all attributes together
EXIT_CANCELLED = jobs.EXIT_CANCELLED


# ---------------------------------------------------------------- perturbations


def setting(kind: str, level: int) -> str:
    """What a level means, in words: 'blur 2 % of side', 'dose × 0.1'."""
    value = _strength(kind, level)
    if level == 0:
        return "clean"
    return {"smear": f"blur {100 * value:g} % of side", "gaussian": f"σ {value:g} × mean",
            "poisson": f"dose × {value:g}", "resolution": f"pixels {value}× larger"}[kind]


def _strength(kind: str, level: int):
    if kind not in LEVELS:
        raise PipelineError(f"unknown perturbation {kind!r}; choose one of "
                            f"{', '.join(PERTURBATIONS)}")
    levels = LEVELS[kind]
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or \
            not 0 <= level < len(levels):
        raise PipelineError(f"the level of {kind} must be a whole number from 0 to "
                            f"{len(levels) - 1}, not {level!r}")
    return levels[int(level)]


def perturb(image: np.ndarray, kind: str, level: int, rng: np.random.Generator,
            angle: float | None = None) -> np.ndarray:
    """The image under one perturbation at one level (level 0: the image itself, unchanged).

    Pixels a detector does not measure (negative or not finite: gaps, masks) stay as they were;
    the others are treated as photon counts. `angle` (degrees) fixes the smear's direction,
    which is otherwise drawn from `rng`.
    """
    strength = _strength(kind, level)
    if level == 0:
        return image
    image = np.asarray(image, dtype=np.float32)
    valid = np.isfinite(image) & (image >= 0)
    counts = image if valid.all() else np.where(valid, image, np.float32(0))
    if kind == "smear":
        theta = np.deg2rad(angle) if angle is not None else rng.uniform(0, np.pi)
        out = smear(counts, 1.0 + strength * max(counts.shape), theta)
    elif kind == "gaussian":
        sigma = strength * max(float(counts[valid].mean()) if valid.any() else 0.0, 1e-6)
        out = counts + np.float32(sigma) * rng.standard_normal(counts.shape, dtype=np.float32)
    elif kind == "poisson":
        out = rng.poisson(counts * strength) / strength
    else:
        out = coarser(counts, int(strength))
    out = out.astype(np.float32, copy=False)
    return out if valid.all() else np.where(valid, out, image)


def smear(counts: np.ndarray, length: float, theta: float) -> np.ndarray:
    """Motion blur: the image averaged along a line of `length` pixels (any length ≥ 1) at angle
    theta (radians), as when sample or beam moves during the exposure. Counts are conserved away
    from the edges."""
    radius = max(length - 1.0, 0.0) / 2
    t = np.linspace(-radius, radius, 8 + 4 * int(np.ceil(length)))
    centre = int(np.ceil(radius)) + 1  # a whole pixel, the middle of an odd-sided kernel
    x, y = t * np.cos(theta) + centre, t * np.sin(theta) + centre
    side = 2 * centre + 1
    kernel = np.zeros((side, side))
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)  # bilinear splat of points along the line
    return fftconvolve(counts, kernel / kernel.sum(), mode="same")


def coarser(counts: np.ndarray, factor: int) -> np.ndarray:
    """A detector with `factor`× larger pixels: each factor × factor block averaged, then drawn
    back at the original size (so the model sees the same field of view, less detail)."""
    h, w = counts.shape
    factor = max(1, min(factor, h, w))
    ph, pw = -h % factor, -w % factor
    padded = np.pad(counts, ((0, ph), (0, pw)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    means = blocks.mean(axis=(1, 3))
    return np.repeat(np.repeat(means, factor, axis=0), factor, axis=1)[:h, :w]


def image_rng(seed: int, kind: str, level: int, row: int) -> np.random.Generator:
    """One generator per image, perturbation and level: results do not depend on which other
    images are probed with it, or in what order."""
    _strength(kind, level)  # an unknown perturbation or level is named, not a ValueError
    return np.random.default_rng([int(seed), PERTURBATIONS.index(kind), int(level), int(row)])


# ---------------------------------------------------------------- choosing images


def sample_rows(n_images: int, n: int, seed: int = 0) -> np.ndarray:
    """A random sample of n of the run's rows (all of them when it has no more), sorted."""
    if n < 1:
        raise PipelineError(f"the sample size must be at least 1, got {n}")
    if n >= n_images:
        return np.arange(n_images)
    return np.sort(np.random.default_rng(seed).choice(n_images, size=n, replace=False))


def check_rows(run: store.Run, rows) -> np.ndarray:
    """Rows given by the user: whole numbers within the run, each once, sorted."""
    found = np.unique(np.asarray(list(rows)))
    if found.size == 0:
        raise PipelineError("no image rows to probe")
    if not np.issubdtype(found.dtype, np.integer) or found[0] < 0 or found[-1] >= len(run):
        raise PipelineError(f"image rows must be whole numbers from 0 to {len(run) - 1}")
    return found.astype(np.int64)


def read_rows(path) -> list[int]:
    """Row numbers from a text file, separated by spaces, commas or new lines; '#' comments."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"rows file {path} is unreadable ({err.__class__.__name__})") from err
    tokens = [t for line in text.splitlines() for t in line.split("#")[0].replace(",", " ").split()]
    rows = []
    for token in tokens:
        if not token.isdigit():
            raise PipelineError(f"rows file {path} holds {token[:20]!r}, not a row number")
        rows.append(int(token))
    if not rows:
        raise PipelineError(f"rows file {path} holds no row numbers")
    return rows


def check_probe_ready(run: store.Run) -> None:
    """A PipelineError unless the run has a model and its images to re-infer."""
    if run.checkpoint is None:
        raise PipelineError(f"run {run.id} has no model (model.pt): the robustness probe "
                            "re-infers perturbed images with the run's own model")
    if not run.images["path"].fillna("").astype(str).str.len().all():
        raise PipelineError(f"run {run.id} holds no images for some rows (its vectors were "
                            "imported without --images); the probe needs the images")


# ---------------------------------------------------------------- the probe


class _Variants:
    """The perturbed images of a chunk, as the dataset pipeline.infer.predict reads: one entry
    per (variant, image), made when predict asks for it."""

    def __init__(self, images, rows, variants, seed, attributes, angle=None):
        self.images, self.rows, self.variants = images, rows, variants
        self.seed, self.attributes, self.angle = seed, attributes, angle

    def __len__(self) -> int:
        return len(self.variants) * len(self.images)

    def load_image(self, index: int) -> np.ndarray:
        (kind, level), i = self.variants[index // len(self.images)], index % len(self.images)
        if level == 0:
            return self.images[i]
        rng = image_rng(self.seed, kind, level, self.rows[i])
        return perturb(self.images[i], kind, level, rng, self.angle)

    def load_images(self, indices) -> list[np.ndarray]:
        return [self.load_image(i) for i in indices]


def variants() -> list[tuple[str, int]]:
    """The clean image once, then every perturbation at every level above 0."""
    return [("smear", 0)] + [(k, lv) for k in PERTURBATIONS for lv in range(1, len(LEVELS[k]))]


def probe(run: store.Run, rows=None, *, n: int = DEFAULT_N, seed: int = 0, labels=None,
          device: str = "auto", angle: float | None = None,
          on_progress: Callable[[str, float], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> pd.DataFrame:
    """Re-infer images of the run under every perturbation and level; return the score table.

    `rows` default to a random sample of n (seeded); `labels` (rows × attributes) default to the
    run's labels in force. Table columns: perturbation, level, setting, attribute (the run's, then
    'mean'), AP (against the labels) and agreement (share of decisions, at the run's thresholds
    or 0.5, equal to those on the clean image). should_stop() → True stops with Stopped.
    """
    from pipeline.checkpoints import load_checkpoint
    from pipeline.corrections import labels_in_force
    from pipeline.infer import thresholds_of

    check_probe_ready(run)
    rows = sample_rows(len(run), n, seed) if rows is None else check_rows(run, rows)
    labels = labels_in_force(run).act[rows] if labels is None else labels
    labels = store.check_array("labels", labels, (len(rows), len(run.attributes)), binary=True)
    model, info = load_checkpoint(run.checkpoint, attributes=run.attributes)
    found = thresholds_of(info, run.attributes)
    thresholds = np.full(len(run.attributes), float(run.meta.get("threshold", 0.5))) \
        if found is None else found
    prd = predictions(run, model, info, rows, seed=seed, device=device, angle=angle,
                      on_progress=on_progress, should_stop=should_stop)
    return score_table(prd, labels, thresholds, run.attributes)


def predictions(run, model, info, rows, *, seed, device, angle=None, on_progress=None,
                should_stop=None) -> dict[tuple[str, int], np.ndarray]:
    """PRD of the rows for every variant, chunk by chunk through pipeline.infer.predict (the
    run's own input preparation, multiscale or not)."""
    from pipeline.infer import predict

    chosen = variants()
    out = {v: np.empty((len(rows), len(run.attributes)), np.float32) for v in chosen}
    multiscale = bool((run.meta.get("model") or {}).get("multiscale", False))
    for start in range(0, len(rows), CHUNK):
        if should_stop and should_stop():
            raise Stopped("the robustness probe was stopped")
        chunk = rows[start : start + CHUNK]
        images = run.load_images(chunk)
        ds = _Variants(images, chunk, chosen, seed, run.attributes, angle)
        prd, _ = predict(model, info, ds, device=device, multiscale=multiscale, progress=False,
                         should_stop=should_stop)
        for k, variant in enumerate(chosen):
            out[variant][start : start + len(chunk)] = prd[k * len(chunk) : (k + 1) * len(chunk)]
        if on_progress:
            on_progress("re-inferring", (start + len(chunk)) / len(rows))
    return out


def score_table(prd: dict, labels, thresholds, attributes: Sequence[str]) -> pd.DataFrame:
    """AP and agreement with the clean decisions, per attribute and mean, per variant; level 0
    of each perturbation is the clean prediction."""
    clean = prd[("smear", 0)] >= thresholds
    records = []
    for kind in PERTURBATIONS:
        for level in range(len(LEVELS[kind])):
            p = prd[(kind, level) if level else ("smear", 0)]
            ap = metrics.average_precision(labels, p)
            agree = ((p >= thresholds) == clean).mean(axis=0)
            for name, a, g in zip([*attributes, MEAN], [*ap, metrics.nanmean(ap)],
                                  [*agree, float(agree.mean())], strict=True):
                records.append({"perturbation": kind, "level": level,
                                "setting": setting(kind, level), "attribute": name,
                                "AP": float(a), "agreement": float(g)})
    return pd.DataFrame(records)


def format_table(table: pd.DataFrame, metric_names=("AP", "agreement")) -> str:
    """The table as text: one block per perturbation, attributes down, levels across."""
    blocks = []
    for kind in PERTURBATIONS:
        part = table[table["perturbation"] == kind]
        settings = part.drop_duplicates("level")["setting"].tolist()
        lines = [f"{TITLES[kind]}: " + "; ".join(f"L{i} {s}" for i, s in enumerate(settings))]
        wide = {m: part.pivot(index="attribute", columns="level", values=m) for m in metric_names}
        order = list(dict.fromkeys(part["attribute"]))
        levels = sorted(part["level"].unique())
        head = "  ".join(" ".join(f"{m[:5]}{lv:>1}".rjust(6) for lv in levels)
                         for m in metric_names)
        lines.append(f"{'attribute':<20s}  {head}")
        for name in order:
            cells = "  ".join(" ".join(_cell(wide[m].loc[name, lv]) for lv in levels)
                              for m in metric_names)
            lines.append(f"{name[:20]:<20s}  {cells}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _cell(value: float) -> str:
    return f"{value:6.3f}" if np.isfinite(value) else f"{'–':>6s}"


# ---------------------------------------------------------------- from a web worker


def probe_in_subprocess(data_dir, run_id: str, rows, labels, *, seed: int, job: str,
                        max_jobs: int | None = None,
                        on_progress: Callable[[str, float], None] | None = None) -> pd.DataFrame:
    """`python -m pipeline robustness` in a fresh process, relaying its progress; the table.

    For the reason retraining runs this way: a forked web worker must not run torch (pipeline.
    retrain.retrain_in_subprocess). `job` names the lock that counts it against the job limit and
    the flag that cancels it (jobs.request_cancel(data_dir, job)).
    """
    data_dir = store.resolve_data_dir(data_dir)
    with tempfile.TemporaryDirectory(prefix="xrae-robustness-") as scratch:
        rows_file, labels_file = Path(scratch) / "rows.txt", Path(scratch) / "labels.json"
        rows_file.write_text(" ".join(str(int(r)) for r in rows))
        labels_file.write_text(json.dumps(np.asarray(labels, dtype=int).tolist()))
        cmd = [sys.executable, "-m", "pipeline", "robustness", "--run", store.check_id(run_id),
               "--rows", str(rows_file), "--labels-json", str(labels_file), "--seed",
               str(int(seed)), "--job", store.check_id(job, "job"), "--json-progress",
               "--data-dir", str(data_dir)]
        if max_jobs:
            cmd += ["--max-jobs", str(int(max_jobs))]
        return _run(cmd, on_progress)


def _run(cmd: list[str], on_progress) -> pd.DataFrame:
    code, result, message = jobs.run_child(cmd, on_progress)
    if code == 0 and "table" in result:
        return pd.DataFrame(result["table"])
    if code == EXIT_CANCELLED:
        raise Stopped(message.removeprefix("cancelled: "))
    raise PipelineError(message.removeprefix("error: ") or f"the probe exited with {code}")


def probe_as_job(data_dir, run: store.Run, job: str, max_jobs: int | None, **kwargs
                 ) -> pd.DataFrame:
    """probe() holding the job's lock (counted against max_jobs) and polling its cancel flag."""
    started = time.time()
    stop, report = kwargs.pop("should_stop", None), kwargs.pop("on_progress", None)
    with jobs.run_lock(data_dir, job) as lock:
        jobs.check_job_room(data_dir, max_jobs, holding=True)
        last = [0.0]

        def progress(stage: str, fraction: float) -> None:
            if time.time() - last[0] > jobs.HEARTBEAT_S:
                jobs.touch(lock)
                last[0] = time.time()
            if report:
                report(stage, fraction)

        def stopping() -> bool:
            return bool(stop and stop()) or jobs.cancel_requested(data_dir, job, started)

        try:
            return probe(run, on_progress=progress, should_stop=stopping, **kwargs)
        finally:
            jobs.cancel_path(data_dir, job).unlink(missing_ok=True)
