"""The Selective Kernel convolution: split -> fuse -> select (Li et al., CVPR 2019, Sec. 3.1).

Two implementations of the same maths live here (docs/performance.md measures them):

- ``"reference"``: the paper's equations written out: ``U = sum_m U_m``, ``s = GAP(U)``,
  ``V = sum_m a_m * U_m``. Readable, and what the fast path is tested against.
- ``"fast"`` (the default): no ``U`` is built (``GAP(U) = sum_m GAP(U_m)``); for two
  branches the select is one ``lerp`` (``V = U_2 + a_1 (U_1 - U_2)``, since ``a_2 = 1 - a_1``),
  done in place when no gradient is needed; in eval mode each branch's BatchNorm is
  folded into its convolution's weights on the fly (same maths, one pass less per branch).
  Every step keeps the input's memory format (channels_last stays channels_last), and
  autograd saves only the branch outputs and the attention, never products. Training with
  two branches in eager mode goes through :class:`_LeanSelect`, which keeps only the two conv
  outputs and recomputes BN + ReLU in backward (SKNet-50's peak training memory 1.21x ->
  1.09x ResNeXt-50's on the CPU). Under ``torch.compile`` the plain ops run (no graph breaks).
  Training on the CPU, a strided branch whose dilation is a multiple of its stride runs as a
  stride-1 conv on the subsampled input (:meth:`SKConv._conv`): the same sums, and oneDNN's
  backward of that conv is 2-4x faster than of the strided dilated one.

Which one a module runs is its own setting, ``SKConv(..., impl="fast")``, shown in its ``repr``
and passed through ``sknet.create_model(name, sk_impl=...)``. The spec is ``"fast"``,
``"reference"``, or ``"fast"`` with parts switched off for the ablation (``"nolean"``,
``"nofold"``, ``"nosubsample"``, comma-separated): :func:`parse_sk_impl`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .conv_bn_act import BATCH_NORMS, ConvBnAct, check_dims

_BATCH_NORMS = tuple(BATCH_NORMS.values())

# The paper's SK unit: K3 and K5, the 5x5 computed as a 3x3 at dilation 2, each with G = 32 groups.
SK_BRANCHES = ((3, 1, 32), (3, 2, 32))
SELECT_MODES = ("attention", "sum")
SK_IMPLS = ("reference", "fast")
# Parts of the fast path the ablation can switch off: spec token -> SKConv attribute.
FAST_PARTS = {"nolean": "lean_training", "nofold": "fold_eval_bn", "nosubsample": "subsample_strided"}


def parse_sk_impl(spec: str) -> dict[str, str | bool]:
    """``"fast"`` / ``"reference"`` / ``"nolean,nofold"`` -> the settings of an :class:`SKConv`.

    Returns ``impl`` (``"fast"`` or ``"reference"``) and the three fast-path parts
    (``lean_training``, ``fold_eval_bn``, ``subsample_strided``); a ``no...`` token
    switches its part off (and implies ``"fast"``).
    """
    if not isinstance(spec, str):
        raise ValueError(f"sk_impl must be a string such as 'fast' or 'reference', got {spec!r}")
    settings: dict[str, str | bool] = dict(impl="fast", **{attr: True for attr in FAST_PARTS.values()})
    tokens = [t.strip() for t in spec.split(",") if t.strip()] or ["fast"]
    for token in tokens:
        if token in SK_IMPLS:
            settings["impl"] = token
        elif token in FAST_PARTS:
            settings[FAST_PARTS[token]] = False
        else:
            raise ValueError(f"unknown SK option {token!r} in sk_impl={spec!r}; use one of {(*SK_IMPLS, *FAST_PARTS)}")
    if settings["impl"] == "reference" and len(tokens) > 1:
        raise ValueError(f"{spec!r}: the fast-path options {tuple(FAST_PARTS)} do not apply to 'reference'")
    return settings


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


def gap(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling over every spatial dimension: ``(B, C, ...)`` -> ``(B, C)``."""
    return x.mean(tuple(range(2, x.dim())))


