"""The demo: simulate a dataset, train a model, infer, embed and score it in one command, ending
in a run the dashboard opens (`python -m pipeline demo`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from pipeline import metrics, store
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class DemoConfig:
    """What the demo simulates and how it trains; DEFAULT is tuned for ≤ 5 min on 2 CPU cores."""

    n: int
    size: int  # simulated detector side, pixels
    arch: str
    input_size: int
    steps: int | None  # optimizer steps; None when set by epochs
    batch_size: int
    lr: float
    device: str = "auto"
    epochs: int | None = None  # passes over the data, instead of steps


DEFAULT = DemoConfig(n=4800, size=256, arch="compact", input_size=64, steps=600, batch_size=64,
                     lr=3e-3)
FAST = DemoConfig(n=120, size=64, arch="compact", input_size=32, steps=6, batch_size=32,
                  lr=3e-3)

# Share of the bar each model stage fills (roughly its share of the default demo's time on CPU).
STAGES = {"load": (0.0, 0.05), "train": (0.05, 0.8), "infer": (0.8, 0.84), "embed": (0.84, 1.0)}


class _Bar:
    """One progress bar for the model stages, fed by each stage's on_progress(stage, fraction).

    Simulation shows its own bar first (simulate_dataset reports no fractions), once per
    dataset: later demos with the same settings reuse the dataset.
    """

    def __init__(self, enabled: bool):
        self.bar = tqdm(total=1000, desc="demo", disable=not enabled,
                        bar_format="{desc:<16}{percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def __call__(self, stage: str, fraction: float) -> None:
        start, end = STAGES.get(stage, (None, None))
        if start is None:
            return
        self.bar.set_description_str(f"demo: {stage}", refresh=False)
        target = int(1000 * (start + (end - start) * min(max(fraction, 0.0), 1.0)))
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def config_for(n: int | None = None, fast: bool = False, **overrides) -> DemoConfig:
    """The demo's settings: DEFAULT or FAST, with any given override (None = keep); epochs
    given without steps replace the step count."""
    from pipeline.model import ARCHS

    config = FAST if fast else DEFAULT
    changes = {k: v for k, v in {"n": n, **overrides}.items() if v is not None}
    if changes.get("epochs") is not None and changes.get("steps") is None:
        changes["steps"] = None
    config = replace(config, **changes)
    if config.n < 10:
        raise PipelineError(f"the demo needs at least 10 images, got n={config.n}")
    if config.arch not in ARCHS:
        raise PipelineError(f"unknown architecture {config.arch!r}; choose one of "
                            f"{', '.join(ARCHS)}")
    return config


def _dataset(data_dir: Path, config: DemoConfig, seed: int, progress: bool) -> store.Dataset:
    """The simulated dataset for this config and seed, made once and reused by later demos."""
    from pipeline.sim.rules import GENERATOR_VERSION
    from pipeline.simulate import simulate_dataset

    # the generator's version in the name: a newer generator draws other tags for the same seed
    dataset_id = f"demo-n{config.n}-s{config.size}-seed{seed}-v{GENERATOR_VERSION}"
    if (data_dir / store.DATASETS / dataset_id / "dataset.json").is_file():
        return store.open_dataset(dataset_id, data_dir)
    path = simulate_dataset(data_dir, config.n, size=config.size, seed=seed,
                            dataset_id=dataset_id, progress=progress)
    return store.open_dataset(path)


def run_demo(data_dir=None, *, n: int | None = None, fast: bool = False, seed: int = 0,
             progress: bool = True, arch: str | None = None, input_size: int | None = None,
             steps: int | None = None, epochs: int | None = None, device: str | None = None,
             batch_size: int | None = None, scheduler: str | None = None) -> Path:
    """simulate → train → infer → metrics → embed; print the AP table as soon as inference ends;
    return the run directory."""
    from pipeline.infer import make_run
    from pipeline.train import train, use_all_cores

    config = config_for(n, fast, arch=arch, input_size=input_size, steps=steps, epochs=epochs,
                        device=device, batch_size=batch_size)
    data_dir = store.resolve_data_dir(data_dir)
    use_all_cores()
    timings, started = {}, time.perf_counter()
    ds = _dataset(data_dir, config, seed, progress)
    timings["simulate_s"] = round(time.perf_counter() - started, 2)
    bar = _Bar(progress)
    try:
        # In the data directory, named for sweep_stale: a killed demo's checkpoint goes
        # at the next start instead of piling up in the system's temporary folder.
        with store.scratch_dir(data_dir / store.RUNS, "demo") as scratch:
            t0 = time.perf_counter()
            checkpoint = train(ds, arch=config.arch, steps=config.steps, epochs=config.epochs,
                               input_size=config.input_size, batch_size=config.batch_size,
                               lr=config.lr, device=config.device, seed=seed,
                               checkpoint_out=scratch / "model.pt", progress=False,
                               on_progress=bar)
            timings["train_s"] = round(time.perf_counter() - t0, 2)
            meta = {"demo": {**asdict(config), "seed": seed, "fast": fast}, "timings": timings}
            path = make_run(data_dir, ds, checkpoint, device=config.device, meta_extra=meta,
                            progress=False, on_progress=bar, scheduler=scheduler,
                            on_scores=lambda scores: _table(ds.attributes, scores))
    finally:
        bar.close()
    total = time.perf_counter() - started
    _report(path, total)
    return path


def _table(attributes: list[str], scores: dict) -> None:
    """The held-out AP table, printed as soon as inference ends (above the bar while the maps
    are made)."""
    tqdm.write(metrics.format_ap_table(attributes, shown_scores(scores)))


def _report(path: Path, total: float) -> None:
    run = store.get_run(path.name, path.parent.parent)
    scores = shown_scores(run.meta)
    print(f"held-out {scores['split']} split: {scores['n_images']} images, "
          f"mAP {scores['mAP']:.3f}; {threshold_note(run.meta)}; demo took {total:.0f} s")
    print(f"run {run.id} written to {path}")
    print(f"open it: python app.py --data-dir {path.parent.parent}")


def shown_scores(meta: dict) -> dict:
    """The metrics a run's table shows: at each attribute's threshold when it has them, else at
    the one threshold (`meta`: a run's meta, or make_run's scores)."""
    return meta.get("metrics_at_thresholds") or meta["metrics"]


def threshold_note(meta: dict) -> str:
    """What the P/R/F1 columns of a run's table were computed at."""
    if meta.get("metrics_at_thresholds"):
        return "P/R/F1 at each attribute's threshold, chosen on a validation share of train"
    return f"P/R/F1 at threshold {meta.get('threshold', 0.5):g}"
