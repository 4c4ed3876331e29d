"""What the ResNeXt, ShuffleNetV2 and MobileNetV2 networks share: a stem, stages, a pooled linear head.

``feature_info`` names the feature levels in timm's convention for these families: the stem's
output first (stride 2 on ImageNet-size inputs), then each stage's (``stage_info``). On top of ``forward_features`` /
``forward_head`` this gives the methods timm's machinery calls on a model (``sknet.timm``
registers our models there): ``forward_intermediates``, ``prune_intermediate_layers``,
``get_classifier`` / ``reset_classifier``, ``set_grad_checkpointing``, ``group_matcher``,
with timm's semantics. Nothing here imports timm.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import GLOBAL_POOLS


def take_indices(num_features: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's ``feature_take_indices``: None takes all ``num_features``, an int n the last n,
    a sequence those (negative ones count from the end).

    Raises:
        ValueError: An index out of range.
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"cannot take the last {indices} of {num_features} feature levels")
        return list(range(num_features - indices, num_features))
    out = [i + num_features if i < 0 else i for i in indices]
    if not out or any(not 0 <= i < num_features for i in out):
        raise ValueError(f"feature level indices must be in 0..{num_features - 1} (or negative), got {list(indices)}")
    return out


class _RestoredBuffers:
    """Undoes the buffer updates of a checkpoint's recomputation: BN running statistics must move
    once per training step, as without checkpointing. Re-entrant: a unit is recomputed once per
    backward pass that reaches it, and SKConv's lean training step runs a nested one."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.saved: list[list[torch.Tensor]] = []

    def __enter__(self) -> None:
        self.saved.append([b.clone() for b in self.module.buffers()])

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for b, s in zip(self.module.buffers(), self.saved.pop()):
                b.copy_(s)


def _contexts(module: nn.Module) -> tuple:
    """``checkpoint``'s ``context_fn``: nothing around the forward, restored buffers around the recomputation."""
    return contextlib.nullcontext(), _RestoredBuffers(module)


