"""Which model a file holds: the one record every file we write carries.

A :class:`ModelRecord` names the model (``model_name`` and the ``overrides`` it was built with,
its class count) and what goes with its weights (the input size, the normalisation, the class
names, where the weights come from and how well they did). It is written in one form: JSON,
one value per field, as strings where the file wants strings (:meth:`ModelRecord.to_metadata`:
safetensors metadata, ONNX ``metadata_props``) and as JSON values where it takes them
(:meth:`ModelRecord.to_dict`: a model folder's ``config.json``, a training checkpoint's
``meta``). :func:`record_of` reads it back from any of those files.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

FORMAT = "sknet"  # the metadata's "format": the mark of a file sknet wrote


@dataclass
class ModelRecord:
    """The record of a model's weights; :func:`sknet.load_model` rebuilds the model from it.

    Fields hold JSON values (lists, not tuples); a value that is not one is refused.
    """

    model_name: str
    overrides: dict = field(default_factory=dict)  # create_model(model_name, **overrides)
    num_classes: int | None = None
    input_size: list[int] = field(default_factory=list)  # (C, *spatial sizes)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name in ("model_name", "num_classes"):
                continue
            value = getattr(self, f.name)
            try:  # the form the files hold, so records compare equal whichever file they come from
                value = json.loads(json.dumps(f.default_factory() if value is None else value))
            except TypeError as e:
                raise ValueError(
                    f"the record's fields must be JSON values (numbers, strings, lists, dicts): {f.name}: {e}"
                ) from None
            setattr(self, f.name, value)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        model_name: str | None = None,
        overrides: dict | None = None,
        num_classes: int | None = None,
        input_size: tuple[int, ...] | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        classes: list[str] | None = None,
        provenance: dict | None = None,
        metrics: dict | None = None,
    ) -> ModelRecord:
        """The record of ``model``: the fields given, the others from ``model.pretrained_cfg``
        (what :func:`sknet.create_model` / :func:`sknet.load_model` recorded).

        The class count defaults to the classifier's own size (the model may have been given a
        new one since it was built, or none: 0), and the class names to those recorded only while
        they are as many. ``provenance`` and ``metrics`` are only what is given: the weights may
        have changed since the ones in ``pretrained_cfg`` were measured.

        Raises:
            ValueError: No model name (the model was not built by ``create_model``), or a
                field that is not a JSON value.
        """
        cfg = getattr(model, "pretrained_cfg", None) or {}
        model_name = model_name or cfg.get("name")
        if not model_name:
            raise ValueError("a model record needs model_name= (the model was not built by sknet.create_model)")
        if num_classes is None:
            num_classes = classifier_size(model)
        if not classes and len(cfg.get("classes") or ()) == num_classes:  # names of another classifier are stale
            classes = cfg.get("classes")
        return cls(
            model_name=model_name,
            overrides=cfg.get("overrides") if overrides is None else overrides,
            num_classes=num_classes,
            input_size=input_size or cfg.get("input_size"),
            mean=mean or cfg.get("mean"),
            std=std or cfg.get("std"),
            classes=classes,
            provenance=provenance,
            metrics=metrics,
        )

    def to_dict(self) -> dict:
        """The fields as JSON values."""
        return dataclasses.asdict(self)

    def to_metadata(self, prefix: str = "") -> dict[str, str]:
        """The record as strings, keys ``prefix + field``: ``"format": "sknet"``, the model name as
        it is, every other field as JSON."""
        values = {"format": FORMAT, **self.to_dict()}
        return {prefix + k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping, prefix: str = "") -> ModelRecord:
        """The record in ``metadata`` (:meth:`to_metadata`'s strings, or JSON values as in
        :meth:`to_dict`); other keys are ignored, missing fields take their defaults.

        Raises:
            ValueError: No ``model_name``.
        """
        values = {k[len(prefix) :]: v for k, v in metadata.items() if k.startswith(prefix)}
        if not isinstance(values.get("model_name"), str) or not values["model_name"]:
            raise ValueError(f"no model_name in the record {sorted(values)[:8]}")
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: _decode(k, values[k]) for k in names if k in values})


def _decode(name: str, value):
    if not isinstance(value, str) or name == "model_name":
        return value
    if name == "num_classes":  # "None" in files written before it was JSON
        return int(value) if value.isdigit() else None
    return json.loads(value)


def record_of(entries: Mapping, state_dict: Mapping[str, torch.Tensor] | None = None) -> ModelRecord | None:
    """The record in a file we wrote; None for a file that names no model (another library's weights).

    Args:
        entries: A safetensors file's metadata, a training checkpoint's entries beside its state
            dict (``meta``, or for a checkpoint without it its training ``config``), or a model
            folder's ``config.json``.
        state_dict: The file's tensors: the class count where the record has none.
    """
    if isinstance(entries.get("meta"), Mapping) and entries["meta"].get("model_name"):  # training checkpoint
        entries = entries["meta"]
    elif isinstance(entries.get("config"), Mapping) and isinstance(entries["config"].get("model"), str):
        # A checkpoint without "meta": its training config (a TrainConfig's ``model_overrides``, no class
        # count), or one written by hand as {"model", "overrides", "num_classes"}.
        config = entries["config"]
        overrides = config.get("model_overrides", config.get("overrides"))
        entries = {"model_name": config["model"], "overrides": overrides, "num_classes": config.get("num_classes")}
    if not isinstance(entries.get("model_name"), str) or not entries["model_name"]:
        return None
    try:
        record = ModelRecord.from_metadata(entries)
    except ValueError as e:  # json.JSONDecodeError included
        raise ValueError(
            f"the file names model {entries['model_name']!r} but its record is not one sknet wrote ({e}); "
            "load its weights into a model you build: create_model(name, weights=path)"
        ) from e
    if record.num_classes is None and state_dict is not None:
        record.num_classes = num_classes_of(state_dict)
    return record


def classifier_size(model: nn.Module) -> int | None:
    """The outputs of ``model``'s classifier as it is now: its ``num_classes`` (0 once
    ``reset_classifier(0)`` removed it), else the classifier in its state dict, else the count
    ``create_model`` recorded."""
    size = getattr(model, "num_classes", None)
    if isinstance(size, int):
        return size
    return num_classes_of(model.state_dict()) or (getattr(model, "pretrained_cfg", None) or {}).get("num_classes")


def num_classes_of(sd: Mapping[str, torch.Tensor]) -> int | None:
    """The classifier's output count in a state dict (``fc.weight``, torchvision MobileNetV2's
    ``classifier.1.weight``), or None."""
    fc = sd.get("fc.weight", sd.get("classifier.1.weight"))
    return fc.shape[0] if fc is not None and fc.dim() == 2 else None
