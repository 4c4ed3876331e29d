"""Model registry: ``register_model`` / ``create_model`` / ``list_models``.

A registered function holds only its numbers (layers, widths, branches); its keyword
arguments are the overrides a user may pass to :func:`create_model`.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about a model besides how to build it."""

    name: str
    fn: Callable[..., nn.Module]
    family: str
    input_size: tuple[int, int, int]
    num_classes: int
    paper_params_m: float | None = None  # SPEC Table 1, millions
    paper_gmacs: float | None = None  # SPEC Table 1, multiply-adds at input_size
    overrides: tuple[str, ...] = field(default=())


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    *,
    family: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    paper_params_m: float | None = None,
    paper_gmacs: float | None = None,
) -> Callable:
    """Decorator that adds a model function to the registry under its own name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        params = inspect.signature(fn).parameters
        _REGISTRY[name] = ModelEntry(
            name, fn, family, input_size, num_classes, paper_params_m, paper_gmacs, tuple(params)
        )
        return fn

    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell glob like ``"sknet*"``."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if name.split("_")[0] in n][:8]
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Valid models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    weights: str | None = None,
    **overrides,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: A name from :func:`list_models`.
        num_classes: Classifier outputs; None keeps the model's default (1000 for
            ImageNet models, 10 for the CIFAR ones).
        weights: Path to a checkpoint (ours, timm's ``skresnext50_32x4d`` or torchvision's
            ``resnext50_32x4d``; .pt/.pth/.safetensors) loaded after building.
        **overrides: Architecture overrides the model accepts, e.g. for SK models
            ``branches=[(3, 1, 32), (3, 2, 32), (3, 3, 32)]``, ``select="sum"``,
            ``reduction=8``, ``min_dim=16``.

    Raises:
        ValueError: Unknown model, or an override the model does not take (the
            message lists the valid ones).
    """
    entry = get_model_entry(name)
    bad = sorted(set(overrides) - set(entry.overrides))
    if bad:
        raise ValueError(f"model {name!r} does not take override(s) {bad}; valid overrides: {sorted(entry.overrides)}")
    kwargs = dict(overrides)
    kwargs["num_classes"] = entry.num_classes if num_classes is None else num_classes
    model = entry.fn(**kwargs)
    model.pretrained_cfg = dict(
        name=name, overrides=overrides, num_classes=kwargs["num_classes"], input_size=entry.input_size
    )
    if weights is not None:
        from ..weights import load_weights

        load_weights(model, weights, model_name=name)
    return model
