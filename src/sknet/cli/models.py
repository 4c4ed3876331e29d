"""``sknet models``: every registered model (or ablation) beside the paper's figures, with the deviations."""

from __future__ import annotations

import fnmatch
import json

from ..models.sources import source_table
from ..models.table import deviation_table, model_table


def register(sub) -> None:
    p = sub.add_parser("models", help="registered models with params and GMACs, the paper's figures beside")
    p.add_argument("pattern", nargs="?", default=None, help="glob on the name, e.g. 'sknet*'")
    p.add_argument("--ablations", action="store_true", help="the rows of Tables 6 and 7 (sknet50 with overrides)")
    p.add_argument("--tables", nargs="+", metavar="N", help="only rows the paper reports in these tables, e.g. 1 2")
    p.add_argument("--deviations", action="store_true", help="every figure off the paper's by > 1.5 %%, and why")
    p.add_argument(
        "--pretrained", action="store_true",
        help="the published ImageNet weights (--pretrained [TAG]): tag, source, licence, size, the source's top-1",
    )  # fmt: skip
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table (what the docs show)")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.pretrained:
        rows = [r for r in source_table() if args.pattern is None or fnmatch.fnmatch(r["model"], args.pattern)]
        print(json.dumps(rows, indent=1) if args.json else format_sources(rows, args.markdown))
        return 0
    if args.deviations:
        rows = deviation_table()
        print(json.dumps(rows, indent=1) if args.json else format_deviations(rows, args.markdown))
        return 0
    rows = model_table(args.pattern, ablations=args.ablations, tables=args.tables)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_markdown(rows) if args.markdown else format_table(rows))
    return 0


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _gmacs(v) -> str:
    """Multiply-adds in billions: three decimals, four below 0.1 (the lightweight models)."""
    return "-" if v is None else f"{v:.3f}" if v >= 0.1 else f"{v:.4f}"


def _pct(v) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def _errors(r: dict) -> str:
    """The paper's reported errors: ImageNet 224 (/ 320) crop, or CIFAR-10 / CIFAR-100."""
    if r["paper_top1_err"] is not None:
        crop_320 = r["paper_top1_err_320"]
        return f"{r['paper_top1_err']:.2f}" + (f" / {crop_320:.2f}" if crop_320 is not None else "")
    if r["paper_cifar10_err"] is not None:
        return f"C10 {r['paper_cifar10_err']:.2f}, C100 {r['paper_cifar100_err']:.2f}"
    return "-"


def format_table(rows: list[dict]) -> str:
    """A console table: ours, the paper's, the deviation and the paper's top-1 error."""
    head = (
        f"{'name':<22} {'input':>10} {'params(M)':>9} {'paper':>6} {'dev':>7} {'GMACs':>7} {'paper':>7} {'dev':>7}"
        f"  {'paper top-1 err (224 / 320)':<28} {'table':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = " *" if "deviation" in r else ""
        lines.append(
            f"{r['name']:<22} {r['input']:>10} {r['params_m']:>9.3f} {_num(r['paper_params_m'], '.2f'):>6} "
            f"{_pct(r['params_dev_pct']):>7} {_gmacs(r['gmacs']):>7} {_gmacs(r['paper_gflops']):>7} "
            f"{_pct(r['gmacs_dev_pct']):>7}  {_errors(r):<28} {r['paper_table'] or '-':>5}{mark}"
        )
    if any("deviation" in r for r in rows):
        lines.append("* a documented deviation: sknet models --deviations")
    return "\n".join(lines)


def format_markdown(rows: list[dict]) -> str:
    """The same as a Markdown table."""
    lines = [
        "| model | the paper's row (table) | params, M (ours / paper) | GMACs (ours / paper) "
        "| the paper's error, %: top-1 at 224 / 320, or CIFAR |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        label = f"{r['paper_label']} ({r['paper_table']})" if r["paper_label"] else "-"
        name = r["name"] + (" *" if "deviation" in r else "")
        params = f"{r['params_m']:.2f} / {_num(r['paper_params_m'], '.2f')}"
        gmacs = _gmacs(r["gmacs"]) + (f" / {_gmacs(r['paper_gflops'])}" if r["paper_gflops"] else "")
        lines.append(f"| `{name}` | {label} | {params} | {gmacs} | {_errors(r)} |")
    return "\n".join(lines)


def format_deviations(rows: list[dict], markdown: bool) -> str:
    """Every documented deviation with its reason."""
    if markdown:
        lines = ["| model | figure | ours / paper | deviation | why |", "| --- | --- | --- | --- | --- |"]
        lines += [
            f"| `{r['name']}` | {r['figure']} | {r['ours']:g} / {r['paper']:g} | {_pct(r['dev_pct'])} | {r['reason']} |"
            for r in rows
        ]
        return "\n".join(lines)
    return "\n\n".join(
        f"{r['name']} {r['figure']}: ours {r['ours']:g}, paper {r['paper']:g} ({_pct(r['dev_pct'])})\n  {r['reason']}"
        for r in rows
    )


def format_sources(rows: list[dict], markdown: bool) -> str:
    """The published weights: a console or Markdown table, the default of each model marked."""
    head = ("model", "tag", "source", "licence", "MiB", "top-1, %")
    quote = (lambda c: f"`{c}`") if markdown else str
    table = [
        (
            quote(r["model"]),
            quote(r["tag"]) + (" *" if r["default"] else ""),
            r["source"],
            r["licence"],
            f"{r['size_mib']:.1f}",
            f"{r['top1']:.2f}"
            + (f" at {r['top1_size']} px" if r["top1_size"] != 224 else "")
            + (f" ({r['top1_on']}, ours)" if r["top1_on"] != "ImageNet-1k val" else ""),
        )
        for r in rows
    ]
    note = (
        "* the model's default (--pretrained without a TAG). top-1: the source's own ImageNet-1k validation figure "
        "at 224 px unless noted (timm: its results-imagenet.csv; torchvision: its weights' metadata), not ours; "
        "the packaged demo model's is ours, from its record."
    )
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in [head, ("---",) * len(head), *table]]
        return "\n".join([*lines, "", "\\" + note])  # escaped: not a list item
    widths = [max(map(len, col)) for col in zip(head, *table)]
    align = [str.ljust] * 4 + [str.rjust] * 2  # text left, numbers right
    lines = ["  ".join(a(c, w) for a, c, w in zip(align, row, widths)) for row in [head, *table]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], note])
