"""One training epoch and one evaluation pass, as plain functions (any model, any loader).

A loader yields ``(images, targets)`` or ``(images, targets, skipped)`` (see
:func:`sknet.data.collate_skip`). Counts are summed across ranks before they are
returned, so every rank reports the global figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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


def new_totals() -> dict:
    """An epoch's running sums, at its start."""
    return dict(loss=0.0, correct=0.0, images=0.0, skipped=0.0, seconds=0.0)


@dataclass
class EpochProgress:
    """How far an epoch has got: what :func:`train_one_epoch` continues from and returns.

    ``step`` counts the optimizer steps of the whole run, ``batch`` the loader's batches done in
    this epoch (trained on, or skipped as unreadable), ``totals`` the epoch's running sums
    (``loss``, ``correct``, ``images``, ``skipped``, ``seconds``; over all ranks), so an epoch
    resumed part-way reports the figures of an uninterrupted one.
    """

    step: int = 0
    batch: int = 0
    totals: dict = field(default_factory=new_totals)
    completed: bool = False  # the loader was exhausted (not stopped by max_steps)

    @property
    def train_loss(self) -> float:
        return self.totals["loss"] / max(self.totals["images"], 1.0)

    @property
    def train_acc(self) -> float:
        """Percent of the epoch's training images classified right (as augmented)."""
        return 100 * self.totals["correct"] / max(self.totals["images"], 1.0)

    @property
    def img_per_s(self) -> float:
        return self.totals["images"] / max(self.totals["seconds"], 1e-9)


@dataclass(frozen=True)
class TrainStep:
    """One optimizer step on a batch: the loss, the update, and the numerics they run in.

    Calling it runs the forward pass, checks that every rank's loss is finite, then takes the
    backward pass and the optimizer and scheduler steps (through ``scaler`` for fp16).
    """

    optimizer: torch.optim.Optimizer
    criterion: Callable = F.cross_entropy
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    amp: str = "off"  # off | bf16 | fp16
    channels_last: bool = False

    def __call__(self, model: nn.Module, images, targets, device: torch.device, step: int) -> list[float]:
        """``[loss sum, correct, images]`` of the batch, summed over ranks; ``step``: steps taken before it.

        Raises:
            NonFiniteLossError: The loss was NaN or inf (on any rank); no step was taken with it.
        """
        with autocast(device, self.amp):
            logits = model(images)
            loss = self.criterion(logits, targets)
        # Every rank must agree before anyone steps, or the others would hang in all-reduce.
        sums = all_sum([loss.item() * len(targets), (logits.argmax(1) == targets).sum().item(), len(targets)], device)
        if not math.isfinite(sums[0]):
            raise NonFiniteLossError(f"training loss is {sums[0] / max(sums[2], 1)} at optimizer step {step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return sums


def train_one_epoch(
    model: nn.Module,
    loader,
    train_step: TrainStep,
    device: torch.device,
    *,
    start: EpochProgress | None = None,
    max_steps: int | None = None,
    checkpoint_every: int = 0,
    checkpoint: Callable[[EpochProgress], None] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> EpochProgress:
    """Train ``model`` on the rest of one pass over ``loader``, or until ``max_steps`` optimizer steps.

    Args:
        start: Where the epoch is (default: at its beginning, step 0); after a resume ``loader``
            yields only the batches not yet done.
        max_steps: Optimizer steps of the whole run after which to stop, part-way if need be.
        checkpoint: The checkpoint hook, called as ``checkpoint(progress)`` after every optimizer
            step whose run-wide number is a multiple of ``checkpoint_every`` (never if that is 0).
            ``progress`` is a copy of the epoch's progress after that step: what a resume continues
            from. Its time is not counted as training time.

    Returns:
        The epoch's progress; ``completed`` is False if ``max_steps`` stopped it part-way.

    Raises:
        NonFiniteLossError: The loss was NaN or inf (on any rank); no step was taken with it.
    """
    model.train()
    start = start or EpochProgress()
    done = EpochProgress(start.step, start.batch, dict(start.totals))
    bar = Progress(len(loader), desc, progress)
    tick = time.perf_counter()
    try:
        for batch in loader:
            if max_steps is not None and done.step >= max_steps:
                break
            images, targets, skipped = _prepare(batch, device, train_step.channels_last)
            done.batch += 1
            done.totals["skipped"] += skipped
            if len(targets) == 0:  # every file of the batch was unreadable (single process only: DDP would hang)
                continue
            loss_sum, correct, n = train_step(model, images, targets, device, done.step)
            done.step += 1
            _add(done.totals, loss=loss_sum, correct=correct, images=n, seconds=time.perf_counter() - tick)
            bar.update(
                loss=f"{done.train_loss:.4f}",
                acc=f"{done.train_acc:.2f}",
                img_s=f"{done.img_per_s:.0f}",
                lr=f"{train_step.optimizer.param_groups[0]['lr']:.4g}",
            )
            if checkpoint is not None and checkpoint_every and done.step % checkpoint_every == 0:
                checkpoint(dataclasses.replace(done, totals=dict(done.totals)))
            tick = time.perf_counter()  # neither the progress display nor the checkpoint is training time
        else:
            done.completed = True
    finally:
        bar.close()
    return done


def _add(totals: dict, **values: float) -> None:
    for key, value in values.items():
        totals[key] += value


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
