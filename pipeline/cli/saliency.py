"""The `saliency` command: where a run's model looked for one attribute in one image (Grad-CAM),
written as a PNG of the image with the map over it, as the detail view shows it."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import store
from pipeline.cli.args import add_data_dir, non_negative_int


def register(subparsers) -> None:
    p = subparsers.add_parser("saliency", help="a PNG of where a run's model looked for one "
                                               "attribute in one image (Grad-CAM)")
    p.add_argument("--run", required=True, help="run id")
    p.add_argument("--image", required=True, type=non_negative_int, help="image number (row)")
    p.add_argument("--attribute", default=None,
                   help="attribute name (default: the image's strongest prediction)")
    p.add_argument("--opacity", type=float, default=0.6, help="of the map, 0 to 1 (default 0.6)")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    add_data_dir(p)
    p.set_defaults(func=cmd_saliency)


def cmd_saliency(args: argparse.Namespace) -> int:
    from pipeline.saliency import (
        image_number,
        overlay_picture,
        run_saliency,
        strongest_attribute,
        write_overlay,
    )

    run = store.get_run(args.run, args.data_dir)
    index = image_number(run, args.image)
    attribute = args.attribute or strongest_attribute(run, index)
    found = run_saliency(run, index, attribute)
    out = write_overlay(args.out, overlay_picture(run.load_image(index), found, args.opacity))
    p = float(run.prd[index, run.attributes.index(attribute)])
    print(f"saliency of image {index} for {attribute} (predicted {p:.2f}) written to {out}")
    if not found.any():
        print(f"(nothing in this image raised the model's score for {attribute})")
    return 0
