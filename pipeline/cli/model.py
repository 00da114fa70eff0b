"""Commands of the model stages: demo, train, infer, metrics and embed.

This module owns the lazy import of torch: `python -m pipeline` and its other commands start
without it (several seconds), so each command here imports its stage when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline import metrics, store
from pipeline.cli.args import add_data_dir, add_scheduler, non_negative_int
from pipeline.demo import DEFAULT, FAST, run_demo, shown_scores, threshold_note
from pipeline.errors import PipelineError

ARCH_HELP = ("compact (a small CNN that trains in minutes on a CPU), resnet18, resnet34 or "
             "resnet50 (the model of Wang et al., WACV 2017, for GPUs)")


def register(subparsers) -> None:
    _register_demo(subparsers)
    _register_train(subparsers)
    _register_infer(subparsers)
    _register_metrics(subparsers)
    _register_embed(subparsers)
    _register_add(subparsers)


def _register_demo(subparsers) -> None:
    p = subparsers.add_parser("demo", help="simulate, train, infer and embed: a complete demo run")
    p.add_argument("--n", type=non_negative_int, default=None,
                   help=f"images to simulate (default {DEFAULT.n})")
    p.add_argument("--fast", action="store_true",
                   help=f"tiny config ({FAST.n} images at {FAST.input_size}², {FAST.steps} "
                        "steps) for a quick check")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--arch", default=None, help=f"{ARCH_HELP}; default {DEFAULT.arch}")
    p.add_argument("--input-size", type=non_negative_int, default=None,
                   help=f"model input side (default {DEFAULT.input_size}; Wang et al. used 224)")
    p.add_argument("--steps", type=non_negative_int, default=None,
                   help=f"optimizer steps (default {DEFAULT.steps})")
    p.add_argument("--epochs", type=non_negative_int, default=None,
                   help="passes over the data, instead of --steps")
    p.add_argument("--batch-size", type=non_negative_int, default=None,
                   help=f"default {DEFAULT.batch_size}")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    add_scheduler(p)
    add_data_dir(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.data_dir, n=args.n, fast=args.fast, seed=args.seed, arch=args.arch,
             input_size=args.input_size, steps=args.steps, epochs=args.epochs,
             device=args.device, batch_size=args.batch_size, scheduler=args.scheduler)
    return 0


def _register_train(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model on a dataset's train split")
    p.add_argument("--dataset", required=True, help="dataset id (or directory)")
    p.add_argument("--arch", default=DEFAULT.arch, help=f"{ARCH_HELP}; default {DEFAULT.arch}")
    p.add_argument("--steps", type=non_negative_int, default=None,
                   help=f"optimizer steps (default {DEFAULT.steps} unless --epochs is given)")
    p.add_argument("--epochs", type=non_negative_int, default=None,
                   help="passes over the data, instead of --steps")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of the train split held back to choose each attribute's "
                        "threshold on (default 0.15; 0: none, every threshold 0.5)")
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
    from pipeline.train import VAL_FRACTION, as_dataset, train, use_all_cores

    use_all_cores()
    ds = as_dataset(args.dataset, store.resolve_data_dir(args.data_dir))
    steps = DEFAULT.steps if args.steps is None and args.epochs is None else args.steps
    fraction = VAL_FRACTION if args.val_fraction is None else args.val_fraction
    path = train(ds, arch=args.arch, steps=steps, epochs=args.epochs,
                 input_size=args.input_size, batch_size=args.batch_size, lr=args.lr,
                 device=args.device, seed=args.seed, checkpoint_out=args.out, resume=args.resume,
                 init_checkpoint=args.init, val_fraction=fraction)
    print(f"checkpoint written to {path}")
    return 0


def _register_infer(subparsers) -> None:
    p = subparsers.add_parser("infer", help="run a checkpoint over a dataset and write a run")
    p.add_argument("--dataset", required=True, help="dataset id (or directory)")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="our checkpoint, or a plain torchvision ResNet state dict")
    p.add_argument("--multiscale", action="store_true",
                   help="average 3 scales × 5 crops per image (Wang et al., WACV 2017)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--run-id", default=None, help="id of the new run (default: generated)")
    add_scheduler(p)
    add_data_dir(p)
    p.set_defaults(func=cmd_infer)


def cmd_infer(args: argparse.Namespace) -> int:
    from pipeline.infer import make_run
    from pipeline.train import use_all_cores

    use_all_cores()
    path = make_run(args.data_dir, args.dataset, args.checkpoint, device=args.device,
                    multiscale=args.multiscale, run_id=args.run_id, scheduler=args.scheduler)
    run = store.get_run(path.name, path.parent.parent)
    scores = shown_scores(run.meta)
    print(metrics.format_ap_table(run.attributes, scores))
    print(f"({scores['split']} split, {scores['n_images']} images; {threshold_note(run.meta)})")
    print(f"run written to {path}")
    return 0


def _register_metrics(subparsers) -> None:
    p = subparsers.add_parser("metrics", help="print a run's per-attribute AP/P/R/F1 table")
    p.add_argument("--run", required=True, help="run id")
    p.add_argument("--threshold", type=float, default=None,
                   help="one threshold for every attribute (default: the run's own, per "
                        "attribute when it has them)")
    p.add_argument("--split", default="test", help="test (default), train or all")
    add_data_dir(p)
    p.set_defaults(func=cmd_metrics)


def cmd_metrics(args: argparse.Namespace) -> int:
    run = store.get_run(args.run, args.data_dir)
    threshold = _run_threshold(run) if args.threshold is None else args.threshold
    if np.ndim(threshold) == 0 and not 0 <= threshold <= 1:
        raise PipelineError(f"threshold must lie in [0, 1], got {threshold}")
    splits = run.images["split"].to_numpy()
    rows = np.ones(len(splits), bool) if args.split == "all" else splits == args.split
    if not rows.any():
        raise PipelineError(f"run {run.id} has no images in split {args.split!r} "
                            f"(it has: {', '.join(sorted(set(splits)))})")
    scores = metrics.evaluate(np.asarray(run.act)[rows], np.asarray(run.prd)[rows], threshold)
    print(metrics.format_ap_table(run.attributes, scores))
    said = (f"threshold {threshold:g}" if np.ndim(threshold) == 0 else
            "each attribute's own threshold")
    print(f"({args.split} split, {int(rows.sum())} images, {said})")
    return 0


def _run_threshold(run: store.Run) -> float | np.ndarray:
    """The run's per-attribute thresholds when it has them, else its global threshold (the
    dashboard reads them through the same metrics.run_thresholds)."""
    chosen = metrics.run_thresholds(run.meta, run.attributes)
    return float(run.meta.get("threshold", 0.5)) if chosen is None else chosen


def _register_embed(subparsers) -> None:
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


def _register_add(subparsers) -> None:
    p = subparsers.add_parser(
        "add", help="place new images on a run's maps, written as a new run (old points stay put)")
    p.add_argument("--run", required=True, help="id of the run to add to")
    p.add_argument("--images", required=True, help="folder holding the new image files")
    p.add_argument("--labels", default=None,
                   help="CSV: image file column + one 0/1 column per attribute of the run "
                        "(without it the model's calls at the run's thresholds stand in)")
    p.add_argument("--inverted", action="store_true",
                   help="images were exported with inverted contrast (dark = intense)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--run-id", default=None, help="id of the new run (default: generated)")
    add_scheduler(p)
    add_data_dir(p)
    p.set_defaults(func=cmd_add)


def cmd_add(args: argparse.Namespace) -> int:
    from pipeline.add import add_images
    from pipeline.train import use_all_cores

    use_all_cores()
    path = add_images(args.data_dir, args.run, args.images, args.labels, device=args.device,
                      new_run_id=args.run_id, scheduler=args.scheduler, inverted=args.inverted)
    run = store.get_run(path.name, path.parent.parent)
    added = run.meta["added"]
    print(f"{added['n_images']} images ({added['labels']} labels) added to run "
          f"{run.meta['parent_run']}; run {run.id} written to {path}")
    return 0
