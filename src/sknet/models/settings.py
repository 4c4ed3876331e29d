"""The settings of a network's SE or SK modules: one dataclass each, shared by every family.

A registered model names its kind of unit by one argument, ``unit``: None (the plain network),
:class:`SE` or :class:`SK`, with this model's numbers. The registry opens the fields of that
dataclass as overrides, so ``create_model("sknet50", branches=...)`` replaces ``SK.branches``
and ``create_model("senet50", reduction=8)`` replaces ``SE.reduction``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..layers import SK_BRANCHES


@dataclass(frozen=True)
class SE:
    """Squeeze-and-excitation on every unit, with ratio r = ``reduction``."""

    reduction: int = 16


@dataclass(frozen=True)
class SK:
    """An SK conv in place of every 3x3 (or depthwise 3x3): its ``branches`` ``(kernel, dilation,
    groups)``, ``select`` (``"attention"`` or ``"sum"``), r = ``reduction``, L = ``min_dim``, and
    ``sk_impl``, how it is computed (:class:`~sknet.layers.SKConv`'s ``impl``)."""

    branches: Sequence = SK_BRANCHES
    select: str = "attention"
    reduction: int = 16
    min_dim: int = 32
    sk_impl: str = "fast"

    def conv_kwargs(self) -> dict:
        """These settings as :class:`~sknet.layers.SKConv`'s keyword arguments."""
        return dict(
            branches=self.branches,
            select=self.select,
            reduction=self.reduction,
            min_dim=self.min_dim,
            impl=self.sk_impl,
        )


def se_ratio_of(unit: SE | SK | None) -> int | None:
    """The SE ratio of a unit of this kind, or None where it has no SE."""
    return unit.reduction if isinstance(unit, SE) else None
