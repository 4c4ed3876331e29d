"""The memory-lean training step of a two-branch SK convolution: ``BN -> ReLU -> fuse -> select``
in one autograd node that keeps only the two conv outputs.

Plain autograd keeps, per branch, the BN input and the ReLU output: four feature maps for an SK
conv against two for ResNeXt's grouped conv. :class:`_LeanSelect` keeps the two BN inputs ``c_m``
and the per-channel batch statistics; its backward recomputes ``U_m = ReLU(BN(c_m))`` (cheap
elementwise passes) and folds the pooling's gradient into the branch gradients, so no full-size
tensor is spent on either. docs/performance.md measures the memory it saves.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .functional import bn_affine, gap, per_channel

_BatchNorm = nn.modules.batchnorm._BatchNorm


def applies(sk: nn.Module) -> bool:
    """Whether the fast path of the SK conv ``sk`` takes the lean step now: training with autograd
    recording, in eager mode (compiled, the plain ops run and Inductor fuses them), two branches with
    attention, each branch ending in ``BatchNorm -> ReLU``. Autocast is covered: the maps stay in
    autocast's dtype and the BN statistics in float32, as ``nn.BatchNorm`` keeps them.

    The BatchNorm must compute ``nn.BatchNorm``'s own arithmetic on this process's batch, which the
    lean step reproduces (:func:`_lean_can_normalise`). A synchronised BatchNorm (``--sync-bn``:
    ``nn.SyncBatchNorm``, our CPU one) normalises with the statistics of every process's batch and
    its backward all-reduces two sums over them; the lean backward does neither, so such a branch
    takes the plain fast path (same result, the plain path's memory), and a warning says so.
    """
    if not (sk.training and sk.lean_training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
        return False
    if sk.attn is None or len(sk.paths) != 2 or not all(isinstance(p.act, nn.ReLU) for p in sk.paths):
        return False
    bns = [path.bn for path in sk.paths]
    if all(_lean_can_normalise(bn) for bn in bns):
        return True
    for bn in bns:
        if isinstance(bn, _BatchNorm) and type(bn).forward is not _BatchNorm.forward:
            _say_lean_step_is_off(bn)
    return False


def _lean_can_normalise(bn: nn.Module) -> bool:
    """A training BatchNorm with affine parameters and running statistics it updates, whose forward is
    ``nn.BatchNorm``'s own: the arithmetic the lean step reproduces."""
    return (
        isinstance(bn, _BatchNorm)
        and type(bn).forward is _BatchNorm.forward
        and bn.training
        and bn.affine
        and bn.track_running_stats
        and bn.running_var is not None
    )


def _say_lean_step_is_off(bn: nn.Module) -> None:
    # Python's warning registry shows it once per BatchNorm class (under the default filter).
    warnings.warn(
        f"SKConv: the memory-lean training step does not cover {type(bn).__name__}, a BatchNorm with a forward "
        "of its own (a synchronised one normalises with, and back-propagates through, statistics of every "
        "process); these SK convolutions train on the plain fast path: the same results, more memory",
        stacklevel=2,
    )


def lean_select(sk: nn.Module, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """``V`` from the two branches' conv outputs ``c1``, ``c2`` (before their BatchNorms)."""
    bn1, bn2 = sk.paths[0].bn, sk.paths[1].bn
    # An autograd.Function returns gradients only for the tensors passed to it: the BN and attention
    # parameters go in as arguments so that their gradients reach them.
    return _LeanSelect.apply(sk, c1, c2, bn1.weight, bn1.bias, bn2.weight, bn2.bias, *sk.attn.parameters())


def _count_batch(bn: _BatchNorm) -> float:
    """Count one more training batch in ``bn.num_batches_tracked``, as ``nn.BatchNorm``'s forward does,
    and return the running-average factor that forward would use for it."""
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if bn.momentum is None:  # cumulative moving average
        return 1.0 / float(bn.num_batches_tracked) if bn.num_batches_tracked is not None else 0.0
    return bn.momentum


class _LeanSelect(torch.autograd.Function):
    """Two-branch ``BN -> ReLU -> fuse -> select`` in training, keeping only the conv outputs.

    The attention MLP runs inside as a module call (its forward hooks fire) on a detached ``s``;
    its backward is a nested ``autograd.grad``.
    """

    @staticmethod
    def forward(ctx, sk: nn.Module, c1, c2, w1, b1, w2, b2, *attn_params):
        feats, stats = [], []
        for c, bn, w, b in ((c1, sk.paths[0].bn, w1, b1), (c2, sk.paths[1].bn, w2, b2)):
            momentum = _count_batch(bn)
            y, mean, invstd = torch.native_batch_norm(c, w, b, bn.running_mean, bn.running_var, True, momentum, bn.eps)
            feats.append(y.relu_())  # U_m, freed when forward returns
            stats += [mean, invstd]
        s = gap(feats[0]) + gap(feats[1])  # (B, C) = GAP(U)
        with torch.enable_grad():
            s_leaf = s.detach().requires_grad_(True)
            a = sk.attn(s_leaf)  # (B, 2, C)
        a1 = per_channel(a[:, 0].detach().to(c1.dtype), c1.dim())  # (B, C, 1, ...), in the maps' dtype
        out = feats[1].lerp_(feats[0], a1)  # U_2 + a_1 (U_1 - U_2)
        ctx.sk, ctx.s_leaf, ctx.a = sk, s_leaf, a
        ctx.save_for_backward(c1, c2, a1, *stats)
        return out

    @staticmethod
    def backward(ctx, grad):
        sk, s_leaf, a = ctx.sk, ctx.s_leaf, ctx.a
        c1, c2, a1, m1, i1, m2, i2 = ctx.saved_tensors
        bns = (sk.paths[0].bn, sk.paths[1].bn)
        feats = [
            _recompute(c, bn, mean, invstd) for c, bn, mean, invstd in ((c1, bns[0], m1, i1), (c2, bns[1], m2, i2))
        ]
        ds, g_attn = _attention_backward(sk, s_leaf, a, feats, grad)
        ds = per_channel(ds / c1[0, 0].numel(), c1.dim())  # (B, C, 1, ...): the pooling's share of U_m
        out, bn_grads = [None], []
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
        return (*out, *bn_grads, *g_attn)


def _recompute(c: torch.Tensor, bn: _BatchNorm, mean: torch.Tensor, invstd: torch.Tensor) -> torch.Tensor:
    """``U_m = ReLU(BN(c_m))`` again, from the saved batch statistics, in ``c``'s dtype."""
    scale, shift = bn_affine(bn, mean, invstd)
    shape = (-1, *[1] * (c.dim() - 2))  # (C, 1, ...)
    return torch.addcmul(shift.view(shape), c, scale.view(shape)).relu_().to(c.dtype)


def _attention_backward(sk: nn.Module, s_leaf, a, feats, grad) -> tuple[torch.Tensor, list]:
    """``dL/ds`` and the attention parameters' gradients (None for frozen ones), from
    ``dL/da_1 = sum over positions of grad * (U_1 - U_2)`` (``a_2 = 1 - a_1`` is inside ``a``'s softmax)."""
    d = feats[0] - feats[1]
    grad_a = torch.zeros_like(a)
    grad_a[:, 0] = d.mul_(grad).sum(tuple(range(2, d.dim())))
    del d
    params = list(sk.attn.parameters())
    trainable = [p for p in params if p.requires_grad]
    ds, *g_trainable = torch.autograd.grad(a, [s_leaf, *trainable], grad_a, allow_unused=True)
    g_iter = iter(g_trainable)
    return ds, [next(g_iter) if p.requires_grad else None for p in params]
