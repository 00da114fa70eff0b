"""Commands that review a run's labels: the audit (corrections and retraining follow)."""

from __future__ import annotations

import argparse

from pipeline.audit import (
    DEFAULT_K,
    DEFAULT_WEIGHT,
    audit_run,
    corrected_run_labels,
    format_ranking,
)
from pipeline.cli.args import add_data_dir, positive_int
from pipeline.store import get_run


def register(subparsers) -> None:
    _register_audit(subparsers)


def _register_audit(subparsers) -> None:
    parser = subparsers.add_parser("audit", help="rank the labels of a run most likely wrong")
    parser.add_argument("--run", required=True, help="run id (see `python -m pipeline runs`)")
    parser.add_argument("--top", type=positive_int, default=20, help="how many rows to print (20)")
    parser.add_argument("--k", type=positive_int, default=DEFAULT_K,
                        help="neighbours in FEA space (10)")
    parser.add_argument("--weight", type=float, default=DEFAULT_WEIGHT,
                        help="share of the PRD signal in the score, 0..1 (0.5)")
    parser.add_argument("--csv", default=None, metavar="FILE", help="also write all rows to FILE")
    add_data_dir(parser)
    parser.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    run = get_run(args.run, args.data_dir)
    act, corrected = corrected_run_labels(run, args.data_dir)
    ranking = audit_run(run, act=act, skip=corrected, k=args.k, weight=args.weight,
                        top=None if args.csv else args.top)
    if args.csv:
        ranking.to_csv(args.csv, index=False)
        print(f"wrote {len(ranking)} rows to {args.csv}")
    print(f"run {run.id}: {len(run)} images, {int(corrected.sum())} labels corrected "
          f"(not ranked); most suspicious labels first")
    print(format_ranking(ranking.head(args.top)))
    return 0
