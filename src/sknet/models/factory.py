"""Building models by name, and rebuilding them from the files we write.

:func:`create_model` builds a registered model, optionally loading weights into it: a file (ours,
timm's or torchvision's), or the published ImageNet weights of the model (``pretrained=True``,
:mod:`sknet.models.sources`). :func:`load_model` is the one loader for a file that records its
model (a ``.safetensors`` from :func:`sknet.save_weights` or a training ``checkpoint.pt``).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..record import record_of
from ..weights import apply_state_dict, check_model_name, load_weights, read_state_dict
from .registry import get_model_entry
from .sources import load_source


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    pretrained: bool | str = False,
    **overrides,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: A name from :func:`list_models`.
        num_classes: Classifier outputs; None keeps the model's default (1000 for
            ImageNet models, 10 for the CIFAR ones).
        weights: Path to a checkpoint (ours, timm's ``skresnext50_32x4d`` or torchvision's
            ``resnext50_32x4d`` / ``mobilenet_v2``; .pt/.pth/.safetensors) loaded after building.
        pretrained: True for the model's published ImageNet weights (its default source), or
            the tag of one of them (``sknet models --pretrained`` lists them); downloaded into
            the source library's cache the first time, offline afterwards. With another
            ``num_classes`` than the weights' the classifier is a fresh one (for fine-tuning).
            Their record (ImageNet's input size, mean / std and class names) lands in
            ``model.pretrained_cfg``.
        **overrides: Arguments the model accepts, e.g. for SK models
            ``branches=[(3, 1, 32), (3, 2, 32), (3, 3, 32)]``, ``select="sum"``,
            ``reduction=8``, ``min_dim=16``, ``sk_impl="reference"``.

    Raises:
        ValueError: Unknown model, an override the model does not take (the message lists
            the valid ones), ``pretrained`` with ``weights``, or no such published weights.
        FileNotFoundError: ``pretrained`` weights not cached, and no network to download them.
        ImportError: ``pretrained`` weights on the Hugging Face Hub without huggingface_hub.
    """
    if pretrained and weights is not None:
        raise ValueError(
            "give either published weights (pretrained=True or a tag; --pretrained [TAG]) or a weights file "
            "(weights=PATH; --weights PATH), not both"
        )
    entry = get_model_entry(name)
    bad = sorted(set(overrides) - set(entry.overrides))
    if bad:
        raise ValueError(f"model {name!r} does not take override(s) {bad}; valid overrides: {sorted(entry.overrides)}")
    num_classes = entry.num_classes if num_classes is None else num_classes
    model = entry.build(**overrides, num_classes=num_classes)
    model.pretrained_cfg = dict(name=name, overrides=overrides, num_classes=num_classes, input_size=entry.input_size)
    if weights is not None:
        load_weights(model, weights, model_name=name)
    if pretrained:
        load_source(model, name, pretrained)
    return model


def load_model(path: str | Path, model_name: str | None = None) -> nn.Module:
    """Rebuild the model a file of ours holds, with its weights and record.

    The file is a ``.safetensors`` written by :func:`sknet.save_weights` (or by training), or
    a training ``checkpoint.pt``. The record (``input_size``, ``mean``, ``std``, ``classes``,
    ``metrics``, ...) lands in ``model.pretrained_cfg``.

    Args:
        path: The file.
        model_name: If given, the file must hold this model.

    Raises:
        ValueError: The file records no model (e.g. another library's weights: build the
            model yourself with ``create_model(name, weights=path)``), or another model than
            ``model_name``.
    """
    sd, meta = read_state_dict(path)
    record = record_of(meta, sd)
    if record is None:
        raise ValueError(
            f"{str(path)!r} has no sknet record of which model it holds; build the model yourself and load "
            "the weights into it: create_model(name, weights=path) (command line: --model NAME --weights PATH)"
        )
    check_model_name(path, record, model_name)
    model = create_model(record.model_name, num_classes=record.num_classes, **record.overrides)
    apply_state_dict(model, sd, path, model_name=record.model_name)
    kept = ("input_size", "mean", "std", "provenance", "metrics", "classes")
    model.pretrained_cfg.update({k: getattr(record, k) for k in kept if getattr(record, k)})
    return model
