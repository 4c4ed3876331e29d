"""torch.hub entry points: one per registered sknet model, each
``fn(weights=None, num_classes=None, pretrained=False, **overrides)``.

    import torch
    torch.hub.list("OWNER/sknet")                      # every registered model
    print(torch.hub.help("OWNER/sknet", "sknet50"))    # what it is, its arguments
    model = torch.hub.load("OWNER/sknet", "sknet50", pretrained=True)   # the published ImageNet weights
    model = torch.hub.load("OWNER/sknet", "sknet_mini", pretrained=True)  # the demo's, shipped with sknet
    model = torch.hub.load("OWNER/sknet", "sknet50", weights="sknet50.safetensors", num_classes=10)
    model = torch.hub.load("path/to/a/clone", "sknet50", source="local")

Each entry point is ``sknet.create_model(name, num_classes=..., weights=..., pretrained=..., **overrides)``;
``pretrained`` is True (the model's default published weights) or a tag (``sknet models --pretrained``
lists them): timm's or torchvision's, fetched into that library's own cache the first time (timm's
need huggingface_hub), or sknet_mini's, trained by the demo and shipped with the package.

The package lives in ``src/`` (a src layout), and torch.hub neither installs it nor puts ``src/``
on ``sys.path``: it only imports this file with the repository root on the path. So ``src/`` is
added here, but only when ``sknet`` is not importable already: an installed sknet (``pip install``,
or editable in a development checkout) is used as it is, so one process never holds two copies of
the package (one already imported, one from the clone), and a user's own installation is not
shadowed by a downloaded clone. ``src/`` stays on ``sys.path`` afterwards, because sknet imports
some of its modules only when they are used.
"""

import importlib.util
import os
import sys
import textwrap

dependencies = ["torch", "torchvision", "safetensors", "numpy", "yaml", "tqdm", "matplotlib"]  # import names

_spec = importlib.util.find_spec("sknet")
if _spec is None or _spec.origin is None:  # not importable (or only a folder named sknet: a namespace package)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import sknet  # noqa: E402


def _entry_point(name):
    entry = sknet.get_model_entry(name)
    overrides = textwrap.fill(
        ", ".join(o for o in entry.overrides if o != "num_classes"), 80, subsequent_indent=12 * " "
    )
    size = "x".join(map(str, entry.input_size))
    tags = [s.tag for s in sknet.models.sources.pretrained_sources(name)]
    published = f"True or one of {tags} (True: {tags[0]})" if tags else "none are published for this model"

    def build(weights=None, num_classes=None, pretrained=False, **overrides):
        return sknet.create_model(name, num_classes=num_classes, weights=weights, pretrained=pretrained, **overrides)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"""{name}: {entry.doc or "a registered sknet model."}

    sknet.create_model({name!r}, ...): {size} inputs, {entry.num_classes} classes by default.

    Args:
        weights: None for randomly initialised weights, or the path of a weights file:
            one sknet wrote (sknet.save_weights, a training run's model.safetensors or
            checkpoint.pt), or timm's / torchvision's weights of the same network
            (.pt / .pth / .safetensors).
        num_classes: Classifier outputs (default {entry.num_classes}).
        pretrained: The model's published weights instead of a file: {published}
            (sknet models --pretrained; timm's and torchvision's are downloaded once into
            their library's cache, sknet_mini's ships with sknet).
        **overrides: Other arguments the model takes:
            {overrides or "none"}.
    """
    return build


for _name in sknet.list_models():
    globals()[_name] = _entry_point(_name)
del _name, _spec
