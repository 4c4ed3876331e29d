"""How fast are SKNet-50's branch convolutions, and would another formulation of the K5 branch
(3x3, dilation 2) run faster? Times, at the shapes of SKNet-50's SK units (batch ``--batch``):

- ``K3``: the grouped 3x3 conv (ResNeXt-50's own, SK's first branch);
- ``K5``: the grouped 3x3 conv with dilation 2 as written (SK's second branch);
- ``K5 polyphase`` (stride 1): the dilated conv as one undilated 3x3 conv over the four
  phase grids ``x[:, :, a::2, b::2]`` stacked on the batch (atrous convolution by
  space-to-batch): the same sums, plus a gather and a scatter of the feature map;
- ``K5 subsampled`` (stride 2): a stride-1 undilated conv on ``x[:, :, ::2, ::2]``, what
  ``sknet.layers.sk_fast.branch_conv`` runs when training on the CPU;
- ``K3+K5 merged`` (stride 1): one 5x5 grouped conv carrying both branches' kernels (2C
  outputs, 25/9 = 2.8x the multiply-adds) against the two convs it replaces.

Each form is checked against the conv as written before it is timed; ``fwd`` is the forward
alone (inference mode), ``train`` forward + backward (input and weight gradients). Both memory
formats; on CUDA with ``cudnn.benchmark`` off and on; on the CPU with freed memory kept
(``sknet.bench.keep_freed_memory``). The ratio column is the form's time over
what it replaces (K5 over K3; a K5 formulation over K5; merged over K3 + K5).

    PYTHONPATH=src python scripts/bench_branch_convs.py [--device cuda] [--batch 256] [--dtype bf16] [--json OUT]

docs/performance.md records the results.
"""

import argparse
import itertools
import json

import torch
import torch.nn.functional as F

from sknet.bench import keep_freed_memory, median_ms
from sknet.layers.sk_fast import _Subsample

GROUPS = 32
# (channels, input size, stride) of SKNet-50's SK units: the stride-1 units of each stage, and
# the first unit of stages 2-4, whose branches have stride 2
SHAPES = [(128, 56, 1), (256, 28, 1), (512, 14, 1), (1024, 7, 1), (256, 56, 2), (512, 28, 2), (1024, 14, 2)]


def k3(x, w, stride):
    return F.conv2d(x, w, None, stride, 1, 1, GROUPS)


def k5(x, w, stride):
    return F.conv2d(x, w, None, stride, 2, 2, GROUPS)


