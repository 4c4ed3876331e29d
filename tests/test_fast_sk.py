"""The fast SK path against the reference one, and sknet.fuse against the unfused model."""

import copy

import pytest
import torch
from torch import nn

import sknet
from conftest import randomize_bn
from sknet import fuse
from sknet.layers import SKConv, sk_impl

RTOL = 1e-5  # the tolerance: fp32, 1e-5 relative


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    """Relative closeness elementwise, with an absolute floor that scales with the tensor (values
    near 0 have no meaningful relative error after a ReLU or a sum of signed terms)."""
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def assert_as_accurate(fast: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor, rtol: float = RTOL) -> None:
    """The fp32 fast result is within ``rtol`` (relative, in norm) of the exact value, beyond the
    error the fp32 reference itself makes: ``|fast - exact| <= |ref - exact| + rtol |exact|``.

    Used for fp32 gradients, with ``exact`` the reference run in float64. Two fp32 runs cannot
    be held to 1e-5 of each other elementwise: the attention BatchNorm's gradient is a
    projection over the batch that amplifies rounding to ~1e-5 for *either* path, and oneDNN's
    5x5 grouped backward conv is itself ~3e-4 off in fp32. The float64 test below checks the
    same maths elementwise at 1e-10.
    """
    exact_norm = exact.norm().item()
    err_fast = (fast.double() - exact).norm().item()
    err_ref = (ref.double() - exact).norm().item()
    assert err_fast <= err_ref + rtol * exact_norm, (
        f"fast path relative error {err_fast / exact_norm:.2e} vs the fp32 reference's {err_ref / exact_norm:.2e}"
    )


BRANCHES = {
    "M1-grouped": [(3, 1, 4)],
    "M2-grouped": [(3, 1, 4), (3, 2, 4)],
    "M3-grouped": [(3, 1, 4), (3, 2, 4), (5, 1, 8)],
    "M1-depthwise": [(3, 1, None)],
    "M2-depthwise": [(3, 1, None), (3, 2, None)],
    "M3-depthwise": [(3, 1, None), (3, 2, None), (5, 1, None)],
}


