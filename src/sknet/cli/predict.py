"""``sknet predict``: the top classes of image files, for a model file sknet wrote or a model's published weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..deploy import predict
from ..models.sources import pretrained_sources
from .common import add_model_arguments, model_from_args


def register(sub) -> None:
    p = sub.add_parser("predict", help="top-5 classes with probabilities for image files")
    add_model_arguments(p)
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--resize", default="auto", choices=["auto", "crop", "whole"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    """Predicts every readable image; an unreadable one is reported and makes the exit status 2."""
    images = _images(args)
    results = predict(model_from_args(args, "predict with"), images, args.topk, args.resize)
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"sknet predict: error: cannot read image {r['image']!r}: {r['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps([r for r in results if "top" in r], indent=1))
    else:
        for r in results:
            if "top" in r:
                print(r["image"])
                for t in r["top"]:
                    print(f"  {t['prob']:7.2%}  {t['cls']}")
    if failed:
        print(f"sknet predict: {len(failed)} of {len(results)} image(s) could not be read", file=sys.stderr)
        return 2
    return 0


def _images(args) -> list[str]:
    """The IMAGE arguments. In ``--pretrained cat.jpg`` argparse takes the file for the optional TAG,
    so a value that is no tag of the model is an image when it is a file or no other image is given."""
    images = list(args.images)
    value = args.pretrained
    if (
        isinstance(value, str)
        and args.model
        and value not in _tags(args.model)
        and (Path(value).is_file() or not images)
    ):
        images.insert(0, value)
        args.pretrained = True
    if not images:
        raise ValueError("give the image files to classify: sknet predict ... IMAGE [IMAGE ...]")
    return images


def _tags(model: str) -> set[str]:
    return {s.tag for s in pretrained_sources(model)}
