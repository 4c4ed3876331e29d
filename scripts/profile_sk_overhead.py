"""Where does SKNet-50's extra time go? Profiles one step of SKNet-50 and of torchvision's
ResNeXt-50 (same batch, same settings) with the PyTorch profiler and prints, per op, the self
CPU time of each and the difference, largest first, grouped into what the second branch
costs inherently (its convolution, BatchNorm and ReLU) and everything else (the select).

    PYTHONPATH=src python scripts/profile_sk_overhead.py [--mode train|inference] [--batch 4] [--rounds 3]

Each op's time is the median over ``--rounds`` profiled steps (after two warm-up steps). Like
``sknet bench``, it first tells glibc's malloc to keep freed memory (``--system-malloc``: don't),
so page faults do not land in whichever op first touches a fresh buffer. docs/performance.md
quotes the output.
"""

import argparse
import collections
import statistics

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile

import sknet
from sknet.bench import keep_freed_memory

# Ops that the second branch's conv -> BN -> ReLU brings along (ResNeXt-50 has them once per
# unit, SKNet-50 twice); everything else in the difference is the fuse / select step.
BRANCH_OPS = {
    "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_backward",
    "aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::_native_batch_norm_legit",
    "aten::relu_", "aten::clamp_min_", "aten::threshold_backward",
}  # fmt: skip


def profile_step(model, mode: str, batch: int, rounds: int) -> dict[str, float]:
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)

    step()
    step()
    per_round = []
    for _ in range(rounds):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        times = collections.Counter()
        for e in prof.key_averages():
            times[e.key] += e.self_cpu_time_total / 1e3
        per_round.append(times)
    keys = set().union(*per_round)
    return {k: statistics.median(r.get(k, 0.0) for r in per_round) for k in keys}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("train", "inference"), default="train")
    p.add_argument("--batch", type=int, default=None, help="default: 4 (train), 8 (inference)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc as it is")
    args = p.parse_args()
    kept = not args.system_malloc and keep_freed_memory()
    batch = args.batch or (4 if args.mode == "train" else 8)
    torch.manual_seed(0)
    sk = profile_step(sknet.create_model("sknet50"), args.mode, batch, args.rounds)
    rx = profile_step(torchvision.models.resnext50_32x4d(), args.mode, batch, args.rounds)
    total_sk, total_rx = sum(sk.values()), sum(rx.values())
    print(
        f"{args.mode}, batch {batch}, threads {torch.get_num_threads()}, torch {torch.__version__}, "
        f"malloc {'freed memory kept' if kept else 'as is'}"
    )
    print(f"profiled self CPU time: SKNet-50 {total_sk:.1f} ms, ResNeXt-50 {total_rx:.1f} ms, "
          f"ratio of speeds {total_rx / total_sk:.3f}x")  # fmt: skip
    diff = {k: sk.get(k, 0.0) - rx.get(k, 0.0) for k in set(sk) | set(rx)}
    branch = sum(d for k, d in diff.items() if k in BRANCH_OPS)
    rest = sum(d for k, d in diff.items() if k not in BRANCH_OPS)
    print(f"difference {total_sk - total_rx:+.1f} ms = second branch conv/BN/ReLU {branch:+.1f} ms "
          f"+ everything else (fuse, select, attention) {rest:+.1f} ms")  # fmt: skip
    print(f"speed ratio if everything else cost nothing: {total_rx / (total_rx + branch):.3f}x")
    print(f"\n{'op':<52} {'SKNet-50':>9} {'ResNeXt-50':>11} {'diff':>8}  group")
    for k in sorted(diff, key=lambda k: -abs(diff[k]))[: args.top]:
        group = "branch" if k in BRANCH_OPS else "select"
        print(f"{k[:52]:<52} {sk.get(k, 0.0):9.1f} {rx.get(k, 0.0):11.1f} {diff[k]:+8.1f}  {group}")


if __name__ == "__main__":
    main()
