"""Does the receptive field adapt? The paper's attention analysis (Sec. 4.3, Fig. 3 and 4; SPEC 4).

Three pieces, usable on any model that contains :class:`~sknet.layers.SKConv`:

- :func:`find_sk_units` names every attention-mode SK conv ``SK_<stage>_<unit>``
  (stages numbered like conv2..conv5, units from 1) and tells which branch has the
  larger receptive field;
- :class:`AttentionRecorder` records the select attention ``(B, M, C)`` of each unit
  with forward hooks on its :class:`~sknet.layers.SKAttention`, removed on exit, so
  the model is not edited;
- :func:`scale_center` enlarges the central object by ``s``: centre-crop a ``1/s``
  fraction of the image and resize it back to the input size.

:func:`run_analysis` streams a data set through the model at every scale and reduces
the attention to the numbers of Fig. 3 and Fig. 4 (:class:`AttentionStats`);
:func:`write_outputs` writes them as ``analysis.json``, CSV files and PNG figures.
``sknet analyze`` is the command-line front end (``analysis_cli.py``).

Choices the paper leaves open (also in docs/replication.md):

- "Larger" and "smaller" kernel: the branches with the largest and the smallest
  effective receptive field ``dilation * (kernel - 1) + 1``. With three branches
  (K3+K5+K7) the difference is K7 minus K3; the middle branch is recorded too.
- Scaling works on the model's input tensor (after resizing, cropping and
  normalising): crop and bilinear resize are linear, so doing it before or after the
  per-channel normalisation gives the same image. Resizing uses antialiasing.
- Fig. 3 (right) and Fig. 4 average per image first (mean over channels of the
  difference), then over images; the standard deviation is over images.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .layers import SKConv

# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class SKUnit:
    """One attention-mode SK convolution of a model.

    Attributes:
        name: ``SK_<stage>_<unit>`` (paper naming), e.g. ``SK_3_4``.
        path: Module path in the model, e.g. ``layer2.3.conv2``.
        module: The :class:`SKConv`.
        receptive_fields: Effective receptive field ``D * (k - 1) + 1`` of each branch.
    """

    name: str
    path: str
    module: SKConv
    receptive_fields: tuple[int, ...]

    @property
    def num_paths(self) -> int:
        return len(self.receptive_fields)

    @property
    def channels(self) -> int:
        return self.module.out_channels

    @property
    def large(self) -> int:
        """Index of the branch with the largest receptive field (the first one on ties)."""
        return max(range(self.num_paths), key=lambda m: (self.receptive_fields[m], -m))

    @property
    def small(self) -> int:
        """Index of the branch with the smallest receptive field (the first one on ties)."""
        return min(range(self.num_paths), key=lambda m: (self.receptive_fields[m], m))


def receptive_field(kernel: int, dilation: int) -> int:
    """Effective receptive field of one dilated convolution: ``D * (k - 1) + 1`` (K5 = 3x3 with D=2)."""
    return dilation * (kernel - 1) + 1


_STAGE_PATTERNS = (
    (re.compile(r"^layer(\d+)\.(\d+)(?:\.|$)"), 1),  # ResNet/ResNeXt: layer1 is conv2
    (re.compile(r"^stage(\d+)\.(\d+)(?:\.|$)"), 0),  # ShuffleNetV2: stage2 is already conv2
)


def _unit_name(path: str) -> tuple[str, str]:
    """``("SK_<stage>_<unit>", rest_of_path)``, or ``(path, "")`` for a layout we don't know."""
    for pattern, stage_offset in _STAGE_PATTERNS:
        m = pattern.match(path)
        if m:
            return f"SK_{int(m.group(1)) + stage_offset}_{int(m.group(2)) + 1}", path[m.end() :]
    return path, ""


