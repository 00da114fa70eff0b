"""The command line, `python -m pipeline <command> …`: one sub-command per pipeline stage.

Each stage module registers its own sub-command through `register(subparsers)`; bad input
raises PipelineError, printed here as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.errors import PipelineError
from pipeline.store import list_runs, resolve_data_dir

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
    runs = list_runs(data_dir)
    if not runs:
        print(f"no runs in {data_dir}")
        return 0
    print(f"{'run':48s} {'images':>7s} {'mAP':>6s}  dataset")
    for run in runs:
        m_ap = run.meta.get("metrics", {}).get("mAP")
        m_ap = f"{m_ap:6.3f}" if isinstance(m_ap, (int, float)) else "     -"
        print(f"{run.id:48s} {len(run):7d} {m_ap}  {run.meta.get('dataset', '')}")
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
        return int(args.func(args) or 0)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
