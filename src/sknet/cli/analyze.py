"""``sknet analyze``: the paper's Fig. 3 and Fig. 4 for a trained SK model, as PNG, JSON and CSV.

Examples::

    # ImageNet SKNet-50 from a timm checkpoint, 5000 validation images
    sknet analyze --model sknet50 --weights skresnext50_32x4d.pth --dataset imagefolder \\
        --data-dir /data/imagenet/val --max-images 5000 --output runs/analysis-sknet50

    # a mini SKNet trained by `sknet train` on the scale-varied Fashion-MNIST
    sknet analyze --checkpoint runs/sk/model.safetensors --dataset fashion-mnist-scaled \\
        --data-dir /usr/share/datasets/fashion-mnist --scaling render --output runs/sk/analysis

    # several trained models (e.g. the seeds of a study variant), after analysing each
    sknet analyze --compare runs/a-seed0 runs/a-seed1 runs/a-seed2 --output runs/a-seeds
"""

from __future__ import annotations

from ..analysis import analyze, compare_folders, write_comparison, write_report
from ..analysis.report import format_comparison
from ..data import build_dataset
from ..models import get_model_entry
from .common import add_model_arguments, model_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="the paper's attention analysis (Fig. 3, Fig. 4): does the receptive field grow with the object?",
        description="Record the SK attention of every unit on images enlarged 1.0x/1.5x/2.0x and plot Fig. 3 / Fig. 4.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--dataset",
        help="imagefolder (an ImageFolder tree), fashion-mnist, fashion-mnist-scaled, fake, ... (unless --compare)",
    )
    p.add_argument("--data-dir", help="data folder (ImageFolder root for imagefolder, e.g. imagenet/val)")
    p.add_argument("--scales", nargs="+", type=float, default=[1.0, 1.5, 2.0], help="object enlargements (>= 1)")
    p.add_argument("--scaling", choices=("crop", "render"), default="crop",
                   help="crop: the paper's centre crop 1/s + resize; render: the data set redraws the object "
                        "(fashion-mnist-scaled)")  # fmt: skip
    p.add_argument("--unit", help="unit of Fig. 3 left (default SK_3_4, or a middle unit)")
    p.add_argument(
        "--units", nargs="+", help="three units for Fig. 4 (default SK_2_3 SK_3_4 SK_5_3, or first/middle/last)"
    )
    p.add_argument("--fig4-scales", nargs=2, type=float, help="the two scales of Fig. 4 (default: the first two)")
    p.add_argument(
        "--channel-group", type=int, default=16, help="channels averaged per point in Fig. 3 left (paper: 16)"
    )
    p.add_argument("--max-images", type=int, default=None, help="use this many images, spread over the set")
    p.add_argument("--input-size", nargs="+", type=int, help="H W (or C H W) fed to the model (default: the model's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data loader workers")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (fashion-mnist-scaled placements, fake data)")
    p.add_argument("--output", required=True, help="folder for analysis.json, CSVs and PNGs")
    p.add_argument(
        "--compare", nargs="+", metavar="DIR",
        help="instead of analysing: compare the analysis.json of these folders (e.g. one per seed)",
    )  # fmt: skip
    p.set_defaults(run=run)


def run(args) -> int:
    if args.compare:
        comparison = compare_folders(args.compare)
        write_comparison(comparison, args.output)
        print(format_comparison(comparison))
        print(f"wrote {args.output}/comparison.md, comparison.csv, comparison.json, comparison.png")
        return 0
    if not args.dataset:
        raise ValueError("--dataset is required (or --compare DIR ... to compare finished analyses)")
    if any(s < 1 for s in args.scales):
        raise ValueError(f"--scales must be factors >= 1 (the paper uses 1.0 1.5 2.0), got {args.scales}")
    model = model_from_args(args, "analyse")
    dataset, input_size = _dataset(args, model)
    result = analyze(
        model,
        dataset,
        scales=args.scales,
        scaling=args.scaling,
        fig3_unit=args.unit,
        fig4_units=args.units,
        fig4_scales=args.fig4_scales,
        channel_group=args.channel_group,
        max_images=args.max_images,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
    )
    summary = result.summary
    summary["settings"].update(
        checkpoint=args.checkpoint,
        weights=args.weights,
        pretrained=args.pretrained,
        dataset=args.dataset,
        data_dir=args.data_dir,
        input_size=list(input_size),
        seed=args.seed,
    )
    name = summary["settings"]["model"]
    write_report(
        result, args.output, f"{name} on {args.dataset} ({summary['num_images']} images, scaling: {args.scaling})"
    )
    acc = ", ".join(f"{float(s):g}x {100 * a:.2f}%" for s, a in summary["accuracy"].items() if a is not None)
    print(f"analysed {summary['num_images']} images; top-1 accuracy {acc}")
    for r in summary["fig3_right"]:
        print(
            f"  {r['unit']:<10} {r['scale']:>4g}x  a(larger)-a(smaller) = {r['mean']:+.4f} +- {r['std']:.4f}"
            f"  (change vs {summary['scales'][0]:g}x: {r['change_vs_first_scale']:+.4f} +- {r['change_sem']:.4f} s.e.)"
        )
    print(f"wrote {args.output}/analysis.json, fig3.png, fig4.png and CSVs")
    return 0


def _dataset(args, model):
    """The evaluation split the flags name, at the model's input size (or --input-size) and with its
    normalisation; returns it and that input size."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    default = tuple(cfg.get("input_size") or get_model_entry(cfg["name"]).input_size)
    size = tuple(args.input_size or default)
    c, h, w = (default[0], *size) if len(size) == 2 else size
    options = dict(data_seed=args.seed, input_size=(c, h, w), mean=cfg.get("mean"), std=cfg.get("std"))
    if args.dataset == "fake":
        options["size"] = 64
    if args.dataset in ("imagenet", "imagefolder"):
        options["crop"] = h  # resize to h / EVAL_CROP_RATIO, centre crop h, as the paper evaluates
    return build_dataset(args.dataset, args.data_dir, "val", augment=False, **options), (c, h, w)
