"""The numbers of Fig. 3 and Fig. 4: attention recorded over a data set at every scale, reduced.

:func:`analyze` is the whole analysis (what ``sknet analyze`` runs): it streams a data set
through the model at every scale (:func:`run_analysis`), reduces the attention
(:class:`AttentionStats`) and returns every number the figures plot (:func:`summarize`).
:func:`compare_runs` sets several trained models' results side by side.

Fig. 3 (right) and Fig. 4 average per image first (mean over channels of the difference
``a(larger) - a(smaller)``), then over images; the standard deviation is over images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from .attention import AttentionRecorder, SKUnit, select_units
from .scaling import scaled_batches


class AttentionStats:
    """Streaming reduction of recorded attention to the numbers of Fig. 3 and Fig. 4.

    Per scale and unit it keeps the sum over images of the attention ``(M, C)`` (for the
    per-channel means of Fig. 3 left) and, per image, the mean over channels of
    ``a_large - a_small`` (Fig. 3 right, Fig. 4). Memory grows with the number of images
    only by a few floats per unit, so a full ImageNet validation set fits.
    """

    def __init__(self, units: Sequence[SKUnit], scales: Sequence[float]) -> None:
        self.units = list(units)
        self.scales = [float(s) for s in scales]
        self.count = 0
        self.labels: list[torch.Tensor] = []
        self.correct: dict[float, list[torch.Tensor]] = {s: [] for s in self.scales}
        self.sum_attention = {s: {u.name: torch.zeros(u.num_paths, u.channels, dtype=torch.float64) for u in units}
                              for s in self.scales}  # fmt: skip
        self.diff: dict[float, dict[str, list[torch.Tensor]]] = {s: {u.name: [] for u in units} for s in self.scales}

    def update(self, scale: float, attention: dict[str, torch.Tensor], logits: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> None:  # fmt: skip
        """Add one batch at one scale (call with the same images for every scale, labels once per batch)."""
        scale = float(scale)
        for u in self.units:
            a = attention[u.name].double().cpu()  # (B, M, C)
            self.sum_attention[scale][u.name] += a.sum(0)
            self.diff[scale][u.name].append((a[:, u.large] - a[:, u.small]).mean(1))  # (B,)
        if logits is not None and labels is not None:
            self.correct[scale].append(logits.argmax(1).cpu() == labels.cpu())
        if scale == self.scales[0] and labels is not None:
            self.labels.append(labels.cpu())
            self.count += len(labels)

    def image_diffs(self, scale: float, unit: str) -> torch.Tensor:
        """Per image: mean over channels of ``a_large - a_small`` at ``scale`` ``(N,)``."""
        return torch.cat(self.diff[float(scale)][unit])

    def mean_attention(self, scale: float, unit: str) -> torch.Tensor:
        """Mean over images of the attention ``(M, C)``."""
        return self.sum_attention[float(scale)][unit] / max(self.count, 1)

    def accuracy(self, scale: float) -> float | None:
        c = self.correct[float(scale)]
        return float(torch.cat(c).double().mean()) if c else None


def _group_mean(values: torch.Tensor, group: int) -> list[float]:
    """Average each ``group`` successive entries (the last group may be shorter)."""
    return [float(values[i : i + group].mean()) for i in range(0, len(values), group)]


def summarize(
    stats: AttentionStats,
    fig3_unit: str,
    fig4_units: Sequence[str],
    fig4_scales: Sequence[float],
    channel_group: int = 16,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Every number the figures plot, as a JSON-ready dict.

    - ``fig3_left``: per scale, the mean attention on ``fig3_unit``'s largest-RF branch
      for each group of ``channel_group`` successive channels.
    - ``fig3_right``: per unit and scale, mean / std / standard error over images of the
      per-image mean over channels of ``a_large - a_small``; ``paired`` compares each
      scale with the first one image by image (mean and standard error of the change,
      fraction of images whose difference grew).
    - ``fig4``: per unit in ``fig4_units``, class and scale in ``fig4_scales``: mean and
      std of the same difference over the images of the class.
    """
    _check_summary_request(stats, [fig3_unit, *fig4_units], fig4_scales, channel_group)
    return {
        "num_images": stats.count,
        "scales": stats.scales,
        "accuracy": {str(s): stats.accuracy(s) for s in stats.scales},
        "units": [
            dict(
                name=u.name,
                path=u.path,
                channels=u.channels,
                branches=[list(b) for b in u.module.branches],
                receptive_fields=list(u.receptive_fields),
                large=u.large,
                small=u.small,
            )
            for u in stats.units
        ],  # fmt: skip
        "fig3_left": _fig3_left(stats, fig3_unit, channel_group),
        "fig3_right": _fig3_right(stats),
        "fig4": _fig4(stats, fig4_units, fig4_scales, class_names),
    }


