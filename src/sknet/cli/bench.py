"""``sknet bench``: throughput and peak memory against torchvision's ResNeXt-50 (and timm's SK), one process."""

from __future__ import annotations

import json
import sys

from .. import bench
from ..io import write_text


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="throughput and peak memory vs ResNeXt-50 (inference and training step), in one process",
        description=bench.__doc__.split("\n\n")[0],
    )
    p.add_argument("models", nargs="*", help=f"model specs (default: {' '.join(bench.DEFAULT_MODELS)})")
    p.add_argument("--reference", default=bench.DEFAULT_REFERENCE, help="model the ratios are taken against")
    p.add_argument("--modes", nargs="+", default=list(bench.MODES), choices=bench.MODES)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--batch-size", type=int, default=8, help="inference batch (and training batch unless given)")
    p.add_argument("--train-batch-size", type=int, default=None)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--dtype", default="fp32", choices=list(bench.DTYPES), help="bf16/fp16 run under torch.autocast")
    p.add_argument("--memory-format", default="channels_last", choices=list(bench.MEMORY_FORMATS))
    p.add_argument("--compile", action="store_true", help="torch.compile every model (default: eager)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model before the rounds")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds; the median is reported")
    p.add_argument("--iters", type=int, default=1, help="steps per timed measurement")
    p.add_argument("--no-memory", action="store_true", help="skip the peak memory pass")
    p.add_argument(
        "--system-malloc",
        action="store_true",
        help="CPU: leave glibc's malloc as it is (default: keep freed memory, so timings exclude page faults)",
    )
    p.add_argument("--json", default=None, help="also write the full report (config, versions, rounds) here")
    p.set_defaults(run=run)


def run(args) -> int:
    cfg = bench.BenchConfig(
        models=tuple(args.models) if args.models else bench.DEFAULT_MODELS,
        reference=args.reference,
        modes=tuple(args.modes),
        device=args.device,
        batch_size=args.batch_size,
        train_batch_size=args.train_batch_size,
        input_size=args.input_size,
        dtype=args.dtype,
        memory_format=args.memory_format,
        compile=args.compile,
        threads=args.threads,
        warmup=args.warmup,
        rounds=args.rounds,
        iters=args.iters,
        memory=not args.no_memory,
        keep_freed_memory=not args.system_malloc,
    )
    report = bench.run_bench(cfg, log=lambda line: print(line, file=sys.stderr))
    print(format_table(report))
    if args.json:
        write_text(args.json, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def format_table(report: dict) -> str:
    """One line per (mode, model): throughput, ratios and peak memory against the reference."""
    cfg = report["config"]
    ref = cfg["reference"]
    head = (
        f"device={cfg['device']} dtype={cfg['dtype']} {cfg['memory_format']} "
        f"{'compiled' if cfg['compile'] else 'eager'} input={cfg['input_size']} "
        f"threads={report['environment']['torch_threads']} rounds={cfg['rounds']} (median); ratios vs {ref} "
        "(ratio: of the medians; paired: median of the per-round ratios)"
    )
    lines = [
        head,
        f"{'mode':<10} {'model':<34} {'batch':>5} {'img/s':>9} {'ratio':>7} {'paired':>7} "
        f"{'peak MB':>9} {'mem ratio':>9}",
    ]
    for r in report["results"]:
        mem = f"{r['peak_mem_mb']:.0f}" if r["peak_mem_mb"] is not None else "-"
        lines.append(
            f"{r['mode']:<10} {r['model']:<34} {r['batch_size']:>5} {r['img_per_s']:>9.2f} "
            f"{_fmt_ratio(r['ratio']):>7} {_fmt_ratio(r.get('paired_ratio')):>7} "
            f"{mem:>9} {_fmt_ratio(r['mem_ratio']):>9}"
        )
    return "\n".join(lines)


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}x"