def find_sk_units(model: nn.Module) -> list[SKUnit]:
    """Every SK conv with attention (``select="attention"``, two or more branches), in model order.

    Names follow the paper: ``layerI.J`` -> ``SK_<I+1>_<J+1>`` (``layer1`` is conv2),
    ShuffleNetV2's ``stageI.J`` -> ``SK_<I>_<J+1>``. A unit holding several SK convs
    (ShuffleNetV2's downsampling units) gets ``SK_2_1.branch1.0``-style names; a model
    with another layout keeps the module path as the name.
    """
    found = []
    for path, module in model.named_modules():
        if isinstance(module, SKConv) and module.attn is not None:
            rfs = tuple(receptive_field(b.kernel, b.dilation) for b in module.branches)
            found.append((path, module, rfs))
    names = [_unit_name(path) for path, _, _ in found]
    counts: dict[str, int] = {}
    for base, _ in names:
        counts[base] = counts.get(base, 0) + 1
    units = []
    for (path, module, rfs), (base, rest) in zip(found, names):
        name = base if counts[base] == 1 else f"{base}.{rest}" if rest else path
        units.append(SKUnit(name, path, module, rfs))
    return units


def select_units(model: nn.Module, names: Sequence[str] | None = None) -> list[SKUnit]:
    """The model's SK units, or those named in ``names`` (in that order).

    Raises:
        ValueError: The model has no SK attention, or a name is not one of its units.
    """
    units = find_sk_units(model)
    if not units:
        raise ValueError(
            "the model has no SK convolution with attention (select='attention', two or more branches); "
            "analyse an SKNet model, e.g. --model sknet50 or sknet_mini"
        )
    if names is None:
        return units
    by_name = {u.name: u for u in units}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown SK unit(s) {unknown}; this model has {[u.name for u in units]}")
    return [by_name[n] for n in names]


# --------------------------------------------------------------------------- recording


class AttentionRecorder:
    """Record the select attention of SK units with forward hooks; the hooks go on exit.

    Example::

        with AttentionRecorder(model) as rec:
            model(x)
        a = rec.attention["SK_3_4"]  # (B, M, C): per image, per branch, per channel

    Every forward call appends to the record (several batches give ``(N, M, C)``);
    :meth:`pop` returns the record and starts a new one. Tensors are detached and
    stay on the model's device.

    Args:
        model: Any model containing :class:`SKConv` modules.
        units: Unit names to record (default: all); see :func:`find_sk_units`.
    """

    def __init__(self, model: nn.Module, units: Sequence[str] | None = None) -> None:
        self.units = select_units(model, units)
        self._records: dict[str, list[torch.Tensor]] = {u.name: [] for u in self.units}
        self._handles: list = []

    def __enter__(self) -> AttentionRecorder:
        for unit in self.units:
            self._handles.append(unit.module.attn.register_forward_hook(self._hook(unit.name)))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks (done automatically when the ``with`` block ends)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            self._records[name].append(output.detach())  # (B, M, C)

        return hook

    @property
    def attention(self) -> dict[str, torch.Tensor]:
        """Unit name -> attention ``(N, M, C)`` of every image seen so far."""
        return {name: torch.cat(rec) for name, rec in self._records.items() if rec}

    def pop(self) -> dict[str, torch.Tensor]:
        """The record so far, then an empty one."""
        out = self.attention
        for rec in self._records.values():
            rec.clear()
        return out


# --------------------------------------------------------------------------- scaling


def scale_center(images: torch.Tensor, scale: float, antialias: bool = True, mode: str = "bilinear") -> torch.Tensor:
    """Enlarge the central object ``scale`` times: centre-crop a ``1/scale`` fraction, resize back.

    The paper's procedure for Fig. 3 and 4. The crop is ``round(H / scale) x round(W / scale)``
    pixels, centred as torchvision's ``center_crop`` centres it.

    Args:
        images: ``(..., H, W)``.
        scale: Enlargement ``s >= 1`` (1.0 returns the input unchanged).
        antialias: Antialias the resize (only matters when shrinking, i.e. never here, but
            kept for callers that use a size other than the input's).
        mode: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
    """
    import torchvision.transforms.v2.functional as TF

    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 1.0):
        raise ValueError(
            f"scale must be a number >= 1 (the object is enlarged by centre-cropping 1/scale), got {scale!r}"
        )
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    crop = [max(1, round(h / scale)), max(1, round(w / scale))]
    out = TF.center_crop(images, crop)
    interp = {
        "bilinear": TF.InterpolationMode.BILINEAR,
        "bicubic": TF.InterpolationMode.BICUBIC,
        "nearest": TF.InterpolationMode.NEAREST,
    }[mode]
    return TF.resize(out, [h, w], interpolation=interp, antialias=antialias)


