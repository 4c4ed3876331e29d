"""SKConv against its definition (docs/paper.md, 'Selective kernel convolution')."""

import copy

import pytest
import torch
from torch import nn

from conftest import randomize_bn
from sknet.layers import ConvBnAct, SKConv


def _attention(sk: SKConv, x: torch.Tensor) -> torch.Tensor:
    seen = []
    h = sk.attn.register_forward_hook(lambda m, i, o: seen.append(o))
    sk(x)
    h.remove()
    return seen[0]


@pytest.mark.parametrize(
    "branches", [[(3, 1, 4), (3, 2, 4)], [(3, 1, 4), (3, 2, 4), (3, 3, 4)], [(3, 1, None), (5, 1, None)]]
)
@pytest.mark.parametrize("stride", [1, 2])
def test_attention_sums_to_one_and_output_is_weighted_sum(branches, stride):
    in_channels = 16 if branches[0][2] else 32  # depthwise (groups None) keeps the width
    sk = randomize_bn(SKConv(in_channels, 32, branches, stride=stride, min_dim=8)).eval()
    x = torch.randn(3, in_channels, 12, 12)
    a = _attention(sk, x)
    assert a.shape == (3, len(branches), 32)
    torch.testing.assert_close(a.sum(1), torch.ones(3, 32))
    assert (a > 0).all()
    # V = sum_m a_m * U_m, from the branch outputs and the recorded attention
    feats = [p(x) for p in sk.paths]
    expected = sum(a[:, m, :, None, None] * f for m, f in enumerate(feats))
    torch.testing.assert_close(sk(x), expected)
    assert sk(x).shape[-1] == 12 // stride


def test_attention_follows_the_paper_equations():
    """s = GAP(U), z = ReLU(BN(W s)), a = softmax over branches of the select map."""
    sk = randomize_bn(SKConv(8, 64, [(3, 1, 8), (3, 2, 8)], min_dim=4, reduction=16)).eval()
    x = torch.randn(2, 8, 9, 9)
    u = sk.paths[0](x) + sk.paths[1](x)
    s = u.mean((2, 3))
    att = sk.attn
    z = torch.relu(
        (s @ att.fc_reduce.weight.T - att.bn.running_mean) / torch.sqrt(att.bn.running_var + att.bn.eps) * att.bn.weight
        + att.bn.bias
    )
    logits = (z @ att.fc_select.weight.T).view(2, 2, 64)
    torch.testing.assert_close(_attention(sk, x), torch.softmax(logits, 1))
    assert att.dim == max(64 // 16, 4)


def test_fuse_width_is_max_of_c_over_r_and_l():
    assert SKConv(64, 64, [(3, 1, 32), (3, 2, 32)]).attn.dim == 32  # 64/16 = 4 < L = 32
    assert SKConv(1024, 1024, [(3, 1, 32), (3, 2, 32)]).attn.dim == 64  # 1024/16
    assert SKConv(1024, 1024, [(3, 1, 32), (3, 2, 32)], reduction=8, min_dim=200).attn.dim == 200


def test_sum_select_is_the_plain_sum_and_has_no_fuse_parameters():
    sk = randomize_bn(SKConv(16, 16, [(3, 1, 4), (3, 2, 4)], select="sum")).eval()
    x = torch.randn(2, 16, 10, 10)
    torch.testing.assert_close(sk(x), sk.paths[0](x) + sk.paths[1](x))
    assert sk.attn is None
    assert sum(p.numel() for p in sk.parameters()) == sum(p.numel() for p in sk.paths.parameters())


def test_one_branch_is_conv_bn_relu():
    sk = randomize_bn(SKConv(16, 32, [(3, 1, 4)], stride=2)).eval()
    ref = ConvBnAct(16, 32, 3, stride=2, groups=4).eval()
    ref.load_state_dict({k.removeprefix("paths.0."): v for k, v in sk.state_dict().items()})
    x = torch.randn(2, 16, 11, 11)
    torch.testing.assert_close(sk(x), ref(x))
    seq = nn.Sequential(ref.conv, ref.bn, nn.ReLU())
    torch.testing.assert_close(sk(x), seq(x))
    assert sk.attn is None


def test_branch_geometry_keeps_size_and_uses_dilation():
    sk = SKConv(32, 32, [(3, 1, 32), (3, 2, 32), (5, 1, 16), (7, 3, 8)])
    convs = [p.conv for p in sk.paths]
    assert [c.dilation[0] for c in convs] == [1, 2, 1, 3]
    assert [c.padding[0] for c in convs] == [1, 2, 2, 9]
    assert [c.groups for c in convs] == [32, 32, 16, 8]
    assert all(c.bias is None for c in convs)
    assert sk(torch.randn(1, 32, 15, 15)).shape == (1, 32, 15, 15)


@pytest.mark.parametrize("impl", ["fast", "reference"])  # fast: the attention runs inside _LeanSelect
def test_batch_of_one_trains(impl):
    """A batch of one normalises the attention's z with the running statistics and leaves them as
    they were (a single pooled vector has no batch variance), in both implementations."""
    sk = randomize_bn(SKConv(16, 16, [(3, 1, 4), (3, 2, 4)], impl=impl)).train()
    expected = copy.deepcopy(sk)
    expected.attn.bn.eval()  # the same step with the running statistics asked for explicitly
    before = {k: v.clone() for k, v in sk.attn.bn.state_dict().items()}
    x = torch.randn(1, 16, 8, 8)
    out = sk(x)
    out.sum().backward()
    assert all(p.grad is not None for p in sk.parameters())
    assert sk.attn.bn.num_batches_tracked.item() == 0  # no update from a single pooled vector
    changed = [k for k, v in sk.attn.bn.state_dict().items() if not torch.equal(v, before[k])]
    assert not changed, f"the attention BN's {changed} changed on a batch of one"
    torch.testing.assert_close(out, expected(x))


def test_a_traced_sk_conv_keeps_the_batch_of_one_rule_and_follows_its_mode():
    """torch.fx traces the SK conv (its reference equations) and calls the attention's BatchNorm as a
    module: traced in training mode, the graph trains on a batch of one as the module does, and after
    eval() it normalises with the running statistics, as the eager module does in each mode."""
    sk = randomize_bn(SKConv(16, 16, [(3, 1, 4), (3, 2, 4)], impl="reference")).train()
    graph = torch.fx.symbolic_trace(copy.deepcopy(sk))
    assert any(n.op == "call_module" and n.target == "attn.bn" for n in graph.graph.nodes)
    one, two = torch.randn(1, 16, 8, 8), torch.randn(2, 16, 8, 8)
    for x in (one, two):
        torch.testing.assert_close(graph(x), sk(x))  # both update their statistics alike
    torch.testing.assert_close(graph.attn.bn.running_mean, sk.attn.bn.running_mean)
    graph.eval(), sk.eval()
    with torch.no_grad():
        torch.testing.assert_close(graph(two), sk(two))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(branches=[]), "non-empty"),
        (dict(branches=[(4, 1, 1)]), "odd"),
        (dict(branches=[(3, 0, 1)]), "dilation"),
        (dict(branches=[(3, 1, 5)]), "divide"),
        (dict(select="max"), "select must be one of"),
        (dict(reduction=0), "reduction"),
    ],
)
def test_bad_settings_say_what_is_wrong(bad, match):
    kwargs = dict(branches=[(3, 1, 4), (3, 2, 4)]) | bad
    with pytest.raises(ValueError, match=match):
        SKConv(16, 16, **kwargs)
