"""Export parity and CPU latency: eager vs fused PyTorch vs ONNX Runtime, measured in one run.

Usage (docs/deploy.md; on the shared machine under the CPU lock):

    flock /tmp/sknet-cpu.lock python scripts/bench_deploy.py --models sknet50 shufflenetv2_x1_0_sk \
        --threads 2 --runs 20 --json docs/deploy_bench.json

For every model: eager PyTorch (the default SK path), ``sknet.fuse`` in PyTorch, and
the ONNX exports of both run in onnxruntime (CPU). Parity is the largest absolute
difference from eager on the same input; latency is the median of ``--runs`` timed
batch-1 calls after ``--warmup`` untimed ones. Weights are random with BatchNorm
statistics measured on random data (parity does not need trained weights; latency does
not depend on them).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import sknet
from sknet import fuse
from sknet.deploy import export_model, run_exported


def conditioned(model: torch.nn.Module, input_size, fc_scale: float = 10.0) -> torch.nn.Module:
    """BN statistics from random data and logits of order 1-10 (as in tests/test_export.py)."""
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, *input_size, generator=g))
        model.fc.weight.mul_(fc_scale)
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def median_ms(fn, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def bench_model(name: str, threads: int, warmup: int, runs: int, size: int | None) -> list[dict]:
    import onnxruntime as ort

    entry = sknet.get_model_entry(name)
    input_size = entry.input_size if size is None else (entry.input_size[0], size, size)
    model = conditioned(sknet.create_model(name), input_size)
    fused = fuse(model)
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    rows = []

    def torch_row(label, m):
        with torch.no_grad():
            diff = (m(x) - ref).abs().max().item()
            ms = median_ms(lambda: m(x), warmup, runs)
        rows.append(dict(model=name, runtime=label, max_abs_diff=diff, median_ms=ms))

    torch_row("PyTorch eager", model)
    torch_row("PyTorch fused", fused)
    with tempfile.TemporaryDirectory() as tmp:
        for label, fuse_it in (("ONNX Runtime", False), ("ONNX Runtime, fused", True)):
            path = Path(tmp) / f"{name}_{fuse_it}.onnx"
            t = time.perf_counter()
            export_model(model, path, "onnx", input_size, fuse=fuse_it)
            export_s = time.perf_counter() - t
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x.numpy()}
            diff = (run_exported(path, "onnx", x) - ref).abs().max().item()
            ms = median_ms(lambda s=session, f=feed: s.run(None, f), warmup, runs)
            rows.append(dict(model=name, runtime=label, max_abs_diff=diff, median_ms=ms, export_s=export_s))
    for r in rows:
        r.update(input="x".join(map(str, input_size)), max_abs_eager=ref.abs().max().item())
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["sknet50", "shufflenetv2_x1_0_sk"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--size", type=int, default=None, help="square input size (default: the model's, 224)")
    p.add_argument("--json", help="also write the rows and the environment here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    env = dict(
        cpu=next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        ),
        threads=args.threads,
        torch=torch.__version__,
        onnxruntime=ort.__version__,
        python=platform.python_version(),
        runs=args.runs,
        warmup=args.warmup,
    )
    rows = [r for name in args.models for r in bench_model(name, args.threads, args.warmup, args.runs, args.size)]
    print(f"{env}\n")
    print("| model | input | runtime | max abs diff vs eager | median latency (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['input']} | {r['runtime']} | {r['max_abs_diff']:.2g} "
            f"(max abs logit {r['max_abs_eager']:.3g}) | {r['median_ms']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(dict(env=env, rows=rows), indent=1) + "\n")


if __name__ == "__main__":
    main()
