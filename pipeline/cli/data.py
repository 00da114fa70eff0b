"""Commands that make datasets: simulate, montage, ingest, import-vectors and migrate."""

from __future__ import annotations

import argparse

from pipeline import store
from pipeline.cli.args import add_data_dir, add_max_pixels, non_negative_int
from pipeline.imaging import DEFAULT_COLOUR_MAP
from pipeline.ingest import IngestProblems, ingest, summary_lines
from pipeline.ingest import __doc__ as INGEST_HELP
from pipeline.montage import TILE, write_montage
from pipeline.readers import NEXUS_DEFAULT
from pipeline.sim.detector import DEFAULT_DETECTOR, DETECTORS
from pipeline.sim.experiment import DEFAULT_EXPERIMENT, EXPERIMENTS
from pipeline.simulate import prevalence_table, simulate_dataset
from pipeline.store.migrate import migrate
from pipeline.vectors import __doc__ as IMPORT_VECTORS_HELP
from pipeline.vectors import import_vectors


def register(subparsers) -> None:
    _register_simulate(subparsers)
    _register_montage(subparsers)
    _register_ingest(subparsers)
    _register_import_vectors(subparsers)
    _register_migrate(subparsers)


def _register_simulate(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="write a synthetic SAXS/WAXS dataset with true tags")
    p.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels, 32..1024")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="fraction of (image, attribute) annotations flipped on purpose, 0..0.5",
    )
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        help=f"detector model recording every image: {', '.join(DETECTORS)} "
        f"(default {DEFAULT_DETECTOR})",
    )
    p.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        choices=sorted(EXPERIMENTS),
        help="scattering geometry of every image: "
        + "; ".join(f"{name}, {summary}" for name, summary in EXPERIMENTS.items())
        + f" (default {DEFAULT_EXPERIMENT})",
    )
    p.add_argument("--id", default=None, help="dataset id (default: a new timestamped id)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_dir(p)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args) -> int:
    path = simulate_dataset(
        args.data_dir,
        args.n,
        size=args.size,
        seed=args.seed,
        label_noise=args.label_noise,
        dataset_id=args.id,
        test_fraction=args.test_fraction,
        progress=not args.quiet,
        detector=args.detector,
        experiment=args.experiment,
    )
    print(
        f"wrote {args.n} images of {args.size}×{args.size} "
        f"({args.experiment.upper()}, {args.detector}) to {path}"
    )
    dataset = store.open_dataset(path)  # read back through the store, as every reader does
    print(prevalence_table(dataset.true_act))
    meta = dataset.meta
    if meta["n_flipped"]:
        print(
            f"label noise {meta['label_noise']}: {meta['n_flipped']} annotations flipped "
            f"(true tags in true_act.npy)"
        )
    return 0


def _register_montage(subparsers) -> None:
    p = subparsers.add_parser("montage", help="PNG grid of example images for every attribute")
    p.add_argument("--dataset", required=True, help="dataset id (or path to its directory)")
    p.add_argument("--out", default="montage.png", help="PNG file to write (default montage.png)")
    p.add_argument("--per-attribute", type=int, default=4, help="examples per attribute")
    p.add_argument("--tile", type=int, default=TILE, help="tile side in pixels")
    p.add_argument(
        "--true", action="store_true", help="pick examples by true tags, not annotations"
    )
    p.add_argument("--colour-map", default=DEFAULT_COLOUR_MAP,
                   help=f"plotly colour scale name (default {DEFAULT_COLOUR_MAP})")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="IMAGE",
        default=(),
        help="real detector images to draw beside simulated ones of the dataset (any format "
        "pipeline ingest reads): a realism sheet instead of the attribute rows",
    )
    p.add_argument(
        "--inverted",
        action="store_true",
        help="the --compare images were exported with inverted contrast (dark = intense)",
    )
    add_data_dir(p)
    p.set_defaults(func=cmd_montage)


