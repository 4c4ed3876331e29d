"""The fast SK path under autocast (bf16), as a GPU run uses it; checked on the CPU's autocast."""

import pytest
import torch

import sknet
from sknet.layers import SKConv

BF16_ROUNDING = 2**-8  # relative error of one rounding to bfloat16 (8 significant bits)


@pytest.mark.parametrize("num_paths", [2, 3])
@pytest.mark.parametrize("training", [True, False])
def test_fast_path_under_bf16_autocast_is_as_accurate_as_the_reference(num_paths, training):
    """Both paths in bf16 are compared with the float32 reference: the fast path runs and its
    error (outputs and input gradients, relative to the norm) is at most two bf16 roundings above
    the reference path's own bf16 error.

    Measured on this setup, seeds 0-99, both path counts, training and eval: the reference's own
    error is 0.35-0.47 % for outputs and 2.7-6.1 % for input gradients (bf16 convolutions), and
    the fast path's exceeds it by at most 0.46 roundings; two leave a margin of 4 for other CPUs'
    bf16 kernels. (The former bound, 3x the reference's error + 1e-3, let 12-15 % through for the
    input gradients.)"""
    sk = SKConv(16, 16, [(3, 1, 4), (3, 2, 4), (3, 3, 4)][:num_paths], min_dim=8).train(training)
    # Per-image channel offsets, as real images have. With i.i.d. noise images the batch's pooled
    # descriptors are nearly equal, and the attention's BN (batch statistics) divides their
    # rounding by that small spread: either path's input-gradient error then reaches 44-80 % on
    # some of 20 seeds, which measures the luck of the draw rather than either path's arithmetic.
    x = torch.randn(16, 16, 12, 12) + 3 * torch.randn(16, 16, 1, 1)
    # Backward along a fixed random direction, not the gradient of y^2: that is 2y, which carries
    # the output's own rounding (bf16 in the fast path, which selects in the branches' dtype;
    # float32 in the reference, whose products promote) into the BN backward, and the two then
    # differ by up to 24 roundings (measured, 40 seeds): a difference of output dtype, which the
    # output comparison covers, not of the backward's arithmetic.
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    res = {}
    for path, amp in (("reference", False), ("reference", True), ("fast", True)):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = getattr(sk, f"forward_{path}")(xi)
        y.float().backward(g)
        res[path, amp] = (y.float().detach(), xi.grad)
    exact = res["reference", False]

    def error(key):
        return [((a - b).norm() / b.norm()).item() for a, b in zip(res[key], exact)]

    for what, fast, ref in zip(("output", "input gradient"), error(("fast", True)), error(("reference", True))):
        assert fast <= ref + 2 * BF16_ROUNDING, (what, fast, ref)


def test_sknet_trains_a_step_under_bf16_autocast():
    model = sknet.create_model("sknet_mini").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 1, 28, 28))
    out.float().logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