class Backbone(nn.Module):
    """A stem, the stages ``stage_info`` names, an optional neck, then pool -> dropout -> ``fc``.

    Subclasses set ``stem_modules`` (run before the first stage, in forward order) and
    ``neck_modules`` (between the last stage and the pooling, e.g. ShuffleNetV2's ``conv5``) and, in
    ``__init__``, ``feature_info`` (the stem's level first, then the stages), ``num_features``,
    ``global_pool``, ``drop`` and ``fc``.
    """

    stem_modules: tuple[str, ...] = ()
    neck_modules: tuple[str, ...] = ()
    grad_checkpointing: bool = False

    @property
    def num_classes(self) -> int:
        return self.fc.out_features if isinstance(self.fc, nn.Linear) else 0

    @property
    def head_hidden_size(self) -> int:
        """timm's name for the width before ``fc``: the pooled features, no layer between."""
        return self.num_features

    @property
    def in_chans(self) -> int:
        return self._first_conv().in_channels

    @property
    def stage_info(self) -> list[dict]:
        """``feature_info`` without its first level, the stem's output: the stages (strides 4 to 32
        on ImageNet-size inputs), what :func:`sknet.features` indexes."""
        return self.feature_info[1:]

    def _first_conv(self) -> nn.modules.conv._ConvNd:
        return next(m for m in self.modules() if isinstance(m, nn.modules.conv._ConvNd))

    def body_modules(self) -> list[str]:
        """Stem and stages in forward order (registration order differs: ResNeXt's max pool
        is registered before ``bn1``)."""
        return list(self.stem_modules) + [
            d["module"] for d in self.feature_info if d["module"] not in self.stem_modules
        ]

    def _run(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Module ``name`` on ``x``; a stage unit by unit, each under a checkpoint, when
        checkpointing applies (training with autograd recording)."""
        module = getattr(self, name)
        stage = isinstance(module, nn.Sequential) and name not in self.stem_modules
        if not (stage and self.grad_checkpointing and self.training and torch.is_grad_enabled()):
            return module(x)
        for unit in module:  # one checkpoint per unit: only unit inputs stay in memory
            x = checkpoint(unit, x, use_reentrant=False, context_fn=functools.partial(_contexts, unit))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in (*self.body_modules(), *self.neck_modules):
            x = self._run(name, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify; ``pre_logits`` stops before ``fc`` (``num_features`` wide).
        Without pooling (``reset_classifier(0, "")``) the map passes through unpooled."""
        if not isinstance(self.global_pool, nn.Identity):
            x = torch.flatten(self.global_pool(x), 1)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's API: the outputs of the feature levels ``indices`` picks (into ``feature_info``: the
        stem's output, then the stages; see :func:`take_indices`) and, unless ``intermediates_only``,
        the final features (``forward_features``' output once every stage ran).

        Args:
            x: Input images (B, C, H, W).
            indices: Levels to return: None all, an int n the last n, a sequence those.
            norm: Ignored: no norm follows the stages.
            stop_early: Run nothing after the last level returned.
            output_fmt: Only ``"NCHW"``.
            intermediates_only: Return the stage outputs only.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take = take_indices(len(self.feature_info), indices)
        where = {d["module"]: i for i, d in enumerate(self.feature_info)}
        last = self.feature_info[max(take)]["module"]
        body = self.body_modules()
        intermediates = []
        for name in body:
            x = self._run(name, x)
            if where.get(name) in take:
                intermediates.append(x)
            if stop_early and name == last:
                break
        if intermediates_only:
            return intermediates
        if name == body[-1]:
            for n in self.neck_modules:
                x = self._run(n, x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """timm's API: drop what the levels ``indices`` picks do not need: later stem modules and
        stages, then the neck and (``prune_head``, or when stages went) the classifier and the
        pooling, as timm's ResNet does. Returns the absolute indices."""
        take = take_indices(len(self.feature_info), indices)
        last = max(take)
        body = self.body_modules()
        for name in body[body.index(self.feature_info[last]["module"]) + 1 :]:
            # an empty stage passes its input through, and so does the stem's pooling once removed
            setattr(self, name, nn.Identity() if name in self.stem_modules else nn.Sequential())
        cut = last < len(self.feature_info) - 1 or (bool(self.neck_modules) and (prune_norm or prune_head))
        if cut:  # the features now end at the last kept stage; the head was sized for the old ones
            for name in self.neck_modules:
                setattr(self, name, nn.Identity())
            self.num_features = self.feature_info[last]["num_chs"]
        if prune_head or cut:  # as timm's: no classifier and no pooling, the model returns the last map
            self.reset_classifier(0, "")
        return take

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new ``fc`` (N(0, 0.01), as at initialisation) for ``num_classes``; 0 removes it.
        ``global_pool``: ``"avg"`` averages, ``""`` removes the pooling (timm's convention: the model
        then returns the last map, for ``num_classes=0`` only), None keeps it as it is, except that
        a classifier brings the average pooling back (timm's ResNet defaults to ``"avg"``).

        Raises:
            ValueError: ``global_pool`` other than those, or a classifier on unpooled maps.
        """
        if global_pool not in (None, "avg", ""):
            raise ValueError(f"global_pool must be 'avg' (the only pooling) or '' (none), got {global_pool!r}")
        if num_classes > 0 and global_pool == "":
            raise ValueError(f"a classifier needs pooled features: reset_classifier({num_classes}, 'avg')")
        if global_pool == "":
            self.global_pool = nn.Identity()
        elif (global_pool == "avg" or num_classes > 0) and isinstance(self.global_pool, nn.Identity):
            self.global_pool = GLOBAL_POOLS[self._first_conv().weight.dim() - 2](1)
        if num_classes > 0:
            ref = next(self.parameters())
            self.fc = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            nn.init.normal_(self.fc.weight, std=0.01)
            nn.init.zeros_(self.fc.bias)
        else:
            self.fc = nn.Identity()
        self.fc.train(self.training)  # new modules take the model's mode (they are made in training mode)
        self.global_pool.train(self.training)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every unit in backward instead of keeping its activations (training with
        autograd only); gradients and BN statistics are those without it."""
        self.grad_checkpointing = enable

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (e.g. layer-wise learning-rate decay): the stem, then one
        group per stage (``coarse``) or per unit, the neck joining the last (timm's
        convention for a head conv); ``fc`` last."""
        stage = re.sub(r"\d+$", "", self.feature_info[-1]["module"])  # "layer" or "stage"
        stem = r"^(?:" + "|".join(self.stem_modules) + r")\."
        blocks = rf"^{stage}(\d+)" if coarse else rf"^{stage}(\d+)\.(\d+)"
        if not self.neck_modules:
            return dict(stem=stem, blocks=blocks)
        neck = r"^(?:" + "|".join(self.neck_modules) + r")\."
        return dict(stem=stem, blocks=[(blocks, None), (neck, (99999,))])  # 99999: timm's "join the previous group"
