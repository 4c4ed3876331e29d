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
