"""Where does SKNet-50's extra time go? Profiles one step of SKNet-50 and of torchvision's
ResNeXt-50 (same batch, same settings) with the PyTorch profiler and prints the time per op
class of each and the difference, the split of that difference into what the second branch
costs inherently (its dilated conv, BatchNorm and ReLU) and everything else (pooling, the
attention MLP, the select, copies), and the top ops (CPU) or kernels (CUDA) of each model.

    PYTHONPATH=src python scripts/profile_sk_overhead.py [--mode train|inference] [--batch 4] [--rounds 3]
    PYTHONPATH=src python scripts/profile_sk_overhead.py --device cuda --dtype bf16 --batch 256 \\
        --memory-format channels_last --json OUT.json

Times are self times: CPU time on the CPU, GPU kernel time on CUDA (each kernel counted for the
op that launched it). After two warm-up steps of each (with ``cudnn.benchmark`` on CUDA, as a
training script would set it) the two models take turns: in each of ``--rounds`` rounds a
timed step of each, then a profiled step of each; every figure is the median over the rounds.
Classes:
ops run inside an SK attention module or the classifier count for it (profiler ranges opened
by forward hooks); any other op counts for the outermost ``aten::`` op around it, classed by
name and, for a convolution, by kernel size, groups and dilation (recorded by the profiler);
copies and dtype casts always count as such; a backward op takes the class of the forward op
whose autograd node runs it. The ops of the lean SK training step's backward (a custom
autograd Function) are classed by themselves, so the BN and ReLU it recomputes count as batch
norm and activation. Like ``sknet bench``, on the CPU it first tells glibc's malloc to keep
freed memory (``--system-malloc``: don't). docs/performance.md quotes the output.
"""

import argparse
import collections
import contextlib
import json
import statistics

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile, record_function

import sknet
from sknet.bench import keep_freed_memory, median_ms
from sknet.layers.sk_conv import SKAttention

NUM_CLASSES = 1000
COPIES = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous", "aten::clone"}
SELECT = {"aten::lerp", "aten::lerp_", "aten::addcmul", "aten::addcmul_", "aten::mul", "aten::mul_", "aten::sub"}
TAG = "sknet-profile: "  # the record_function ranges of tagged()
SECOND_BRANCH = ("grouped 3x3 conv, dilation 2", "batch norm", "activation")  # SK has them twice


def conv_class(name: str, shapes: list, concrete: list) -> str:
    """Class of a convolution op from its recorded weight shape, dilation and groups."""
    backward = name == "aten::convolution_backward"
    x, w = (shapes[1], shapes[2]) if backward else (shapes[0], shapes[1])
    dilation_at, groups_at = (6, 9) if backward else (5, 6)
    known = concrete and len(concrete) > groups_at
    dilation, groups = (concrete[dilation_at], concrete[groups_at]) if known else (None, None)
    kernel = tuple(w[2:]) if len(w) > 2 else ()
    if len(x) > 2 and x[1] == 3:
        return "stem conv"
    if kernel and all(k == 1 for k in kernel):
        return "1x1 conv"
    if kernel == (3, 3) and groups and groups > 1:
        return f"grouped 3x3 conv, dilation {dilation[0] if dilation else '?'}"
    return "other conv"


def op_class(name: str, shapes: list, concrete: list) -> str:
    """Class of an outermost aten op outside the tagged modules (attention, classifier)."""
    if name in ("aten::conv2d", "aten::convolution", "aten::_convolution", "aten::convolution_backward"):
        return conv_class(name, shapes, concrete)
    if "batch_norm" in name:
        return "batch norm"
    if name in ("aten::relu", "aten::relu_", "aten::threshold_backward", "aten::clamp_min", "aten::clamp_min_"):
        return "activation"
    if "max_pool" in name:
        return "stem max pool"
    if name in ("aten::mean", "aten::sum") or "avg_pool" in name:
        return "global pooling"
    if name in SELECT:
        return "select (lerp, mul)"
    if name in ("aten::add", "aten::add_"):
        return "add (residual, gradient sums)"
    if "cross_entropy" in name or "log_softmax" in name or "nll_loss" in name:
        return "classifier + loss"
    if name.startswith("aten::_foreach") or name.startswith("Optimizer"):
        return "optimizer"
    return "other"


def self_time(event, device: torch.device) -> float:
    """The event's own time in ms: CPU time, or its kernels' GPU time on CUDA."""
    if device.type == "cuda":
        return getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)) / 1e3
    return event.self_cpu_time_total / 1e3


