"""Commands that review a run's labels: the audit, the correction history, retraining on the
corrected labels, and the users who may make corrections from the dashboard."""

from __future__ import annotations

import argparse
import getpass
import sys

from pipeline import jobs, store
from pipeline.access import ROLES, VIEWER, add_user
from pipeline.audit import (
    DEFAULT_K,
    DEFAULT_WEIGHT,
    audit_run,
    format_ranking,
)
from pipeline.cli.args import add_data_dir, add_scheduler, positive_int
from pipeline.corrections import active, db_path, export_csv, history, labels_in_force
from pipeline.errors import PipelineError
from pipeline.retrain import (
    EXIT_CANCELLED,
    FINE_TUNE_EPOCHS,
    FINE_TUNE_LR_FACTOR,
    Cancelled,
    compare_runs,
    read_snapshot,
    retrain_run,
)
from pipeline.store import get_run


def register(subparsers) -> None:
    _register_audit(subparsers)
    _register_corrections(subparsers)
    _register_retrain(subparsers)
    _register_users(subparsers)


def _register_audit(subparsers) -> None:
    parser = subparsers.add_parser("audit", help="rank the labels of a run most likely wrong")
    parser.add_argument("--run", required=True, help="run id (see `python -m pipeline runs`)")
    parser.add_argument("--top", type=positive_int, default=20, help="how many rows to print (20)")
    parser.add_argument("--k", type=positive_int, default=DEFAULT_K,
                        help="neighbours in FEA space (10)")
    parser.add_argument("--weight", type=float, default=DEFAULT_WEIGHT,
                        help="share of the model's doubt in the score, 0..1; below 1 the "
                             "FEA-neighbour vote makes up the rest (1: it measured no better)")
    parser.add_argument("--csv", default=None, metavar="FILE", help="also write all rows to FILE")
    parser.add_argument("--folds", type=int, default=None, metavar="K",
                        help="first train K models of the run's settings, each on the other "
                             "folds, and save their out-of-fold predictions with the run "
                             "(e.g. 5); later audits rank on them")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="optimizer steps of each fold model (default: the run's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (with --folds)")
    parser.add_argument("--image-view", action="store_true",
                        help="first add the image view (radial features of each full-size "
                             "image) to out-of-fold predictions saved before --folds made it")
    add_data_dir(parser)
    parser.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    run = get_run(args.run, args.data_dir)
    if args.folds is not None:
        code = _audit_folds(args, len(run))
        if code:
            return code
        run = get_run(args.run, args.data_dir)
    if args.image_view and args.folds is None:
        from pipeline.folds import add_image_view

        add_image_view(args.data_dir, args.run)
        run = get_run(args.run, args.data_dir)
    corrected = labels_in_force(run).corrected
    ranking = audit_run(run, k=args.k, weight=args.weight,
                        top=None if args.csv else args.top)
    if args.csv:
        ranking.to_csv(args.csv, index=False)
        print(f"wrote {len(ranking)} rows to {args.csv}")
    print(f"run {run.id}: {len(run)} images, {int(corrected.sum())} labels corrected "
          f"(not ranked); ranked on {ranking.attrs['predictions']}; most suspicious first")
    print(format_ranking(ranking.head(args.top)))
    return 0


def _audit_folds(args: argparse.Namespace, n_images: int) -> int:
    """Train the fold models and save the out-of-fold predictions; 0, or EXIT_CANCELLED."""
    from pipeline.folds import Cancelled as FoldsCancelled
    from pipeline.folds import check_folds, run_folds
    from pipeline.train import use_all_cores

    check_folds(args.folds, n_images)  # before torch loads: bad input answers at once
    use_all_cores()
    try:
        note = run_folds(args.data_dir, args.run, args.folds, steps=args.steps,
                         device=args.device)
    except FoldsCancelled as err:
        print(f"cancelled: {err}", file=sys.stderr)
        return EXIT_CANCELLED
    print(f"out-of-fold predictions of {note['folds']} models ({note['steps']} steps each) "
          f"saved with run {args.run} in {note['seconds']:.0f} s")
    return 0


