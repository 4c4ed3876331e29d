"""Loading weights: our checkpoints, timm's SK-ResNeXt and torchvision's ResNeXt.

Files are read without unpickling code (``torch.load(weights_only=True)`` or
safetensors). The format is detected from the file's bytes, the source from its keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read tensors and metadata from a .safetensors / .pt / .pth file.

    Returns the state dict and a metadata dict (our checkpoints store the model name,
    overrides and config there; other files give ``{}``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        return sd, meta
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and what to do
        raise ValueError(
            f"cannot read weights from {str(path)!r}: {type(e).__name__}: {e}. Expected a safetensors file "
            "or a torch.save'd state dict (loaded with weights_only=True: no pickled code)."
        ) from e
    meta = {}
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict", "state_dict_ema"):
            if key in obj and isinstance(obj[key], dict):
                meta = {k: v for k, v in obj.items() if k not in ("model", "state_dict", "optimizer")}
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{str(path)!r} holds no state dict of tensors")
    sd = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}
    return sd, meta


# Renames from other libraries' bottleneck names to ours (module-relative, inside layerN.M.).
_TORCHVISION_RULES = [
    (r"^(layer\d+\.\d+)\.conv2\.weight$", r"\1.conv2.conv.weight"),
    (r"^(layer\d+\.\d+)\.bn2\.(.+)$", r"\1.conv2.bn.\2"),
]
_TIMM_RULES = [
    (r"^(layer\d+\.\d+)\.conv1\.conv\.weight$", r"\1.conv1.weight"),
    (r"^(layer\d+\.\d+)\.conv1\.bn\.(.+)$", r"\1.bn1.\2"),
    (r"^(layer\d+\.\d+)\.conv3\.conv\.weight$", r"\1.conv3.weight"),
    (r"^(layer\d+\.\d+)\.conv3\.bn\.(.+)$", r"\1.bn3.\2"),
]


def detect_source(sd: dict[str, torch.Tensor]) -> str:
    """``"timm"``, ``"torchvision"`` or ``"sknet"`` (ours), from the keys."""
    keys = set(sd)
    if any(re.match(r"layer\d+\.\d+\.conv1\.conv\.weight$", k) for k in keys):
        return "timm"
    if any(re.match(r"layer\d+\.\d+\.bn2\.weight$", k) for k in keys):
        return "torchvision"
    return "sknet"


def convert_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, source: str | None = None) -> dict:
    """Rename and reshape a foreign state dict to ``model``'s names and shapes."""
    source = source or detect_source(sd)
    rules = {"timm": _TIMM_RULES, "torchvision": _TORCHVISION_RULES}.get(source, [])
    out = {}
    for k, v in sd.items():
        for pat, rep in rules:
            k2 = re.sub(pat, rep, k)
            if k2 != k:
                k = k2
                break
        out[k] = v
    target = model.state_dict()
    for k, v in out.items():
        # timm's attention fcs are 1x1 convs (d, C, 1, 1); ours are linear layers (d, C).
        if k in target and v.dim() == 4 and target[k].dim() == 2 and v.shape[2:] == (1, 1):
            out[k] = v.flatten(1)
    return out


def load_weights(model: nn.Module, path: str | Path, model_name: str | None = None, strict: bool = True):
    """Load weights from ``path`` into ``model``; foreign formats are converted first.

    Raises:
        ValueError: The file is for another model (names the checkpoint's model, or the
            missing / unexpected / mis-shaped keys).
    """
    sd, meta = read_state_dict(path)
    config = meta.get("config")
    ck_name = meta.get("model_name") or (config.get("model") if isinstance(config, dict) else None)
    if model_name and ck_name and ck_name != model_name:
        raise ValueError(f"{str(path)!r} holds weights for model {ck_name!r}, not {model_name!r}")
    sd = convert_state_dict(sd, model)
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in sd and sd[k].shape != target[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        what = model_name or type(model).__name__
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:3]}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        raise ValueError(
            f"{str(path)!r} does not fit model {what!r}: "
            + "; ".join(parts)
            + ". Is it a checkpoint of another model, or another num_classes / overrides?"
        )
    model.load_state_dict(sd, strict=strict)
    return model


