"""One training epoch and one evaluation pass, as plain functions (any model, any loader).

A loader yields ``(images, targets)`` or ``(images, targets, skipped)`` (see
:func:`sknet.data.collate_skip`). Counts are summed across ranks before they are
returned, so every rank reports the global figures.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_sum, is_main

_log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def autocast(device: torch.device, amp: str = "off"):
    """Autocast context for ``amp`` in {"off", "bf16", "fp16"}."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device.type, dtype=dtype)


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last layout of ``ndim``-dimensional batches: channels_last for images,
    channels_last_3d for clips and volumes; signals have none (contiguous)."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim, torch.contiguous_format)


def _prepare(batch, device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(images, targets, skipped)`` on ``device``; ``skipped`` counts unreadable files (0 if the
    loader does not report them). Empty batches are returned as they are."""
    images, targets, *rest = batch
    skipped = int(rest[0]) if rest else 0
    if len(targets) == 0:
        return images, targets, skipped
    images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=channels_last_format(images.dim()))
    return images, targets, skipped


class Progress:
    """tqdm on a terminal; otherwise (if ``lines``) a log line every ~10% of the epoch.
    Silent off rank 0."""

    def __init__(self, total: int, desc: str, enabled: bool = True, lines: bool = True) -> None:
        self.enabled = enabled and is_main()
        self.lines = lines
        self.tty = sys.stderr.isatty()
        self.total, self.desc, self.n = total, desc, 0
        self.bar = None
        if self.enabled and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True)

    def update(self, **info) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix(info, refresh=False)
            self.bar.update()
        elif self.enabled and self.lines and (self.n == self.total or self.n % max(1, self.total // 10) == 0):
            text = " ".join(f"{k}={v}" for k, v in info.items())
            _log.info(f"{self.desc} {self.n}/{self.total} {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    criterion: Callable = F.cross_entropy,
    scheduler=None,
    scaler: torch.amp.GradScaler | None = None,
    amp: str = "off",
    channels_last: bool = False,
    step: int = 0,
    max_steps: int | None = None,
    on_step: Callable[[int, int, dict], None] | None = None,
    totals: dict | None = None,
    desc: str = "train",
    progress: bool = True,
) -> dict:
    """Train ``model`` for one pass over ``loader`` (or until ``max_steps`` optimizer steps).

    Args:
        step: Optimizer steps taken before this call (global, for ``max_steps``).
        on_step: Called after every step as ``on_step(step, batches_done, totals)``, e.g. to
            write a checkpoint.
        totals: Running sums to continue (``loss``, ``correct``, ``images``, ``skipped``,
            ``seconds``), so an epoch resumed half-way reports the same figures.

    Returns:
        ``totals`` plus ``step``, ``batches`` (done in this call), ``completed`` (the loader
        was exhausted) and the epoch's ``train_loss``, ``train_acc`` (%), ``img_per_s``
        summed over ranks.

    Raises:
        NonFiniteLossError: The loss was NaN or inf (on any rank); no step was taken with it.
    """
    model.train()
    totals = dict(totals or dict(loss=0.0, correct=0.0, images=0.0, skipped=0.0, seconds=0.0))
    bar = Progress(len(loader), desc, progress)
    batches, completed, tick = 0, True, time.perf_counter()
    for batch in loader:
        if max_steps is not None and step >= max_steps:
            completed = False
            break
        images, targets, skipped = _prepare(batch, device, channels_last)
        totals["skipped"] += skipped
        if len(targets) == 0:  # every file of the batch was unreadable (single process only: DDP would hang)
            continue
        with autocast(device, amp):
            logits = model(images)
            loss = criterion(logits, targets)
        # Every rank must agree before anyone steps, or the others would hang in all-reduce.
        loss_sum, correct, n = all_sum(
            [loss.item() * len(targets), (logits.argmax(1) == targets).sum().item(), len(targets)], device
        )
        if not math.isfinite(loss_sum):
            bar.close()
            raise NonFiniteLossError(f"training loss is {loss_sum / max(n, 1)} at optimizer step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step, batches = step + 1, batches + 1
        now = time.perf_counter()
        totals["seconds"] += now - tick
        tick = now
        totals["loss"] += loss_sum
        totals["correct"] += correct
        totals["images"] += n
        bar.update(
            loss=f"{totals['loss'] / totals['images']:.4f}",
            acc=f"{100 * totals['correct'] / totals['images']:.2f}",
            img_s=f"{totals['images'] / totals['seconds']:.0f}",
            lr=f"{optimizer.param_groups[0]['lr']:.4g}",
        )
        if on_step is not None:
            on_step(step, batches, totals)
            tick = time.perf_counter()  # checkpoint writing is not training time
    bar.close()
    seen = max(totals["images"], 1.0)
    return dict(
        totals,
        step=step,
        batches=batches,
        completed=completed,
        train_loss=totals["loss"] / seen,
        train_acc=100 * totals["correct"] / seen,
        img_per_s=totals["images"] / max(totals["seconds"], 1e-9),
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    *,
    amp: str = "off",
    channels_last: bool = False,
    desc: str = "eval",
    progress: bool = True,
) -> dict:
    """Single-pass evaluation (no test-time augmentation) like the paper's single crop.

    Returns:
        ``loss`` (mean cross-entropy, no label smoothing), ``top1_err`` and ``top5_err``
        (percent), ``images`` and ``skipped`` (unreadable files), summed over ranks.
    """
    model.eval()
    loss = top1 = top5 = n = skipped = 0.0
    bar = Progress(len(loader), desc, progress, lines=False)  # the caller prints the result
    for batch in loader:
        images, targets, skip = _prepare(batch, device, channels_last)
        skipped += skip
        if len(targets) == 0:
            continue
        with autocast(device, amp):
            logits = model(images)
        loss += F.cross_entropy(logits.float(), targets, reduction="sum").item()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == targets[:, None]  # (B, k)
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(dim=1).sum().item()
        n += len(targets)
        bar.update(top1_err=f"{100 * (1 - top1 / n):.2f}")
    bar.close()
    loss, top1, top5, n, skipped = all_sum([loss, top1, top5, n, skipped], device)
    if n == 0:
        raise ValueError("evaluation saw no images: the validation set is empty or every image was unreadable")
    return dict(loss=loss / n, top1_err=100 * (1 - top1 / n), top5_err=100 * (1 - top5 / n), images=n, skipped=skipped)