def cmd_montage(args) -> int:
    path = write_montage(
        args.dataset,
        args.out,
        per_attribute=args.per_attribute,
        tile=args.tile,
        data_dir=args.data_dir,
        true_labels=args.true,
        colour_map=args.colour_map,
        compare=args.compare,
        inverted=args.inverted,
    )
    print(f"wrote {path}")
    return 0


def _register_ingest(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="turn a folder of detector images and a labels CSV into a dataset",
        description=INGEST_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", required=True, help="folder holding the image files")
    p.add_argument(
        "--labels", required=True, help="CSV: image file column + one 0/1 column per attribute"
    )
    p.add_argument("--id", default=None, help="dataset id (default: the images folder's name)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail, writing nothing, if any row or file has a problem",
    )
    p.add_argument(
        "--inverted",
        action="store_true",
        help="images were exported with inverted contrast (dark = intense)",
    )
    p.add_argument(
        "--h5-path",
        default=None,
        help=f"dataset inside HDF5/NeXus files (default: NeXus signal or {NEXUS_DEFAULT})",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of images put in the test split (default 0.2)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the train/test split")
    add_max_pixels(p)
    add_data_dir(p)
    p.set_defaults(func=cmd_ingest)


def cmd_ingest(args) -> int:
    try:
        result = ingest(
            args.images,
            args.labels,
            args.data_dir,
            dataset_id=args.id,
            strict=args.strict,
            inverted=args.inverted,
            h5_path=args.h5_path,
            test_fraction=args.test_fraction,
            seed=args.seed,
            max_pixels=args.max_pixels,
        )
    except IngestProblems as err:
        print("\n".join(summary_lines(0, err.problems)))
        raise
    print(f"dataset {result.path.name} written to {result.path}")
    print("\n".join(summary_lines(result.n_images, result.problems, result.matched)))
    return 0


def _register_import_vectors(subparsers) -> None:
    p = subparsers.add_parser(
        "import-vectors",
        help="build a run from labels, predictions and features made elsewhere",
        description=IMPORT_VECTORS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--labels", required=True, help="CSV: id column + one 0/1 column per attribute")
    p.add_argument(
        "--predictions", required=True, help="CSV: id column + one probability column per attribute"
    )
    p.add_argument("--features", required=True, help="fea.npy (N × D), fea.npz or fea.csv")
    p.add_argument("--images", default=None, help="folder with each id's image (optional)")
    p.add_argument("--id", default=None, help="run id (default: made from the predictions name)")
    p.add_argument(
        "--logits", action="store_true", help="predictions are logits; apply the sigmoid"
    )
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the t-SNE maps and the split")
    add_max_pixels(p)
    add_data_dir(p)
    p.set_defaults(func=cmd_import_vectors)


def cmd_import_vectors(args) -> int:
    path = import_vectors(
        args.labels,
        args.predictions,
        args.features,
        args.data_dir,
        images_dir=args.images,
        run_id=args.id,
        logits=args.logits,
        seed=args.seed,
        max_pixels=args.max_pixels,
        say=print,
    )
    run = store.open_run(str(path))
    print(
        f"run {path.name} written to {path}: {len(run)} images, "
        f"{len(run.attributes)} attributes, mAP {run.meta['metrics']['mAP']:.3f}"
    )
    return 0


def _register_migrate(subparsers) -> None:
    p = subparsers.add_parser(
        "migrate",
        help="move datasets of one .npy file per image into the chunk store, whole or not at all",
        description="Rewrite every dataset of the data directory that keeps one .npy file per "
        "image into its chunk store (images.zarr, lossless), and the runs naming those files. "
        "Nothing is switched until everything is written; the old files go last.",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_dir(p)
    p.set_defaults(func=cmd_migrate)


def cmd_migrate(args) -> int:
    result = migrate(args.data_dir, progress=not args.quiet)
    if result.resumed:
        print("completed a migration that had been interrupted while switching")
    if result.datasets:
        count = len(result.datasets)
        print(f"migrated {count} dataset{'s' * (count != 1)} ({result.images} images) into the "
              f"chunk store: {', '.join(result.datasets)}")
        print(f"runs updated to read them there: {', '.join(result.runs) or 'none'}")
    return 0
