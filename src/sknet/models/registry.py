"""The model registry: every named model is a builder and the numbers it is built with.

A family of models is one builder with keyword-only arguments (e.g. :func:`~sknet.models.resnext.sknet`);
a registered model is a name, that builder and a dict of the numbers that make it (units per
stage, widths, branches). What a user may change through ``create_model(name, **overrides)`` is
fixed per model: the builder's arguments that have defaults (classifier size, input channels,
the SK settings, ...) plus the structural ones the entry opens explicitly (``tunable``).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about a model."""

    name: str
    builder: Callable[..., nn.Module]
    args: dict  # the model's numbers, passed to builder as keywords
    family: str
    input_size: tuple[int, ...]
    num_classes: int
    doc: str = ""
    overrides: tuple[str, ...] = field(default=())  # keyword arguments create_model accepts


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    args: dict | None = None,
    *,
    family: str,
    doc: str = "",
    input_size: tuple[int, ...] = (3, 224, 224),
    num_classes: int = 1000,
    tunable: Sequence[str] = (),
) -> ModelEntry:
    """Add ``name`` to the registry: ``create_model(name)`` calls ``builder(**args, num_classes=...)``.

    Args:
        name: The model's name.
        builder: Takes keyword arguments, including ``num_classes``, and returns the model.
        args: The numbers of this model (structural arguments of ``builder``).
        family: ``"imagenet"``, ``"cifar"``, ``"mini"``, ``"light"``, ... (shown by ``sknet models``).
        doc: One line on what the model is.
        input_size: ``(C, H, W)`` the model is made for (complexity figures, exports).
        num_classes: Default classifier size.
        tunable: Arguments in ``args`` a user may still override (e.g. the mini models' ``layers``).
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    args = dict(args or {})
    params = inspect.signature(builder).parameters
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise ValueError(f"model {name!r}: {builder.__name__} takes no argument(s) {unknown}")
    with_default = {p for p, v in params.items() if v.default is not inspect.Parameter.empty}
    overrides = tuple(p for p in params if p in with_default or p in tunable)
    entry = ModelEntry(name, builder, args, family, tuple(input_size), num_classes, doc, overrides)
    _REGISTRY[name] = entry
    return entry


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell glob like ``"sknet*"``."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name is an error that lists the valid ones."""
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if name.split("_")[0] in n][:8]
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Valid models: {', '.join(list_models())}")
    return _REGISTRY[name]