def k5_polyphase(x, w, stride):
    """Dilation-2 3x3 conv (padding 2, stride 1) as an undilated 3x3 conv on the 4 phase grids."""
    b, c, h, wd = x.shape
    hp, wp = h + h % 2, wd + wd % 2  # an odd side gets a zero row / column, as padding would
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    x = F.pad(x, (0, wp - wd, 0, hp - h))
    phases = x.view(b, c, hp // 2, 2, wp // 2, 2).permute(3, 5, 0, 1, 2, 4).reshape(4 * b, c, hp // 2, wp // 2)
    y = F.conv2d(phases.contiguous(memory_format=layout), w, None, 1, 1, 1, GROUPS)  # (4B, C, H/2, W/2)
    y = y.view(2, 2, b, -1, hp // 2, wp // 2).permute(2, 3, 4, 0, 5, 1).reshape(b, -1, hp, wp)
    return y[:, :, :h, :wd].contiguous(memory_format=layout)


def k5_subsampled(x, w, stride):
    return F.conv2d(_Subsample.apply(x, (stride, stride)), w, None, 1, 1, 1, GROUPS)


def merged_weight(w1, w2):
    """One 5x5 kernel per group holding K3's kernels (centre) and K5's (every other tap)."""
    c, cg = w1.shape[:2]
    merged = w1.new_zeros(2 * c, cg, 5, 5)
    view = merged.view(GROUPS, 2 * c // GROUPS, cg, 5, 5)
    view[:, : c // GROUPS, :, 1:4, 1:4] = w1.view(GROUPS, c // GROUPS, cg, 3, 3)
    view[:, c // GROUPS :, :, ::2, ::2] = w2.view(GROUPS, c // GROUPS, cg, 3, 3)
    return merged


def split_merged(y, c):
    """The merged conv's (B, 2C, H, W) output as the two branches' (group g: [K3, K5] channels)."""
    b, _, h, w = y.shape
    y = y.view(b, GROUPS, 2, c // GROUPS, h, w)
    return y[:, :, 0].reshape(b, c, h, w), y[:, :, 1].reshape(b, c, h, w)


def time_form(fn, inputs, grads, device, train: bool) -> float:
    """Median ms of the forward (inference mode) or forward + backward of ``fn(*inputs)``."""
    if not train:
        with torch.inference_mode():
            return median_ms(lambda: fn(*inputs), device, rounds=10, warmup=2)
    leaves = [t.detach().requires_grad_(True) for t in inputs if isinstance(t, torch.Tensor)]
    args = [leaves.pop(0) if isinstance(t, torch.Tensor) else t for t in inputs]
    params = [a for a in args if isinstance(a, torch.Tensor)]

    def step():
        out = fn(*args)
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.grad(outs, params, grads)

    return median_ms(step, device, rounds=10, warmup=2)


def bench_shape(c, hw, stride, device, dtype, layout, batch: int) -> list[dict]:
    """Every form at one SK unit shape; checked against the conv as written, then timed."""
    x = torch.randn(batch, c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=layout)
    w1 = torch.randn(c, c // GROUPS, 3, 3, device=device, dtype=dtype) / (3 * (c // GROUPS) ** 0.5)
    w2 = torch.randn_like(w1)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    with torch.no_grad():
        ref3, ref5 = k3(x, w1, stride), k5(x, w2, stride)
    g3, g5 = (torch.randn_like(r) for r in (ref3, ref5))
    forms = [("K3", k3, (x, w1, stride), (g3,), None), ("K5", k5, (x, w2, stride), (g5,), "K3")]
    if stride == 1:
        merged = merged_weight(w1, w2)

        def two(x, w1, w2):
            return k3(x, w1, 1), k5(x, w2, 1)

        def one(x, merged):
            return split_merged(F.conv2d(x, merged, None, 1, 2, 1, GROUPS), c)

        forms += [("K5 polyphase", k5_polyphase, (x, w2, 1), (g5,), "K5"),
                  ("K3+K5", two, (x, w1, w2), (g3, g5), None),
                  ("K3+K5 merged", one, (x, merged), (g3, g5), "K3+K5")]  # fmt: skip
    else:
        forms += [("K5 subsampled", k5_subsampled, (x, w2, stride), (g5,), "K5")]
    rows = {}
    for name, fn, inputs, grads, against in forms:
        with torch.no_grad():
            out = fn(*inputs)
        expected = (ref3, ref5) if isinstance(out, tuple) else (ref3 if name == "K3" else ref5,)
        for o, e in zip(out if isinstance(out, tuple) else (out,), expected):
            torch.testing.assert_close(o, e, **tol, msg=f"{name} differs from the conv as written")
        rows[name] = {"form": name, "against": against,
                      "fwd_ms": time_form(fn, inputs, grads, device, train=False),
                      "train_ms": time_form(fn, inputs, grads, device, train=True)}  # fmt: skip
    for row in rows.values():
        ref = rows.get(row["against"])
        row["fwd_ratio"] = row["fwd_ms"] / ref["fwd_ms"] if ref else None
        row["train_ratio"] = row["train_ms"] / ref["train_ms"] if ref else None
    return list(rows.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    formats = ["channels_last", "contiguous"]
    p.add_argument("--formats", nargs="+", default=formats, choices=formats)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    if device.type == "cpu":
        keep_freed_memory()  # as sknet bench does: no page faults in whichever op touches fresh memory
    cudnn_settings = (False, True) if device.type == "cuda" else (None,)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, threads {torch.get_num_threads()}"
    print(f"batch {args.batch}, {args.dtype}, {name}, torch {torch.__version__}; ms, median of 10")
    print(f"{'unit input':<17} {'format':<14} {'cudnn.bm':<8} {'form':<14} "
          f"{'fwd':>8} {'ratio':>6} {'train':>8} {'ratio':>6}")  # fmt: skip
    results = []
    for layout_name, benchmark in itertools.product(args.formats, cudnn_settings):
        layout = torch.channels_last if layout_name == "channels_last" else torch.contiguous_format
        if benchmark is not None:
            torch.backends.cudnn.benchmark = benchmark
        for c, hw, stride in SHAPES:
            for row in bench_shape(c, hw, stride, device, dtype, layout, args.batch):
                row.update(channels=c, size=hw, stride=stride, format=layout_name, cudnn_benchmark=benchmark)
                results.append(row)
                ratio = {k: f"{row[k]:.2f}x" if row[k] else "" for k in ("fwd_ratio", "train_ratio")}
                unit = f"{c}ch {hw}x{hw}" + (f" s{stride}" if stride > 1 else "")
                bm = "-" if benchmark is None else ("on" if benchmark else "off")
                print(f"{unit:<17} {layout_name:<14} {bm:<8} {row['form']:<14} {row['fwd_ms']:8.2f} "
                      f"{ratio['fwd_ratio']:>6} {row['train_ms']:8.2f} {ratio['train_ratio']:>6}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            report = {"settings": vars(args), "torch": torch.__version__, "device": name, "rows": results}
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
