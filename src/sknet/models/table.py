"""Our models beside the paper's figures (``sknet models``): parameters, multiply-adds, reported errors.

Every figure is measured here (:func:`sknet.complexity`, one image at the model's input size)
and set beside :mod:`sknet.models.paper`'s; deviations beyond its tolerance are explained there.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from ..complexity import complexity
from .factory import create_model
from .paper import ABLATIONS, DEVIATIONS, PAPER, TOLERANCE, PaperFigures
from .registry import get_model_entry, list_models


def model_table(
    pattern: str | None = None, *, ablations: bool = False, tables: Sequence[str] | None = None
) -> list[dict]:
    """One row per registered model (or, with ``ablations``, per row of Tables 6 and 7).

    Args:
        pattern: Shell glob on the model (or ablation) name, e.g. ``"sknet*"``.
        ablations: The named ablations of :data:`~sknet.models.paper.ABLATIONS` instead of the models.
        tables: Only rows the paper reports in these tables, e.g. ``["1", "2"]``.

    Returns:
        Dicts with ``name``, ``model``, ``overrides``, ``family``, ``input``, our ``params_m`` and
        ``gmacs``, the paper's ``paper_*`` figures (None where it gives none), the deviations
        ``params_dev_pct`` / ``gmacs_dev_pct`` and, where a deviation is documented, ``deviation``.
    """
    if ablations:
        names = [n for n in ABLATIONS if pattern is None or fnmatch.fnmatch(n, pattern)]
        specs = [(n, ABLATIONS[n].model, ABLATIONS[n].overrides, ABLATIONS[n].paper) for n in names]
    else:
        specs = [(n, n, {}, PAPER.get(n)) for n in list_models(pattern)]
    rows = []
    for name, model, overrides, paper in specs:
        if tables is not None and (paper is None or not set(_tables(paper)) & set(map(str, tables))):
            continue
        entry = get_model_entry(model)
        c = complexity(create_model(model, **overrides), entry.input_size)
        rows.append(_row(name, model, overrides, entry, c.params_m, c.gmacs, paper))
    return rows


def _row(name, model, overrides, entry, params_m, gmacs, paper: PaperFigures | None) -> dict:
    row = dict(
        name=name,
        model=model,
        overrides=overrides,
        family=entry.family,
        input="x".join(map(str, entry.input_size[1:])),
        params_m=round(params_m, 3),
        gmacs=round(gmacs, 4),
    )
    p = paper or PaperFigures("", "")
    row.update(
        paper_table=p.table or None,
        paper_label=p.label or None,
        paper_params_m=p.params_m,
        paper_gflops=p.gflops,
        paper_top1_err=p.top1_err,
        paper_top1_err_320=p.top1_err_320,
        paper_cifar10_err=p.cifar10_err,
        paper_cifar100_err=p.cifar100_err,
        params_dev_pct=_dev(params_m, p.params_m),
        gmacs_dev_pct=_dev(gmacs, p.gflops),
    )
    reasons = {fig: DEVIATIONS[name, fig] for fig in ("params", "gflops") if (name, fig) in DEVIATIONS}
    if reasons:
        row["deviation"] = reasons
    return row


def deviation_table() -> list[dict]:
    """Every documented deviation: the row, which figure, ours, the paper's, and the reason."""
    rows = {r["name"]: r for r in model_table() + model_table(ablations=True)}
    out = []
    for (name, figure), reason in DEVIATIONS.items():
        r = rows[name]
        ours, paper = (r["params_m"], r["paper_params_m"]) if figure == "params" else (r["gmacs"], r["paper_gflops"])
        dev = r["params_dev_pct"] if figure == "params" else r["gmacs_dev_pct"]
        out.append(dict(name=name, figure=figure, ours=ours, paper=paper, dev_pct=dev, reason=reason))
    return out


def within_tolerance(dev_pct: float | None) -> bool:
    """A deviation (percent) the table accepts without a documented reason."""
    return dev_pct is None or abs(dev_pct) <= 100 * TOLERANCE


def _dev(ours: float, paper: float | None) -> float | None:
    return None if paper is None else round(100 * (ours / paper - 1), 2)


def _tables(paper: PaperFigures) -> list[str]:
    return [t.strip() for t in paper.table.split(",")]
