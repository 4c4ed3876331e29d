"""Fixtures and comparison helpers the tests share."""

import copy

import pytest
import torch

from sknet.layers import SKConv


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and the shared 2-core machine punishes
    oversubscribed OpenMP threads badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so eval-mode
    comparisons exercise them."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model


RTOL = 1e-5  # fast against reference in fp32: 1e-5 relative


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


def run_step(sk: SKConv, x: torch.Tensor, impl: str, dtype: torch.dtype = torch.float32):
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
