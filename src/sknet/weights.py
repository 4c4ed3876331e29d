"""Loading weights: our checkpoints, timm's SK-ResNeXt and torchvision's ResNeXt and MobileNetV2.

Files are read without unpickling code (``torch.load(weights_only=True)`` or
safetensors). The format is detected from the file's bytes, the source from its keys.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .io import atomic_write
from .record import ModelRecord, num_classes_of, record_of


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read tensors and metadata from a .safetensors / .pt / .pth file.

    Returns the state dict and the file's metadata: a safetensors file's metadata strings,
    or a torch file's entries beside its state dict (a training checkpoint's ``config`` and
    ``meta``); other files give ``{}``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a state dict, or holds pickled objects (refused).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if is_safetensors(path):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        return sd, meta
    obj = load_torch_file(path, "weights")
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


def is_safetensors(path: str | Path) -> bool:
    """The file starts like safetensors (a u64 header length, then JSON)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def load_torch_file(path: str | Path, what: str = "file"):
    """``torch.load(path, weights_only=True)``: tensors and plain Python values, never pickled code.

    Raises:
        ValueError: The file is unreadable, or holds pickled objects that ``weights_only``
            refuses (the message says how to convert a trusted file, never to load it unsafely).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{what} {str(path)!r} holds pickled Python objects besides tensors; sknet reads torch files with "
            "torch.load(weights_only=True) and refuses them, because unpickling can run arbitrary code. If the "
            "file comes from a source you trust, convert it once to a plain state dict (in Python: load it, take "
            "its model's state_dict(), and write that with safetensors.torch.save_file), then use the converted file."
        ) from None
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and what to do
        raise ValueError(
            f"cannot read {what} {str(path)!r}: {type(e).__name__}: {e}. Expected a safetensors file or a "
            "torch.save'd state dict."
        ) from e


# --------------------------------------------------------------------------- other libraries' names
# A model class declares how other libraries name its tensors (its ``foreign_names``, beside the
# model: sknet/models/resnext.py, sknet/models/mobilenetv2.py); here is only how a file's library
# is recognised and its keys renamed.


@dataclass(frozen=True)
class ForeignNames:
    """How one library names a model's tensors.

    ``marker`` is a key pattern only that library's files have; ``rules`` are ``(pattern,
    replacement)`` renames to our names (``re.sub``; a replacement may be a function of the
    match), the first that changes a key wins.
    """

    source: str  # the library: "timm", "torchvision"
    marker: str
    rules: tuple[tuple[str, str | Callable[[re.Match], str]], ...]


def detect_source(sd: dict[str, torch.Tensor], model: nn.Module) -> str:
    """The library whose names ``sd`` has, among those ``model`` declares, or ``"sknet"`` (ours)."""
    for names in getattr(model, "foreign_names", ()):
        if any(re.match(names.marker, k) for k in sd):
            return names.source
    return "sknet"


def convert_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, source: str | None = None) -> dict:
    """Rename and reshape a foreign state dict to ``model``'s names and shapes (``source``: the
    library, by default recognised from the keys)."""
    source = source or detect_source(sd, model)
    rules = next((n.rules for n in getattr(model, "foreign_names", ()) if n.source == source), ())
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
    """Load the weights in ``path`` into ``model``; foreign formats (timm, torchvision) are converted first.

    Raises:
        ValueError: The file is for another model (names the checkpoint's model, or the
            missing / unexpected / mis-shaped keys).
    """
    sd, meta = read_state_dict(path)
    check_model_name(path, record_of(meta, sd), model_name)
    return apply_state_dict(model, sd, path, model_name=model_name, strict=strict)


def check_model_name(path: str | Path, record: ModelRecord | None, model_name: str | None) -> None:
    """Refuse a file whose record names another model than ``model_name``."""
    if model_name and record and record.model_name != model_name:
        raise ValueError(f"{str(path)!r} holds weights for model {record.model_name!r}, not {model_name!r}")


def apply_state_dict(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    path: str | Path,
    model_name: str | None = None,
    strict: bool = True,
    allow_missing: Collection[str] = (),
) -> nn.Module:
    """Load a state dict read from ``path`` into ``model`` (``path`` only names the file in errors).

    ``allow_missing``: keys of ``model`` the file need not provide; they keep their values.
    """
    sd = convert_state_dict(sd, model)
    target = model.state_dict()
    missing = [k for k in target if k not in sd and k not in allow_missing]
    unexpected = [k for k in sd if k not in target]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in sd and sd[k].shape != target[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        what = model_name or (getattr(model, "pretrained_cfg", None) or {}).get("name") or type(model).__name__
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
    model.load_state_dict(sd, strict=strict and not allow_missing)
    return model


def load_pretrained(model: nn.Module, path: str | Path, model_name: str | None = None, head: str = "fc") -> dict:
    """Start ``model`` from the weights in ``path`` (ours, timm's or torchvision's) for fine-tuning.

    Every tensor is loaded, except the classifier (``head``) when the file's has another number
    of classes: then ``model``'s freshly initialised classifier is kept. A first conv made for
    another number of input channels (RGB weights, grayscale images) is adapted to the model's
    (:func:`adapt_input_conv`). Any other difference is an error that names it, as in
    :func:`load_weights`.

    Returns:
        ``loaded`` (number of tensors), ``reinitialised`` (the classifier keys kept fresh, or
        ``[]``), ``file_classes`` (the file's classifier size, or None if it has none),
        ``input_conv`` (what :func:`adapt_input_channels` did, or None).
    """
    sd, meta = read_state_dict(path)
    check_model_name(path, record_of(meta, sd), model_name)
    file_classes = num_classes_of(sd)
    sd = convert_state_dict(sd, model)
    input_conv = adapt_input_channels(sd, model)
    target = model.state_dict()
    head_keys = [k for k in target if k.startswith(f"{head}.")]
    reinit = head_keys if any(k not in sd or sd[k].shape != target[k].shape for k in head_keys) else []
    sd = {k: v for k, v in sd.items() if k not in reinit}
    apply_state_dict(model, sd, path, model_name=model_name, allow_missing=reinit)
    return dict(loaded=len(sd), reinitialised=reinit, file_classes=file_classes, input_conv=input_conv)


def input_conv_name(model: nn.Module) -> str | None:
    """The name of ``model``'s first convolution, the one that sees the input (``conv1``, ``conv1.conv``)."""
    return next((name for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)), None)


