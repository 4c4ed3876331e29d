"""SKConv's fast path against the reference one: outputs, gradients and BN statistics, each of its
steps (the select, eval BN folding, the lean training step, the strided-branch rewrite), torch.compile,
and what a model with synchronised BatchNorm runs."""

import copy
import warnings

import pytest
import torch
from torch import nn

import sknet
from conftest import BRANCHES, RTOL, assert_as_accurate, assert_close_rel, randomize_bn, run_step
from sknet.layers import SKConv, sk_fast, sk_impl, sk_lean


@pytest.mark.parametrize("name", list(BRANCHES))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_path_matches_reference_outputs_and_gradients(name, stride, training, channels_last):
    branches = BRANCHES[name]
    sk = randomize_bn(SKConv(16, 16, branches, stride=stride, min_dim=8)).train(training)
    # Batch 16: the attention BN's input gradient is a projection over the batch, badly
    # conditioned for a handful of images (at batch 4 the fp32 reference itself is up to 7e-5
    # away from its float64 value).
    x = torch.randn(16, 16, 9, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref_out, ref_gx, ref_grads, ref_stats = run_step(sk, x, "reference")
    _, exact_gx, exact_grads, _ = run_step(sk, x, "reference", torch.float64)
    out, gx, grads, stats = run_step(sk, x, "fast")
    assert out.shape == (16, 16, 5 if stride == 2 else 9, 5 if stride == 2 else 9)
    assert_close_rel(out, ref_out)
    assert_as_accurate(gx, ref_gx, exact_gx)
    assert grads.keys() == ref_grads.keys()
    for n in grads:
        assert grads[n] is not None, n
        assert_as_accurate(grads[n], ref_grads[n], exact_grads[n])
    for n in stats:  # training updates the BN statistics identically
        torch.testing.assert_close(stats[n], ref_stats[n], rtol=RTOL, atol=1e-7)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_split_input_branches_see_their_own_channels_and_fast_matches_reference(stride, training):
    """timm's split-input SK: branch m convolves only the m-th slice of the input channels; the fast
    path (lean training step included) gives the reference's outputs and gradients."""
    sk = randomize_bn(SKConv(16, 24, [(3, 1, 1), (3, 2, 2)], stride=stride, min_dim=8, split_input=True))
    sk.train(training)
    assert [p.conv.in_channels for p in sk.paths] == [8, 8]
    x = torch.randn(16, 16, 9, 9)
    with torch.no_grad(), sk_impl(sk, "reference"):
        feats = [path(x[:, 8 * m : 8 * (m + 1)]) for m, path in enumerate(copy.deepcopy(sk).paths)]
        a = copy.deepcopy(sk).attn(sum(feats))
        torch.testing.assert_close(copy.deepcopy(sk)(x), sum(a[:, m, :, None, None] * f for m, f in enumerate(feats)))
    ref_out, ref_gx, ref_grads, ref_stats = run_step(sk, x, "reference")
    _, exact_gx, exact_grads, _ = run_step(sk, x, "reference", torch.float64)
    out, gx, grads, stats = run_step(sk, x, "fast")
    assert_close_rel(out, ref_out)
    assert_as_accurate(gx, ref_gx, exact_gx)
    for n in grads:
        assert_as_accurate(grads[n], ref_grads[n], exact_grads[n])
    for n in stats:
        torch.testing.assert_close(stats[n], ref_stats[n], rtol=RTOL, atol=1e-7)
    if training:
        assert sk_lean.applies(sk)
    with pytest.raises(ValueError, match="divide evenly"):
        SKConv(15, 24, [(3, 1, 1), (3, 2, 1)], split_input=True)


@pytest.mark.parametrize("lean", [True, False])
def test_lean_training_step_matches_plain_autograd_and_frozen_parts(lean):
    """The memory-lean two-branch training step (custom autograd) against plain autograd on the
    same fast path, also with frozen attention and frozen first branch."""
    sk = randomize_bn(SKConv(16, 16, BRANCHES["M2-grouped"], min_dim=8, impl="fast" if lean else "nolean")).train()
    x = torch.randn(16, 16, 9, 9)
    assert sk_lean.applies(sk) is lean
    for p in [*sk.attn.parameters(), *sk.paths[0].parameters()]:
        p.requires_grad_(False)
    ref_out, ref_gx, ref_grads, ref_stats = run_step(sk, x, "reference")
    out, gx, grads, stats = run_step(sk, x, "fast")
    assert_close_rel(out, ref_out)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-5 * ref_gx.abs().max().item())
    for n, g in ref_grads.items():
        assert (g is None) == (grads[n] is None), n
        if g is not None:
            torch.testing.assert_close(grads[n], g, rtol=1e-5, atol=1e-5 * g.abs().max().item())
    for n in stats:
        torch.testing.assert_close(stats[n], ref_stats[n], rtol=RTOL, atol=1e-7)


