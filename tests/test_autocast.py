"""The fast SK path under autocast (bf16), as a GPU run uses it; checked on the CPU's autocast."""

import pytest
import torch

import sknet
from sknet.layers import SKConv


@pytest.mark.parametrize("num_paths", [2, 3])
@pytest.mark.parametrize("training", [True, False])
def test_fast_path_runs_and_matches_reference_under_bf16_autocast(num_paths, training):
    sk = SKConv(16, 16, [(3, 1, 4), (3, 2, 4), (3, 3, 4)][:num_paths], min_dim=8).train(training)
    x = torch.randn(4, 16, 12, 12)
    outs = {}
    for path in ("fast", "reference"):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = getattr(sk, f"forward_{path}")(xi)
        y.float().square().sum().backward()
        outs[path] = (y.float(), xi.grad)
    for fast, ref in zip(outs["fast"], outs["reference"]):
        # bf16 keeps ~3 significant digits: compare relative to the tensor's norm
        assert (fast - ref).norm() / ref.norm() < 2e-2


def test_sknet_trains_a_step_under_bf16_autocast():
    model = sknet.create_model("sknet_mini").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 1, 28, 28))
    out.float().logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
