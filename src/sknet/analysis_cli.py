"""``sknet analyze``: the paper's Fig. 3 and Fig. 4 for a trained SK model, as PNG, JSON and CSV.

Examples::

    # ImageNet SKNet-50 from a timm checkpoint, 5000 validation images
    sknet analyze --model sknet50 --weights skresnext50_32x4d.pth --dataset imagefolder \\
        --data-dir /data/imagenet/val --max-images 5000 --output runs/analysis-sknet50

    # a mini SKNet trained by `sknet train` on the scale-varied Fashion-MNIST
    sknet analyze --checkpoint runs/sk/model.safetensors --dataset fashion-mnist-scaled \\
        --data-dir .data/fashion-mnist --scaling render --output runs/sk/analysis

Writes ``analysis.json`` (every number plotted, plus the settings), ``fig3_left.csv``,
``fig3_right.csv``, ``fig4.csv``, ``fig3.png``, ``fig4.png`` and ``examples.png`` (a few
inputs at each scale, to see what the model was shown).

Several trained models (e.g. the seeds of a study variant), after analysing each::

    sknet analyze --compare runs/a-seed0 runs/a-seed1 runs/a-seed2 --output runs/a-seeds

writes ``comparison.md``, ``comparison.csv``, ``comparison.json`` and ``comparison.png``: per
unit and scale, every run's change against the first scale and how many runs agree.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import torch

from .analysis import compare_runs, default_units, run_analysis, scaled_batches, select_units, summarize
from .io import atomic_write
from .weights import add_model_arguments, model_from_arguments

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- inputs


def build_eval_dataset(name: str, data_dir: str | None, input_size, mean=None, std=None, seed: int = 0):
    """The evaluation split of data set ``name`` as ``(image tensor, label)`` items, and its class names.

    ``imagefolder``: an ImageFolder tree given directly (e.g. ``imagenet/val``), resized to
    ``input / 0.875`` and centre-cropped to the model's input, as the paper evaluates,
    normalised with the checkpoint's mean / std (ImageNet's by default).
    Any other name is a data set of the project's registry (``sknet.data``), e.g.
    ``imagenet`` (``ROOT/val``), ``fashion-mnist``, ``fashion-mnist-scaled`` (``seed``
    picks its placements), ``fake``.
    """
    from .data import build_dataset

    c, h, w = input_size
    if name == "imagefolder":
        import torchvision
        from torchvision import transforms as T

        if data_dir is None or not Path(data_dir).is_dir():
            raise FileNotFoundError(
                f"ImageFolder root {data_dir!r} is not a folder; pass --data-dir DIR with DIR/<class>/<image>"
            )
        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
        tf = T.Compose([T.Resize(round(h / 0.875)), T.CenterCrop((h, w)), T.ToTensor(), T.Normalize(mean, std)])
        ds = torchvision.datasets.ImageFolder(data_dir, transform=tf)
        return ds, list(ds.classes)
    options = dict(data_seed=seed, input_size=(c, h, w), size=64 if name == "fake" else None)
    if name == "imagenet" and h != 224:
        options["crop"] = h
    ds = build_dataset(name, data_dir, "val", **{k: v for k, v in options.items() if v is not None})
    return ds, list(getattr(ds, "classes", []) or [])


# --------------------------------------------------------------------------- outputs


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


_COLORS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b")


def plot_fig3(summary: dict, title: str):
    """Fig. 3: large-kernel attention across channel groups of one unit (left); per-unit
    mean difference large - small per scale with its standard deviation over images (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    left = summary["fig3_left"]
    unit = next(u for u in summary["units"] if u["name"] == left["unit"])
    for k, (s, vals) in enumerate(left["mean_attention"].items()):
        ax1.plot(range(len(vals)), vals, marker="o", ms=3, color=_COLORS[k % 6], label=f"{float(s):g}x")
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
                     color=_COLORS[k % 6], label=f"{s:g}x")  # fmt: skip
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f4 = summary["fig4"]
    fig, axes = plt.subplots(1, len(f4["units"]), figsize=(5 * len(f4["units"]), 4.2), squeeze=False)
    for ax, unit in zip(axes[0], f4["units"]):
        for k, s in enumerate(f4["scales"]):
            rows = [r for r in f4["rows"] if r["unit"] == unit and r["scale"] == s]
            few = len(rows) <= 50
            means = [r["mean"] for r in rows]
            style = dict(marker="o", ms=4, lw=1) if few else dict(lw=0.6)
            ax.plot(range(len(rows)), means, color=_COLORS[k % 6], label=f"{s:g}x", **style)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(images[0]))
    fig, axes = plt.subplots(len(scales), n, figsize=(1.6 * n, 1.6 * len(scales)), squeeze=False)
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


