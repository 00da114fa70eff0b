"""`python -m pipeline runs`: the runs of a data directory, and those that cannot be opened."""

from __future__ import annotations

from pipeline.cli.args import add_data_dir
from pipeline.store import resolve_data_dir, scan_runs


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
