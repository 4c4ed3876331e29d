"""``sknet export``: ONNX / TorchScript / torch.export files, run and compared with the eager model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..deploy.export import FORMATS, ONNX_OPSET, SUFFIX, export_model
from .common import add_model_arguments, model_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export to ONNX / TorchScript / torch.export, then run the file and compare it with the eager model",
    )
    add_model_arguments(p, "what to export (one of)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default), torchscript or exported (.pt2)")
    p.add_argument("--output", "-o", help="destination file (default: MODEL[_fused].onnx / .pt / .pt2)")
    p.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        metavar="N",
        help="SIZE, H W or C H W for images; L (signals); T H W (volumes); default: the model's",
    )
    p.add_argument("--batch-size", type=int, default=1, help="batch of the exported graph (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension (checked on batches 1, 3)")
    p.add_argument("--fuse", action="store_true", help="export the fused inference model (BN folded)")
    p.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"ONNX opset (default {ONNX_OPSET})")
    p.add_argument("--atol", type=float, default=1e-4, help="tolerance on max |exported - eager| (scaled if > 1)")
    p.set_defaults(run=run)


def run(args) -> int:
    model = model_from_args(args, "export")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    input_size = parse_input_size(args.input_size, tuple(cfg.get("input_size") or (3, 224, 224)))
    output = Path(args.output or f"{cfg.get('name', 'model')}{'_fused' if args.fuse else ''}{SUFFIX[args.format]}")
    report = export_model(
        model,
        output,
        args.format,
        input_size,
        batch_size=args.batch_size,
        dynamic_batch=args.dynamic_batch,
        fuse=args.fuse,
        opset=args.opset,
        atol=args.atol,
    )
    print(report.summary())
    return 0


def parse_input_size(values: Sequence[int] | None, default: Sequence[int]) -> tuple[int, ...]:
    """The spatial sizes (``L``; ``H W``; ``T H W``) or all of ``C`` and them, as given; for images
    also one ``SIZE`` for ``SIZE x SIZE``. C comes from the model's default."""
    if not values:
        return tuple(default)
    dims = len(default) - 1
    if len(values) == dims + 1:
        return tuple(values)
    if len(values) == dims:
        return (default[0], *values)
    if len(values) == 1 and dims == 2:
        return (default[0], values[0], values[0])
    forms = {1: "L or C L", 2: "SIZE, H W or C H W", 3: "T H W or C T H W"}[dims]
    raise ValueError(f"--input-size takes {forms} for this model (input {tuple(default)}); got {list(values)}")