# --------------------------------------------------------------------------- statistics


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
    units = {u.name: u for u in stats.units}
    for name in [fig3_unit, *fig4_units]:
        if name not in units:
            raise ValueError(f"unit {name!r} was not recorded; recorded units: {list(units)}")
    for s in fig4_scales:
        if float(s) not in stats.scales:
            raise ValueError(f"Fig. 4 scale {s} is not one of the analysed scales {stats.scales}")
    if channel_group < 1:
        raise ValueError(f"channel_group must be >= 1, got {channel_group}")
    u3 = units[fig3_unit]
    out: dict = {
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
        ],
    }
    out["fig3_left"] = dict(
        unit=fig3_unit,
        branch=u3.large,
        channel_group=channel_group,
        group_start_channels=list(range(0, u3.channels, channel_group)),
        mean_attention={
            str(s): _group_mean(stats.mean_attention(s, fig3_unit)[u3.large], channel_group) for s in stats.scales
        },  # fmt: skip
    )
    rows = []
    base = stats.scales[0]
    for u in stats.units:
        d0 = stats.image_diffs(base, u.name)
        for s in stats.scales:
            d = stats.image_diffs(s, u.name)
            n = len(d)
            change = d - d0
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
    out["fig3_right"] = rows
    labels = torch.cat(stats.labels) if stats.labels else torch.zeros(0, dtype=torch.long)
    classes = sorted(int(c) for c in labels.unique()) if len(labels) else []
    fig4 = []
    for name in fig4_units:
        for s in fig4_scales:
            d = stats.image_diffs(s, name)
            for c in classes:
                dc = d[labels == c]
                fig4.append(
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
    out["fig4"] = dict(units=list(fig4_units), scales=[float(s) for s in fig4_scales], rows=fig4)
    # How consistent is the shift across classes (the paper's Fig. 4 claim)?
    if len(fig4_scales) >= 2 and classes:
        s0, s1 = float(fig4_scales[0]), float(fig4_scales[1])
        consistency = {}
        for name in fig4_units:
            m0 = {r["class_index"]: r["mean"] for r in fig4 if r["unit"] == name and r["scale"] == s0}
            m1 = {r["class_index"]: r["mean"] for r in fig4 if r["unit"] == name and r["scale"] == s1}
            consistency[name] = float(sum(m1[c] > m0[c] for c in classes) / len(classes))
        out["fig4"]["frac_classes_increased"] = consistency
    return out


# --------------------------------------------------------------------------- running


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


def scaled_batches(
    dataset,
    scales: Sequence[float],
    batch_size: int = 64,
    max_images: int | None = None,
    render: bool = False,
    num_workers: int = 0,
):
    """Batches ``([x at each scale], labels)`` from a data set of ``(image tensor, label)``.

    With ``render=False`` the paper's procedure: :func:`scale_center` on the data set's
    own images. With ``render=True`` the data set draws each item itself at each scale
    (``dataset.render(index, scales)``, e.g. :class:`~sknet.fashion_scaled.ScaledFashionMNIST`,
    which redraws the object centred and sharp instead of enlarging its pixels).

    ``max_images`` takes that many images spread evenly over the data set (validation
    sets sorted by class then keep every class).
    """
    n = len(dataset)
    if max_images is not None and max_images < n:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        indices = [int(i * n / max_images) for i in range(max_images)]
    else:
        indices = list(range(n))
    if render:
        if not hasattr(dataset, "render"):
            raise ValueError(
                f"data set {type(dataset).__name__} cannot render items at chosen scales; "
                "use the crop scaling (--scaling crop) or the fashion-mnist-scaled data set"
            )
        for i in range(0, len(indices), batch_size):
            idx = indices[i : i + batch_size]
            per_item = [dataset.render(j, scales) for j in idx]  # each (S, C, H, W)
            images = [torch.stack([p[k] for p in per_item]) for k in range(len(scales))]
            targets = getattr(dataset, "targets", None)
            labels = torch.as_tensor([int(targets[j]) if targets is not None else int(dataset[j][1]) for j in idx])
            yield images, labels
        return
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    for x, y in loader:
        yield [scale_center(x, s) for s in scales], torch.as_tensor(y)


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
