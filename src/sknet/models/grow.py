"""Growing an SK network from a pretrained ResNeXt: :func:`to_sk`, the same function before its first step.

SKNet-50 is ResNeXt-50 with every unit's grouped 3x3 replaced by an SK conv of the same width
(docs/paper.md, 'SKNet-50 and its baselines'). :func:`to_sk` keeps the pretrained 3x3 as branch 1
of each SK conv and adds the other branches and the attention so that the grown network computes
what the plain one does, in eval and in train mode, and then learns every new parameter.

The construction, in a unit ``1x1 -> SK -> 1x1 (conv3) -> BN (bn3) [-> SE] + shortcut`` with M branches:

1. **Uniform attention.** ``fc_select``'s weight is zero, so every logit is zero and the softmax
   gives ``a_m = 1/M`` for every image, branch and channel, whatever the descriptor ``z``.
2. **The kept branch, scaled by M.** Branch 1 is the pretrained conv and BN with the BN's scale
   and shift multiplied by M. Its BN then computes M times the plain one's output (the same
   statistics normalise it: the conv output is the same, in train mode its batch statistics and
   running-statistics updates are too), and ReLU is positively homogeneous, ``ReLU(M t) =
   M ReLU(t)``, so ``U_1 = M U`` with ``U`` the plain 3x3's output.
3. **New branches, constant.** Their BN scale is 0 and shift ``c = NEW_BRANCH_SHIFT > 0``, so
   ``U_m = ReLU(c) = c`` everywhere (the conv's output is multiplied by 0).
4. **The offset, absorbed.** Then ``V = (1/M) M U + (M-1)/M c = U + delta`` with ``delta =
   (M-1) c / M`` in every channel. ``conv3`` is a bias-free 1x1 conv, so ``conv3(V) = conv3(U) +
   o`` with ``o = delta * W3 1`` (the row sums of its weight), a per-channel constant, and bn3
   removes it: in train mode its batch mean is shifted by ``o`` as well; in eval mode its
   ``running_mean`` is shifted by ``o`` here. A train-mode step keeps that true, as the running
   mean is updated with the shifted batch mean: ``(1-p)(mu + o) + p(mean + o) = [(1-p) mu + p
   mean] + o``. What follows bn3 (SE, the shortcut, the rest of the network) sees what it saw.

Why ``c > 0`` and not 0: with shift 0 a new branch outputs ``ReLU(0) = 0``, whose derivative is
0 (PyTorch's), so its BN and conv would never get a gradient. With ``c > 0``, ReLU passes
gradient, and in the first step (in train mode) these get one:

- each new branch's BN scale (``dL/dgamma_m = 1/M sum dL/dV * its normalised conv output``);
- ``fc_select`` (``dL/da_m`` differs between the kept branch, ``M U``, and a new one, ``c``).

And from the second step on, when the first has made the BN scales and ``fc_select`` non-zero:

- the new convs (their gradient passes through their BN scale);
- ``fc_reduce`` and the attention's BN (their gradient passes through ``fc_select``);
- the new BN shifts. In step 1 their gradient is zero: a shift adds a constant per channel to
  ``V``, which the train-mode bn3 removes. Once the attention differs between images, or a branch's
  ReLU clips, the shift's effect varies and bn3 no longer removes it.

tests/test_grow.py checks each of these claims, and that shift 0 leaves the new branches dead.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..layers import parse_branches
from ..record import ModelRecord
from ..weights import load_pretrained, read_record
from .factory import create_model
from .registry import ModelEntry, get_model_entry, list_models
from .resnext import Bottleneck, resnext
from .settings import SK

# The new branches' output, c > 0 (module docstring); any positive value is exact. 1 is the size
# of a BN output, so the new branches start comparable to the kept one while their scale grows.
NEW_BRANCH_SHIFT = 1.0

# The plain 3x3 (conv2.conv / conv2.bn of a unit) becomes branch 1 of the SK conv (conv2.paths.0).
_KEPT = re.compile(r"^(layer\d+\.\d+\.conv2)\.(conv|bn)\.")
_NEW = re.compile(r"^layer\d+\.\d+\.conv2\.(paths\.[1-9]\d*|attn)\.")


def to_sk(
    model: nn.Module,
    *,
    branches: Sequence | None = None,
    reduction: int | None = None,
    min_dim: int | None = None,
    sk_impl: str | None = None,
) -> nn.Module:
    """The SK network grown from a plain ResNeXt-family ``model``: same output before its first step.

    ``model`` is a plain model built by :func:`sknet.create_model` / :func:`sknet.load_model`
    (``resnext50_32x4d`` with torchvision's or timm's weights loaded, the mini models, the 1-D and
    3-D ones). The result is its registered SK twin, the model the same create function builds
    from the same numbers with ``unit=SK(...)`` (:func:`sk_twins`: ``resnext50_32x4d`` ->
    ``sknet50``), built by ``create_model`` with ``model``'s overrides and class count, so it
    saves, reloads and exports like any other; ``model`` is left unchanged. The construction and
    its proof are the module docstring's.

    Args:
        model: The plain network.
        branches: The SK branches ``(kernel, dilation, groups)``; the first must be the plain 3x3,
            ``(3, 1, G)``, and at least one more is needed. Default: the twin's branches with
            ``model``'s G in each (SKNet-50's K3 + K5 for ResNeXt-50). A ResNet (G = 1) thus
            gets ungrouped new branches; ``[(3, 1, 1), (3, 2, 32)]`` gives it grouped ones.
        reduction: The attention's r; default the twin's.
        min_dim: The attention's L; default the twin's.
        sk_impl: How the SK convs compute (:class:`~sknet.layers.SKConv`'s ``impl``); default the twin's.

    Raises:
        ValueError: ``model`` was not built by ``create_model``; it is not a plain model of the
            ResNeXt family (SENet, MobileNetV2, ShuffleNetV2 and timm's basic-block ResNets are
            not: the construction needs ReLU branches followed by a bias-free 1x1 conv and a
            BN); no SK model is registered with its numbers (the message says how to register
            one); or ``branches`` does not start with the plain 3x3.
    """
    record = ModelRecord.from_model(model)
    twin = get_model_entry(sk_twin(record.model_name))
    groups = {**get_model_entry(record.model_name).args, **record.overrides}["groups"]
    settings = _sk_overrides(twin.args["unit"], groups, branches, reduction=reduction, min_dim=min_dim)
    if sk_impl is not None:
        settings["sk_impl"] = sk_impl
    grown = create_model(twin.name, num_classes=record.num_classes, **record.overrides, **settings)
    _copy_weights(model, grown)
    for unit in grown.modules():
        if isinstance(unit, Bottleneck):
            _grow_unit(unit)
    cfg = getattr(model, "pretrained_cfg", {})
    grown.pretrained_cfg.update({k: cfg[k] for k in ("input_size", "mean", "std", "classes") if cfg.get(k)})
    device = next(model.parameters()).device
    return grown.to(device).train(model.training)


def sk_twins() -> dict[str, str]:
    """Every registered plain ResNeXt-family model that :func:`to_sk` grows, with the SK model it
    grows into: the one built by the same create function from the same numbers, ``unit=SK(...)``."""
    entries = [get_model_entry(name) for name in list_models()]
    family = [e for e in entries if e.builder is resnext]
    return {
        plain.name: sk.name
        for plain in family
        if plain.args.get("unit") is None
        for sk in family
        if isinstance(sk.args.get("unit"), SK) and _numbers(sk) == _numbers(plain)
    }


def sk_twin(name: str) -> str:
    """The SK model :func:`to_sk` grows the plain model ``name`` into (:func:`sk_twins`)."""
    twins = sk_twins()
    if name in twins:
        return twins[name]
    entry = get_model_entry(name)
    if entry.builder is not resnext or entry.args.get("unit") is not None:
        raise ValueError(
            f"to_sk grows the plain models of the ResNeXt family, not {name!r}: it needs ReLU branches followed "
            f"by a bias-free 1x1 conv and a BatchNorm (docs/architecture.md). Plain models it grows: {twins}"
        )
    raise ValueError(
        f"no SK model is registered with {name!r}'s numbers, so to_sk cannot record what it grows (plain models "
        f"it grows: {twins}). Register one, e.g. sknet.register_model('sk_{name}', sknet.models.resnext.resnext, "
        f"dict(sknet.get_model_entry({name!r}).args, unit=sknet.models.settings.SK()), family={entry.family!r}, "
        f"input_size={entry.input_size}, num_classes={entry.num_classes}), and to_sk finds it"
    )


def _numbers(entry: ModelEntry) -> dict:
    return {k: v for k, v in entry.args.items() if k != "unit"}


def _sk_overrides(twin: SK, groups: int, branches: Sequence | None, **attention) -> dict:
    """``create_model``'s overrides of the twin's SK settings: those that differ from its own."""
    default = [(3, 1, groups), *((b.kernel, b.dilation, groups) for b in parse_branches(twin.branches)[1:])]
    chosen = parse_branches(default if branches is None else branches)
    if chosen[0] != (3, 1, groups) or len(chosen) < 2:
        raise ValueError(
            f"branches must start with the pretrained 3x3, (3, 1, {groups}), and add at least one new branch, "
            f"e.g. {[(3, 1, groups), (3, 2, groups)]}; got {[tuple(b) for b in chosen]}"
        )
    out = {} if chosen == parse_branches(twin.branches) else dict(branches=[list(b) for b in chosen])
    return out | {k: v for k, v in attention.items() if v is not None and v != getattr(twin, k)}


def _copy_weights(plain: nn.Module, grown: nn.Module) -> None:
    """Every tensor of ``plain`` into ``grown``, each unit's 3x3 as branch 1 of its SK conv."""
    sd = {_KEPT.sub(r"\1.paths.0.\2.", k): v for k, v in plain.state_dict().items()}
    result = grown.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not _NEW.match(k)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"the model's tensors are not those of {plain.pretrained_cfg['name']!r} (was it changed after it was "
            f"built, e.g. fused?): {len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:3]}"
        )


