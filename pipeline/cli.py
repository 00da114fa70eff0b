"""The command line, `python -m pipeline <command> …`: one sub-command per pipeline stage.

Each stage module registers its own sub-command through `register(subparsers)`; bad input
raises PipelineError, printed here as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.errors import PipelineError
from pipeline.store import resolve_data_dir, scan_runs

# Modules that define `register(subparsers)`; each sets `func` on the parsers it adds.
COMMAND_MODULES = (
    "pipeline.cli",
    "pipeline.demo",
    "pipeline.simulate",
    "pipeline.montage",
    "pipeline.ingest",
    "pipeline.vectors",
    "pipeline.audit",
    "pipeline.corrections",
    "pipeline.retrain",
)


def first_paragraph(text: str) -> str:
    """A docstring's first paragraph on one line (its sentence may wrap over source lines)."""
    return " ".join(text.strip().split("\n\n")[0].split())


def non_negative_int(text: str) -> int:
    """argparse type for seeds and counts: a whole number ≥ 0, else argparse's one-line error."""
    return _whole_number(text, minimum=0)


def positive_int(text: str) -> int:
    """argparse type for sizes and counts that cannot be zero (tiles, neighbours, rows shown)."""
    return _whole_number(text, minimum=1)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
    return value


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", default=None,
        help="where datasets and runs live (default: $XRAE_DATA_DIR or ./data)",
    )


def register(subparsers) -> None:
    runs = subparsers.add_parser("runs", help="list the runs in the data directory with their mAP")
    add_data_dir(runs)
    runs.set_defaults(func=cmd_runs)


def cmd_runs(args) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    runs, broken = scan_runs(data_dir)
    if not runs and not broken:
        print(f"no runs in {data_dir}")
        return 0
    if runs:
        print(f"{'run':48s} {'images':>7s} {'mAP':>6s}  dataset")
    for run in runs:
        m_ap = "     -" if run.m_ap is None else f"{run.m_ap:6.3f}"
        print(f"{run.id:48s} {len(run):7d} {m_ap}  {run.meta.get('dataset', '')}")
    for path, reason in broken:  # listed, so the user sees why a run is missing from the table
        print(f"broken run {path.name}: {reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline", description=first_paragraph(__doc__)
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "data_dir"):
            resolve_data_dir(args.data_dir)  # every command refuses a file as its data directory
        return int(args.func(args) or 0)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