def write_outputs(summary: dict, out_dir: str | Path, title: str, examples=None) -> list[Path]:
    """``analysis.json``, three CSVs and the PNG figures into ``out_dir`` (each written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "analysis.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    left = summary["fig3_left"]
    _write_csv(
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
    _write_csv(out / "fig3_right.csv", summary["fig3_right"])
    _write_csv(out / "fig4.csv", summary["fig4"]["rows"])
    atomic_write(out / "analysis.md", lambda tmp: Path(tmp).write_text(format_summary(summary, title)))
    _save_fig(plot_fig3(summary, title), out / "fig3.png")
    _save_fig(plot_fig4(summary, title), out / "fig4.png")
    written = [
        out / n for n in ("analysis.json", "fig3_left.csv", "fig3_right.csv", "fig4.csv", "fig3.png", "fig4.png")
    ]
    if examples is not None:
        images, mean, std = examples
        _save_fig(plot_examples(images, summary["scales"], mean, std), out / "examples.png")
        written.append(out / "examples.png")
    return written


# --------------------------------------------------------------------------- command


def analyze(args) -> dict:
    """Run the whole analysis from parsed command-line arguments; returns the summary."""
    from .models import get_model_entry

    scales = [float(s) for s in args.scales]
    if not scales or any(s < 1 for s in scales):
        raise ValueError(f"--scales must be factors >= 1 (the paper uses 1.0 1.5 2.0), got {args.scales}")
    model = model_from_arguments(args.checkpoint, args.model, args.weights, args.num_classes, "analyse")
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    name = cfg.get("name", type(model).__name__)
    input_size = (
        tuple(args.input_size) if args.input_size else tuple(cfg.get("input_size") or get_model_entry(name).input_size)
    )
    if len(input_size) == 2:
        input_size = (get_model_entry(name).input_size[0], *input_size)
    units = select_units(model)
    fig3_unit, fig4_units = default_units(units)
    fig3_unit = args.unit or fig3_unit
    fig4_units = args.units or fig4_units
    select_units(model, [fig3_unit, *fig4_units])  # clear error before any work
    fig4_scales = [float(s) for s in (args.fig4_scales or scales[:2])]
    dataset, classes = build_eval_dataset(
        args.dataset, args.data_dir, input_size, cfg.get("mean"), cfg.get("std"), args.seed
    )
    info = getattr(dataset, "info", None)
    mean = info.mean if info is not None else cfg.get("mean") or IMAGENET_MEAN
    std = info.std if info is not None else cfg.get("std") or IMAGENET_STD
    render = args.scaling == "render"
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batches = scaled_batches(dataset, scales, args.batch_size, args.max_images, render=render, num_workers=args.workers)
    first = {}

    def keep_first(it):
        for images, labels in it:
            if not first:
                first["images"] = [x[:6].clone() for x in images]
            yield images, labels

    t0 = time.time()
    stats = run_analysis(model, keep_first(batches), scales, device=device)
    summary = summarize(stats, fig3_unit, fig4_units, fig4_scales, args.channel_group, classes or None)
    summary["settings"] = dict(
        checkpoint=args.checkpoint,
        model=name,
        overrides={k: (list(v) if isinstance(v, tuple) else v) for k, v in (cfg.get("overrides") or {}).items()},
        weights=args.weights,
        dataset=args.dataset,
        data_dir=args.data_dir,
        input_size=list(input_size),
        scaling="render (data set draws the object at each factor)"
        if render
        else "crop 1/s at the centre, resize back",
        max_images=args.max_images,
        seed=args.seed,
        device=str(device),
        seconds=round(time.time() - t0, 1),
        torch=torch.__version__,
    )
    title = f"{name} on {args.dataset} ({summary['num_images']} images, scaling: {args.scaling})"
    write_outputs(summary, args.output, title, (first.get("images"), mean, std) if first else None)
    return summary


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units, scales = comparison["units"], comparison["scales"][1:]
    fig, axes = plt.subplots(1, len(units), figsize=(3.2 * len(units), 3.2), sharey=True, squeeze=False)
    for ax, unit in zip(axes[0], units):
        rows = [r for r in comparison["rows"] if r["unit"] == unit]
        for k, r in enumerate(rows):
            ax.bar(k, r["mean_change"], color=_COLORS[k % len(_COLORS)], alpha=0.5, width=0.6)
            ax.scatter([k] * len(r["changes"]), r["changes"], color="black", s=14, zorder=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(rows)), [f"{s:g}x" for s in scales])
        ax.set_title(unit)
    axes[0][0].set_ylabel(f"change of a(larger) - a(smaller)\nvs {comparison['scales'][0]:g}x")
    fig.suptitle(f"Attention shift with object size, {len(comparison['labels'])} runs (dots) and their mean (bars)")
    fig.tight_layout()
    return fig


def compare(args) -> dict:
    """``--compare``: read each folder's analysis.json, write the comparison into ``--output``."""
    summaries, labels = [], []
    for d in args.compare:
        path = Path(d) / "analysis.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: --compare takes folders written by `sknet analyze --output`")
        summaries.append(json.loads(path.read_text()))
        labels.append(Path(d).name)
    if len(set(labels)) != len(labels):
        labels = [str(d) for d in args.compare]
    comparison = compare_runs(summaries, labels)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "comparison.json", lambda tmp: Path(tmp).write_text(json.dumps(comparison, indent=1)))
    _write_csv(out / "comparison.csv", [
        dict(unit=r["unit"], scale=r["scale"], label=label, change=c, change_sem=e, frac_images_increased=f)
        for r in comparison["rows"]
        for label, c, e, f in zip(comparison["labels"], r["changes"], r["change_sems"], r["frac_images_increased"])
    ])  # fmt: skip
    atomic_write(out / "comparison.md", lambda tmp: Path(tmp).write_text(format_comparison(comparison)))
    _save_fig(plot_comparison(comparison), out / "comparison.png")
    return comparison