def test_lean_training_step_keeps_fewer_tensors():
    """Autograd keeps the two conv outputs and the select output for an SK conv, not the
    four BN/ReLU maps of plain autograd (counted with saved-tensor hooks)."""
    sk = SKConv(16, 16, BRANCHES["M2-grouped"], min_dim=8).train()
    x = torch.randn(8, 16, 12, 12, requires_grad=True)

    def saved_bytes(lean: bool) -> int:
        seen = {}

        def pack(t):
            if t.dim() == 4 and t.shape[-1] == 12:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        sk.lean_training = lean
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            sk(x).sum().backward()
        return sum(seen.values())

    one_map = 8 * 16 * 12 * 12 * 4
    assert saved_bytes(False) >= 4 * one_map  # input, two BN inputs, two ReLU outputs...
    assert saved_bytes(True) <= 3 * one_map  # input and the two conv outputs


@pytest.mark.parametrize("size", [9, 10])
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_dilated_branch_runs_as_a_dense_conv_on_every_other_pixel(size, channels_last, monkeypatch):
    """Training on the CPU, a stride-2 branch with dilation 2 (or 4) runs as a stride-1 conv
    with dilation 1 (or 2) on x[:, :, ::2, ::2]: same output and gradients as the strided conv
    (switched off), the input gradient in the input's layout, and only where it applies."""

    calls = []
    conv2d = sk_fast.F.conv2d

    def recording_conv2d(x, weight, bias, stride, padding, dilation, groups):
        calls.append((tuple(stride), tuple(dilation)))
        return conv2d(x, weight, bias, stride, padding, dilation, groups)

    monkeypatch.setattr(sk_fast.F, "conv2d", recording_conv2d)
    branches = [(3, 1, 4), (3, 2, 4), (3, 4, 4), (5, 1, 4)]
    sk = randomize_bn(SKConv(16, 16, branches, stride=2, min_dim=8)).train()
    x = torch.randn(4, 16, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = {}
    for subsample in (True, False):
        sk.subsample_strided = subsample
        calls.clear()
        results[subsample] = run_step(sk, x, "fast")
        expected = [((2, 2), (1, 1)), ((1, 1), (1, 1)), ((1, 1), (2, 2)), ((2, 2), (1, 1))]
        assert calls == (expected if subsample else [((2, 2), (d, d)) for _, d, _ in branches])
    (out, gx, grads, _), (ref_out, ref_gx, ref_grads, _) = results[True], results[False]
    assert_close_rel(out, ref_out)
    assert_close_rel(gx, ref_gx)
    for n in grads:
        assert_close_rel(grads[n], ref_grads[n])
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=layout) and gx.is_contiguous(memory_format=layout)
    # Without autograd (inference) the strided conv runs as written.
    calls.clear()
    with torch.no_grad():
        sk.eval()(x)
    assert calls == [((2, 2), (d, d)) for _, d, _ in branches]
    # The subsampling's own gradient is a plain slice's, in the input's layout (a plain slice
    # scatters into NCHW; in SKNet-50 that made whole units' input gradients NCHW, and slow).
    xs = x.detach().requires_grad_(True)
    sub = sk_fast._Subsample.apply(xs, (2, 2))
    torch.testing.assert_close(sub, x[:, :, ::2, ::2], rtol=0, atol=0)
    assert sub.is_contiguous(memory_format=layout)
    g = torch.randn(sub.shape)
    (grad,) = torch.autograd.grad(sub, xs, g)  # as computed (a leaf's .grad is re-laid out)
    expected = torch.zeros(x.shape)
    expected[:, :, ::2, ::2] = g
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    assert grad.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("name", ["M2-grouped", "M3-grouped", "M3-depthwise"])
@pytest.mark.parametrize("training", [True, False])
def test_fast_path_is_the_same_maths_in_float64(name, training):
    """In float64 rounding vanishes: fast and reference agree elementwise to 1e-10."""
    sk = randomize_bn(SKConv(16, 16, BRANCHES[name], stride=2, min_dim=8)).train(training)
    x = torch.randn(3, 16, 11, 11)
    ref = run_step(sk, x, "reference", torch.float64)
    fast = run_step(sk, x, "fast", torch.float64)
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast[1], ref[1], rtol=1e-10, atol=1e-12)
    for n in ref[2]:
        torch.testing.assert_close(fast[2][n], ref[2][n], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["M2-grouped", "M3-grouped", "M2-depthwise"])
