"""``sknet predict``: the top classes of image files, for a model file sknet wrote."""

from __future__ import annotations

import json
import sys

from ..deploy import predict
from ..models import load_model


def register(sub) -> None:
    p = sub.add_parser("predict", help="top-5 classes with probabilities for image files")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or .safetensors from sknet train")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--resize", default="auto", choices=["auto", "crop", "whole"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    """Predicts every readable image; an unreadable one is reported and makes the exit status 2."""
    results = predict(load_model(args.checkpoint), args.images, args.topk, args.resize)
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
