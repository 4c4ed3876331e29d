"""SK in 1-D and 3-D: the same maths as in 2-D, the fast path against the reference one in every
dimension (outputs, gradients, BN statistics), and fuse / complexity beside them."""

from __future__ import annotations

import copy

import pytest
import torch

import sknet
from conftest import BRANCHES, assert_as_accurate, assert_close_rel, randomize_bn, run_step
from sknet.layers import ConvBnAct, SKConv, SqueezeExcite, sk_fast, sk_impl, sk_lean

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = {1: (81,), 3: (5, 7, 7)}  # odd sizes (borders); as many positions as 2-D's 9x9 or more


def _input(dims: int, batch: int = 16, channels: int = 16, layout: str = "contiguous") -> torch.Tensor:
    x = torch.randn(batch, channels, *SIZES[dims])
    return x.contiguous(memory_format=torch.channels_last_3d) if layout == "channels_last_3d" else x


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("name", list(BRANCHES))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_fast_path_matches_reference_in_1d_and_3d(dims, name, stride, training):
    sk = randomize_bn(SKConv(16, 16, BRANCHES[name], stride=stride, min_dim=8, dims=dims)).train(training)
    x = _input(dims)
    ref_out, ref_gx, ref_grads, ref_stats = run_step(sk, x, "reference")
    _, exact_gx, exact_grads, _ = run_step(sk, x, "reference", torch.float64)
    out, gx, grads, stats = run_step(sk, x, "fast")
    expected = [(s + 2 * 1 - 3) // stride + 1 if stride == 2 else s for s in SIZES[dims]]  # K3, pad 1
    assert out.shape == (16, 16, *expected)
    assert_close_rel(out, ref_out)
    # Gradients: 1e-4 beyond the fp32 reference's own error, not 2-D's 1e-5. The two paths sum the
    # pooled descriptor in different orders (per branch, then over branches), and the attention BN's
    # gradient, a projection over the batch, amplifies that: on attn.fc_reduce in 3-D (245 positions
    # per channel) measured up to 2.8e-5 beyond the reference's error. The float64 test below holds
    # the two to 1e-10 elementwise: the maths is the same.
    assert_as_accurate(gx, ref_gx, exact_gx, rtol=1e-4)
    for n in grads:
        assert grads[n] is not None, n
        assert_as_accurate(grads[n], ref_grads[n], exact_grads[n], rtol=1e-4)
    for n in stats:
        torch.testing.assert_close(stats[n], ref_stats[n], rtol=1e-5, atol=1e-7)
    lean = training and len(BRANCHES[name]) == 2
    assert sk_lean.applies(sk) == lean


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("name", ["M2-grouped", "M3-depthwise"])
@pytest.mark.parametrize("training", [True, False])
def test_the_same_maths_in_float64(dims, name, training):
    """Fast and reference agree elementwise to 1e-10 in float64, in 1-D and 3-D too."""
    sk = randomize_bn(SKConv(16, 16, BRANCHES[name], stride=2, min_dim=8, dims=dims)).train(training)
    x = _input(dims, batch=3)
    ref, fast = run_step(sk, x, "reference", torch.float64), run_step(sk, x, "fast", torch.float64)
    for a, b in zip(fast[:2], ref[:2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for n in ref[2]:
        torch.testing.assert_close(fast[2][n], ref[2][n], rtol=1e-10, atol=1e-12)


def test_3d_keeps_channels_last_3d_and_the_strided_dilated_branch_runs_dense(monkeypatch):
    """channels_last_3d in, channels_last_3d out and back (input gradient); the stride-2 dilated
    branch trains as a stride-1 conv on every other voxel (the 2-D rewrite, in 3-D)."""
    calls, conv3d = [], sk_fast.F.conv3d

    def recording_conv3d(x, weight, bias, stride, padding, dilation, groups):
        calls.append((tuple(stride), tuple(dilation)))
        return conv3d(x, weight, bias, stride, padding, dilation, groups)

    monkeypatch.setattr(sk_fast.F, "conv3d", recording_conv3d)
    sk = randomize_bn(SKConv(16, 16, BRANCHES["M2-grouped"], stride=2, min_dim=8, dims=3)).train()
    x = _input(3, layout="channels_last_3d")
    out, gx, _, _ = run_step(sk, x, "fast")
    assert calls == [((2, 2, 2), (1, 1, 1)), ((1, 1, 1), (1, 1, 1))]
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert gx.is_contiguous(memory_format=torch.channels_last_3d)
    ref_out, ref_gx, _, _ = run_step(sk, x, "reference")
    assert_close_rel(out, ref_out)
    assert_close_rel(gx, ref_gx, rtol=1e-4)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_the_maths_is_the_papers_in_every_dimension(dims):
    """The attention is a softmax over branches of the select map of z = ReLU(BN(W GAP(sum U_m)))
    and V = sum_m a_m U_m, whatever the number of spatial dimensions."""
    sk = randomize_bn(SKConv(8, 16, [(3, 1, 4), (3, 2, 4)], min_dim=4, dims=dims)).eval()
    x = torch.randn(2, 8, *(9,) * dims)
    feats = [p(x) for p in sk.paths]
    assert all(isinstance(p.conv, torch.nn.modules.conv._ConvNd) and p.conv.weight.dim() == dims + 2 for p in sk.paths)
    s = sum(feats).mean(tuple(range(2, 2 + dims)))  # (B, C)
    att = sk.attn
    z = torch.relu(att.bn(att.fc_reduce(s)))
    a = torch.softmax(att.fc_select(z).view(2, 2, 16), 1)  # (B, M, C)
    expected = sum(a[(slice(None), m, ..., *[None] * dims)] * f for m, f in enumerate(feats))
    torch.testing.assert_close(sk(x), expected, rtol=1e-5, atol=1e-6)
    with sk_impl(sk, "reference"):
        torch.testing.assert_close(sk(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims", [1, 3])
def test_conv_bn_act_and_se_take_the_dimension(dims):
    block = ConvBnAct(4, 8, 3, stride=2, dims=dims)
    assert isinstance(block.conv, {1: torch.nn.Conv1d, 3: torch.nn.Conv3d}[dims])
    assert isinstance(block.bn, {1: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm3d}[dims])
    x = torch.randn(2, 4, *(9,) * dims)
    assert block(x).shape == (2, 8, *(5,) * dims)
    se = SqueezeExcite(8, 4, dims=dims)
    y = torch.randn(2, 8, *(5,) * dims)
    gate = torch.sigmoid(se.fc2(se.act(se.fc1(y.mean(tuple(range(2, 2 + dims)), keepdim=True)))))
    torch.testing.assert_close(se(y), y * gate)
    with pytest.raises(ValueError, match="1, 2 or 3"):
        ConvBnAct(4, 8, dims=4)


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("name", ["M2-grouped", "M3-grouped", "M2-depthwise"])
def test_fuse_and_complexity_in_1d_and_3d(dims, name):
    sk = randomize_bn(SKConv(16, 16, BRANCHES[name], stride=2, min_dim=8, dims=dims)).eval()
    x = _input(dims, batch=3)
    with torch.no_grad(), sk_impl(copy.deepcopy(sk), "reference") as ref:
        expected = ref(x)
    fused = sknet.fuse(sk)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    with torch.no_grad():
        assert_close_rel(fused(x), expected)
    c = sknet.complexity(sk, (16, *SIZES[dims]))
    out_positions = sk(x[:1]).shape[2:].numel()
    conv_macs = sum(p.conv.weight.numel() * out_positions for p in sk.paths)
    attn = sk.attn.fc_reduce.weight.numel() + sk.attn.fc_select.weight.numel()
    assert c.macs == conv_macs + attn  # every multiply-add counted, in 1-D and 3-D alike