def test_fast_path_without_autograd_matches(name):
    """The in-place select (no autograd recording) gives the same output as the recorded one."""
    sk = randomize_bn(SKConv(16, 16, BRANCHES[name], min_dim=8)).eval()
    x = torch.randn(2, 16, 9, 9)
    with sk_impl(sk, "reference"):
        ref = sk(x)
    with torch.inference_mode():
        fast = sk(x)
    with torch.no_grad():
        fast_no_grad = sk(x)
    assert_close_rel(fast, ref)
    assert_close_rel(fast_no_grad, ref)
    sk.fold_eval_bn = False  # the ablation switch: BN applied by the module, same result
    with torch.inference_mode():
        assert_close_rel(sk(x), ref)


def test_whole_network_fast_matches_reference_in_training():
    model = randomize_bn(sknet.create_model("sknet_mini", layers=(1, 1, 1))).train()
    x = torch.randn(4, 1, 28, 28)
    results = {}
    for impl, dtype in (("reference", torch.float32), ("fast", torch.float32), ("exact", torch.float64)):
        m = copy.deepcopy(model).to(dtype)
        with sk_impl(m, "reference" if impl == "exact" else impl):
            loss = nn.functional.cross_entropy(m(x.to(dtype)), torch.arange(4))
            loss.backward()
        results[impl] = (loss.detach(), {n: p.grad for n, p in m.named_parameters()})
    assert_close_rel(results["fast"][0], results["reference"][0])
    for n, g in results["reference"][1].items():
        assert_as_accurate(results["fast"][1][n], g, results["exact"][1][n])


@pytest.mark.parametrize("name", ["M2-grouped", "M3-depthwise"])
def test_hook_on_attn_sees_the_attention_in_the_fast_path(name):
    """Analysis reads (B, M, C) attention through a forward hook on ``attn``: it must still fire."""
    sk = randomize_bn(SKConv(16, 16, BRANCHES[name], min_dim=8)).eval()
    x = torch.randn(2, 16, 9, 9)
    seen = {}
    h = sk.attn.register_forward_hook(lambda m, i, o: seen.setdefault(sk.impl, o.detach()))
    try:
        sk(x)  # default: fast
        with sk_impl(sk, "reference"):
            sk(x)
    finally:
        h.remove()
    m = len(BRANCHES[name])
    assert seen["fast"].shape == (2, m, 16)
    assert_close_rel(seen["fast"], seen["reference"])
    torch.testing.assert_close(seen["fast"].sum(1), torch.ones(2, 16))


def test_fast_is_the_default_and_selection_is_checked():
    """The implementation is each module's own setting: default fast, shown in repr, settable through
    create_model, switched for a block by sk_impl(module, ...) and restored after; bad specs refused."""
    model = sknet.create_model("sknet_mini")
    sks = [m for m in model.modules() if isinstance(m, SKConv)]
    assert sks and all(m.impl == "fast" for m in sks)
    assert "impl='fast'" in repr(sks[0])
    with sk_impl(model, "reference"):
        assert all(m.impl == "reference" for m in sks)
    assert all(m.impl == "fast" for m in sks)
    reference = sknet.create_model("sknet_mini", sk_impl="reference")
    assert all(m.impl == "reference" for m in reference.modules() if isinstance(m, SKConv))
    ablated = sknet.create_model("sknet_mini", sk_impl="nolean,nofold")
    sk = next(m for m in ablated.modules() if isinstance(m, SKConv))
    assert (sk.impl, sk.lean_training, sk.fold_eval_bn, sk.subsample_strided) == ("fast", False, False, True)
    assert "impl='fast,nolean,nofold'" in repr(sk)
    with pytest.raises(ValueError, match="one of"):
        SKConv(8, 8, [(3, 1, 2), (3, 2, 2)], impl="turbo")
    with pytest.raises(ValueError, match="one of"):
        sknet.create_model("sknet_mini", sk_impl="turbo")
    sk = SKConv(8, 8, [(3, 1, 2), (3, 2, 2)])
    sk.impl = "turbo"
    with pytest.raises(ValueError, match="SKConv.impl"):
        sk(torch.randn(2, 8, 5, 5))


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
def test_fast_path_has_no_graph_breaks(training):
    torch._dynamo.reset()
    model = randomize_bn(sknet.create_model("sknet_mini", layers=(1, 1, 1))).train(training)
    x = torch.randn(2, 1, 28, 28)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow
