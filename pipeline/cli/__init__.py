"""The command line, `python -m pipeline <command> …`: one sub-command per pipeline stage.

This package owns argument parsing; the stage modules expose plain functions and know nothing of
argparse. Bad input raises PipelineError, printed here as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.cli.args import (  # noqa: F401  (the argument types, for callers of pipeline.cli)
    add_data_dir,
    first_paragraph,
    non_negative_int,
    positive_int,
)
from pipeline.errors import PipelineError
from pipeline.store import resolve_data_dir

# Modules that define `register(subparsers)`; each sets `func` on the parsers it adds.
COMMAND_MODULES = (
    "pipeline.cli.runs",
    "pipeline.cli.model",
    "pipeline.cli.data",
    "pipeline.cli.review",
    "pipeline.cli.robustness",
    "pipeline.cli.saliency",
)


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
