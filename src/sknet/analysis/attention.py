"""Which SK units a model has, and what they attend to: paper naming and forward-hook recording.

- :func:`find_sk_units` names every attention-mode SK conv ``SK_<stage>_<unit>``
  (stages numbered like conv2..conv5, units from 1) and tells which branch has the
  larger receptive field;
- :class:`AttentionRecorder` records the select attention ``(B, M, C)`` of each unit
  with forward hooks on its :class:`~sknet.layers.SKAttention`, removed on exit, so
  the model is not edited.

"Larger" and "smaller" kernel (a choice the paper leaves open): the branches with the
largest and the smallest effective receptive field ``dilation * (kernel - 1) + 1``. With
three branches (K3+K5+K7) the difference is K7 minus K3; the middle branch is recorded too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import SKConv

# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class SKUnit:
    """One attention-mode SK convolution of a model.

    Attributes:
        name: ``SK_<stage>_<unit>`` (paper naming), e.g. ``SK_3_4``.
        path: Module path in the model, e.g. ``layer2.3.conv2``.
        module: The :class:`SKConv`.
        receptive_fields: Effective receptive field ``D * (k - 1) + 1`` of each branch.
    """

    name: str
    path: str
    module: SKConv
    receptive_fields: tuple[int, ...]

    @property
    def num_paths(self) -> int:
        return len(self.receptive_fields)

    @property
    def channels(self) -> int:
        return self.module.out_channels

    @property
    def large(self) -> int:
        """Index of the branch with the largest receptive field (the first one on ties)."""
        return max(range(self.num_paths), key=lambda m: (self.receptive_fields[m], -m))

    @property
    def small(self) -> int:
        """Index of the branch with the smallest receptive field (the first one on ties)."""
        return min(range(self.num_paths), key=lambda m: (self.receptive_fields[m], m))


def receptive_field(kernel: int, dilation: int) -> int:
    """Effective receptive field of one dilated convolution: ``D * (k - 1) + 1`` (K5 = 3x3 with D=2)."""
    return dilation * (kernel - 1) + 1


_STAGE_PATTERNS = (
    (re.compile(r"^layer(\d+)\.(\d+)(?:\.|$)"), 1),  # ResNet/ResNeXt: layer1 is conv2
    (re.compile(r"^stage(\d+)\.(\d+)(?:\.|$)"), 0),  # ShuffleNetV2: stage2 is already conv2
)


def _unit_name(path: str) -> tuple[str, str]:
    """``("SK_<stage>_<unit>", rest_of_path)``, or ``(path, "")`` for a layout we don't know."""
    for pattern, stage_offset in _STAGE_PATTERNS:
        m = pattern.match(path)
        if m:
            return f"SK_{int(m.group(1)) + stage_offset}_{int(m.group(2)) + 1}", path[m.end() :]
    return path, ""


def find_sk_units(model: nn.Module) -> list[SKUnit]:
    """Every SK conv with attention (``select="attention"``, two or more branches), in model order.

    Names follow the paper: ``layerI.J`` -> ``SK_<I+1>_<J+1>`` (``layer1`` is conv2),
    ShuffleNetV2's ``stageI.J`` -> ``SK_<I>_<J+1>``. A unit holding several SK convs
    (ShuffleNetV2's downsampling units) gets ``SK_2_1.branch1.0``-style names; a model
    with another layout keeps the module path as the name.
    """
    found = []
    for path, module in model.named_modules():
        if isinstance(module, SKConv) and module.attn is not None:
            rfs = tuple(receptive_field(b.kernel, b.dilation) for b in module.branches)
            found.append((path, module, rfs))
    names = [_unit_name(path) for path, _, _ in found]
    counts: dict[str, int] = {}
    for base, _ in names:
        counts[base] = counts.get(base, 0) + 1
    units = []
    for (path, module, rfs), (base, rest) in zip(found, names):
        name = base if counts[base] == 1 else f"{base}.{rest}" if rest else path
        units.append(SKUnit(name, path, module, rfs))
    return units


def select_units(model: nn.Module, names: Sequence[str] | None = None) -> list[SKUnit]:
    """The model's SK units, or those named in ``names`` (in that order).

    Raises:
        ValueError: The model has no SK attention, or a name is not one of its units.
    """
    units = find_sk_units(model)
    if not units:
        raise ValueError(
            "the model has no SK convolution with attention (select='attention', two or more branches); "
            "analyse an SKNet model, e.g. --model sknet50 or sknet_mini"
        )
    if names is None:
        return units
    by_name = {u.name: u for u in units}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown SK unit(s) {unknown}; this model has {[u.name for u in units]}")
    return [by_name[n] for n in names]


# --------------------------------------------------------------------------- recording


class AttentionRecorder:
    """Record the select attention of SK units with forward hooks; the hooks go on exit.

    Example::

        with AttentionRecorder(model) as rec:
            model(x)
        a = rec.attention["SK_3_4"]  # (B, M, C): per image, per branch, per channel

    Every forward call appends to the record (several batches give ``(N, M, C)``);
    :meth:`pop` returns the record and starts a new one. Tensors are detached and
    stay on the model's device.

    Args:
        model: Any model containing :class:`SKConv` modules.
        units: Unit names to record (default: all); see :func:`find_sk_units`.
    """

    def __init__(self, model: nn.Module, units: Sequence[str] | None = None) -> None:
        self.units = select_units(model, units)
        self._records: dict[str, list[torch.Tensor]] = {u.name: [] for u in self.units}
        self._handles: list = []

    def __enter__(self) -> AttentionRecorder:
        for unit in self.units:
            self._handles.append(unit.module.attn.register_forward_hook(self._hook(unit.name)))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks (done automatically when the ``with`` block ends)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            self._records[name].append(output.detach())  # (B, M, C)

        return hook

    @property
    def attention(self) -> dict[str, torch.Tensor]:
        """Unit name -> attention ``(N, M, C)`` of every image seen so far."""
        return {name: torch.cat(rec) for name, rec in self._records.items() if rec}

    def pop(self) -> dict[str, torch.Tensor]:
        """The record so far, then an empty one."""
        out = self.attention
        for rec in self._records.values():
            rec.clear()
        return out
