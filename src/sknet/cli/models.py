"""``sknet models``: every registered model with its parameters and multiply-adds, the paper's beside."""

from __future__ import annotations

import json

from ..models.table import model_table


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered models with params and GMACs (paper figures beside)")
    p.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'sknet*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args) -> int:
    rows = model_table(args.pattern)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0


def format_table(rows: list[dict]) -> str:
    def fmt(v, spec=""):
        return "-" if v is None else format(v, spec)

    lines = [f"{'model':<24} {'input':>7} {'params(M)':>10} {'GMACs':>8} {'paper':>13} {'deviation':>16}", "-" * 83]
    for r in rows:
        paper = f"{fmt(r['paper_params_m'])}M/{fmt(r['paper_gmacs'])}G" if r["paper_params_m"] else "-"
        dev = f"{r['params_dev_pct']:+.2f}%/{r['gmacs_dev_pct']:+.2f}%" if "params_dev_pct" in r else "-"
        lines.append(
            f"{r['model']:<24} {r['input']:>7} {r['params_m']:>10.3f} {r['gmacs']:>8.3f} {paper:>13} {dev:>16}"
        )
    return "\n".join(lines)