def test_compiled_fullgraph_matches_eager():
    torch._dynamo.reset()
    sk = randomize_bn(SKConv(16, 16, BRANCHES["M2-grouped"], min_dim=8)).eval()
    x = torch.randn(2, 16, 9, 9)
    compiled = torch.compile(sk, fullgraph=True)
    with torch.no_grad():
        assert_close_rel(compiled(x), sk(x), rtol=1e-4)  # inductor reorders sums


@pytest.mark.parametrize("sync", ["cpu", "torch"])
def test_a_sync_bn_model_folds_in_eval_and_trains_on_the_plain_fast_path(sync):
    """With --sync-bn every BatchNorm is synchronised (our CPU SyncBN, or torch's SyncBatchNorm as on
    GPUs). In eval mode the branch BNs still fold into the convs: no BN forward runs in an SK branch.
    In training the lean step cannot take synchronised statistics (sk_lean.applies says why): the
    plain fast path runs, a warning says so once, and the step matches the reference path's."""
    from sknet.training.distributed import convert_sync_batchnorm

    model = randomize_bn(sknet.create_model("sknet_mini"))
    if sync == "cpu":
        synced = convert_sync_batchnorm(copy.deepcopy(model), torch.device("cpu"))
    else:
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    branch_bns = [p.bn for m in synced.modules() if isinstance(m, SKConv) for p in m.paths]
    assert branch_bns and all(type(bn).forward is not nn.BatchNorm2d.forward for bn in branch_bns)
    bn_calls = []
    for bn in branch_bns:
        bn.register_forward_hook(lambda *_: bn_calls.append(1))
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        out = synced.eval()(x)
        assert not bn_calls  # folded
        with sk_impl(model.eval(), "reference"):
            assert_close_rel(out, model(x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):
            out = synced.train()(x)
            out.sum().backward()
    assert bn_calls  # the branch BNs ran as modules: the plain path
    said = [w for w in caught if "lean training step" in str(w.message)]
    assert len(said) == 1 and type(branch_bns[0]).__name__ in str(said[0].message)
    reference = copy.deepcopy(model).train()
    with sk_impl(reference, "reference"):
        for _ in range(2):
            expected = reference(x)
    assert_close_rel(out.detach(), expected.detach())


def test_a_branch_bn_put_back_in_training_mode_is_not_folded():
    """Test-time BN adaptation puts BatchNorms back in training mode inside an eval model: the fast
    path folds only a BN that is itself in eval mode, and matches the reference path."""
    sk = randomize_bn(SKConv(16, 16, BRANCHES["M2-grouped"], min_dim=8)).eval()
    sk.paths[0].bn.train()
    x = torch.randn(8, 16, 9, 9)
    reference = copy.deepcopy(sk)
    with torch.no_grad(), sk_impl(reference, "reference"):
        assert_close_rel(sk(x), reference(x))


def test_a_bn_that_tracks_no_statistics_takes_the_plain_path():
    """A BatchNorm whose track_running_stats was switched off keeps its statistics as they are in
    torch; the lean step, which updates them, leaves it to the plain path."""
    sk = randomize_bn(SKConv(16, 16, BRANCHES["M2-grouped"], min_dim=8)).train()
    sk.paths[1].bn.track_running_stats = False
    assert not sk_lean.applies(sk)
    x = torch.randn(8, 16, 9, 9)
    ref_out, _, _, ref_stats = run_step(sk, x, "reference")
    out, _, _, stats = run_step(sk, x, "fast")
    assert_close_rel(out, ref_out)
    for n in stats:
        torch.testing.assert_close(stats[n], ref_stats[n], rtol=RTOL, atol=1e-7)