@torch.no_grad()
def _grow_unit(unit: Bottleneck) -> None:
    """Set one unit's new parameters as the module docstring proves exact."""
    sk, m = unit.conv2, unit.conv2.num_paths
    sk.paths[0].bn.weight.mul_(m)
    sk.paths[0].bn.bias.mul_(m)
    for path in sk.paths[1:]:
        path.bn.weight.zero_()
        path.bn.bias.fill_(NEW_BRANCH_SHIFT)
    sk.attn.fc_select.weight.zero_()
    offset = (m - 1) / m * NEW_BRANCH_SHIFT  # V = U + offset, in every channel
    unit.bn3.running_mean.add_(offset * unit.conv3.weight.flatten(1).sum(1))


# --------------------------------------------------------------------------- training's --init-from


def grown_model(source: str | Path, name: str, *, num_classes: int, **overrides) -> tuple[nn.Module, dict | None]:
    """``create_model(name, num_classes=num_classes, **overrides)``'s network, grown by :func:`to_sk`
    from a plain one; what ``sknet train --init-from`` starts from.

    Args:
        source: A weights file of the plain model (ours, which names its model; timm's or
            torchvision's, read as ``name``'s plain twin's), or the name of that plain model
            (its fresh initialisation: the construction without the pretraining).
        name: The SK model; ``source``'s model must grow into it (:func:`sk_twins`).
        num_classes: The classifier's size; a file's classifier of another size is replaced by
            a fresh one (:func:`sknet.weights.load_pretrained`).
        **overrides: ``name``'s overrides: the SK settings go to :func:`to_sk`, the others to the
            plain model.

    Returns:
        The model, and :func:`~sknet.weights.load_pretrained`'s account of the file (None for a name).
    """
    is_file = Path(source).is_file()
    plain_name = _plain_name(source, name, is_file)
    sk_settings = {f.name: overrides.pop(f.name) for f in dataclasses.fields(SK) if f.name in overrides}
    if sk_settings.pop("select", "attention") != "attention":
        raise ValueError("to_sk grows SK convs with attention; select='sum' has none to start uniform")
    plain = create_model(plain_name, num_classes=num_classes, **overrides)
    loaded = load_pretrained(plain, source, model_name=plain_name) if is_file else None
    return to_sk(plain, **sk_settings), loaded


def _plain_name(source: str | Path, name: str, is_file: bool) -> str:
    """The plain model ``source`` holds or names, checked to grow into ``name``."""
    plains = [plain for plain, sk in sk_twins().items() if sk == name]
    if is_file:
        record = read_record(source)
        plain = record.model_name if record else plains[0] if plains else None
    elif str(source) in list_models():
        plain = str(source)
    else:
        raise ValueError(f"init from {str(source)!r}: neither a weights file nor a registered model name")
    if plain not in plains:
        holds = f", not from {plain!r}" if plain else ""
        raise ValueError(
            f"init from {str(source)!r}: {name!r} grows from {plains or 'no registered plain model'}{holds} "
            "(sknet.models.grow.sk_twins lists the pairs)"
        )
    return plain