def per_channel(a: torch.Tensor, ndim: int) -> torch.Tensor:
    """Per-channel weights ``(B, [M,] C)`` shaped to multiply maps of ``ndim`` dimensions ``(B, C, ...)``."""
    return a[(..., *[None] * (ndim - 2))]


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """``x``'s layout: channels_last (2-D), channels_last_3d (3-D) or the contiguous one."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


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

    The input is either the fused map ``U`` ``(B, C, H, W)`` (or ``(B, C, L)``, ``(B, C, T, H, W)``)
    or its pooled descriptor ``s`` ``(B, C)`` (the fast path pools the branches without building ``U``).

    :func:`sknet.fuse` turns a two-branch attention into its inference form:
    the BN folded into ``fc_reduce`` (which gains a bias) and ``fc_select`` reduced to the
    difference of its two row blocks (``pairwise``), since a softmax over two logits is a
    sigmoid of their difference. It still returns ``(B, 2, C)``.

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
        self.pairwise = False  # set by sknet.fuse: fc_select gives l_1 - l_2 only (M = 2)

    def logits(self, u: torch.Tensor) -> torch.Tensor:
        """Select logits ``(B, M, C)`` from ``U`` ``(B, C, H, W)`` or its pooled ``s`` ``(B, C)``."""
        s = gap(u) if u.dim() > 2 else u  # (B, C)
        z = self.act(self.bn(self.fc_reduce(s)))  # (B, d)
        if self.pairwise:
            d = self.fc_select(z)  # (B, C): l_1 - l_2
            return torch.stack([d, torch.zeros_like(d)], dim=1)  # (B, 2, C), same softmax
        return self.fc_select(z).view(s.shape[0], self.num_paths, self.channels)  # (B, M, C)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.pairwise:
            z = self.act(self.bn(self.fc_reduce(gap(u) if u.dim() > 2 else u)))  # (B, d)
            a1 = torch.sigmoid(self.fc_select(z))  # (B, C); softmax of (l_1, l_2) = sigmoid(l_1 - l_2)
            return torch.stack([a1, 1 - a1], dim=1)  # (B, 2, C)
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
            lightweight models turn it off to keep ShuffleNetV2's linear depthwise step), or a
            module factory (e.g. ReLU6 for MobileNetV2), as in :class:`ConvBnAct`.
        dims: Spatial dimensions: 2 (images, the paper's), 1 (signals) or 3 (clips, volumes); K5 / K7
            stay dilated 3-tap / 3x3x3 kernels, and the maths is the same in each.
        split_input: Give each branch its own ``C' / M`` slice of the input channels instead of
            all of them (timm's SK-ResNets; not the paper's SK, whose branches all see ``X``).
        impl: How to compute it, never what: ``"fast"`` (default), ``"reference"``, or the
            fast path with parts switched off (:func:`parse_sk_impl`). The settings are
            plain attributes (``impl``, ``lean_training``, ``fold_eval_bn``,
            ``subsample_strided``) and show in ``repr``.
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
        paths = []
        for br in self.branches:
            groups = out_channels if br.groups is None else br.groups
            if in_channels % groups or out_channels % groups:
                raise ValueError(
                    f"branch {tuple(br)}: groups={groups} must divide both in_channels={in_channels} "
                    f"and out_channels={out_channels}; pick a groups value that divides them"
                )
            paths.append(ConvBnAct(in_channels, out_channels, br.kernel, stride, br.dilation, groups, act, dims))
        self.paths = nn.ModuleList(paths)
        if len(paths) > 1 and select == "attention":
            self.attn = SKAttention(out_channels, len(paths), reduction, min_dim)
        else:
            self.attn = None
        # impl: "fast" or "reference". The fast path's parts, each switchable for the ablation in
        # docs/performance.md: the memory-lean two-branch training step (lean_training, _LeanSelect),
        # each branch's BN folded into its conv in eval mode (fold_eval_bn), and a strided dilated
        # branch trained on the CPU as a stride-1 conv on the subsampled input (subsample_strided).
        self.impl: str
        self.lean_training: bool
        self.fold_eval_bn: bool
        self.subsample_strided: bool
        for key, value in parse_sk_impl(impl).items():
            setattr(self, key, value)

    @property
    def num_paths(self) -> int:
        return len(self.paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "fast":
            return self.forward_fast(x)
        if self.impl == "reference":
            return self.forward_reference(x)
        raise ValueError(f"SKConv.impl must be one of {SK_IMPLS}, got {self.impl!r}")

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's equations as written (Eq. 1-6); the fast path is tested against this."""
        feats = [path(xm) for path, xm in zip(self.paths, self._inputs(x))]  # M x (B, C, H, W)
        if len(feats) == 1:
            return feats[0]
        u = sum(feats[1:], feats[0])  # (B, C, H, W)
        if self.attn is None:
            return u
        a = self.attn(u)  # (B, M, C)
        a = per_channel(a, u.dim())  # (B, M, C, 1, ...)
        out = feats[0] * a[:, 0]
        for m in range(1, len(feats)):
            out = out + feats[m] * a[:, m]
        return out  # (B, C, H, W)

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Same result as :meth:`forward_reference` with fewer passes over memory (module docstring)."""
        inputs = self._inputs(x)
        if self._lean_training_applies(x):
            convs = [self._conv(path.conv, xm) for path, xm in zip(self.paths, inputs)]  # 2 x (B, C, H, W), pre-BN
            bn_params = [t for path in self.paths for t in (path.bn.weight, path.bn.bias)]
            return _LeanSelect.apply(self, *convs, *bn_params, *self.attn.parameters())
        feats = [self._branch(path, xm) for path, xm in zip(self.paths, inputs)]  # M x (B, C, H, W)
        if len(feats) == 1:
            return feats[0]
        if self.attn is None:
            return sum(feats[1:], feats[0])
        # GAP(sum_m U_m) = sum_m GAP(U_m): U itself is never written to memory.
        s = gap(feats[0])
        for f in feats[1:]:
            s = s + gap(f)  # (B, C)
        # (B, M, C, 1, 1); the hook on attn still sees (B, M, C). Under autocast the attention
        # comes out in float32 (softmax / sigmoid), the branches in bf16/fp16: select in theirs.
        a = per_channel(self.attn(s).to(feats[0].dtype), feats[0].dim())
        # In place (no new tensor) when autograd is not recording: the branch outputs are fresh.
        grad = torch.is_grad_enabled() and (feats[0].requires_grad or a.requires_grad)
        if len(feats) == 2:
            # a_1 U_1 + a_2 U_2 = U_2 + a_1 (U_1 - U_2) as a_2 = 1 - a_1: one pass, and lerp's
            # backward keeps U_1, U_2 and a_1 (saved anyway), not the products.
            if grad:
                return torch.lerp(feats[1], feats[0], a[:, 0])
            return feats[1].lerp_(feats[0], a[:, 0])
        if grad:
            out = feats[0] * a[:, 0]
            for m in range(1, len(feats)):
                out = torch.addcmul(out, feats[m], a[:, m])
            return out
        out = feats[0].mul_(a[:, 0])
        for m in range(1, len(feats)):
            out.addcmul_(feats[m], a[:, m])
        return out  # (B, C, H, W)

    def _inputs(self, x: torch.Tensor) -> list[torch.Tensor] | tuple[torch.Tensor, ...]:
        """Each branch's input: ``X`` itself, or its ``C' / M`` channel slice with ``split_input``."""
        if self.split_input:
            return torch.split(x, x.shape[1] // len(self.paths), dim=1)  # M x (B, C'/M, H, W)
        return [x] * len(self.paths)

    def _lean_training_applies(self, x: torch.Tensor) -> bool:
        """The memory-lean two-branch training step (:class:`_LeanSelect`) covers: training with
        autograd recording, eager mode without autocast, M = 2 attention, plain conv -> BN -> ReLU
        branches. Under autocast the plain path runs (its BN / lerp dtypes are autocast's)."""
        if not (self.training and self.lean_training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            return False
        if torch.is_autocast_enabled(x.device.type):
            return False
        if self.attn is None or len(self.paths) != 2:
            return False
        for path in self.paths:
            bn = path.bn
            if type(bn) not in _BATCH_NORMS or not bn.affine or bn.running_var is None or not bn.training:
                return False
            if not isinstance(path.act, nn.ReLU):
                return False
        return True

    def _branch(self, path: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One branch ``conv -> BN -> act``; in eval mode the BN is folded into the conv on the fly."""
        conv, bn = path.conv, path.bn
        if path.training or not self.fold_eval_bn or type(bn) not in _BATCH_NORMS or bn.running_var is None:
            # training statistics, the ablation, or already fused by sknet.fuse (bn is Identity)
            return path.act(bn(self._conv(conv, x)))
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C,)
        weight = conv.weight * scale.view(-1, *[1] * (conv.weight.dim() - 1))  # (C_out, 1, 1, ...)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        return path.act(self._conv(conv, x, weight, bias))

    def _conv(
        self,
        conv: nn.modules.conv._ConvNd,
        x: torch.Tensor,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``conv(x)``, with ``weight`` / ``bias`` in place of the conv's own when given.

        A strided conv whose dilation and padding are multiples of its stride ``s`` reads only
        every ``s``-th row and column of its input (input index ``s*i - p + d*k``), so it is
        exactly a stride-1 conv with dilation ``d/s`` and padding ``p/s`` on
        ``x[:, :, ::s, ::s]``: the same sums, and the same output size. SKNet's K5 branch in
        the first unit of stages 2-4 (3x3, dilation 2, padding 2, stride 2) becomes a plain
        3x3 conv on every other pixel. On the CPU, oneDNN's backward of the strided dilated
        conv is 2-4x slower than that (docs/performance.md), so training on the CPU takes the
        rewrite; its forward alone is a little faster as it is, and on CUDA it is unmeasured,
        so inference and CUDA keep the conv as written.
        """
        weight = conv.weight if weight is None else weight
        bias = conv.bias if bias is None else bias
        stride, dilation, padding = conv.stride, conv.dilation, conv.padding
        if (
            self.subsample_strided
            and x.device.type == "cpu"
            and torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad)
            and conv.padding_mode == "zeros"
            and not isinstance(padding, str)
            and any(s > 1 for s in stride)
            and all(d % s == 0 and p % s == 0 for s, d, p in zip(stride, dilation, padding))
        ):
            x = _Subsample.apply(x, stride)
            dilation = tuple(d // s for s, d in zip(stride, dilation))
            padding = tuple(p // s for s, p in zip(stride, padding))
            stride = (1,) * len(stride)
        conv_nd = getattr(F, f"conv{x.dim() - 2}d")  # looked up per call: tests record the calls
        return conv_nd(x, weight, bias, stride, padding, dilation, conv.groups)

    @property
    def impl_spec(self) -> str:
        """The settings as a spec string, :func:`parse_sk_impl`'s inverse (``"fast,nolean"``)."""
        off = [token for token, attr in FAST_PARTS.items() if not getattr(self, attr)]
        return ",".join([self.impl, *off]) if self.impl == "fast" else self.impl

    def extra_repr(self) -> str:
        extra = (f", dims={self.dims}" if self.dims != 2 else "") + (", split_input=True" if self.split_input else "")
        return f"branches={[tuple(b) for b in self.branches]}, select={self.select!r}{extra}, impl={self.impl_spec!r}"


class _Subsample(torch.autograd.Function):
    """``x[:, :, ::s_h, ::s_w]`` as a new tensor in ``x``'s layout, whose gradient keeps it too.

    Plain slicing would do the same maths, but its backward scatters into a zero tensor in
    NCHW order whatever ``x``'s layout; added to the other branch's channels_last input
    gradient, that turns the gradient of the whole unit below NCHW (measured: slower ReLU and
    residual backward in every stage, eating the gain of :meth:`SKConv._conv`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
        ctx.layout = memory_format(x)
        ctx.shape, ctx.index = x.shape, (slice(None), slice(None), *(slice(None, None, s) for s in stride))
        return x[ctx.index].contiguous(memory_format=ctx.layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_x = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout).zero_()
        grad_x[ctx.index] = grad
        return grad_x, None


def _bn_momentum(bn: nn.modules.batchnorm._BatchNorm) -> float:
    """The running-average factor ``nn.BatchNorm2d.forward`` uses for this step (and its step count)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    return factor


class _LeanSelect(torch.autograd.Function):
    """Two-branch ``BN -> ReLU -> fuse -> select`` in training, keeping only the conv outputs.

    Plain autograd keeps, per branch, the BN input and the ReLU output (4 feature maps for an
    SK conv against 2 for ResNeXt's grouped conv). This keeps the two BN inputs ``c_m`` and
    the per-channel statistics; the backward recomputes ``U_m = ReLU(BN(c_m))`` (cheap
    elementwise passes) and folds the pooling gradient into the branch gradients, so no
    full-size tensor is spent on it. The attention MLP runs inside, as a module call (its
    forward hooks fire), on a detached ``s``; its backward is a nested ``autograd.grad``.
    Used only in eager mode; under ``torch.compile`` the plain path runs and Inductor fuses it.
    """

    @staticmethod
    def forward(ctx, sk: SKConv, c1, c2, w1, b1, w2, b2, *attn_params):
        bns = [sk.paths[0].bn, sk.paths[1].bn]
        feats, stats = [], []
        for c, bn in zip((c1, c2), bns):
            y, mean, invstd = torch.native_batch_norm(
                c, bn.weight, bn.bias, bn.running_mean, bn.running_var, True, _bn_momentum(bn), bn.eps
            )
            feats.append(y.relu_())  # U_m, freed when forward returns
            stats += [mean, invstd]
        s = gap(feats[0]) + gap(feats[1])  # (B, C) = GAP(U)
        with torch.enable_grad():
            s_leaf = s.detach().requires_grad_(True)
            a = sk.attn(s_leaf)  # (B, 2, C)
        a1 = per_channel(a[:, 0].detach(), c1.dim())  # (B, C, 1, ...)
        out = feats[1].lerp_(feats[0], a1)  # U_2 + a_1 (U_1 - U_2)
        ctx.sk, ctx.s_leaf, ctx.a = sk, s_leaf, a
        ctx.save_for_backward(c1, c2, a1, *stats)
        return out

    @staticmethod
    def backward(ctx, grad):
        sk, s_leaf, a = ctx.sk, ctx.s_leaf, ctx.a
        c1, c2, a1, m1, i1, m2, i2 = ctx.saved_tensors
        bns = [sk.paths[0].bn, sk.paths[1].bn]
        feats = []
        for c, bn, mean, invstd in ((c1, bns[0], m1, i1), (c2, bns[1], m2, i2)):
            scale = bn.weight * invstd  # (C,)
            shift = bn.bias - mean * scale
            shape = (-1, *[1] * (c.dim() - 2))  # (C, 1, ...)
            u = torch.addcmul(shift.view(shape), c, scale.view(shape)).relu_()  # U_m again
            feats.append(u.to(c.dtype))  # autocast: BN statistics are fp32, the maps stay bf16/fp16
        # dL/da_1 = sum_hw grad * (U_1 - U_2)
        d = feats[0] - feats[1]
        grad_a = torch.zeros_like(a)
        grad_a[:, 0] = d.mul_(grad).sum(tuple(range(2, d.dim())))
        del d
        params = list(sk.attn.parameters())
        trainable = [p for p in params if p.requires_grad]
        ds, *g_trainable = torch.autograd.grad(a, [s_leaf, *trainable], grad_a, allow_unused=True)
        g_iter = iter(g_trainable)
        g_params = [next(g_iter) if p.requires_grad else None for p in params]
        ds = per_channel(ds / c1[0, 0].numel(), c1.dim())  # (B, C, 1, ...): the pooling's share of U_m
        out = [None]
        bn_grads = []
        for feat, weight, c, bn, mean, invstd in (
            (feats[0], a1, c1, bns[0], m1, i1),
            (feats[1], 1 - a1, c2, bns[1], m2, i2),
        ):
            g_feat = torch.addcmul(ds, grad, weight).to(c.dtype)  # dL/dU_m
            g_y = torch.ops.aten.threshold_backward(g_feat, feat, 0)  # through the ReLU
            del g_feat
            gc, gw, gb = torch.ops.aten.native_batch_norm_backward(
                g_y, c, bn.weight, bn.running_mean, bn.running_var, mean, invstd, True, bn.eps, [True, True, True]
            )
            out.append(gc)
            bn_grads += [gw, gb]
        return (*out, *bn_grads, *g_params)
