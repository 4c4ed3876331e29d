"""The Selective Kernel convolution: split -> fuse -> select (docs/paper.md, 'Selective kernel convolution').

Split: ``M`` branches ``conv(k_m, D_m, G_m) -> BN -> ReLU`` see the same input ``X`` and give ``U_m``.
Fuse: ``U = sum_m U_m``; ``s = GAP(U)``; ``z = ReLU(BN(W s))`` with ``d = max(C / r, L)`` rows.
Select: one linear map ``d -> M*C`` and a softmax over the branches, per channel, give ``a_m``;
``V = sum_m a_m * U_m``.

:meth:`SKConv.forward_reference` is these equations as written. :meth:`SKConv.forward_fast` (the
default) computes the same result with fewer passes over memory; how is
:mod:`sknet.layers.sk_fast`'s business, and each of its steps is tested against the reference.
``torch.fx``'s symbolic tracing (timm's and torchvision's feature extractors) records the reference:
the fast path chooses its steps by reading the tensors, which tracing does not have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import sk_fast
from .conv_bn_act import ConvBnAct, check_dims
from .functional import gap_or_pooled, per_channel
from .sk_fast import SK_IMPLS, parse_sk_impl

# The paper's SK unit: K3 and K5, the 5x5 computed as a 3x3 at dilation 2, each with G = 32 groups.
SK_BRANCHES = ((3, 1, 32), (3, 2, 32))
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
    return tuple(_parse_branch(b) for b in branches)


def _parse_branch(b) -> Branch:
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
    return br


class AttentionNorm(nn.BatchNorm1d):
    """BatchNorm over the fused descriptor ``z`` (B, d) that also works for a batch of one.

    With one image per batch the batch statistics of a pooled vector are undefined (PyTorch
    raises). Then we normalise with the running statistics and leave them untouched; this is our
    choice (docs/architecture.md). Larger batches behave exactly like ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):
            # Symbolic tracing knows no batch size: the graph calls this module, as it calls torch's own
            # BatchNorm, so the traced network keeps the rule above and follows train() / eval().
            return x.tracer.create_proxy("call_module", x.tracer.path_of_module(self), (x,), {})
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class SKAttention(nn.Module):
    """Fuse and select: the per-branch, per-channel attention ``a`` of an SK convolution, ``(B, M, C)``.

    The input is the fused map ``U`` (``(B, C, *spatial)``) or its pooled descriptor ``s``
    ``(B, C)`` (the fast path pools the branches without building ``U``). The output is the
    attention itself, so a forward hook on this module reads it.

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
        # The released networks compute all M*C logits, also for M = 2 (docs/paper.md, 'Selective kernel convolution').
        self.fc_select = nn.Linear(self.dim, num_paths * channels, bias=False)

    def descriptor(self, u: torch.Tensor) -> torch.Tensor:
        """The compact descriptor ``z = ReLU(BN(W GAP(U)))`` ``(B, d)``, from ``U`` or from ``s``."""
        s = gap_or_pooled(u, self.channels)  # (B, C)
        return self.act(self.bn(self.fc_reduce(s)))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        logits = self.fc_select(self.descriptor(u)).view(u.shape[0], self.num_paths, self.channels)
        return torch.softmax(logits, dim=1)  # (B, M, C), sums to 1 over M


class SKConv(nn.Module):
    """Selective Kernel convolution (docs/paper.md, 'Selective kernel convolution').

    With one branch this is a plain conv-BN-ReLU (ResNeXt's grouped 3x3) with no fuse/select
    parameters; with ``select="sum"`` it returns ``U`` (the paper's naive aggregation), also
    without fuse/select parameters.

    Args:
        in_channels: Input channels C'.
        out_channels: Output channels C.
        branches: ``(kernel, dilation, groups)`` per branch; groups ``None`` = depthwise.
            Default :data:`SK_BRANCHES`, the paper's K3 + K5.
        stride: Stride of every branch (the released networks put it on both).
        reduction: Reduction ratio r of the fuse step.
        min_dim: Minimum fuse width L.
        select: ``"attention"`` (SK) or ``"sum"``.
        act: ReLU at the end of every branch (the paper's branches have it; the lightweight models
            turn it off to keep ShuffleNetV2's linear depthwise step), or a module factory (e.g.
            ReLU6 for MobileNetV2), as in :class:`ConvBnAct`.
        dims: Spatial dimensions: 2 (images, the paper's), 1 (signals) or 3 (clips, volumes); K5 / K7
            stay dilated 3-tap / 3x3x3 kernels, and the maths is the same in each.
        split_input: Give each branch its own ``C' / M`` slice of the input channels instead of
            all of them (timm's SK-ResNets; not the paper's SK, whose branches all see ``X``).
        impl: How to compute it, never what: ``"fast"`` (default), ``"reference"``, or the fast
            path with parts switched off (:func:`~sknet.layers.sk_fast.parse_sk_impl`). The settings
            are plain attributes (``impl``, ``lean_training``, ``fold_eval_bn``, ``subsample_strided``)
            and show in ``repr``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        branches: Sequence = SK_BRANCHES,
        stride: int = 1,
        reduction: int = 16,
        min_dim: int = 32,
        select: str = "attention",
        act: bool | Callable[[], nn.Module] = True,
        dims: int = 2,
        split_input: bool = False,
        impl: str = "fast",
    ) -> None:
        super().__init__()
        if select not in SELECT_MODES:
            raise ValueError(f"select must be one of {SELECT_MODES}, got {select!r}")
        self.branches = parse_branches(branches)
        self.select = select
        self.out_channels = out_channels
        self.dims = check_dims(dims)
        self.split_input = split_input
        if split_input:
            if in_channels % len(self.branches):
                raise ValueError(
                    f"split_input: in_channels={in_channels} must divide evenly over {len(self.branches)} branches"
                )
            in_channels //= len(self.branches)
        self.paths = nn.ModuleList(self._path(in_channels, out_channels, br, stride, act) for br in self.branches)
        with_attention = len(self.paths) > 1 and select == "attention"
        self.attn = SKAttention(out_channels, len(self.paths), reduction, min_dim) if with_attention else None
        settings = parse_sk_impl(impl)
        self.impl: str = settings["impl"]
        self.lean_training: bool = settings["lean_training"]  # the fast path's parts (sknet.layers.sk_fast)
        self.fold_eval_bn: bool = settings["fold_eval_bn"]
        self.subsample_strided: bool = settings["subsample_strided"]

    def _path(self, in_channels: int, out_channels: int, br: Branch, stride: int, act) -> ConvBnAct:
        groups = out_channels if br.groups is None else br.groups
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"branch {tuple(br)}: groups={groups} must divide both in_channels={in_channels} "
                f"and out_channels={out_channels}; pick a groups value that divides them"
            )
        return ConvBnAct(in_channels, out_channels, br.kernel, stride, br.dilation, groups, act, self.dims)

    @property
    def num_paths(self) -> int:
        return len(self.paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "reference" or isinstance(x, torch.fx.Proxy):  # a Proxy: torch.fx is tracing
            return self.forward_reference(x)
        if self.impl == "fast":
            return self.forward_fast(x)
        raise ValueError(f"SKConv.impl must be one of {SK_IMPLS}, got {self.impl!r}")

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's equations as written; the fast path is tested against this."""
        feats = [path(xm) for path, xm in zip(self.paths, self.inputs(x))]  # M x (B, C, H, W): U_m
        if len(feats) == 1:
            return feats[0]
        u = sum(feats[1:], feats[0])  # (B, C, H, W): U
        if self.attn is None:
            return u
        a = per_channel(self.attn(u), self.dims + 2)  # (B, M, C, 1, ...)
        out = feats[0] * a[:, 0]
        for m in range(1, len(feats)):
            out = out + feats[m] * a[:, m]
        return out  # (B, C, H, W): V

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_reference`'s result with fewer passes over memory (:func:`sk_fast.forward`)."""
        return sk_fast.forward(self, x)

    def inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each branch's input: ``X`` itself, or its ``C' / M`` channel slice with ``split_input``."""
        if self.split_input:  # slices of a width known before the input (symbolic tracing needs it so)
            c = self.paths[0].conv.in_channels
            return [x[:, m * c : (m + 1) * c] for m in range(len(self.paths))]  # M x (B, C'/M, H, W)
        return [x] * len(self.paths)

    @property
    def impl_spec(self) -> str:
        """The settings as a spec string, :func:`parse_sk_impl`'s inverse (``"fast,nolean"``)."""
        return sk_fast.impl_spec(self)

    def extra_repr(self) -> str:
        extra = (f", dims={self.dims}" if self.dims != 2 else "") + (", split_input=True" if self.split_input else "")
        return f"branches={[tuple(b) for b in self.branches]}, select={self.select!r}{extra}, impl={self.impl_spec!r}"


@contextlib.contextmanager
def sk_impl(module: nn.Module, spec: str) -> Iterator[nn.Module]:
    """Run every :class:`SKConv` inside ``module`` with ``spec`` for the block, then restore
    their own settings, e.g. ``with sk_impl(model, "reference"): model(x)``."""
    settings = parse_sk_impl(spec)
    convs = [m for m in module.modules() if isinstance(m, SKConv)]
    saved = [{k: getattr(m, k) for k in settings} for m in convs]
    try:
        for m in convs:
            for k, v in settings.items():
                setattr(m, k, v)
        yield module
    finally:
        for m, old in zip(convs, saved):
            for k, v in old.items():
                setattr(m, k, v)