def ancestors(event) -> list:
    """The event and the events around it, innermost first."""
    chain = []
    while event is not None:
        chain.append(event)
        event = event.cpu_parent
    return chain


def forward_class(chain: list) -> str:
    """Class of a forward op (``chain``: the op and what encloses it, innermost first)."""
    tags = [e.name[len(TAG) :] for e in chain if e.name.startswith(TAG)]
    if tags:
        return tags[0]
    if any(e.name in COPIES for e in chain):
        return "copies, casts, layout"
    if chain[0].name.startswith(("_LeanSelect", "_Subsample")):
        return "SK autograd functions (Python)"
    outer = [e for e in chain if e.name.startswith("aten::")]
    if not outer:
        return "autograd engine, Python"
    top = outer[-1]
    return op_class(top.name, top.input_shapes or [], getattr(top, "concrete_inputs", None) or [])


def classify_events(events) -> list[tuple]:
    """``(event, class)`` for every CPU op event. A backward op takes the class of the forward op
    whose autograd node runs it (matched by the autograd sequence number), '(backward)' added;
    ops of a custom autograd Function's backward (the lean SK step) are classed by themselves."""
    cpu = [(e, ancestors(e)) for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    is_backward = {id(e): any(a.name.startswith("autograd::engine") for a in chain) for e, chain in cpu}
    by_sequence = {}
    for e, chain in cpu:
        if not is_backward[id(e)] and e.sequence_nr >= 0 and e.name.startswith("aten::"):
            by_sequence[e.sequence_nr] = forward_class(chain)
    classes = []
    for e, chain in cpu:
        if not is_backward[id(e)]:
            classes.append((e, forward_class(chain)))
            continue
        nodes = [a for a in chain if not a.name.startswith("aten::") and a.sequence_nr in by_sequence]
        if any(a.name in COPIES for a in chain):
            cls = "copies, casts, layout"
        elif nodes and not any(a.name.startswith("_LeanSelect") for a in chain[: chain.index(nodes[0])]):
            cls = by_sequence[nodes[0].sequence_nr]
        else:
            cls = forward_class(chain)
        classes.append((e, f"{cls} (backward)"))
    return classes


@contextlib.contextmanager
def tagged(model):
    """Profiler ranges around the SK attention modules and the classifier, so that their ops
    (linear, BN, ReLU, softmax on (B, C)) are told apart from the backbone's."""
    modules = [(m, TAG + "attention MLP") for m in model.modules() if isinstance(m, SKAttention)]
    modules.append((model.fc, TAG + "classifier + loss"))
    handles, open_ranges = [], []

    def enter(name):
        def hook(module, args):
            r = record_function(name)
            r.__enter__()
            open_ranges.append(r)

        return hook

    def leave(module, args, output):
        open_ranges.pop().__exit__(None, None, None)

    for module, name in modules:
        handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def make_step(model, x, y, mode: str, dtype):
    autocast = torch.autocast(x.device.type, dtype) if dtype != torch.float32 else contextlib.nullcontext()
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                model(x)

    return step


def profile_once(model, step, device: torch.device) -> tuple[collections.Counter, collections.Counter]:
    """One profiled step: ms per op class, and per op (CPU) or kernel (CUDA)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with tagged(model), profile(activities=activities, record_shapes=True) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    classes, ops = collections.Counter(), collections.Counter()
    for e, cls in classify_events(prof.events()):
        t = self_time(e, device)
        if t > 0:
            classes[cls] += t
            if device.type == "cpu" and not e.name.startswith(TAG):
                ops[e.name] += t
    if device.type == "cuda":  # kernels by name, each counted once
        for k in prof.key_averages():
            if k.device_type == torch.autograd.DeviceType.CUDA:
                ops[k.key] += k.self_device_time_total / 1e3
    return classes, ops


def profile_models(models: dict, args, device: torch.device, dtype) -> dict[str, dict]:
    """Per model: the step's wall ms, and ms per class and per op / kernel, each the median
    over ``args.rounds``. The models take turns in every round (a timed step each, then a
    profiled step each), so that a slow spell of a shared machine hits all of them."""
    layout = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, NUM_CLASSES, (args.batch,), device=device)
    steps = {}
    for name, model in models.items():
        model = model.to(device, memory_format=layout)
        steps[name] = (model, make_step(model, x, y, args.mode, dtype))
    walls, profiles = collections.defaultdict(list), collections.defaultdict(list)
    for _model, step in steps.values():
        step(), step()  # warm-up (and cudnn.benchmark's search)
    for _ in range(args.rounds):
        for name, (_model, step) in steps.items():
            walls[name].append(median_ms(step, device, rounds=1, warmup=0))
        for name, (model, step) in steps.items():
            profiles[name].append(profile_once(model, step, device))

    def median(per_round):
        keys = set().union(*per_round)
        return {k: statistics.median(r.get(k, 0.0) for r in per_round) for k in keys}

    return {
        name: {
            "wall_ms": statistics.median(walls[name]),
            "classes": median([c for c, _ in profiles[name]]),
            "ops": median([o for _, o in profiles[name]]),
        }  # fmt: skip
        for name in steps
    }


def report(sk: dict, rx: dict, args, top: int) -> dict:
    """Print the comparison; return it as a dict for --json."""
    total_sk, total_rx = sum(sk["classes"].values()), sum(rx["classes"].values())
    unit = "GPU kernel" if args.device.startswith("cuda") else "self CPU"
    print(f"step wall time: SKNet-50 {sk['wall_ms']:.1f} ms, ResNeXt-50 {rx['wall_ms']:.1f} ms, "
          f"ratio of speeds {rx['wall_ms'] / sk['wall_ms']:.3f}x")  # fmt: skip
    print(f"profiled {unit} time: SKNet-50 {total_sk:.1f} ms, ResNeXt-50 {total_rx:.1f} ms, "
          f"ratio {total_rx / total_sk:.3f}x")  # fmt: skip
    classes = set(sk["classes"]) | set(rx["classes"])
    diff = {c: sk["classes"].get(c, 0.0) - rx["classes"].get(c, 0.0) for c in classes}
    branch = sum(d for c, d in diff.items() if c.replace(" (backward)", "") in SECOND_BRANCH)
    rest = total_sk - total_rx - branch
    print(f"difference {total_sk - total_rx:+.1f} ms = second branch (dilated conv, BN, ReLU) {branch:+.1f} ms "
          f"+ everything else (pooling, attention MLP, select, copies, ...) {rest:+.1f} ms")  # fmt: skip
    print(f"ratio if everything else cost nothing: {total_rx / (total_rx + branch):.3f}x")
    print(f"\n{'op class':<44} {'SKNet-50':>9} {'ResNeXt-50':>11} {'diff':>8} {'% of RX':>8}")
    for c in sorted(classes, key=lambda c: -abs(diff[c])):
        print(f"{c:<44} {sk['classes'].get(c, 0.0):9.2f} {rx['classes'].get(c, 0.0):11.2f} "
              f"{diff[c]:+8.2f} {100 * diff[c] / total_rx:+7.1f}%")  # fmt: skip
    for name, result in (("SKNet-50", sk), ("ResNeXt-50", rx)):
        what = "kernels" if args.device.startswith("cuda") else "ops"
        print(f"\ntop {top} {what} of {name} (ms per step)")
        for k, t in sorted(result["ops"].items(), key=lambda kv: -kv[1])[:top]:
            print(f"{t:9.2f}  {k[:110]}")
    return {"settings": vars(args), "torch": torch.__version__, "sknet50": sk, "resnext50": rx,
            "difference_ms": total_sk - total_rx, "second_branch_ms": branch, "rest_ms": rest}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("train", "inference"), default="train")
    p.add_argument("--batch", type=int, default=None, help="default: 4 (train), 8 (inference)")
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast")
    p.add_argument("--memory-format", choices=("channels_last", "contiguous"), default="channels_last")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc as it is")
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    kept = device.type == "cpu" and not args.system_malloc and keep_freed_memory()
    args.batch = args.batch or (4 if args.mode == "train" else 8)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, threads {torch.get_num_threads()}"
    print(f"{args.mode}, batch {args.batch}, {args.size}x{args.size}, {args.dtype}, {args.memory_format}, "
          f"{name}, torch {torch.__version__}, malloc {'freed memory kept' if kept else 'as is'}")  # fmt: skip
    models = {"sknet50": sknet.create_model("sknet50"), "resnext50": torchvision.models.resnext50_32x4d()}
    result = profile_models(models, args, device, dtype)
    result = report(result["sknet50"], result["resnext50"], args, args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
