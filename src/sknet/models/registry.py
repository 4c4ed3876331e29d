"""The model registry: every named model is a builder and the numbers it is built with.

A family of models is one builder with keyword-only arguments (e.g. :func:`~sknet.models.resnext.resnext`
for ResNeXt, SENet and SKNet); a registered model is a name, that builder and a dict of the numbers
that make it (units per stage, widths, its kind of unit). What a user may change through
``create_model(name, **overrides)`` is fixed per model: the builder's arguments that have defaults
(classifier size, input channels, ...), the structural ones the entry opens explicitly (``tunable``)
and the fields of a settings dataclass the model is given (``unit=SK(...)``: the SK settings,
:mod:`sknet.models.settings`).
"""

from __future__ import annotations

import dataclasses
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

    def build(self, **overrides) -> nn.Module:
        """``builder(**args)`` with ``overrides`` in place; an override named by a field of a settings
        dataclass in ``args`` replaces that field. Checking ``overrides`` is the caller's part."""
        args = dict(self.args)
        for key, value in self.args.items():
            if _is_settings(value):
                mine = {f.name: overrides.pop(f.name) for f in dataclasses.fields(value) if f.name in overrides}
                args[key] = dataclasses.replace(value, **mine)
        return self.builder(**{**args, **overrides})


def _is_settings(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


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
        args: The numbers of this model (structural arguments of ``builder``); a dataclass value
            (:class:`~sknet.models.settings.SK`, ...) opens its fields as overrides.
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
    overrides = []
    for p, v in params.items():
        if _is_settings(args.get(p)):
            overrides += [f.name for f in dataclasses.fields(args[p])]
        elif v.default is not inspect.Parameter.empty or p in tunable:
            overrides.append(p)
    entry = ModelEntry(name, builder, args, family, tuple(input_size), num_classes, doc, tuple(overrides))
    _REGISTRY[name] = entry
    return entry


def register_models(builder: Callable[..., nn.Module], models: dict[str, tuple[dict, str]], **info) -> None:
    """:func:`register_model` for each ``name: (args, doc)`` of ``models``, all with ``builder`` and
    the same ``info`` (``family``, ``input_size``, ``num_classes``, ``tunable``)."""
    for name, (args, doc) in models.items():
        register_model(name, builder, args, doc=doc, **info)


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
