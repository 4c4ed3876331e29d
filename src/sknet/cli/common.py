"""Flags shared by several commands: naming a model (``--checkpoint``, or ``--model`` [+ ``--weights`` /
``--pretrained``])."""

from __future__ import annotations

import argparse
import sys

from torch import nn

from ..models import create_model, load_model
from ..record import num_classes_of, record_of
from ..weights import read_state_dict


def add_model_arguments(parser: argparse.ArgumentParser, title: str = "model (one of)") -> None:
    """``--checkpoint``, or ``--model`` [+ ``--weights`` or ``--pretrained``, ``--num-classes``];
    :func:`model_from_args` builds it."""
    group = parser.add_argument_group(title)
    group.add_argument("--checkpoint", help="a file sknet wrote (model.safetensors, checkpoint.pt): records its model")
    group.add_argument("--model", help="a registered model name (see `sknet models`), e.g. sknet50")
    group.add_argument("--weights", help="with --model: weights to load (ours, timm's or torchvision's)")
    add_pretrained_argument(group)
    group.add_argument(
        "--num-classes", type=int, default=None, help="with --model: classifier outputs (default: the weights')"
    )


def model_from_args(args: argparse.Namespace, action: str) -> nn.Module:
    """The model the flags name: a file with a record, or a registered name with optional weights.

    ``action`` ("export", "analyse") goes into the messages. Without ``--num-classes`` the
    classifier size comes from the weights. ``--weights`` of a file sknet wrote give the model its
    record names (its overrides, class names, normalisation), as ``--checkpoint`` does.
    """
    if args.checkpoint and args.model:
        raise ValueError("give either --checkpoint PATH or --model NAME [--weights PATH], not both")
    if args.checkpoint:
        if args.weights or args.pretrained or args.num_classes is not None:
            raise ValueError("--weights / --pretrained / --num-classes go with --model; a --checkpoint records its own")
        return load_model(args.checkpoint)
    if not args.model:
        raise ValueError(f"say what to {action}: --checkpoint PATH (a file written by sknet) or --model NAME")
    if args.pretrained:
        return create_model(args.model, num_classes=args.num_classes, weights=args.weights, pretrained=args.pretrained)
    if args.weights is None:
        print(f"note: no --weights given; {args.model} keeps its random initial weights", file=sys.stderr)
        return create_model(args.model, num_classes=args.num_classes)
    sd, meta = read_state_dict(args.weights)
    record = record_of(meta, sd)
    if record and args.num_classes in (None, record.num_classes):  # a file of ours: the model it records, as it is
        return load_model(args.weights, model_name=args.model)
    num_classes = args.num_classes if args.num_classes is not None else num_classes_of(sd)
    return create_model(args.model, num_classes=num_classes, weights=args.weights)


def add_pretrained_argument(parser) -> None:
    """``--pretrained [TAG]``: ``args.pretrained`` is None, True (the model's default weights) or a tag."""
    parser.add_argument(
        "--pretrained", nargs="?", const=True, default=None, metavar="TAG",
        help="with --model: its published weights (timm's and torchvision's ImageNet weights, downloaded once "
        "into the library's cache; sknet_mini's ship with sknet); TAG picks one of several (sknet models --pretrained)",
    )  # fmt: skip
