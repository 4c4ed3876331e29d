"""Is one 5x5 grouped conv (both SK branches' kernels zero-padded into it) faster than the two
3x3 convs (dilation 1 and 2) it replaces? Times both at SKNet-50's four stage shapes.

    PYTHONPATH=src python scripts/bench_merge_branches.py [--device cuda] [--batch 8] [--dtype fp32] [--mode train]

The merged conv gives both branches' outputs in one call (2C channels) but does 25/9 = 2.8x
the multiply-adds. ``--mode train`` times forward + backward (gradients of the input and the
weights) instead of the forward alone. docs/performance.md records the results.
"""

import argparse

import torch
import torch.nn.functional as F

from sknet.bench import median_ms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--mode", default="inference", choices=["inference", "train"])
    args = p.parse_args()
    train = args.mode == "train"
    device = torch.device(args.device)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    print(f"{args.mode}, batch {args.batch}, {args.dtype}, channels_last, {device}, threads {torch.get_num_threads()}")
    print(f"{'stage':<14} {'two 3x3 (ms)':>13} {'one 5x5 (ms)':>13} {'ratio':>7}")
    with torch.no_grad():
        for c, hw in [(128, 56), (256, 28), (512, 14), (1024, 7)]:
            x = torch.randn(args.batch, c, hw, hw, device=device, dtype=dtype).contiguous(
                memory_format=torch.channels_last
            )
            w1 = torch.randn(c, c // 32, 3, 3, device=device, dtype=dtype)
            w2 = torch.randn(c, c // 32, 3, 3, device=device, dtype=dtype)
            merged = torch.zeros(2 * c, c // 32, 5, 5, device=device, dtype=dtype)
            merged.view(32, 2 * c // 32, c // 32, 5, 5)[:, : c // 32, :, 1:4, 1:4] = w1.view(32, c // 32, c // 32, 3, 3)
            merged.view(32, 2 * c // 32, c // 32, 5, 5)[:, c // 32 :, :, ::2, ::2] = w2.view(32, c // 32, c // 32, 3, 3)
            # check the merged conv computes both branches (group g gives [branch 1, branch 2] outputs)
            ref1 = F.conv2d(x, w1, padding=1, groups=32)
            ref2 = F.conv2d(x, w2, padding=2, dilation=2, groups=32)
            both = F.conv2d(x, merged, padding=2, groups=32).view(args.batch, 32, 2, c // 32, hw, hw)
            tol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=5e-2, atol=5e-1)
            torch.testing.assert_close(both[:, :, 0].reshape_as(ref1), ref1, **tol)
            torch.testing.assert_close(both[:, :, 1].reshape_as(ref2), ref2, **tol)
            # output gradients for --mode train: the same for both forms (merged: interleaved by group)
            g1, g2 = torch.randn_like(ref1), torch.randn_like(ref2)
            g_both = torch.stack([g1.reshape(both[:, :, 0].shape), g2.reshape(both[:, :, 1].shape)], dim=2)
            g_both = g_both.reshape(args.batch, 2 * c, hw, hw).contiguous(memory_format=torch.channels_last)
            if train:
                x, w1, w2, merged = (t.requires_grad_(True) for t in (x, w1, w2, merged))
            with torch.enable_grad() if train else torch.inference_mode():

                def run_two(x=x, w1=w1, w2=w2, g1=g1, g2=g2):
                    y1 = F.conv2d(x, w1, padding=1, groups=32)
                    y2 = F.conv2d(x, w2, padding=2, dilation=2, groups=32)
                    if train:
                        torch.autograd.grad([y1, y2], [x, w1, w2], [g1, g2])

                def run_one(x=x, merged=merged, g_both=g_both):
                    y = F.conv2d(x, merged, padding=2, groups=32)
                    if train:
                        torch.autograd.grad([y], [x, merged], [g_both])

                two = median_ms(run_two, device)
                one = median_ms(run_one, device)
            print(f"{c}ch {hw}x{hw:<7} {two:>13.2f} {one:>13.2f} {one / two:>6.2f}x")


if __name__ == "__main__":
    main()
