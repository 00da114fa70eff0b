"""The demo: simulate a dataset, train a ResNet, infer, embed and score it in one command, ending
in a run the dashboard opens (`python -m pipeline demo`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
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
    epochs: int
    batch_size: int
    lr: float
    device: str = "auto"


DEFAULT = DemoConfig(n=1600, size=256, arch="resnet18", input_size=96, epochs=6, batch_size=32,
                     lr=3e-3)
FAST = DemoConfig(n=120, size=64, arch="resnet18", input_size=64, epochs=1, batch_size=32,
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
    """The demo's settings: DEFAULT or FAST, with any given override (None = keep)."""
    from pipeline.model import ARCHS

    config = FAST if fast else DEFAULT
    changes = {k: v for k, v in {"n": n, **overrides}.items() if v is not None}
    config = replace(config, **changes)
    if config.n < 10:
        raise PipelineError(f"the demo needs at least 10 images, got n={config.n}")
    if config.arch not in ARCHS:
        raise PipelineError(f"unknown architecture {config.arch!r}; choose one of "
                            f"{', '.join(ARCHS)}")
    return config


def _dataset(data_dir: Path, config: DemoConfig, seed: int, progress: bool) -> store.Dataset:
    """The simulated dataset for this config and seed, made once and reused by later demos."""
    from pipeline.simulate import simulate_dataset

    dataset_id = f"demo-n{config.n}-s{config.size}-seed{seed}"
    if (data_dir / store.DATASETS / dataset_id / "dataset.json").is_file():
        return store.open_dataset(dataset_id, data_dir)
    path = simulate_dataset(data_dir, config.n, size=config.size, seed=seed,
                            dataset_id=dataset_id, progress=progress)
    return store.open_dataset(path)


def run_demo(data_dir=None, *, n: int | None = None, fast: bool = False, seed: int = 0,
             progress: bool = True, arch: str | None = None, input_size: int | None = None,
             epochs: int | None = None, device: str | None = None,
             batch_size: int | None = None) -> Path:
    """simulate → train → infer → embed → metrics; print the AP table; return the run directory."""
    from pipeline.infer import make_run
    from pipeline.train import train, use_all_cores

    config = config_for(n, fast, arch=arch, input_size=input_size, epochs=epochs, device=device,
                        batch_size=batch_size)
    data_dir = store.resolve_data_dir(data_dir)
    use_all_cores()
    timings, started = {}, time.perf_counter()
    ds = _dataset(data_dir, config, seed, progress)
    timings["simulate_s"] = round(time.perf_counter() - started, 2)
    bar = _Bar(progress)
    try:
        # In the data directory, named for sweep_stale: a killed demo's 40 MB checkpoint goes
        # at the next start instead of piling up in the system's temporary folder.
        with store.scratch_dir(data_dir / store.RUNS, "demo") as scratch:
            t0 = time.perf_counter()
            checkpoint = train(ds, arch=config.arch, epochs=config.epochs,
                               input_size=config.input_size, batch_size=config.batch_size,
                               lr=config.lr, device=config.device, seed=seed,
                               checkpoint_out=scratch / "model.pt", progress=False,
                               on_progress=bar)
            timings["train_s"] = round(time.perf_counter() - t0, 2)
            meta = {"demo": {**asdict(config), "seed": seed, "fast": fast}, "timings": timings}
            path = make_run(data_dir, ds, checkpoint, device=config.device, meta_extra=meta,
                            progress=False, on_progress=bar)
    finally:
        bar.close()
    total = time.perf_counter() - started
    _report(path, total)
    return path


def _report(path: Path, total: float) -> None:
    run = store.get_run(path.name, path.parent.parent)
    scores = run.meta["metrics"]
    print(metrics.format_ap_table(run.attributes, scores))
    print(f"held-out {scores['split']} split: {scores['n_images']} images, "
          f"mAP {scores['mAP']:.3f}; demo took {total:.0f} s")
    print(f"run {run.id} written to {path}")
    print(f"open it: python app.py --data-dir {path.parent.parent}")


# ---------------------------------------------------------------- command line
# The model stages' commands live here, so `python -m pipeline` starts without importing torch
# (several seconds); each command imports its stage when it runs.


def register(subparsers) -> None:
    _register_demo(subparsers)
    _register_train(subparsers)
    _register_infer(subparsers)
    _register_metrics(subparsers)
    _register_embed(subparsers)


def _register_demo(subparsers) -> None:
    from pipeline.cli import add_data_dir, non_negative_int

    p = subparsers.add_parser("demo", help="simulate, train, infer and embed: a complete demo run")
    p.add_argument("--n", type=non_negative_int, default=None,
                   help=f"images to simulate (default {DEFAULT.n})")
    p.add_argument("--fast", action="store_true",
                   help=f"tiny config ({FAST.n} images at {FAST.input_size}², {FAST.epochs} "
                        "epoch) for a quick check")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--arch", default=None,
                   help=f"resnet18, resnet34 or resnet50 (default {DEFAULT.arch}; seed 001 used "
                        "resnet50)")
    p.add_argument("--input-size", type=non_negative_int, default=None,
                   help=f"model input side (default {DEFAULT.input_size}; seed 001 used 224)")
    p.add_argument("--epochs", type=non_negative_int, default=None,
                   help=f"default {DEFAULT.epochs}")
    p.add_argument("--batch-size", type=non_negative_int, default=None,
                   help=f"default {DEFAULT.batch_size}")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    add_data_dir(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.data_dir, n=args.n, fast=args.fast, seed=args.seed, arch=args.arch,
             input_size=args.input_size, epochs=args.epochs, device=args.device,
             batch_size=args.batch_size)
    return 0


