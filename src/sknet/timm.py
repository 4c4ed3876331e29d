"""sknet's models in timm: after ``import sknet.timm``, ``timm.create_model("sknet50")`` builds ours.

Importing this module (it needs timm; ``import sknet`` never imports it) registers every model
of :func:`sknet.list_models` whose name timm does not already have, under the same name, built
through timm's ``build_model_with_cfg``: ``features_only`` / ``out_indices`` (timm's
``FeatureGetterNet`` over our ``forward_intermediates``), ``pretrained=True`` with
``pretrained_cfg_overlay=dict(file=PATH)``, ``resolve_data_config`` and the rest are timm's own.
Names timm has (``resnext50_32x4d``, ``skresnet18``, ...) stay timm's models; build ours with
:func:`sknet.create_model`.

``pretrained=True`` without a file loads the model's published weights (``sknet50``, ``senet50``,
``senet101``: fetched by sknet into the library's cache, offline once cached; the demo's
``sknet_mini``: a file in the package; :mod:`sknet.models.sources`), handed to timm as the file;
timm then loads them as it loads any file (a new classifier for another ``num_classes``, the
first conv adapted to ``in_chans``). Each of them is
registered under its tags, ``"senet50.gluon_in1k"`` picking one; the cfgs name no url or hub id, so
the weights come only through sknet, and a model without published weights refuses
``pretrained=True`` without a file.

timm's ``torch.fx`` tools (its ``create_feature_extractor``, ``features_only`` with
``feature_cls="fx"``) keep each :class:`~sknet.layers.SKConv` whole, as timm keeps its own
layers that branch on their input: the graph then runs the fast path and computes what the
model computes. (Traced through, as plain ``torch.fx`` does, it records the reference equations.)

Each model's ``pretrained_cfg`` (choices in docs/deploy.md):

- ImageNet-size models (224x224): ImageNet mean / std, ``crop_pct`` 0.875 and bilinear resizing,
  our evaluation protocol (resize to 256 with torchvision's default interpolation, centre crop 224);
- CIFAR models (32x32): CIFAR-10 mean / std, ``crop_pct`` 1 (evaluated on the whole image);
- mini models (1x28x28): Fashion-MNIST mean / std, ``crop_pct`` 1.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
from timm.layers import register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, model_entrypoint, register_model
from torch import nn

from .data import NORMALIZATION
from .data.transforms import EVAL_CROP_RATIO
from .layers import SKConv
from .models import create_model, get_model_entry, list_models
from .models.sources import pretrained_file, pretrained_source, pretrained_sources
from .weights import convert_state_dict

# Per family: the data a model was trained on (mean / std) and how it is evaluated.
_DATA = {"cifar": ("cifar10", 1.0), "mini": ("fashion-mnist", 1.0)}  # others: ("imagenet", EVAL_CROP_RATIO)
_FIRST_CONV = {"light": "conv1.conv"}  # ShuffleNetV2's stem is a ConvBnAct; others: "conv1"
_OUTPUT_STRIDE = {"cifar": 4, "mini": 8}  # of the last stage; others: 32


def pretrained_cfg(name: str) -> dict:
    """timm's ``pretrained_cfg`` of sknet model ``name`` (no weights: ``url`` empty, no hub id)."""
    entry = get_model_entry(name)
    dataset, crop_pct = _DATA.get(entry.family, ("imagenet", EVAL_CROP_RATIO))
    mean, std = NORMALIZATION[dataset]
    stride = _OUTPUT_STRIDE.get(entry.family, 32)
    return dict(
        url="",
        num_classes=entry.num_classes,
        input_size=entry.input_size,
        pool_size=tuple(math.ceil(s / stride) for s in entry.input_size[1:]),  # forward_features' map
        interpolation="bilinear",
        crop_pct=crop_pct,
        mean=mean,
        std=std,
        first_conv=_FIRST_CONV.get(entry.family, "conv1"),
        classifier="fc",
        license="mit",  # the code's (a tagged cfg names its weights' licence)
        description=entry.doc,
        paper_name="Selective Kernel Networks",
        paper_ids="arXiv:1903.06586",
    )