# --------------------------------------------------------------------------- sharing
# A weights file people share: safetensors with a metadata record (all values are
# strings in safetensors; structured ones are JSON).

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    model_name: str | None = None,
    overrides: dict | None = None,
    num_classes: int | None = None,
    input_size: tuple[int, int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    provenance: dict | None = None,
    metrics: dict | None = None,
    classes: list[str] | None = None,
) -> Path:
    """Write ``model``'s weights and a metadata record to a .safetensors file, atomically.

    Unset fields default to what ``create_model`` recorded in ``model.pretrained_cfg``.
    :func:`load_model` rebuilds the model from the file alone.
    """
    import json

    from safetensors.torch import save_file

    from .io import atomic_write

    cfg = getattr(model, "pretrained_cfg", {}) or {}
    model_name = model_name or cfg.get("name")
    if not model_name:
        raise ValueError("save_weights needs model_name= (the model was not built by create_model)")
    meta = {
        "format": "sknet",
        "model_name": model_name,
        "overrides": json.dumps(overrides if overrides is not None else cfg.get("overrides", {})),
        "num_classes": str(num_classes if num_classes is not None else cfg.get("num_classes")),
        "input_size": json.dumps(list(input_size or cfg.get("input_size") or ())),
        "mean": json.dumps(list(mean or cfg.get("mean") or ())),
        "std": json.dumps(list(std or cfg.get("std") or ())),
        "provenance": json.dumps(provenance or {}),
        "metrics": json.dumps(metrics or {}),
        "classes": json.dumps(classes or cfg.get("classes") or []),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: str | Path) -> dict:
    """The decoded metadata record of a weights file written by :func:`save_weights`."""
    import json

    _, meta = read_state_dict(path)
    out = dict(meta)
    for key in ("overrides", "input_size", "mean", "std", "provenance", "metrics", "classes"):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    if isinstance(out.get("num_classes"), str) and out["num_classes"].isdigit():
        out["num_classes"] = int(out["num_classes"])
    return out


def _training_checkpoint_record(path: str | Path) -> dict | None:
    """The model record of a training checkpoint (``{"model": ..., "config": {"model": NAME, ...}}``).

    ``num_classes`` comes from the config, else from the classifier's weight; overrides
    from ``config["overrides"]`` (none if absent).
    """
    sd, meta = read_state_dict(path)
    config = meta.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        return None
    num_classes = config.get("num_classes")
    if not isinstance(num_classes, int) and "fc.weight" in sd:
        num_classes = sd["fc.weight"].shape[0]
    overrides = config.get("overrides") or {}
    return dict(format="sknet", model_name=config["model"], num_classes=num_classes, overrides=overrides)


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a model from a file that records which model it holds.

    That is a .safetensors file written by :func:`save_weights`, or a training checkpoint
    (``torch.save`` of ``{"model": state_dict, "config": {"model": NAME, ...}}``).
    """
    from .models import create_model

    meta = read_metadata(path)
    if meta.get("format") != "sknet" or "model_name" not in meta:
        meta = _training_checkpoint_record(path) or meta
    if meta.get("format") != "sknet" or "model_name" not in meta:
        raise ValueError(
            f"{str(path)!r} has no sknet metadata record (which model, which overrides); build the model "
            "yourself and pass weights=PATH to create_model(name, ...) (CLI: --model NAME --weights PATH)"
        )
    model = create_model(meta["model_name"], num_classes=meta.get("num_classes"), **meta.get("overrides", {}))
    load_weights(model, path, model_name=meta["model_name"])
    model.pretrained_cfg.update(
        {k: meta[k] for k in ("input_size", "mean", "std", "provenance", "metrics", "classes") if meta.get(k)}
    )
    return model


def add_model_arguments(parser, title: str = "model (one of)") -> None:
    """The command-line group that names a model: ``--checkpoint``, or ``--model`` [+ ``--weights``,
    ``--num-classes``]; :func:`model_from_arguments` builds it (``sknet export``, ``sknet analyze``)."""
    group = parser.add_argument_group(title)
    group.add_argument("--checkpoint", help="a weights file with a metadata record (sknet.save_weights or training)")
    group.add_argument("--model", help="a registered model name (see `sknet models`), e.g. sknet50")
    group.add_argument("--weights", help="with --model: weights to load (ours, timm's or torchvision's)")
    group.add_argument(
        "--num-classes", type=int, default=None, help="with --model: classifier outputs (default: the weights')"
    )


def model_from_arguments(
    checkpoint: str | None, model_name: str | None, weights: str | None, num_classes: int | None, action: str
) -> nn.Module:
    """The model the command line names (:func:`add_model_arguments`): a file with a metadata
    record, or a registered name with optional weights. ``action`` ("export", "analyse") goes
    into the messages. Without ``--num-classes`` the classifier size comes from the weights."""
    from .models import create_model

    if checkpoint and model_name:
        raise ValueError("give either --checkpoint PATH or --model NAME [--weights PATH], not both")
    if checkpoint:
        if weights or num_classes is not None:
            raise ValueError("--weights / --num-classes go with --model; a --checkpoint records its own")
        return load_model(checkpoint)
    if not model_name:
        raise ValueError(f"say what to {action}: --checkpoint PATH (a file written by sknet) or --model NAME")
    if weights is None:
        print(f"note: no --weights given; {model_name} keeps its random initial weights")
        return create_model(model_name, num_classes=num_classes)
    if num_classes is None:  # the file's record, else its classifier's size
        num_classes = read_metadata(weights).get("num_classes")
        if not isinstance(num_classes, int):
            fc = read_state_dict(weights)[0].get("fc.weight")
            num_classes = fc.shape[0] if fc is not None and fc.dim() == 2 else None
    return create_model(model_name, num_classes=num_classes, weights=weights)