def _run(sk: SKConv, x: torch.Tensor, impl: str, dtype: torch.dtype = torch.float32):
    """Output, input gradient, parameter gradients and BN running statistics after one step."""
    sk = copy.deepcopy(sk).to(dtype)
    x = x.to(dtype)
    sk.impl = impl
    x = x.clone().requires_grad_(True)
    out = sk(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    out.backward(g)
    grads = {n: p.grad for n, p in sk.named_parameters()}
    stats = {n: b.clone().to(torch.float32 if b.is_floating_point() else b.dtype) for n, b in sk.named_buffers()}
    return out.detach(), x.grad, grads, stats


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
    ref_out, ref_gx, ref_grads, ref_stats = _run(sk, x, "reference")
    _, exact_gx, exact_grads, _ = _run(sk, x, "reference", torch.float64)
    out, gx, grads, stats = _run(sk, x, "fast")
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
    ref_out, ref_gx, ref_grads, ref_stats = _run(sk, x, "reference")
    _, exact_gx, exact_grads, _ = _run(sk, x, "reference", torch.float64)
    out, gx, grads, stats = _run(sk, x, "fast")
    assert_close_rel(out, ref_out)
    assert_as_accurate(gx, ref_gx, exact_gx)
    for n in grads:
        assert_as_accurate(grads[n], ref_grads[n], exact_grads[n])
    for n in stats:
        torch.testing.assert_close(stats[n], ref_stats[n], rtol=RTOL, atol=1e-7)
    if training:
        assert sk._lean_training_applies(x)
    with pytest.raises(ValueError, match="divide evenly"):
        SKConv(15, 24, [(3, 1, 1), (3, 2, 1)], split_input=True)


@pytest.mark.parametrize("lean", [True, False])
def test_lean_training_step_matches_plain_autograd_and_frozen_parts(lean):
    """The memory-lean two-branch training step (custom autograd) against plain autograd on the
    same fast path, also with frozen attention and frozen first branch."""
    sk = randomize_bn(SKConv(16, 16, BRANCHES["M2-grouped"], min_dim=8, impl="fast" if lean else "nolean")).train()
    x = torch.randn(16, 16, 9, 9)
    assert sk._lean_training_applies(x) is lean
    for p in [*sk.attn.parameters(), *sk.paths[0].parameters()]:
        p.requires_grad_(False)
    ref_out, ref_gx, ref_grads, ref_stats = _run(sk, x, "reference")
    out, gx, grads, stats = _run(sk, x, "fast")
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
    from sknet.layers import sk_conv

    calls = []
    conv2d = sk_conv.F.conv2d

    def recording_conv2d(x, weight, bias, stride, padding, dilation, groups):
        calls.append((tuple(stride), tuple(dilation)))
        return conv2d(x, weight, bias, stride, padding, dilation, groups)

    monkeypatch.setattr(sk_conv.F, "conv2d", recording_conv2d)
    branches = [(3, 1, 4), (3, 2, 4), (3, 4, 4), (5, 1, 4)]
    sk = randomize_bn(SKConv(16, 16, branches, stride=2, min_dim=8)).train()
    x = torch.randn(4, 16, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = {}
    for subsample in (True, False):
        sk.subsample_strided = subsample
        calls.clear()
        results[subsample] = _run(sk, x, "fast")
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
    sub = sk_conv._Subsample.apply(xs, (2, 2))
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
    ref = _run(sk, x, "reference", torch.float64)
    fast = _run(sk, x, "fast", torch.float64)
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


# --------------------------------------------------------------------------- fuse


@pytest.mark.parametrize("name", ["M1-grouped", "M2-grouped", "M3-grouped", "M2-depthwise"])
def test_fused_sk_conv_matches_unfused(name):
    sk = randomize_bn(SKConv(16, 16, BRANCHES[name], stride=2, min_dim=8)).eval()
    x = torch.randn(3, 16, 10, 10)
    with sk_impl(sk, "reference"):
        ref = sk(x)
    fused = fuse(sk)
    assert_close_rel(fused(x), ref)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in fused.modules())
    if len(BRANCHES[name]) == 2:  # two select row blocks became one
        assert fused.attn.pairwise and fused.attn.fc_select.out_features == 16
    assert any(isinstance(m, nn.BatchNorm2d) for m in sk.modules())  # the original is untouched


@pytest.mark.parametrize("name", ["sknet_mini", "resnext_mini", "senet_mini"])
def test_fused_model_matches_unfused(name):
    model = randomize_bn(sknet.create_model(name)).eval()
    x = torch.randn(2, 1, 28, 28)
    with sk_impl(model, "reference"), torch.no_grad():
        ref = model(x)
    fused = fuse(model)
    with torch.no_grad():
        assert_close_rel(fused(x), ref)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not fused.training


def test_fused_shufflenet_and_torchvision_resnext_match():
    torchvision = pytest.importorskip("torchvision")
    for model, x in [
        (sknet.create_model("shufflenetv2_x0_5_sk", num_classes=10), torch.randn(2, 3, 64, 64)),
        (
            torchvision.models.resnet.ResNet(
                torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4
            ),
            torch.randn(2, 3, 64, 64),
        ),
    ]:
        model = randomize_bn(model).eval()
        with torch.no_grad():
            ref = model(x)
            assert_close_rel(fuse(model)(x), ref)


def test_fused_attention_still_hookable():
    model = randomize_bn(sknet.create_model("sknet_mini")).eval()
    x = torch.randn(2, 1, 28, 28)
    sk = next(m for m in model.modules() if isinstance(m, SKConv))
    fused = fuse(model)
    fused_sk = next(m for m in fused.modules() if isinstance(m, SKConv))
    seen = []
    hooks = [
        sk.attn.register_forward_hook(lambda m, i, o: seen.append(o)),
        fused_sk.attn.register_forward_hook(lambda m, i, o: seen.append(o)),
    ]
    with torch.no_grad():
        model(x)
        fused(x)
    for h in hooks:
        h.remove()
    assert seen[1].shape == seen[0].shape
    assert_close_rel(seen[1], seen[0])


def test_fused_model_traces_and_exports():
    """Only standard ops in the fused graph: jit.trace and torch.export accept it."""
    model = fuse(randomize_bn(sknet.create_model("sknet_mini")))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        traced = torch.jit.trace(model, x)
        assert_close_rel(traced(x), ref)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_close_rel(exported.module()(x), ref)


def test_fuse_rejects_non_modules():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        fuse("sknet50")


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


def test_fuse_is_one_plain_function():
    from sknet.deploy import fusion

    assert sknet.fuse is fusion.fuse and type(fusion) is type(sknet)  # a function in an ordinary module
    model = randomize_bn(sknet.create_model("sknet_mini")).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(sknet.fuse(model)(x), model(x), rtol=1e-5, atol=1e-5)


def test_fast_training_step_under_bf16_autocast_matches_reference():
    """The GPU benchmark trains under bf16 autocast: the fast path must accept mixed dtypes and its
    parameter gradients be as accurate as the reference's under autocast, both against fp32
    gradients: per tensor, relative in norm, at most 1.5x the reference's error + two bf16
    roundings (2 * 2^-8).

    Measured on this setup, seeds 0-99: the reference's own error is 0.2-54 % (bf16 convolutions;
    a small gradient that is a sum of signed terms has a large relative error), the fast path's
    stays within the bound on all 100 seeds, using at most 86 % of its slack (67 % on seeds 0-19).
    The former bound, 2x + 1e-2, let 11 % through where the reference made 5 %."""
    bf16_rounding = 2**-8
    sk = randomize_bn(SKConv(16, 16, BRANCHES["M2-grouped"], min_dim=8)).train()
    with torch.no_grad():
        # No z at the ReLU's kink: there a rounding decides whether a sample's gradient reaches
        # fc_reduce and the BN shift at all, in either path at random (measured without the shift:
        # a 4-30 % error in one path or both on 7 of 20 seeds).
        sk.attn.bn.bias.fill_(3.0)
    # Per-image channel offsets (see test_autocast: i.i.d. noise leaves the attention's BN
    # dividing rounding by a tiny batch spread), and a fixed random backward direction.
    x = torch.randn(16, 16, 9, 9) + 3 * torch.randn(16, 16, 1, 1)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    grads = {}
    for impl, autocast in (("reference", False), ("reference", True), ("fast", True)):
        m = copy.deepcopy(sk)
        m.impl = impl
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = m(x)
        assert out.dtype == (torch.bfloat16 if autocast else torch.float32)
        out.float().backward(direction)
        grads[impl, autocast] = {n: p.grad for n, p in m.named_parameters()}
    exact = grads["reference", False]
    for n, g in exact.items():
        err_ref = ((grads["reference", True][n] - g).norm() / g.norm()).item()
        err_fast = ((grads["fast", True][n] - g).norm() / g.norm()).item()
        assert err_fast <= 1.5 * err_ref + 2 * bf16_rounding, (n, err_fast, err_ref)


@pytest.mark.slow
def test_fused_model_exports_to_onnx_and_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = fuse(randomize_bn(sknet.create_model("sknet_mini")))
    x = torch.randn(2, 1, 28, 28)
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=True)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert_close_rel(torch.from_numpy(y), model(x))