def _filter_state_dict(state_dict: dict, model: nn.Module) -> dict:
    """timm's ``pretrained_filter_fn``: our files load as they are, timm's SK-ResNeXt and
    torchvision's ResNeXt files are renamed to our modules (:func:`sknet.weights.convert_state_dict`)."""
    return convert_state_dict(state_dict, model)


def _tagged_cfgs(name: str) -> dict:
    """``{"name.tag": cfg}`` for each published set of weights of ``name`` (the default marked ``*``
    for timm), or ``{name: cfg}``."""
    cfg = pretrained_cfg(name)
    sources = pretrained_sources(name)
    if not sources:
        return {name: cfg}
    marks = ["*"] + [""] * (len(sources) - 1)
    return {f"{name}.{s.tag}{mark}": {**cfg, "license": s.licence} for s, mark in zip(sources, marks)}


def _with_published_weights(name: str, kwargs: dict) -> dict:
    """``kwargs`` with the file of ``name``'s published weights (tag: timm's ``pretrained_cfg``) as
    the cfg overlay's ``file``, unless a source is given there already."""
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    if any(overlay.get(k) for k in ("file", "url", "hf_hub_id", "state_dict")):
        return kwargs
    tag = kwargs.get("pretrained_cfg") if isinstance(kwargs.get("pretrained_cfg"), str) else None
    overlay["file"] = str(pretrained_file(pretrained_source(name, tag), kwargs.get("cache_dir")))
    return {**kwargs, "pretrained_cfg_overlay": overlay}


def _build(name: str, *, device=None, dtype=None, global_pool: str | None = None, **kwargs) -> nn.Module:
    """sknet model ``name`` with the arguments timm's own models take besides ours: ``device`` and
    ``dtype`` (where and how its tensors are made) and ``global_pool`` (``"avg"`` or ``""``, none).

    Raises:
        TypeError: An argument the model does not take (as a Python function raises it; timm's
            tests rely on it).
    """
    entry = get_model_entry(name)
    unknown = sorted(set(kwargs) - set(entry.overrides) - {"num_classes"})
    if unknown:
        raise TypeError(f"{name}() got unexpected keyword argument(s) {unknown}; it takes {sorted(entry.overrides)}")
    if global_pool == "" and kwargs.get("num_classes", entry.num_classes) > 0:
        raise ValueError(f"global_pool='' (no pooling) goes with num_classes=0: {name} has a classifier to feed")
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = create_model(name, **kwargs)
        if global_pool is not None:
            model.reset_classifier(model.num_classes, global_pool)
    return model if dtype is None else model.to(dtype=dtype)


@functools.cache
def _levels(name: str) -> int:
    """How many feature levels model ``name`` has (``features_only`` returns them all by default)."""
    entry = get_model_entry(name)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return len(entry.build(num_classes=entry.num_classes).feature_info)


def _entrypoint(name: str):
    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        if pretrained and pretrained_sources(name):
            kwargs = _with_published_weights(name, kwargs)
        return build_model_with_cfg(
            functools.partial(_build, name),  # takes timm's num_classes / in_chans and the user's kwargs
            name,
            pretrained,
            pretrained_filter_fn=_filter_state_dict,
            feature_cfg=dict(feature_cls="getter", out_indices=_levels(name)),  # an int n: the last n, so all
            **kwargs,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = name  # timm registers a function under its name
    entrypoint.__doc__ = get_model_entry(name).doc
    return entrypoint


register_notrace_module(SKConv)  # a set: registering again on reload changes nothing

# Importing twice (or reloading) registers nothing twice: names timm knows, ours included, are skipped.
# timm's data and feature machinery is for images: the 1-D and 3-D models stay sknet's alone.
_new = [n for n in list_models() if not is_model(n) and len(get_model_entry(n).input_size) == 3]
default_cfgs = generate_default_cfgs({k: c for n in _new for k, c in _tagged_cfgs(n).items()})  # read by register_model
for _name in _new:
    register_model(_entrypoint(_name))

REGISTERED: tuple[str, ...] = tuple(
    n for n in list_models() if is_model(n) and model_entrypoint(n).__module__ == __name__
)
"""The sknet models timm builds: every image model whose name timm did not have when this was imported."""
