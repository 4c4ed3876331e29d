"""``sknet eval``: single centre-crop top-1 / top-5 error on a dataset, as the paper reports it."""

from __future__ import annotations

import json

from torch.utils.data import DataLoader

from ..data import DATASETS, build_dataset, collate_skip
from ..data.transforms import EVAL_CROP_RATIO
from ..models import create_model, load_model
from ..training import evaluate
from ..training.distributed import init_distributed
from .common import add_pretrained_argument


def register(sub) -> None:
    p = sub.add_parser("eval", help="top-1 / top-5 error on a dataset (single centre crop, like the paper)")
    p.add_argument("--checkpoint", help="checkpoint.pt or .safetensors from sknet train")
    p.add_argument("--model", help="registered model name (with --weights, or to check the checkpoint)")
    p.add_argument("--weights", help="weights file for --model (ours, timm, torchvision)")
    add_pretrained_argument(p)
    p.add_argument("--dataset", required=True, help=" | ".join(DATASETS))
    p.add_argument("--data-dir", help="data folder (default: the dataset's usual place)")
    p.add_argument("--split", default="val", choices=["train", "val"], help="which split (default val)")
    p.add_argument(
        "--crop", type=int, help=f"centre crop size, e.g. 224 or 320 (resize to crop/{EVAL_CROP_RATIO:g} first)"
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    p.add_argument("--on-corrupt", default="skip", choices=["skip", "fail"], help="unreadable images")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    _, _, device = init_distributed(args.device)
    if args.checkpoint and (args.weights or args.pretrained):
        raise ValueError("--weights / --pretrained go with --model; a --checkpoint holds its own weights")
    if args.checkpoint:
        model = load_model(args.checkpoint, model_name=args.model)
    elif args.model and args.pretrained:  # the weights' own classifier: a data set of other classes is refused
        model = create_model(args.model, weights=args.weights, pretrained=args.pretrained)
    elif not (args.model and args.weights):
        raise ValueError("give --checkpoint FILE, or --model NAME with --weights FILE or --pretrained [TAG]")
    else:
        model = None
    record = model.pretrained_cfg if model is not None else {}
    options = dict(on_corrupt=args.on_corrupt)
    if args.dataset == "fake":  # synthetic data shaped like the model's input
        options.update(input_size=tuple(record.get("input_size") or ()) or None, num_classes=record.get("num_classes"))
    if args.crop:
        options["crop"] = args.crop
    dataset = build_dataset(args.dataset, args.data_dir, args.split, augment=False, **options)
    info = dataset.info
    if model is None:
        model = create_model(args.model, num_classes=info.num_classes, weights=args.weights)
    name = model.pretrained_cfg["name"]
    out_features = getattr(getattr(model, "fc", None), "out_features", info.num_classes)
    if out_features != info.num_classes:
        raise ValueError(f"model {name!r} predicts {out_features} classes but {args.dataset} has {info.num_classes}")
    loader = DataLoader(dataset, args.batch_size, num_workers=args.workers, collate_fn=collate_skip)
    result = evaluate(model.to(device), loader, device, amp=args.amp, progress=not args.no_progress)
    result = dict(model=name, dataset=args.dataset, split=args.split, crop=args.crop, **result)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"{result['model']} on {args.dataset} {args.split} ({result['images']:.0f} images"
        + (f", {result['skipped']:.0f} unreadable skipped" if result["skipped"] else "")
        + (f", {args.crop}x{args.crop} centre crop" if args.crop else "")
        + f"): top-1 error {result['top1_err']:.2f} %, top-5 error {result['top5_err']:.2f} %, "
        f"loss {result['loss']:.4f}"
    )
    return 0