def adapt_input_channels(sd: dict[str, torch.Tensor], model: nn.Module) -> dict | None:
    """Fit the first conv's weight in ``sd`` (our names) to ``model``'s input channels, in place.

    Only a weight that differs from the model's in its input channels alone is adapted
    (:func:`adapt_input_conv`). Returns what was done (``key``, ``file_in_chans``,
    ``model_in_chans``), or None when nothing was.
    """
    name = input_conv_name(model)
    key = f"{name}.weight"
    target = model.state_dict().get(key)
    weight = sd.get(key)
    if name is None or target is None or weight is None or weight.dim() != target.dim():
        return None
    if weight.shape[1] == target.shape[1] or weight.shape[:1] + weight.shape[2:] != target.shape[:1] + target.shape[2:]:
        return None
    sd[key] = adapt_input_conv(weight, target.shape[1])
    return dict(key=key, file_in_chans=weight.shape[1], model_in_chans=target.shape[1])


def describe_input_conv(adapted: dict) -> str:
    """One line saying how :func:`adapt_input_channels` adapted the first conv."""
    file_chans, in_chans = adapted["file_in_chans"], adapted["model_in_chans"]
    how = "summed over its channels" if in_chans == 1 else f"its channels repeated, scaled by {file_chans}/{in_chans}"
    return (
        f"the first conv ({adapted['key']}) was made for {file_chans} input channel(s), the model takes {in_chans}: "
        f"{how}, as timm's adapt_input_conv does"
    )


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first conv's ``weight`` (out, file channels, *kernel) made to take ``in_chans`` channels,
    as timm's ``adapt_input_conv`` does (timm/models/_manipulate.py, its ``base_chans`` being the
    file's channel count).

    One channel: the sum over the file's channels, so a grayscale image gives what the file's conv
    gives on that image repeated in every channel. More: the file's channels repeated in turn up to
    ``in_chans``, scaled by ``file channels / in_chans``; where ``in_chans`` is a multiple of the
    file's channels, an image whose channels are all equal then gives what the file's conv gives on
    that image (otherwise the later channels are cut short, and it does not).
    """
    file_chans = weight.shape[1]
    if in_chans == file_chans:
        return weight
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        repeats = -(-in_chans // file_chans)  # ceil
        w = w.repeat(1, repeats, *[1] * (w.dim() - 2))[:, :in_chans] * (file_chans / in_chans)
    return w.to(weight.dtype)


# --------------------------------------------------------------------------- records
# The files we write say which model they hold (sknet/record.py): a .safetensors from
# save_weights carries its ModelRecord as metadata strings. Other libraries' files carry none.


def save_weights(model: nn.Module, path: str | Path, *, record: ModelRecord | None = None, **fields) -> Path:
    """Write ``model``'s weights and its record to a .safetensors file, atomically.

    Args:
        model: The model.
        path: The file.
        record: The record to write; by default ``ModelRecord.from_model(model, **fields)``.
        **fields: The record's fields (``model_name``, ``overrides``, ``num_classes``,
            ``input_size``, ``mean``, ``std``, ``classes``, ``provenance``, ``metrics``);
            unset ones default to what ``create_model`` recorded in ``model.pretrained_cfg``,
            the class count to the classifier's size (:meth:`ModelRecord.from_model`).

    :func:`sknet.load_model` rebuilds the model from the file alone.
    """
    from safetensors.torch import save_file

    if record is None:
        record = ModelRecord.from_model(model, **fields)
    elif fields:
        raise TypeError(f"save_weights takes record= or the record's fields, not both (got {sorted(fields)})")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = record.to_metadata()
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_record(path: str | Path) -> ModelRecord | None:
    """The record of the file at ``path`` (:func:`sknet.record.record_of`), or None."""
    sd, meta = read_state_dict(path)
    return record_of(meta, sd)
