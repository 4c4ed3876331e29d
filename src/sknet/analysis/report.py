"""The analysis as files: ``analysis.json``, CSVs with every plotted number, ``analysis.md`` and the figures.

:func:`write_report` writes one analysis (:class:`~sknet.analysis.summary.AnalysisResult`):
``analysis.json`` (every number plotted, plus the settings), ``fig3_left.csv``,
``fig3_right.csv``, ``fig4.csv``, ``analysis.md``, ``fig3.png``, ``fig4.png`` and
``examples.png`` (a few inputs at each scale, to see what the model was shown).

:func:`compare_folders` reads several finished analyses (e.g. the seeds of a study variant)
and :func:`write_comparison` writes ``comparison.md``, ``comparison.csv``, ``comparison.json``
and ``comparison.png``: per unit and scale, every run's change against the first scale and
how many runs agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..io import write_csv, write_text
from ..plotting import COLORS, new_figure, save_figure
from .summary import AnalysisResult, compare_runs

# --------------------------------------------------------------------------- outputs


def plot_fig3(summary: dict, title: str):
    """Fig. 3: large-kernel attention across channel groups of one unit (left); per-unit
    mean difference large - small per scale with its standard deviation over images (right)."""
    fig = new_figure((12, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    left = summary["fig3_left"]
    unit = next(u for u in summary["units"] if u["name"] == left["unit"])
    for k, (s, vals) in enumerate(left["mean_attention"].items()):
        ax1.plot(range(len(vals)), vals, marker="o", ms=3, color=COLORS[k % 6], label=f"{float(s):g}x")
    ax1.set_xlabel(f"channel group (mean of each {left['channel_group']} successive channels)")
    rf = unit["receptive_fields"]
    ax1.set_ylabel(f"attention on the larger kernel (RF {rf[unit['large']]})")
    ax1.set_title(f"{left['unit']}: attention on the larger kernel per channel group")
    ax1.axhline(1 / len(rf), color="grey", lw=0.8, ls=":")
    ax1.legend(title="object scale")
    units = [u["name"] for u in summary["units"]]
    n_scales = len(summary["scales"])
    for k, s in enumerate(summary["scales"]):
        rows = [r for r in summary["fig3_right"] if r["scale"] == s]
        x = [i + (k - (n_scales - 1) / 2) * 0.12 for i in range(len(rows))]
        ax2.errorbar(x, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], marker="o", ms=4, capsize=3,
                     color=COLORS[k % 6], label=f"{s:g}x")  # fmt: skip
    ax2.axhline(0, color="grey", lw=0.8, ls=":")
    ax2.set_xticks(
        range(len(units)), units, rotation=45 if len(units) > 6 else 0, ha="right" if len(units) > 6 else "center"
    )  # noqa: E501
    ax2.set_ylabel("mean over channels of a(larger) - a(smaller)")
    ax2.set_title("per unit: mean +- std over images")
    ax2.legend(title="object scale")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_fig4(summary: dict, title: str):
    """Fig. 4: the mean attention difference per class, two scales, one panel per unit."""
    f4 = summary["fig4"]
    fig = new_figure((5 * len(f4["units"]), 4.2))
    axes = fig.subplots(1, len(f4["units"]), squeeze=False)
    for ax, unit in zip(axes[0], f4["units"]):
        for k, s in enumerate(f4["scales"]):
            rows = [r for r in f4["rows"] if r["unit"] == unit and r["scale"] == s]
            few = len(rows) <= 50
            means = [r["mean"] for r in rows]
            style = dict(marker="o", ms=4, lw=1) if few else dict(lw=0.6)
            ax.plot(range(len(rows)), means, color=COLORS[k % 6], label=f"{s:g}x", **style)
            if few:
                ax.set_xticks(range(len(rows)), [r["class_name"] for r in rows], rotation=60, ha="right", fontsize=8)
        frac = f4.get("frac_classes_increased", {}).get(unit)
        extra = f"\n{100 * frac:.0f}% of classes shift to the larger kernel" if frac is not None else ""
        ax.set_title(f"{unit}{extra}", fontsize=10)
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("class")
        ax.set_ylabel("mean a(larger) - a(smaller)")
        ax.legend(title="object scale")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_examples(images: list[torch.Tensor], scales, mean, std, n: int = 6):
    """A few inputs at each scale (rows: scales), un-normalised."""
    n = min(n, len(images[0]))
    fig = new_figure((1.6 * n, 1.6 * len(scales)))
    axes = fig.subplots(len(scales), n, squeeze=False)
    m = torch.tensor(mean or (0.0,)).view(-1, 1, 1)
    sd = torch.tensor(std or (1.0,)).view(-1, 1, 1)
    for r, (s, x) in enumerate(zip(scales, images)):
        for c in range(n):
            img = (x[c].float().cpu() * sd + m).clamp(0, 1).numpy()
            ax = axes[r][c]
            ax.imshow(
                img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray" if img.shape[0] == 1 else None
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{s:g}x")
    fig.tight_layout()
    return fig


def fmt_num(x: float) -> str:
    """Signed, 4 decimals; scientific below 1e-3 (attention of briefly trained models stays near uniform)."""
    return f"{x:+.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:+.2e}"


def format_summary(summary: dict, title: str) -> str:
    """``analysis.md``: per unit, the mean difference a(larger) - a(smaller) at each scale and
    its change against the first scale measured image by image (mean +- standard error)."""
    scales = summary["scales"]
    head = " | ".join(f"{s:g}x" for s in scales)
    changes = " | ".join(f"{s:g}x - {scales[0]:g}x (s.e.), % images up" for s in scales[1:])
    lines = [
        f"# {title}",
        "",
        "Mean over images of the per-image mean over channels of a(larger) - a(smaller); "
        "the change against the first scale is measured image by image.",
        "",
        f"| unit | {head} | {changes} |",
        "|" + " --- |" * (1 + len(scales) + len(scales) - 1),
    ]
    for unit in [u["name"] for u in summary["units"]]:
        rows = {r["scale"]: r for r in summary["fig3_right"] if r["unit"] == unit}
        vals = " | ".join(fmt_num(rows[s]["mean"]) for s in scales)
        ch = " | ".join(
            f"{fmt_num(rows[s]['change_vs_first_scale'])} ({fmt_num(rows[s]['change_sem'])[1:]}), "
            f"{100 * rows[s]['frac_images_increased']:.0f}%"
            for s in scales[1:]
        )
        lines.append(f"| {unit} | {vals} | {ch} |")
    frac = summary["fig4"].get("frac_classes_increased")
    if frac:
        s0, s1 = summary["fig4"]["scales"][:2]
        lines += ["", f"Fig. 4: classes whose mean difference grows from {s0:g}x to {s1:g}x: "
                  + ", ".join(f"{u} {100 * f:.0f}%" for u, f in frac.items())]  # fmt: skip
    acc = ", ".join(f"{float(s):g}x {100 * a:.2f}%" for s, a in summary["accuracy"].items() if a is not None)
    lines += ["", f"Top-1 accuracy at each scale: {acc}; {summary['num_images']} images.", ""]
    return "\n".join(lines)


def write_report(result: AnalysisResult, out_dir: str | Path, title: str) -> list[Path]:
    """Every file of one analysis into ``out_dir`` (each written atomically); returns their paths."""
    out = Path(out_dir)
    summary = result.summary
    write_text(out / "analysis.json", json.dumps(summary, indent=1))
    left = summary["fig3_left"]
    write_csv(
        out / "fig3_left.csv",
        [
            dict(
                unit=left["unit"],
                scale=float(s),
                channel_group=g,
                first_channel=left["group_start_channels"][g],
                mean_attention_larger=v,
            )  # fmt: skip
            for s, vals in left["mean_attention"].items()
            for g, v in enumerate(vals)
        ],
    )
    write_csv(out / "fig3_right.csv", summary["fig3_right"])
    write_csv(out / "fig4.csv", summary["fig4"]["rows"])
    write_text(out / "analysis.md", format_summary(summary, title))
    save_figure(plot_fig3(summary, title), out / "fig3.png", bbox_inches="tight")
    save_figure(plot_fig4(summary, title), out / "fig4.png", bbox_inches="tight")
    names = ["analysis.json", "fig3_left.csv", "fig3_right.csv", "fig4.csv", "analysis.md", "fig3.png", "fig4.png"]
    if result.examples:
        save_figure(plot_examples(result.examples, summary["scales"], result.mean, result.std), out / "examples.png",
                    bbox_inches="tight")  # fmt: skip
        names.append("examples.png")
    return [out / n for n in names]


# --------------------------------------------------------------------------- comparison across runs


def format_comparison(comparison: dict) -> str:
    """``comparison.md``: per unit and scale, each run's change of a(larger) - a(smaller) against
    the first scale, their mean +- std over runs, and the runs that moved to the larger kernel."""
    labels = comparison["labels"]
    lines = [
        "# Attention shift across runs",
        "",
        "Change of the mean a(larger) - a(smaller) against the first scale, per run (measured image by "
        "image over the same test images); mean +- sample std over runs; runs whose change is positive "
        "(attention moved towards the larger kernel).",
        "",
        f"| unit | scale | {' | '.join(labels)} | mean +- std | runs up |",
        "|" + " --- |" * (4 + len(labels)),
    ]
    for r in comparison["rows"]:
        per = " | ".join(fmt_num(c) for c in r["changes"])
        std = "-" if r["runs"] < 2 else fmt_num(r["std_change"])[1:]
        lines.append(
            f"| {r['unit']} | {r['scale']:g}x - {r['first_scale']:g}x | {per} | {fmt_num(r['mean_change'])} +- {std} "
            f"| {r['runs_up']} of {r['runs']} |"
        )
    acc = "; ".join(
        f"{label}: " + ", ".join(f"{float(s):g}x {100 * a:.2f}%" for s, a in accs.items() if a is not None)
        for label, accs in comparison["accuracy"].items()
    )
    lines += ["", f"Top-1 accuracy at each scale: {acc}.", ""]
    return "\n".join(lines)


def plot_comparison(comparison: dict):
    """One panel per unit: each run's change against the first scale (dots) and the mean (bar)."""
    units, scales = comparison["units"], comparison["scales"][1:]
    fig = new_figure((3.2 * len(units), 3.2))
    axes = fig.subplots(1, len(units), sharey=True, squeeze=False)
    for ax, unit in zip(axes[0], units):
        rows = [r for r in comparison["rows"] if r["unit"] == unit]
        for k, r in enumerate(rows):
            ax.bar(k, r["mean_change"], color=COLORS[k % len(COLORS)], alpha=0.5, width=0.6)
            ax.scatter([k] * len(r["changes"]), r["changes"], color="black", s=14, zorder=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(rows)), [f"{s:g}x" for s in scales])
        ax.set_title(unit)
    axes[0][0].set_ylabel(f"change of a(larger) - a(smaller)\nvs {comparison['scales'][0]:g}x")
    fig.suptitle(f"Attention shift with object size, {len(comparison['labels'])} runs (dots) and their mean (bars)")
    fig.tight_layout()
    return fig


