"""Inference-time folding: ``fuse(model)`` returns an eval-only model with the same outputs.

What is folded (docs/performance.md measures what each step buys):

- every BatchNorm that directly follows a convolution into that convolution's weights and a bias
  (``ConvBnAct``, the bottleneck's ``conv1/bn1`` and ``conv3/bn3``, the stem, the projection
  shortcut ``Sequential(conv, bn)``, ShuffleNetV2's ``Sequential`` units; torchvision's ResNet /
  ResNeXt too, so a comparison can fuse both sides);
- the attention BN of every :class:`SKAttention` into ``fc_reduce`` (eval BN is affine);
- for two branches, the select map's two row blocks into one: a softmax over ``(l_1, l_2)`` is
  ``sigmoid(l_1 - l_2)``, so ``fc_select`` becomes ``d -> C`` with weight ``W_1 - W_2``
  (:attr:`SKAttention.pairwise`); the attention module still returns ``(B, 2, C)`` for hooks.

The result uses only standard modules and tensor ops (no custom autograd Functions), so
``torch.onnx.export``, ``torch.jit.trace`` and ``torch.export`` take it. It is meant for
inference only: BatchNorms are gone, so training it would not train the paper's network.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import BATCH_NORMS, CONVS, AttentionNorm, ConvBnAct, SKAttention
from ..models.resnext import Bottleneck, ResNeXt

__all__ = ["fold_bn_into_conv", "fold_bn_into_linear", "fuse"]

# Modules whose forward applies ``bnX`` directly to ``convX``'s output (attribute pairs).
_NAMED_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    f"{ResNeXt.__module__}.ResNeXt": (("conv1", "bn1"),),
    f"{Bottleneck.__module__}.Bottleneck": (("conv1", "bn1"), ("conv3", "bn3")),
    "torchvision.models.resnet.ResNet": (("conv1", "bn1"),),
    "torchvision.models.resnet.Bottleneck": (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    "torchvision.models.resnet.BasicBlock": (("conv1", "bn1"), ("conv2", "bn2")),
}


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``y = scale * x + shift`` (per channel)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


_CONVS = tuple(CONVS.values())
_BATCH_NORMS = tuple(BATCH_NORMS.values())


def _foldable(bn: nn.Module, kinds: tuple[type, ...] = _BATCH_NORMS) -> bool:
    """Exactly a plain BN with running statistics (subclasses such as timm's BatchNormAct2d also
    apply an activation, so they are left alone)."""
    return type(bn) in kinds and bn.running_var is not None


@torch.no_grad()
def fold_bn_into_conv(conv: nn.modules.conv._ConvNd, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A new conv computing ``bn(conv(x))`` in eval mode (it gains a bias)."""
    fused = type(conv)(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    scale, shift = _bn_affine(bn)
    fused.weight.copy_(conv.weight * scale.view(-1, *[1] * (conv.weight.dim() - 1)))
    fused.bias.copy_(shift if conv.bias is None else conv.bias * scale + shift)
    return fused


@torch.no_grad()
def fold_bn_into_linear(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """A new linear layer computing ``bn(linear(x))`` in eval mode (it gains a bias)."""
    fused = nn.Linear(
        linear.in_features, linear.out_features, bias=True, device=linear.weight.device, dtype=linear.weight.dtype
    )
    scale, shift = _bn_affine(bn)
    fused.weight.copy_(linear.weight * scale[:, None])
    fused.bias.copy_(shift if linear.bias is None else linear.bias * scale + shift)
    return fused


@torch.no_grad()
def _fuse_attention(attn: SKAttention) -> None:
    if _foldable(attn.bn, (nn.BatchNorm1d, AttentionNorm)):
        attn.fc_reduce = fold_bn_into_linear(attn.fc_reduce, attn.bn)
        attn.bn = nn.Identity()
    if attn.num_paths == 2 and not attn.pairwise:
        w = attn.fc_select.weight  # (2C, d): rows [0, C) give l_1, rows [C, 2C) give l_2
        select = nn.Linear(attn.dim, attn.channels, bias=False, device=w.device, dtype=w.dtype)
        select.weight.copy_(w[: attn.channels] - w[attn.channels :])  # (C, d): l_1 - l_2
        attn.fc_select = select
        attn.pairwise = True


def _fuse_sequential(seq: nn.Sequential) -> None:
    for i in range(len(seq) - 1):
        conv, bn = seq[i], seq[i + 1]
        if type(conv) in _CONVS and _foldable(bn):
            seq[i] = fold_bn_into_conv(conv, bn)
            seq[i + 1] = nn.Identity()


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold BatchNorms and the two-branch select for inference; same outputs, in eval mode.

    Args:
        model: Any model; the parts listed in the module docstring are folded, the rest is kept.
        inplace: Modify ``model`` itself instead of a deep copy.

    Returns:
        The fused model, in eval mode.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"fuse expects a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        key = f"{type(module).__module__}.{type(module).__qualname__}"
        if isinstance(module, ConvBnAct):
            if type(module.conv) in _CONVS and _foldable(module.bn):
                module.conv = fold_bn_into_conv(module.conv, module.bn)
                module.bn = nn.Identity()
        elif isinstance(module, SKAttention):
            _fuse_attention(module)
        elif isinstance(module, nn.Sequential):
            _fuse_sequential(module)
        for conv_name, bn_name in _NAMED_PAIRS.get(key, ()):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if type(conv) in _CONVS and _foldable(bn):
                setattr(module, conv_name, fold_bn_into_conv(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return model
