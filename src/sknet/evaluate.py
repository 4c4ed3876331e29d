"""``sknet eval`` (single centre-crop top-1 / top-5 error, as the paper reports) and
``sknet predict`` (top-5 classes of image files).

Both take ``--checkpoint`` as a training checkpoint (``checkpoint.pt``) or a
``.safetensors`` file written by :func:`sknet.save_weights`; ``eval`` also takes
``--model NAME --weights FILE`` (e.g. timm's SK-ResNeXt-50 weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

from .checkpoint import load_checkpoint
from .data import build_dataset, collate_skip, open_image
from .distributed import init_distributed
from .engine import evaluate
from .models import create_model
from .weights import load_model, load_weights, read_metadata


def load_for_inference(checkpoint: str | Path, model_name: str | None = None) -> tuple[nn.Module, dict]:
    """A model and its record (model_name, num_classes, mean, std, classes, input_size) from
    a ``checkpoint.pt`` or a ``.safetensors`` weights file.

    Raises:
        ValueError: ``model_name`` is given and the file holds another model.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors
        meta = read_metadata(path)
        if model_name and meta.get("model_name") not in (None, model_name):
            raise ValueError(f"{str(path)!r} holds weights for model {meta['model_name']!r}, not {model_name!r}")
        return load_model(path), meta
    ck = load_checkpoint(path)
    meta = ck.get("meta") or {}
    name = meta.get("model_name") or ck["config"].get("model")
    if model_name and name != model_name:
        raise ValueError(f"{str(path)!r} holds weights for model {name!r}, not {model_name!r}")
    model = create_model(name, num_classes=meta.get("num_classes"), **(meta.get("overrides") or {}))
    load_weights(model, path, model_name=name)
    return model, dict(meta, model_name=name)


def _run_eval(args) -> int:
    _, _, device = init_distributed(args.device)
    if args.checkpoint:
        model, meta = load_for_inference(args.checkpoint, args.model)
    elif args.model and args.weights:
        model, meta = None, {"model_name": args.model}
    else:
        raise ValueError("give --checkpoint FILE, or --model NAME with --weights FILE")
    options = dict(on_corrupt=args.on_corrupt)
    if args.dataset == "fake":  # synthetic data shaped like the model's input
        options.update(input_size=tuple(meta.get("input_size") or ()) or None, num_classes=meta.get("num_classes"))
    if args.crop:
        options["crop"] = args.crop
    dataset = build_dataset(args.dataset, args.data_dir, args.split, augment=False, **options)
    info = dataset.info
    if model is None:
        model = create_model(args.model, num_classes=info.num_classes, weights=args.weights)
    out_features = getattr(getattr(model, "fc", None), "out_features", info.num_classes)
    if out_features != info.num_classes:
        raise ValueError(
            f"model {meta['model_name']!r} predicts {out_features} classes but {args.dataset} has {info.num_classes}"
        )
    loader = DataLoader(dataset, args.batch_size, num_workers=args.workers, collate_fn=collate_skip)
    result = evaluate(model.to(device), loader, device, amp=args.amp, progress=not args.no_progress)
    result = dict(model=meta["model_name"], dataset=args.dataset, split=args.split, crop=args.crop, **result)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(
            f"{result['model']} on {args.dataset} {args.split} ({result['images']:.0f} images"
            + (f", {result['skipped']:.0f} unreadable skipped" if result["skipped"] else "")
            + (f", {args.crop}x{args.crop} centre crop" if args.crop else "")
            + f"): top-1 error {result['top1_err']:.2f} %, top-5 error {result['top5_err']:.2f} %, "
            f"loss {result['loss']:.4f}"
        )
    return 0


def predict(model: nn.Module, meta: dict, paths: list[str], topk: int = 5, resize: str = "auto") -> list[dict]:
    """Top-``topk`` classes with probabilities for each image file.

    ``resize="crop"`` resizes the shorter side to ``size / 0.875`` and takes the centre
    crop (ImageNet protocol); ``"whole"`` resizes the whole image to the model's input
    (what small-image datasets were trained on); ``"auto"`` picks ``whole`` up to 64 px.
    """
    channels, height, width = meta.get("input_size") or model.pretrained_cfg["input_size"]
    if resize == "auto":
        resize = "whole" if max(height, width) <= 64 else "crop"
    steps = [T.ToImage()]
    steps += (
        [T.Resize((height, width))] if resize == "whole" else [T.Resize(round(height / 0.875)), T.CenterCrop(height)]
    )
    mean, std = meta.get("mean") or (0.0,) * channels, meta.get("std") or (1.0,) * channels
    tf = T.Compose([*steps, T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    classes = meta.get("classes") or []
    images = []
    for p in paths:
        try:
            images.append(tf(open_image(p, channels)))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {p!r}: {type(e).__name__}: {e}") from e
    model.eval()
    with torch.no_grad():
        probs = model(torch.stack(images)).softmax(1)  # (N, classes)
    top = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [
        dict(image=p, top=[dict(cls=classes[i] if i < len(classes) else str(i), index=i, prob=v) for v, i in
                           zip(vals.tolist(), idx.tolist())])
        for p, vals, idx in zip(paths, top.values, top.indices)
    ]  # fmt: skip


def _run_predict(args) -> int:
    model, meta = load_for_inference(args.checkpoint)
    results = predict(model, meta, args.images, args.topk, args.resize)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        print(r["image"])
        for t in r["top"]:
            print(f"  {t['prob']:7.2%}  {t['cls']}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("eval", help="top-1 / top-5 error on a dataset (single centre crop, like the paper)")
    p.add_argument("--checkpoint", help="checkpoint.pt or .safetensors from sknet train")
    p.add_argument("--model", help="registered model name (with --weights, or to check the checkpoint)")
    p.add_argument("--weights", help="weights file for --model (ours, timm, torchvision)")
    p.add_argument("--dataset", required=True, help="imagenet | cifar10 | cifar100 | fashion-mnist | fake")
    p.add_argument("--data-dir", help="data folder (default: the dataset's usual place)")
    p.add_argument("--split", default="val", choices=["train", "val"], help="which split (default val)")
    p.add_argument("--crop", type=int, help="centre crop size, e.g. 224 or 320 (resize to crop/0.875 first)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    p.add_argument("--on-corrupt", default="skip", choices=["skip", "fail"], help="unreadable images")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run_eval)

    p = sub.add_parser("predict", help="top-5 classes with probabilities for image files")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or .safetensors from sknet train")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--resize", default="auto", choices=["auto", "crop", "whole"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run_predict)
