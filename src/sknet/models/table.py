"""Every registered model with its parameters and multiply-adds, beside the paper's figures (``sknet models``)."""

from __future__ import annotations

from ..complexity import complexity
from .factory import create_model
from .registry import get_model_entry, list_models


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