def _register_corrections(subparsers) -> None:
    parser = subparsers.add_parser(
        "corrections", help="list label corrections or export their full history as CSV"
    )
    parser.add_argument("--dataset", default=None, help="only this dataset id")
    parser.add_argument("--csv", default=None, metavar="FILE",
                        help="write the full history to FILE ('-' for standard output)")
    add_data_dir(parser)
    parser.set_defaults(func=cmd_corrections)


def cmd_corrections(args: argparse.Namespace) -> int:
    if args.csv:
        out = sys.stdout if args.csv == "-" else args.csv
        n = export_csv(args.data_dir, out, args.dataset)
        if args.csv != "-":
            print(f"wrote {n} events to {args.csv}")
        return 0
    events = history(args.data_dir, args.dataset)
    if events.empty:
        print(f"no label corrections in {db_path(args.data_dir)}")
        return 0
    for dataset in events["dataset"].unique():
        now = active(args.data_dir, dataset)
        print(f"{dataset}: {len(now)} labels corrected ({(events['dataset'] == dataset).sum()} "
              "events)")
        print(now[["image_id", "attribute", "value", "author", "created", "note"]].to_string(
            index=False))
    return 0


def _register_retrain(subparsers) -> None:
    p = subparsers.add_parser(
        "retrain", help="fine-tune a run's model on the corrected labels; write a new run")
    p.add_argument("--run", required=True, help="run id whose model and dataset to start from")
    p.add_argument("--epochs", type=positive_int, default=None, help=f"default {FINE_TUNE_EPOCHS}")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default: the run's × {FINE_TUNE_LR_FACTOR})")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the run's")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--run-id", default=None, help="id of the new run (default: generated)")
    p.add_argument("--corrections-json", default=None, metavar="FILE",
                   help="use these corrections ([{image_id, attribute, value}, …]) instead of "
                        "the data directory's corrections.sqlite")
    p.add_argument("--max-jobs", type=positive_int, default=None,
                   help="refuse to start while this many retraining jobs run (default: no limit)")
    p.add_argument("--json-progress", action="store_true",
                   help="print progress and the new run id as JSON lines (for the dashboard)")
    add_scheduler(p)
    add_data_dir(p)
    p.set_defaults(func=cmd_retrain)


def cmd_retrain(args: argparse.Namespace) -> int:
    from pipeline.train import use_all_cores

    use_all_cores()
    data_dir = store.resolve_data_dir(args.data_dir)
    report = jobs.print_event if args.json_progress else None
    snapshot = read_snapshot(args.corrections_json) if args.corrections_json else None
    try:
        path = retrain_run(data_dir, args.run, epochs=args.epochs, lr=args.lr,
                           batch_size=args.batch_size, device=args.device,
                           new_run_id=args.run_id, progress=not args.json_progress,
                           snapshot=snapshot, on_progress=report, max_jobs=args.max_jobs,
                           scheduler=args.scheduler)
    except Cancelled as err:
        print(f"cancelled: {err}", file=sys.stderr)
        return EXIT_CANCELLED
    if args.json_progress:
        jobs.print_event(run=path.name)
        return 0
    before, after = store.get_run(args.run, data_dir), store.get_run(path.name, data_dir)
    table = compare_runs(before, after)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"{after.meta['retrained']['corrected_labels']} corrected labels; "
          f"new run written to {path}")
    return 0


def _register_users(subparsers) -> None:
    parser = subparsers.add_parser("users", help="add a user (name, role, password) to the "
                                                 "users file of `python app.py --auth FILE`")
    actions = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user, or change their role and password; the "
                                         "password is asked for (or read from standard input)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default=VIEWER, help="default: viewer")
    add.add_argument("--file", required=True, help="the users file (made when absent)")
    add.set_defaults(func=cmd_users_add)


def read_password(stdin=None) -> str:
    """The new password: asked twice at a terminal, else the first line of standard input."""
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise PipelineError("the two passwords differ; nothing was changed")
    return first


def cmd_users_add(args: argparse.Namespace) -> int:
    add_user(args.file, args.name, read_password(), args.role)
    print(f"{args.name}: {args.role}, in {args.file}")
    return 0