def compare_folders(folders: Sequence[str | Path]) -> dict:
    """:func:`~sknet.analysis.summary.compare_runs` of the ``analysis.json`` in each folder, labelled
    by folder name (by full path where names repeat).

    Raises:
        FileNotFoundError: A folder holds no ``analysis.json``.
        ValueError: The analyses used different scales or units.
    """
    summaries, labels = [], []
    for d in folders:
        path = Path(d) / "analysis.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: compare folders written by `sknet analyze --output`")
        summaries.append(json.loads(path.read_text()))
        labels.append(Path(d).name)
    if len(set(labels)) != len(labels):
        labels = [str(d) for d in folders]
    return compare_runs(summaries, labels)


def write_comparison(comparison: dict, out_dir: str | Path) -> list[Path]:
    """``comparison.json``, ``.csv``, ``.md`` and ``.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    write_text(out / "comparison.json", json.dumps(comparison, indent=1))
    write_csv(out / "comparison.csv", [
        dict(unit=r["unit"], scale=r["scale"], label=label, change=c, change_sem=e, frac_images_increased=f)
        for r in comparison["rows"]
        for label, c, e, f in zip(comparison["labels"], r["changes"], r["change_sems"], r["frac_images_increased"])
    ])  # fmt: skip
    write_text(out / "comparison.md", format_comparison(comparison))
    save_figure(plot_comparison(comparison), out / "comparison.png", bbox_inches="tight")
    return [out / f"comparison.{ext}" for ext in ("json", "csv", "md", "png")]
