"""How :class:`~sknet.layers.SKConv`'s fast path computes the paper's equations with fewer passes over memory.

Each step is a small function, tested against ``SKConv.forward_reference`` (tests/test_sk_fast.py);
docs/performance.md measures what each buys. The maths never changes, only how it is computed:

- **pooling without U**: ``GAP(sum_m U_m) = sum_m GAP(U_m)``, so ``U`` is never written to memory;
- **the select** (:func:`select`): for two branches one ``lerp``, ``V = U_2 + a_1 (U_1 - U_2)``
  (``a_2 = 1 - a_1``), done in place when autograd is not recording;
- **eval-mode BN folding** (``fold_eval_bn``, :func:`branch`): each branch's BatchNorm folded into
  its conv's weights on the fly, one pass less per branch;
- **the lean training step** (``lean_training``, :mod:`sknet.layers.sk_lean`): two branches in
  training keep only the two conv outputs for backward;
- **strided dilated branches on the CPU** (``subsample_strided``, :func:`branch_conv`): trained as a
  stride-1 conv on the subsampled input.

Every step keeps the input's memory format (channels_last stays channels_last). Which step runs is
chosen by what the modules can do, never by their exact type: any BatchNorm with running statistics
folds (``SyncBatchNorm`` included), and the lean step takes any BatchNorm that computes
``nn.BatchNorm``'s own arithmetic (:func:`sknet.layers.sk_lean.applies` says why a synchronised
one cannot). Under ``torch.compile`` the plain ops run and Inductor fuses them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import sk_lean
from .functional import bn_affine, gap, is_plain_batchnorm, memory_format, per_channel

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


def impl_spec(sk: nn.Module) -> str:
    """``sk``'s settings as a spec string, :func:`parse_sk_impl`'s inverse (``"fast,nolean"``)."""
    off = [token for token, attr in FAST_PARTS.items() if not getattr(sk, attr)]
    return ",".join([sk.impl, *off]) if sk.impl == "fast" else sk.impl


def forward(sk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``sk.forward_reference(x)``'s result, computed as the module docstring lists."""
    inputs = sk.inputs(x)
    if sk_lean.applies(sk):
        convs = [branch_conv(sk, path.conv, xm) for path, xm in zip(sk.paths, inputs)]  # pre-BN
        return sk_lean.lean_select(sk, *convs)
    feats = [branch(sk, path, xm) for path, xm in zip(sk.paths, inputs)]  # M x (B, C, H, W)
    if len(feats) == 1:
        return feats[0]
    if sk.attn is None:
        return sum(feats[1:], feats[0])
    s = gap(feats[0])
    for f in feats[1:]:
        s = s + gap(f)  # (B, C) = GAP(U)
    # Under autocast the attention comes out in float32 (softmax), the branches in bf16/fp16:
    # select in theirs. The hook on attn still sees (B, M, C).
    return select(feats, per_channel(sk.attn(s).to(feats[0].dtype), feats[0].dim()))


def select(feats: list[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    """``V = sum_m a[:, m] * U_m``; ``a`` is ``(B, M, C, 1, ...)``.

    In place when autograd is not recording (the branch outputs are fresh tensors). Recorded,
    autograd keeps the branch outputs and ``a`` (kept anyway), never the products.
    """
    grad = torch.is_grad_enabled() and (feats[0].requires_grad or a.requires_grad)
    if len(feats) == 2:  # a_1 U_1 + a_2 U_2 = U_2 + a_1 (U_1 - U_2), as a_2 = 1 - a_1
        return torch.lerp(feats[1], feats[0], a[:, 0]) if grad else feats[1].lerp_(feats[0], a[:, 0])
    out = feats[0] * a[:, 0] if grad else feats[0].mul_(a[:, 0])
    for m in range(1, len(feats)):
        out = torch.addcmul(out, feats[m], a[:, m]) if grad else out.addcmul_(feats[m], a[:, m])
    return out


def branch(sk: nn.Module, path: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One branch ``conv -> BN -> act``; in eval mode the BN is folded into the conv on the fly."""
    conv, bn = path.conv, path.bn
    if bn.training or not sk.fold_eval_bn or not is_plain_batchnorm(bn):
        # Training statistics, the ablation, or a BN sknet.fuse already folded (bn is Identity).
        return path.act(bn(branch_conv(sk, conv, x)))
    scale, shift = bn_affine(bn)
    weight = conv.weight * scale.view(-1, *[1] * (conv.weight.dim() - 1))  # (C_out, 1, 1, ...)
    bias = shift if conv.bias is None else shift + conv.bias * scale
    return path.act(branch_conv(sk, conv, x, weight, bias))


def branch_conv(
    sk: nn.Module,
    conv: nn.modules.conv._ConvNd,
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``conv(x)``, with ``weight`` / ``bias`` in place of the conv's own when given.

    Training on the CPU, a strided conv that reads only every ``s``-th pixel runs as the dense
    conv on those pixels (:func:`dense_geometry`): oneDNN's backward of the strided dilated conv
    is slower than that of the dense one (docs/performance.md). Inference keeps the conv as
    written (its forward alone is a little faster so), and so does CUDA, where it is unmeasured.
    """
    weight = conv.weight if weight is None else weight
    bias = conv.bias if bias is None else bias
    stride, padding, dilation = conv.stride, conv.padding, conv.dilation
    trains_on_cpu = x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    dense = dense_geometry(conv) if sk.subsample_strided and trains_on_cpu else None
    if dense is not None:
        x = _Subsample.apply(x, stride)
        stride, padding, dilation = dense
    conv_nd = getattr(F, f"conv{x.dim() - 2}d")  # looked up per call: tests record the calls
    return conv_nd(x, weight, bias, stride, padding, dilation, conv.groups)


def dense_geometry(conv: nn.modules.conv._ConvNd) -> tuple[tuple[int, ...], ...] | None:
    """``(stride, padding, dilation)`` of the stride-1 conv on ``x[:, :, ::s, ::s]`` equal to ``conv``, or None.

    A conv with stride ``s`` reads input index ``s*i - p + d*k``. When its dilation ``d`` and
    padding ``p`` are multiples of ``s`` that is ``s * (i - p/s + (d/s) k)``: every ``s``-th row
    and column only, so it is exactly a stride-1 conv with dilation ``d/s`` and padding ``p/s`` on
    the subsampled input, with the same sums and output size. SKNet's K5 branch in the first unit
    of stages 2-4 (3x3, dilation 2, padding 2, stride 2) becomes a plain 3x3 conv.
    """
    s, p, d = conv.stride, conv.padding, conv.dilation
    if conv.padding_mode != "zeros" or isinstance(p, str) or all(si == 1 for si in s):
        return None
    if any(di % si or pi % si for si, pi, di in zip(s, p, d)):
        return None
    return (1,) * len(s), tuple(pi // si for si, pi in zip(s, p)), tuple(di // si for si, di in zip(s, d))


class _Subsample(torch.autograd.Function):
    """``x[:, :, ::s_h, ::s_w]`` as a new tensor in ``x``'s layout, whose gradient keeps it too.

    Plain slicing does the same maths, but its backward scatters into a zero tensor in NCHW order
    whatever ``x``'s layout; added to the other branch's channels_last input gradient, that would
    turn the gradient of the whole unit below NCHW (slower ReLU and residual backward in every stage).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
        ctx.layout = memory_format(x)
        ctx.shape, ctx.index = x.shape, (slice(None), slice(None), *(slice(None, None, s) for s in stride))
        return x[ctx.index].contiguous(memory_format=ctx.layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_x = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout).zero_()
        grad_x[ctx.index] = grad
        return grad_x, None