def _run(args) -> int:
    if args.compare:
        comparison = compare(args)
        print(format_comparison(comparison))
        print(f"wrote {args.output}/comparison.md, comparison.csv, comparison.json, comparison.png")
        return 0
    if not args.dataset:
        raise ValueError("--dataset is required (or --compare DIR ... to compare finished analyses)")
    summary = analyze(args)
    acc = ", ".join(f"{float(s):g}x {100 * a:.2f}%" for s, a in summary["accuracy"].items() if a is not None)
    print(f"analysed {summary['num_images']} images; top-1 accuracy {acc}")
    for r in summary["fig3_right"]:
        print(
            f"  {r['unit']:<10} {r['scale']:>4g}x  a(larger)-a(smaller) = {r['mean']:+.4f} +- {r['std']:.4f}"
            f"  (change vs {summary['scales'][0]:g}x: {r['change_vs_first_scale']:+.4f} +- {r['change_sem']:.4f} s.e.)"
        )
    print(f"wrote {args.output}/analysis.json, fig3.png, fig4.png and CSVs")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="the paper's attention analysis (Fig. 3, Fig. 4): does the receptive field grow with the object?",
        description="Record the SK attention of every unit on images enlarged 1.0x/1.5x/2.0x and plot Fig. 3 / Fig. 4.",
    )
    add_model_arguments(p, "model (one of)")
    p.add_argument(
        "--dataset", help="imagefolder, fashion-mnist, fashion-mnist-scaled, fake, ... (required unless --compare)"
    )
    p.add_argument("--data-dir", help="data folder (ImageFolder root for imagefolder, e.g. imagenet/val)")
    p.add_argument("--scales", nargs="+", type=float, default=[1.0, 1.5, 2.0], help="object enlargements (>= 1)")
    p.add_argument("--scaling", choices=("crop", "render"), default="crop",
                   help="crop: the paper's centre crop 1/s + resize; render: the data set redraws the object "
                        "(fashion-mnist-scaled)")  # fmt: skip
    p.add_argument("--unit", help="unit of Fig. 3 left (default SK_3_4, or a middle unit)")
    p.add_argument(
        "--units", nargs="+", help="three units for Fig. 4 (default SK_2_3 SK_3_4 SK_5_3, or first/middle/last)"
    )
    p.add_argument("--fig4-scales", nargs=2, type=float, help="the two scales of Fig. 4 (default: the first two)")
    p.add_argument(
        "--channel-group", type=int, default=16, help="channels averaged per point in Fig. 3 left (paper: 16)"
    )
    p.add_argument("--max-images", type=int, default=None, help="use this many images, spread over the set")
    p.add_argument("--input-size", nargs="+", type=int, help="H W (or C H W) fed to the model (default: the model's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data loader workers")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (fashion-mnist-scaled placements, fake data)")
    p.add_argument("--output", required=True, help="folder for analysis.json, CSVs and PNGs")
    p.add_argument(
        "--compare", nargs="+", metavar="DIR",
        help="instead of analysing: compare the analysis.json of these folders (e.g. one per seed)",
    )  # fmt: skip
    p.set_defaults(func=_run)
