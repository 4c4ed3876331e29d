"""The Selective Kernel convolution: split -> fuse -> select (Li et al., CVPR 2019, Sec. 3.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .conv_bn_act import ConvBnAct

SELECT_MODES = ("attention", "sum")


class Branch(NamedTuple):
    """One path of an SK convolution: a ``kernel x kernel`` conv with ``dilation`` and ``groups``.

    ``groups=None`` means depthwise (groups = channels), used by the lightweight models.
    """

    kernel: int
    dilation: int = 1
    groups: int | None = 1


def parse_branches(branches: Sequence) -> tuple[Branch, ...]:
    """Turn ``[(3, 1, 32), (3, 2, 32)]`` (or dicts / Branch) into validated :class:`Branch` tuples."""
    if isinstance(branches, (str, bytes)) or not isinstance(branches, Sequence) or len(branches) == 0:
        raise ValueError(
            f"branches must be a non-empty list of (kernel, dilation, groups), got {branches!r}; "
            "e.g. branches=[(3, 1, 32), (3, 2, 32)] for SKNet's K3+K5"
        )
    out = []
    for b in branches:
        try:
            br = Branch(**b) if isinstance(b, dict) else Branch(*b)
        except TypeError as e:
            raise ValueError(f"bad branch {b!r}: expected (kernel, dilation, groups), e.g. (3, 2, 32)") from e
        if not (isinstance(br.kernel, int) and br.kernel >= 1 and br.kernel % 2 == 1):
            raise ValueError(f"bad branch {b!r}: kernel must be an odd positive integer")
        if not (isinstance(br.dilation, int) and br.dilation >= 1):
            raise ValueError(f"bad branch {b!r}: dilation must be a positive integer")
        if br.groups is not None and not (isinstance(br.groups, int) and br.groups >= 1):
            raise ValueError(f"bad branch {b!r}: groups must be a positive integer or None (depthwise)")
        out.append(br)
    return tuple(out)


class AttentionNorm(nn.BatchNorm1d):
    """BatchNorm over the fused descriptor ``z`` (B, d) that also works for a batch of one.

    With one image per batch the batch statistics of a pooled vector are undefined
    (PyTorch raises). Then we normalise with the running statistics and leave them
    untouched; this is our choice (docs/architecture.md). Larger batches behave exactly
    like ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class SKAttention(nn.Module):
    """Fuse and select: the per-branch, per-channel attention of an SK convolution.

    ``s = GAP(U)``, ``z = ReLU(BN(W s))`` with ``W`` of shape ``d x C``, then one linear
    map ``d -> M*C`` and a softmax across the ``M`` branches for every channel
    (paper Eq. 1-6). The output is the attention itself, shape ``(B, M, C)``,
    so a forward hook on this module reads it.

    Args:
        channels: Channels C of each branch.
        num_paths: Number of branches M.
        reduction: Reduction ratio r.
        min_dim: Minimum width L of ``z``; ``d = max(C / r, L)``.
    """

    def __init__(self, channels: int, num_paths: int, reduction: int = 16, min_dim: int = 32) -> None:
        super().__init__()
        if reduction < 1 or min_dim < 1:
            raise ValueError(f"reduction (r) and min_dim (L) must be >= 1, got r={reduction}, L={min_dim}")
        self.num_paths = num_paths
        self.channels = channels
        self.dim = max(channels // reduction, min_dim)
        self.fc_reduce = nn.Linear(channels, self.dim, bias=False)
        self.bn = AttentionNorm(self.dim)
        self.act = nn.ReLU(inplace=True)
        # The released network computes all M*C logits even for M = 2 (SPEC 1).
        self.fc_select = nn.Linear(self.dim, num_paths * channels, bias=False)

    def logits(self, u: torch.Tensor) -> torch.Tensor:
        """Select logits ``(B, M, C)`` from the fused feature map ``U`` ``(B, C, H, W)``."""
        s = u.mean((2, 3))  # (B, C)
        z = self.act(self.bn(self.fc_reduce(s)))  # (B, d)
        return self.fc_select(z).view(u.shape[0], self.num_paths, self.channels)  # (B, M, C)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(u), dim=1)  # (B, M, C), sums to 1 over M


class SKConv(nn.Module):
    """Selective Kernel convolution (paper Sec. 3.1, SPEC 1).

    Split: ``M`` branches ``conv(k_m, D_m, G_m, stride) -> BN -> ReLU`` on the same input.
    Fuse: ``U = sum_m U_m``, pooled and reduced to ``z``.
    Select: ``V = sum_m a_m * U_m`` with ``a`` a softmax over branches per channel.

    With one branch this is a plain conv-BN-ReLU (ResNeXt's grouped 3x3) with no
    fuse/select parameters; with ``select="sum"`` it returns ``U`` (the paper's naive
    aggregation), also without fuse/select parameters.

    Args:
        in_channels: Input channels C'.
        out_channels: Output channels C.
        branches: ``(kernel, dilation, groups)`` per branch; groups ``None`` = depthwise.
            SKNet default: ``[(3, 1, 32), (3, 2, 32)]`` (K3 and a dilated 3x3 for K5).
        stride: Stride of every branch (the released networks put it on both).
        reduction: Reduction ratio r of the fuse step.
        min_dim: Minimum fuse width L.
        select: ``"attention"`` (SK) or ``"sum"``.
        act: ReLU at the end of every branch (the paper's branches have it; the
            lightweight models turn it off to keep ShuffleNetV2's linear depthwise step).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        branches: Sequence = ((3, 1, 32), (3, 2, 32)),
        stride: int = 1,
        reduction: int = 16,
        min_dim: int = 32,
        select: str = "attention",
        act: bool = True,
    ) -> None:
        super().__init__()
        if select not in SELECT_MODES:
            raise ValueError(f"select must be one of {SELECT_MODES}, got {select!r}")
        self.branches = parse_branches(branches)
        self.select = select
        self.out_channels = out_channels
        paths = []
        for br in self.branches:
            groups = out_channels if br.groups is None else br.groups
            if in_channels % groups or out_channels % groups:
                raise ValueError(
                    f"branch {tuple(br)}: groups={groups} must divide both in_channels={in_channels} "
                    f"and out_channels={out_channels}; pick a groups value that divides them"
                )
            paths.append(ConvBnAct(in_channels, out_channels, br.kernel, stride, br.dilation, groups, act=act))
        self.paths = nn.ModuleList(paths)
        if len(paths) > 1 and select == "attention":
            self.attn = SKAttention(out_channels, len(paths), reduction, min_dim)
        else:
            self.attn = None

    @property
    def num_paths(self) -> int:
        return len(self.paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [path(x) for path in self.paths]  # M x (B, C, H, W)
        if len(feats) == 1:
            return feats[0]
        u = sum(feats[1:], feats[0])  # (B, C, H, W)
        if self.attn is None:
            return u
        a = self.attn(u)  # (B, M, C)
        out = feats[0] * a[:, 0, :, None, None]
        for m in range(1, len(feats)):
            out = out + feats[m] * a[:, m, :, None, None]
        return out  # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"branches={[tuple(b) for b in self.branches]}, select={self.select!r}"
