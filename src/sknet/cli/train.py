"""``sknet train``: a recipe (packaged name or YAML) with flags on top, on one process or many (torchrun)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..data import DATASETS
from ..models.sources import pretrained_file, pretrained_source
from ..training import NonFiniteLossError, train
from ..training.config import resolve_config
from ..training.distributed import is_main
from .common import add_pretrained_argument

_FLAGS = [  # (flag, config key, type, help)
    ("--model", "model", str, "registered model name (sknet models)"),
    ("--dataset", "dataset", str, " | ".join(DATASETS)),
    ("--data-dir", "data_dir", str, "data folder (default: the dataset's usual place)"),
    ("--weights", "weights", str, "start from these weights (ours, timm's, torchvision's); new classifier if needed"),
    ("--init-from", "init_from", str, "grow the SK --model from a plain ResNeXt: its weights file, or its name"),
    ("--backbone-lr-factor", "backbone_lr_factor", float, "learning rate of all but the classifier, relative to it"),
    ("--head-only-epochs", "head_only_epochs", int, "train the classifier alone for the first N epochs"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--batch-size", "batch_size", int, "global batch size (split over processes)"),
    ("--lr", "lr", float, "learning rate at lr_base_batch (256) images; scaled linearly with the batch"),
    ("--output", "output", str, "run folder (checkpoint.pt, model.safetensors, metrics.csv, curves.png)"),
    ("--max-steps", "max_steps", int, "stop after N optimizer steps in total, with a checkpoint"),
    ("--checkpoint-every", "checkpoint_every", int, "also write the checkpoint every N steps"),
    ("--device", "device", str, "auto | cpu | cuda | cuda:N"),
    ("--amp", "amp", str, "off | bf16 | fp16 mixed precision"),
    ("--seed", "seed", int, "random seed"),
    ("--workers", "workers", int, "data loader processes per training process"),
]
_SWITCHES = ("resume", "channels_last", "compile", "sync_bn", "download", "tensorboard")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (recipe + flags; torchrun for many processes)")
    p.add_argument("--config", help="a packaged recipe (sknet recipes), e.g. fashion_mnist, or a YAML file")
    for flag, key, typ, help_ in _FLAGS:
        p.add_argument(flag, dest=key, type=typ, default=None, help=help_)
    add_pretrained_argument(p)
    p.add_argument(
        "--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt; start the run if there is none yet"
    )
    p.add_argument("--channels-last", dest="channels_last", action="store_true", help="channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-bn", dest="sync_bn", action="store_true", help="BatchNorm statistics over all processes")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR / Fashion-MNIST")
    p.add_argument("--tensorboard", action="store_true", help="also log to OUTPUT/tensorboard")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar / lines")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, YAML value")
    p.set_defaults(run=run)


def run(args) -> int:
    config = args.config
    if args.resume and config is None and (Path(args.output or "runs/train") / "config.yaml").is_file():
        config = Path(args.output or "runs/train") / "config.yaml"  # resume the recipe that run used
    overrides = {key: getattr(args, key) for _, key, _, _ in _FLAGS if getattr(args, key) is not None}
    overrides.update(_parse_set(args.set))
    overrides.update({flag: True for flag in _SWITCHES if getattr(args, flag)})
    if args.no_progress:
        overrides["progress"] = False
    if args.pretrained:
        overrides["weights"] = _pretrained_weights(config, overrides, args.pretrained)
    try:
        result = train(config, **overrides)
    except NonFiniteLossError as e:
        print(f"sknet train: error: {e}", flush=True)
        return 3
    if is_main():
        print(format_results(result))
    return 0


def _pretrained_weights(config, overrides: dict, tag) -> str:
    """``--pretrained [TAG]``: the file of the run's model's published weights (fetched into the
    library's cache), started from as ``--weights`` is."""
    if overrides.get("weights"):
        raise ValueError("give either --pretrained [TAG] or --weights FILE, not both")
    cfg = resolve_config(config, **overrides)
    if cfg.data_dir and not cfg.download and not Path(cfg.data_dir).is_dir():  # before a download, not after
        raise FileNotFoundError(f"--data-dir {cfg.data_dir!r} is not a folder: give the folder of your images")
    return str(pretrained_file(pretrained_source(cfg.model, None if tag is True else tag)))


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE (YAML value), got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def format_results(result: dict) -> str:
    """The results table printed at the end of a run."""
    rows = [
        ("model", f"{result['model']} ({result['params_m']:.3f}M params)"),
        ("dataset", f"{result['dataset']} ({result['val_images']:.0f} test images)"),
        ("epochs / steps", f"{result['epochs']} / {result['steps']}"),
        ("test top-1 accuracy", f"{100 - result['test_top1_err']:.2f} %"),
        ("test top-1 / top-5 error", f"{result['test_top1_err']:.2f} % / {result['test_top5_err']:.2f} %"),
        ("test loss", f"{result['test_loss']:.4f}"),
        ("training throughput", f"{result['img_per_s']:.0f} img/s"),
        ("wall time", f"{result['wall_time_s']:.0f} s"),
        ("output", result["output"]),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{k:<{width}} | {v}" for k, v in rows), line])
