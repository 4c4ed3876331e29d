"""Is SKNet's strided K5 branch (3x3, dilation 2, padding 2, stride 2) faster run as written or as
a stride-1 3x3 on every other pixel (what ``SKConv._conv`` does when training on the CPU)?

    PYTHONPATH=src python scripts/bench_strided_dilated.py [--batch 4] [--device cpu] [--dtype fp32]

Times the forward alone and forward + backward (input and weight gradients) of both forms at
the three strided shapes of SKNet-50 (first unit of stages 2-4), channels_last, and
checks that they give the same output. docs/performance.md records the result.
"""

import argparse

import torch
import torch.nn.functional as F

from sknet.bench import median_ms
from sknet.layers.sk_conv import _Subsample


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    threads = torch.get_num_threads()
    print(f"batch {args.batch}, {args.dtype}, channels_last, {device}, threads {threads}; ms, median of 15")
    print(f"{'input':<16} {'fwd strided':>12} {'fwd rewrite':>12} {'train strided':>14} {'train rewrite':>14}")
    for c, hw in [(256, 56), (512, 28), (1024, 14)]:
        x = torch.randn(args.batch, c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        w = torch.randn(c, c // 32, 3, 3, device=device, dtype=dtype, requires_grad=True)

        def strided(x=x, w=w):
            return F.conv2d(x, w, None, 2, 2, 2, 32)

        def rewrite(x=x, w=w):
            return F.conv2d(_Subsample.apply(x, (2, 2)), w, None, 1, 1, 1, 32)

        def grads(f, g, x=x, w=w):
            return torch.autograd.grad(f(), [x, w], g)

        with torch.no_grad():
            torch.testing.assert_close(rewrite(), strided(), rtol=tol, atol=tol * 10)
            fwd = [median_ms(f, device, rounds=15, warmup=2) for f in (strided, rewrite)]
        g = torch.randn_like(strided())
        train = [median_ms(lambda f=f, g=g: grads(f, g), device, rounds=15, warmup=2) for f in (strided, rewrite)]
        print(f"{c}ch {hw}x{hw:<9} {fwd[0]:>12.2f} {fwd[1]:>12.2f} {train[0]:>14.2f} {train[1]:>14.2f}")


if __name__ == "__main__":
    main()
