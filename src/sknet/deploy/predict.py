"""Classifying image files with a trained model (``sknet predict``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..data import open_image
from ..data.transforms import eval_transform


def predict(model: nn.Module, paths: Sequence[str | Path], topk: int = 5, resize: str = "auto") -> list[dict]:
    """Top-``topk`` classes with probabilities for each image file.

    The model's record (``model.pretrained_cfg``, filled by :func:`sknet.load_model`) gives the
    input size, normalisation and class names. ``resize="crop"`` is evaluation's single centre
    crop (ImageNet protocol, :func:`sknet.data.transforms.eval_transform`); ``"whole"`` resizes
    the whole image to the model's input (what small-image datasets were trained on); ``"auto"``
    picks ``whole`` up to 64 px.

    Returns:
        One dict per path, in order: ``image`` and ``top`` (a list of ``cls``, ``index``,
        ``prob``), or ``image`` and ``error`` (why the file could not be read); the readable
        images are classified whatever the others hold.
    """
    if resize not in ("auto", "crop", "whole"):
        raise ValueError(f"resize must be 'auto', 'crop' or 'whole', got {resize!r}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    channels, height, width = cfg["input_size"]
    if resize == "auto":
        resize = "whole" if max(height, width) <= 64 else "crop"
    mean, std = cfg.get("mean") or (0.0,) * channels, cfg.get("std") or (1.0,) * channels
    if resize == "whole":
        tf = eval_transform(mean, std, (height, width), crop_ratio=None)
    else:
        tf = eval_transform(mean, std, height)
    classes = cfg.get("classes") or []
    results: list[dict] = []
    images, readable = [], []
    for p in paths:
        try:
            images.append(tf(open_image(str(p), channels)))
            readable.append(len(results))
            results.append(dict(image=str(p)))
        except (OSError, ValueError) as e:
            results.append(dict(image=str(p), error=f"{type(e).__name__}: {e}"))
    if images:
        model.eval()
        with torch.no_grad():
            probs = model(torch.stack(images)).softmax(1)  # (N, classes)
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        for i, vals, idx in zip(readable, top.values.tolist(), top.indices.tolist()):
            results[i]["top"] = [
                dict(cls=classes[k] if k < len(classes) else str(k), index=k, prob=v) for v, k in zip(vals, idx)
            ]
    return results
