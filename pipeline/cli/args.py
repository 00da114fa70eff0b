"""Argument types and shared options of the command line: one definition of what a seed, a
count, a pixel limit and a data directory look like on every command."""

from __future__ import annotations

import argparse

from pipeline.readers import MAX_PIXELS


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


def pixel_limit(text: str) -> int:
    """--max-pixels: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of pixels above 0, got {text!r}"
        )
    return value


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels",
        type=pixel_limit,
        default=MAX_PIXELS,
        help=f"refuse images declaring more pixels than this (default {MAX_PIXELS:,})",
    )


def add_scheduler(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler", default=None,
        help="where inference and embedding run: none (this process), local (a Dask cluster of "
             "one single-threaded worker per core), tcp://host:8786 (a running Dask scheduler) or "
             "auto (local from 10,000 images); default: $XRAE_DASK_SCHEDULER, else auto",
    )
