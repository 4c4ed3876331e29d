"""``sknet models``: every registered model with its parameters and multiply-adds."""

from __future__ import annotations

import json

from .complexity import complexity
from .models import create_model, get_model_entry, list_models


def model_table(pattern: str | None = None) -> list[dict]:
    """One row per model: params (M), GMACs at its default input, and the paper's figures."""
    rows = []
    for name in list_models(pattern):
        entry = get_model_entry(name)
        c = complexity(create_model(name), entry.input_size)
        row = dict(
            model=name,
            family=entry.family,
            input=f"{entry.input_size[1]}x{entry.input_size[2]}",
            params_m=round(c.params_m, 3),
            gmacs=round(c.gmacs, 3),
            paper_params_m=entry.paper_params_m,
            paper_gmacs=entry.paper_gmacs,
        )
        if entry.paper_params_m:
            row["params_dev_pct"] = round(100 * (c.params_m / entry.paper_params_m - 1), 2)
        if entry.paper_gmacs:
            row["gmacs_dev_pct"] = round(100 * (c.gmacs / entry.paper_gmacs - 1), 2)
        rows.append(row)
    return rows


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


def _run(args) -> int:
    rows = model_table(args.pattern)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("models", help="list registered models with params and GMACs (paper figures beside)")
    p.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'sknet*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run)