def _register_train(subparsers) -> None:
    from pipeline.cli import add_data_dir, non_negative_int

    p = subparsers.add_parser("train", help="train a ResNet on a dataset's train split")
    p.add_argument("--dataset", required=True, help="dataset id (or directory)")
    p.add_argument("--arch", default="resnet18", help="resnet18 (default), resnet34, resnet50")
    p.add_argument("--epochs", type=non_negative_int, default=DEFAULT.epochs)
    p.add_argument("--input-size", type=non_negative_int, default=DEFAULT.input_size,
                   help="side of the square model input")
    p.add_argument("--batch-size", type=non_negative_int, default=DEFAULT.batch_size)
    p.add_argument("--lr", type=float, default=DEFAULT.lr,
                   help="peak learning rate (one-cycle AdamW)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--init", type=Path, default=None, help="fine-tune from this checkpoint")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from --out")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    add_data_dir(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.train import as_dataset, train, use_all_cores

    use_all_cores()
    ds = as_dataset(args.dataset, store.resolve_data_dir(args.data_dir))
    path = train(ds, arch=args.arch, epochs=args.epochs, input_size=args.input_size,
                 batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed,
                 checkpoint_out=args.out, resume=args.resume, init_checkpoint=args.init)
    print(f"checkpoint written to {path}")
    return 0


def _register_infer(subparsers) -> None:
    from pipeline.cli import add_data_dir

    p = subparsers.add_parser("infer", help="run a checkpoint over a dataset and write a run")
    p.add_argument("--dataset", required=True, help="dataset id (or directory)")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="our checkpoint, or a plain torchvision ResNet state dict")
    p.add_argument("--multiscale", action="store_true",
                   help="average 3 scales × 5 crops per image (seed 001)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--run-id", default=None, help="id of the new run (default: generated)")
    add_data_dir(p)
    p.set_defaults(func=cmd_infer)


def cmd_infer(args: argparse.Namespace) -> int:
    from pipeline.infer import make_run
    from pipeline.train import use_all_cores

    use_all_cores()
    path = make_run(args.data_dir, args.dataset, args.checkpoint, device=args.device,
                    multiscale=args.multiscale, run_id=args.run_id)
    run = store.get_run(path.name, path.parent.parent)
    scores = run.meta["metrics"]
    print(metrics.format_ap_table(run.attributes, scores))
    print(f"({scores['split']} split, {scores['n_images']} images)")
    print(f"run written to {path}")
    return 0


def _register_metrics(subparsers) -> None:
    from pipeline.cli import add_data_dir

    p = subparsers.add_parser("metrics", help="print a run's per-attribute AP/P/R/F1 table")
    p.add_argument("--run", required=True, help="run id")
    p.add_argument("--threshold", type=float, default=None, help="default: the run's own")
    p.add_argument("--split", default="test", help="test (default), train or all")
    add_data_dir(p)
    p.set_defaults(func=cmd_metrics)


def cmd_metrics(args: argparse.Namespace) -> int:
    run = store.get_run(args.run, args.data_dir)
    threshold = run.meta.get("threshold", 0.5) if args.threshold is None else args.threshold
    if not 0 <= threshold <= 1:
        raise PipelineError(f"threshold must lie in [0, 1], got {threshold}")
    splits = run.images["split"].to_numpy()
    rows = np.ones(len(splits), bool) if args.split == "all" else splits == args.split
    if not rows.any():
        raise PipelineError(f"run {run.id} has no images in split {args.split!r} "
                            f"(it has: {', '.join(sorted(set(splits)))})")
    scores = metrics.evaluate(np.asarray(run.act)[rows], np.asarray(run.prd)[rows], threshold)
    print(metrics.format_ap_table(run.attributes, scores))
    print(f"({args.split} split, {int(rows.sum())} images, threshold {threshold:g})")
    return 0


def _register_embed(subparsers) -> None:
    from pipeline.cli import add_data_dir, non_negative_int

    p = subparsers.add_parser("embed", help="recompute a run's three maps into a new run")
    p.add_argument("--run", required=True, help="run id")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--run-id", default=None, help="id of the new run (default: generated)")
    add_data_dir(p)
    p.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from pipeline.embed import reembed_run

    run = store.get_run(args.run, args.data_dir)
    path = reembed_run(run, seed=args.seed, perplexity=args.perplexity, run_id=args.run_id)
    print(f"run written to {path}")
    return 0
