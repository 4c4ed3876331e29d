"""Inference-time folding: ``fuse(model)`` returns an eval-only model with the same outputs.

What is folded (docs/performance.md measures what each step buys):

- every BatchNorm that directly follows a convolution into that convolution's weights and a bias:
  in :class:`ConvBnAct`, in an ``nn.Sequential`` (the projection shortcut, ShuffleNetV2's units),
  and the pairs a module declares in its ``fuse_pairs`` attribute (the ResNeXt stem, the bottleneck's
  ``conv1/bn1`` and ``conv3/bn3``); torchvision's ResNet / ResNeXt too (:data:`FOREIGN_PAIRS`), so a
  comparison can fuse both sides;
- the attention BN of every :class:`SKAttention` into ``fc_reduce`` (eval BN is affine);
- for two branches, the attention becomes a :class:`PairwiseAttention`: a softmax over
  ``(l_1, l_2)`` is ``sigmoid(l_1 - l_2)``, so the select map's two row blocks become one.

A BatchNorm is folded when it is one (:func:`~sknet.layers.is_plain_batchnorm`): a BatchNorm that
also applies an activation, such as timm's ``BatchNormAct2d``, is left alone.

The result uses only standard modules and tensor ops (no custom autograd Functions), so
``torch.onnx.export``, ``torch.jit.trace`` and ``torch.export`` take it. It is meant for
inference only: BatchNorms are gone, so training it would not train the paper's network.
"""

from __future__ import annotations

import copy

import torch
import torchvision
from torch import nn

from ..layers import CONVS, ConvBnAct, SKAttention, bn_affine, is_plain_batchnorm
from ..layers.functional import gap_or_pooled

__all__ = ["FOREIGN_PAIRS", "PairwiseAttention", "fold_bn_into_conv", "fold_bn_into_linear", "fuse"]

# Other libraries' modules whose forward applies ``bnX`` directly to ``convX``'s output. Ours say so
# themselves, in a ``fuse_pairs`` class attribute.
FOREIGN_PAIRS: dict[type, tuple[tuple[str, str], ...]] = {
    torchvision.models.resnet.ResNet: (("conv1", "bn1"),),
    torchvision.models.resnet.Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    torchvision.models.resnet.BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
}
_CONVS = tuple(CONVS.values())


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return type(conv) in _CONVS and is_plain_batchnorm(bn)


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
    scale, shift = bn_affine(bn)
    fused.weight.copy_(conv.weight * scale.view(-1, *[1] * (conv.weight.dim() - 1)))
    fused.bias.copy_(shift if conv.bias is None else conv.bias * scale + shift)
    return fused


@torch.no_grad()
def fold_bn_into_linear(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """A new linear layer computing ``bn(linear(x))`` in eval mode (it gains a bias)."""
    fused = nn.Linear(
        linear.in_features, linear.out_features, bias=True, device=linear.weight.device, dtype=linear.weight.dtype
    )
    scale, shift = bn_affine(bn)
    fused.weight.copy_(linear.weight * scale[:, None])
    fused.bias.copy_(shift if linear.bias is None else linear.bias * scale + shift)
    return fused


class PairwiseAttention(nn.Module):
    """A two-branch :class:`SKAttention` in inference form, returning the same ``(B, 2, C)``.

    A softmax over two logits is the sigmoid of their difference, so ``fc_select`` maps ``d -> C``
    with weight ``W_1 - W_2`` (the difference of the original's two row blocks), and the attention
    is ``(sigmoid(l_1 - l_2), 1 - sigmoid(l_1 - l_2))``.
    """

    @torch.no_grad()
    def __init__(self, attn: SKAttention) -> None:
        super().__init__()
        if attn.num_paths != 2:
            raise ValueError(f"PairwiseAttention needs two branches, got {attn.num_paths}")
        self.num_paths, self.channels, self.dim = 2, attn.channels, attn.dim
        self.fc_reduce, self.bn, self.act = attn.fc_reduce, attn.bn, attn.act
        w = attn.fc_select.weight  # (2C, d): rows [0, C) give l_1, rows [C, 2C) give l_2
        self.fc_select = nn.Linear(attn.dim, attn.channels, bias=False, device=w.device, dtype=w.dtype)
        self.fc_select.weight.copy_(w[: attn.channels] - w[attn.channels :])  # (C, d): l_1 - l_2

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        s = gap_or_pooled(u, self.channels)  # (B, C)
        a1 = torch.sigmoid(self.fc_select(self.act(self.bn(self.fc_reduce(s)))))  # (B, C)
        return torch.stack([a1, 1 - a1], dim=1)  # (B, 2, C)


def _fuse_attention(attn: SKAttention) -> nn.Module:
    if is_plain_batchnorm(attn.bn):
        attn.fc_reduce = fold_bn_into_linear(attn.fc_reduce, attn.bn)
        attn.bn = nn.Identity()
    return PairwiseAttention(attn) if attn.num_paths == 2 else attn


def _fuse_pairs(module: nn.Module, pairs: tuple[tuple[str, str], ...]) -> None:
    for conv_name, bn_name in pairs:
        conv, bn = getattr(module, conv_name), getattr(module, bn_name)
        if _foldable(conv, bn):
            setattr(module, conv_name, fold_bn_into_conv(conv, bn))
            setattr(module, bn_name, nn.Identity())


def _fuse_sequential(seq: nn.Sequential) -> None:
    for i in range(len(seq) - 1):
        if _foldable(seq[i], seq[i + 1]):
            seq[i] = fold_bn_into_conv(seq[i], seq[i + 1])
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
    if isinstance(model, SKAttention):
        return _fuse_attention(model)
    for module in list(model.modules()):
        if isinstance(module, ConvBnAct):
            _fuse_pairs(module, (("conv", "bn"),))
        elif isinstance(module, nn.Sequential):
            _fuse_sequential(module)
        _fuse_pairs(module, getattr(module, "fuse_pairs", FOREIGN_PAIRS.get(type(module), ())))
        for name, child in module.named_children():
            if isinstance(child, SKAttention):
                setattr(module, name, _fuse_attention(child))
    return model