def _check_summary_request(stats: AttentionStats, unit_names, fig4_scales, channel_group: int) -> None:
    recorded = [u.name for u in stats.units]
    for name in unit_names:
        if name not in recorded:
            raise ValueError(f"unit {name!r} was not recorded; recorded units: {recorded}")
    for s in fig4_scales:
        if float(s) not in stats.scales:
            raise ValueError(f"Fig. 4 scale {s} is not one of the analysed scales {stats.scales}")
    if channel_group < 1:
        raise ValueError(f"channel_group must be >= 1, got {channel_group}")


def _fig3_left(stats: AttentionStats, unit_name: str, channel_group: int) -> dict:
    """Fig. 3 (left): the mean attention on the unit's largest-RF branch, per group of channels."""
    unit = next(u for u in stats.units if u.name == unit_name)
    return dict(
        unit=unit_name,
        branch=unit.large,
        channel_group=channel_group,
        group_start_channels=list(range(0, unit.channels, channel_group)),
        mean_attention={
            str(s): _group_mean(stats.mean_attention(s, unit_name)[unit.large], channel_group) for s in stats.scales
        },  # fmt: skip
    )


def _fig3_right(stats: AttentionStats) -> list[dict]:
    """Fig. 3 (right): per unit and scale, the per-image difference ``a_large - a_small`` over images,
    and its change from the first scale, image by image."""
    rows = []
    for u in stats.units:
        d0 = stats.image_diffs(stats.scales[0], u.name)
        for s in stats.scales:
            d = stats.image_diffs(s, u.name)
            n, change = len(d), d - d0
            rows.append(
                dict(
                    unit=u.name,
                    scale=s,
                    n=n,
                    mean=float(d.mean()),
                    std=float(d.std()) if n > 1 else 0.0,
                    sem=float(d.std() / math.sqrt(n)) if n > 1 else 0.0,
                    change_vs_first_scale=float(change.mean()),
                    change_sem=float(change.std() / math.sqrt(n)) if n > 1 else 0.0,
                    frac_images_increased=float((change > 0).double().mean()),
                )
            )
    return rows


def _fig4(stats: AttentionStats, units: Sequence[str], scales: Sequence[float], class_names) -> dict:
    """Fig. 4: per unit, scale and class, the mean and std of ``a_large - a_small`` over the class's
    images; with two scales or more, the fraction of classes whose mean grew (the paper's claim)."""
    labels = torch.cat(stats.labels) if stats.labels else torch.zeros(0, dtype=torch.long)
    classes = sorted(int(c) for c in labels.unique()) if len(labels) else []
    rows = []
    for name in units:
        for s in scales:
            d = stats.image_diffs(s, name)
            for c in classes:
                dc = d[labels == c]
                rows.append(
                    dict(
                        unit=name,
                        scale=float(s),
                        class_index=c,
                        class_name=class_names[c] if class_names is not None and c < len(class_names) else str(c),
                        n=len(dc),
                        mean=float(dc.mean()),
                        std=float(dc.std()) if len(dc) > 1 else 0.0,
                    )
                )
    fig4 = dict(units=list(units), scales=[float(s) for s in scales], rows=rows)
    if len(scales) >= 2 and classes:
        s0, s1 = float(scales[0]), float(scales[1])
        consistency = {}
        for name in units:
            m0 = {r["class_index"]: r["mean"] for r in rows if r["unit"] == name and r["scale"] == s0}
            m1 = {r["class_index"]: r["mean"] for r in rows if r["unit"] == name and r["scale"] == s1}
            consistency[name] = float(sum(m1[c] > m0[c] for c in classes) / len(classes))
        fig4["frac_classes_increased"] = consistency
    return fig4


