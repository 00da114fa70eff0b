"""The robustness probe on the command line: a run's model re-scored on smeared, noisier,
lower-dose and coarser versions of its images (`python -m pipeline robustness --run ID`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline import jobs, store
from pipeline.cli.args import add_data_dir, non_negative_int, positive_int
from pipeline.errors import PipelineError, Stopped
from pipeline.robustness import (
    DEFAULT_N,
    EXIT_CANCELLED,
    format_table,
    probe,
    probe_as_job,
    read_rows,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "robustness", help="re-score a run's model on smeared, noisy, low-dose and coarser "
                           "images, level by level")
    p.add_argument("--run", required=True, help="run id (see `python -m pipeline runs`)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--n", type=positive_int, default=DEFAULT_N,
                       help=f"probe a random sample of this many images (default {DEFAULT_N})")
    which.add_argument("--rows", default=None, metavar="FILE",
                       help="probe these image rows instead (numbers separated by spaces, "
                            "commas or new lines)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the sample and of every perturbation (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--labels-json", default=None, metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-jobs", type=positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json-progress", action="store_true",
                   help="print progress and the table as JSON lines (for the dashboard)")
    add_data_dir(p)
    p.set_defaults(func=cmd_robustness)


def cmd_robustness(args: argparse.Namespace) -> int:
    data_dir = store.resolve_data_dir(args.data_dir)
    run = store.get_run(args.run, data_dir)
    rows = read_rows(args.rows) if args.rows else None
    labels = _read_labels(args.labels_json) if args.labels_json else None
    report = jobs.print_event if args.json_progress else None
    settings = {"rows": rows, "n": args.n, "seed": args.seed, "labels": labels,
                "device": args.device, "on_progress": report}
    started = time.perf_counter()
    try:
        if args.job:
            table = probe_as_job(data_dir, run, store.check_id(args.job, "job"), args.max_jobs,
                                 **settings)
        else:
            table = probe(run, **settings)
    except Stopped as err:
        print(f"cancelled: {err}", file=sys.stderr)
        return EXIT_CANCELLED
    if args.json_progress:
        jobs.print_event(table=table.to_dict("records"))
        return 0
    n = len(rows) if rows is not None else min(args.n, len(run))
    print(f"run {run.id}: {n} images ({'rows of ' + args.rows if rows else 'random sample'}, "
          f"seed {args.seed}); AP against the labels in force, agreement with the clean "
          f"decisions; {time.perf_counter() - started:.1f} s\n")
    print(format_table(table))
    return 0


def _read_labels(path) -> list:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise PipelineError(f"labels file {path} is unreadable ({err.__class__.__name__})") \
            from err
