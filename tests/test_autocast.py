"""The fast SK path under autocast (bf16), as a GPU run uses it; checked on the CPU's autocast."""

import pytest
import torch

import sknet
from sknet.layers import SKConv


@pytest.mark.parametrize("num_paths", [2, 3])
@pytest.mark.parametrize("training", [True, False])
def test_fast_path_under_bf16_autocast_is_as_accurate_as_the_reference(num_paths, training):
    """Both paths in bf16 are compared with the float32 reference: the fast path runs and its
    error (outputs and input gradients, relative to the norm) stays within 3x the reference
    path's own bf16 error."""
    sk = SKConv(16, 16, [(3, 1, 4), (3, 2, 4), (3, 3, 4)][:num_paths], min_dim=8).train(training)
    x = torch.randn(4, 16, 12, 12)
    res = {}
    for path, amp in (("reference", False), ("reference", True), ("fast", True)):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = getattr(sk, f"forward_{path}")(xi)
        y.float().square().sum().backward()
        res[path, amp] = (y.float().detach(), xi.grad)
    exact = res["reference", False]

    def error(key):
        return [((a - b).norm() / b.norm()).item() for a, b in zip(res[key], exact)]

    for fast, ref in zip(error(("fast", True)), error(("reference", True))):
        assert fast <= 3 * ref + 1e-3


def test_sknet_trains_a_step_under_bf16_autocast():
    model = sknet.create_model("sknet_mini").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 1, 28, 28))
    out.float().logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