@torch.no_grad()
def run_analysis(
    model: nn.Module,
    batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]],
    scales: Sequence[float],
    units: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> AttentionStats:
    """Run ``model`` (eval mode) on every batch at every scale and collect :class:`AttentionStats`.

    Args:
        model: A model containing SK convolutions.
        batches: Yields ``(images_per_scale, labels)``: one ``(B, C, H, W)`` tensor per
            entry of ``scales`` (the same images, enlarged; see :func:`scaled_batches`).
        scales: The enlargement factors, first one the reference (1.0 in the paper).
        units: Units to record (default all).
        device: Where the model runs.
    """
    model.eval().to(device)
    stats = AttentionStats(select_units(model, units), scales)
    with AttentionRecorder(model, [u.name for u in stats.units]) as rec:
        for images, labels in batches:
            if len(images) != len(stats.scales):
                raise ValueError(f"got {len(images)} image tensors for {len(stats.scales)} scales")
            for s, x in zip(stats.scales, images):
                logits = model(x.to(device, non_blocking=True))
                stats.update(s, rec.pop(), logits, labels)
    return stats


def default_units(units: Sequence[SKUnit]) -> tuple[str, list[str]]:
    """The paper's units where the model has them (``SK_3_4``; ``SK_2_3, SK_3_4, SK_5_3``),
    else a middle unit for Fig. 3 left and the first, middle and last units for Fig. 4."""
    names = [u.name for u in units]
    fig3 = "SK_3_4" if "SK_3_4" in names else names[len(names) // 2]
    paper4 = ["SK_2_3", "SK_3_4", "SK_5_3"]
    if all(n in names for n in paper4):
        fig4 = paper4
    else:
        picks = sorted({0, len(names) // 2, len(names) - 1})
        fig4 = [names[i] for i in picks]
    return fig3, fig4


def compare_runs(summaries: Sequence[dict], labels: Sequence[str]) -> dict:
    """Fig. 3 (right) across several trained models, e.g. the seeds of one study variant.

    For every unit and every scale after the first: each run's change of the mean
    ``a(larger) - a(smaller)`` against the first scale (measured image by image by
    :func:`summarize`), their mean and sample standard deviation over runs, and how many runs
    moved towards the larger kernel. One model showing a shift is one training run; the same
    shift in every seed is a property of the setting. Summaries must share scales and units.
    """
    if len(summaries) != len(labels) or not summaries:
        raise ValueError("compare_runs needs one label per summary and at least one summary")
    scales = summaries[0]["scales"]
    units = [u["name"] for u in summaries[0]["units"]]
    for label, s in zip(labels, summaries):
        if s["scales"] != scales or [u["name"] for u in s["units"]] != units:
            raise ValueError(
                f"{label}: scales {s['scales']} / units {[u['name'] for u in s['units']]} differ from "
                f"{labels[0]}'s ({scales} / {units}); compare analyses made with the same --scales "
                "on the same model family"
            )
    rows = []
    for unit in units:
        for scale in scales[1:]:
            per_run = []
            for s in summaries:
                (r,) = [r for r in s["fig3_right"] if r["unit"] == unit and r["scale"] == scale]
                per_run.append(r)
            changes = torch.tensor([r["change_vs_first_scale"] for r in per_run], dtype=torch.float64)
            rows.append(dict(
                unit=unit, scale=scale, first_scale=scales[0], runs=len(per_run),
                changes=[float(c) for c in changes],
                change_sems=[float(r["change_sem"]) for r in per_run],
                frac_images_increased=[float(r["frac_images_increased"]) for r in per_run],
                mean_change=float(changes.mean()),
                std_change=float(changes.std()) if len(changes) > 1 else float("nan"),
                runs_up=int((changes > 0).sum()),
            ))  # fmt: skip
    accuracy = {label: s["accuracy"] for label, s in zip(labels, summaries)}
    return dict(labels=list(labels), scales=scales, units=units, rows=rows, accuracy=accuracy)


# --------------------------------------------------------------------------- the whole analysis


@dataclass
class AnalysisResult:
    """What :func:`analyze` returns: every number of Fig. 3 and Fig. 4, and what the model was shown.

    Attributes:
        summary: JSON-ready numbers (:func:`summarize`) plus ``settings`` (how they were made).
        examples: The first few inputs at each scale, one ``(n, C, H, W)`` tensor per scale.
        mean: Normalisation mean of the inputs (to show the examples as images).
        std: Normalisation std of the inputs.
    """

    summary: dict
    examples: list[torch.Tensor] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]


def analyze(
    model: nn.Module,
    dataset: Dataset,
    *,
    scales: Sequence[float] = (1.0, 1.5, 2.0),
    scaling: str = "crop",
    fig3_unit: str | None = None,
    fig4_units: Sequence[str] | None = None,
    fig4_scales: Sequence[float] | None = None,
    channel_group: int = 16,
    max_images: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    num_examples: int = 6,
) -> AnalysisResult:
    """The paper's attention analysis (Sec. 4.3, Fig. 3 and 4) of ``model`` on ``dataset``.

    Args:
        model: A trained model with SK convolutions (it is put in eval mode).
        dataset: ``(image tensor, label)`` items, normalised like the model's training data, e.g.
            ``sknet.data.build_dataset(name, root, "val", augment=False)``; its ``.info`` and
            ``.classes`` name the classes and give the normalisation.
        scales: Object enlargements, the first the reference (the paper: 1.0, 1.5, 2.0).
        scaling: ``"crop"``: the paper's centre crop of ``1/s`` resized back; ``"render"``: the data
            set draws each item at each factor (``dataset.render``, fashion-mnist-scaled).
        fig3_unit: Unit of Fig. 3 (left); default ``SK_3_4`` or a middle unit.
        fig4_units: Units of Fig. 4; default ``SK_2_3, SK_3_4, SK_5_3`` or the first, middle, last.
        fig4_scales: The two scales Fig. 4 compares; default the first two.
        channel_group: Channels averaged per point of Fig. 3 (left) (the paper: 16).
        max_images: Use this many images, spread evenly over the data set.
        batch_size: Images per forward pass.
        num_workers: Data loader workers.
        device: Where the model runs; default CUDA if available.
        num_examples: Inputs kept per scale in ``examples``.

    Raises:
        ValueError: Bad scales, an unknown unit, or a model without SK attention.
    """
    scales = _check_scales(scales, scaling)
    default3, default4 = default_units(select_units(model))
    fig3_unit, fig4_units = fig3_unit or default3, list(fig4_units or default4)
    select_units(model, [fig3_unit, *fig4_units])  # an unknown unit fails before any work
    fig4_scales = [float(s) for s in (fig4_scales or scales[:2])]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    batches = scaled_batches(
        dataset, scales, batch_size, max_images, render=scaling == "render", num_workers=num_workers
    )
    examples: list[torch.Tensor] = []

    def keep_examples(it):
        for images, labels in it:
            if not examples:
                examples.extend(x[:num_examples].clone() for x in images)
            yield images, labels

    t0 = time.time()
    stats = run_analysis(model, keep_examples(batches), scales, device=device)
    classes = list(getattr(dataset, "classes", []) or []) or None
    summary = summarize(stats, fig3_unit, fig4_units, fig4_scales, channel_group, classes)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    info = getattr(dataset, "info", None)
    summary["settings"] = dict(
        model=cfg.get("name", type(model).__name__),
        overrides={k: (list(v) if isinstance(v, tuple) else v) for k, v in (cfg.get("overrides") or {}).items()},
        dataset=info.name if info is not None else type(dataset).__name__,
        input_size=list(examples[0].shape[1:]) if examples else None,
        scaling=_SCALING_WORDS[scaling],
        max_images=max_images,
        device=str(device),
        seconds=round(time.time() - t0, 1),
        torch=torch.__version__,
    )
    mean = tuple(info.mean) if info is not None else tuple(cfg.get("mean") or (0.0,))
    std = tuple(info.std) if info is not None else tuple(cfg.get("std") or (1.0,))
    return AnalysisResult(summary, examples or None, mean, std)


_SCALING_WORDS = {
    "crop": "crop 1/s at the centre, resize back",
    "render": "render (data set draws the object at each factor)",
}


def _check_scales(scales: Sequence[float], scaling: str) -> list[float]:
    scales = [float(s) for s in scales]
    if not scales or any(not math.isfinite(s) or s < 1 for s in scales):
        raise ValueError(f"scales must be factors >= 1 (the paper uses 1.0 1.5 2.0), got {scales}")
    if scaling not in _SCALING_WORDS:
        raise ValueError(f"scaling must be 'crop' or 'render', got {scaling!r}")
    return scales
