"""The training run: the paper's recipes on one process or many (torchrun), with exact resume.

:func:`train` takes a config (:mod:`sknet.training.config`: defaults <- recipe <- overrides);
the resolved config is written to ``OUTPUT/config.yaml`` and into every checkpoint.

A run leaves in ``OUTPUT``: ``checkpoint.pt`` (latest, for ``--resume``),
``model.safetensors`` (final weights + metadata, :func:`sknet.save_weights`),
``metrics.csv`` (one row per epoch), ``curves.png`` and ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..data import build_dataset, collate_skip, set_epoch
from ..io import write_csv, write_text
from ..models import create_model, get_model_entry
from ..plotting import new_figure, save_figure
from ..weights import load_pretrained, read_record, save_weights
from . import distributed as dist
from .checkpoint import load_checkpoint, remove_stale_temporaries, rng_state, save_checkpoint, set_rng_state
from .config import RESUMABLE_KEYS, TrainConfig, resolve_config, same_values
from .engine import NonFiniteLossError, channels_last_format, evaluate, train_one_epoch

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pieces


def param_groups(model: nn.Module | Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Weight decay on conv / linear weights only: none on BN parameters and biases (SPEC 1)."""
    decay, no_decay = [], []
    for p in model.parameters() if isinstance(model, nn.Module) else model:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters (``fc`` in every model of ours, timm's and torchvision's ResNets)."""
    fc = getattr(model, "fc", None)
    return list(fc.parameters()) if isinstance(fc, nn.Module) else []


def lr_factor(cfg: TrainConfig, steps_per_epoch: int):
    """Per-step LR multiplier: linear warm-up, then /10 at each milestone (or cosine to 0)."""

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch
        if epoch < cfg.warmup_epochs:
            return (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
        if cfg.lr_schedule == "cosine":
            t = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_milestones)

    return factor


def build_criterion(cfg: TrainConfig):
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_data(cfg: TrainConfig, in_chans: int, input_hw: tuple[int, int]):
    """Training and validation sets (limited if asked) and the training set's info."""
    options = dict(
        scale_min=cfg.crop_scale_min,
        hflip=cfg.hflip,
        eval_crop_ratio=cfg.eval_crop_ratio,
        on_corrupt=cfg.on_corrupt,
        download=cfg.download,
        seed=cfg.seed,
        input_size=(in_chans, *(2 * [cfg.image_size] if cfg.image_size else input_hw)),  # fake data only
    )
    if cfg.image_size:
        options["crop"] = cfg.image_size
    if cfg.pad is not None:
        options["pad"] = cfg.pad
    record = read_record(cfg.weights) if cfg.weights else None
    if record and record.get("mean") and record.get("std"):  # normalise as the weights were trained
        options.update(mean=record["mean"], std=record["std"])
    train_set = build_dataset(cfg.dataset, cfg.data_dir, "train", **options)
    val_set = build_dataset(cfg.dataset, cfg.data_dir, "val", **options)
    info = train_set.info
    if cfg.train_limit:
        train_set = Subset(train_set, range(min(cfg.train_limit, len(train_set))))
    if cfg.val_limit:
        val_set = Subset(val_set, range(min(cfg.val_limit, len(val_set))))
    return train_set, val_set, info


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (``start`` samples in), so a
    resumed run sees exactly the batches the interrupted one had not seen yet."""

    start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return super().__len__() - self.start


def build_model(cfg: TrainConfig, info, device: torch.device, world: int) -> tuple[nn.Module, dict]:
    """The model for ``info``'s classes and channels, on ``device``; returns it and the overrides used."""
    entry = get_model_entry(cfg.model)
    overrides = dict(cfg.model_overrides)
    if "in_chans" in entry.overrides and "in_chans" not in overrides and entry.input_size[0] != info.input_size[0]:
        overrides["in_chans"] = info.input_size[0]  # e.g. an RGB model on grayscale data
    model = create_model(cfg.model, num_classes=info.num_classes, **overrides)
    if cfg.weights and not cfg.resume:  # a resumed run's checkpoint holds the weights
        loaded = load_pretrained(model, cfg.weights, model_name=cfg.model)
        new_head = (
            f"; classifier re-initialised for {info.num_classes} classes (the file's has {loaded['file_classes']})"
            if loaded["reinitialised"] else "; every tensor loaded, none skipped"
        )  # fmt: skip
        _log.info(f"weights: {loaded['loaded']} tensors loaded from {cfg.weights}{new_head}")
    model.to(device)
    if cfg.channels_last:  # the layout of the model's kind of input (images, volumes; signals have none)
        model.to(memory_format=channels_last_format(1 + len(info.input_size)))
    if cfg.sync_bn and world > 1:
        model = dist.convert_sync_batchnorm(model, device)
    return model, overrides


def build_loaders(cfg: TrainConfig, train_set, val_set, rank: int, world: int, device: torch.device):
    """``(sampler, train_loader, val_loader)``; each process loads ``batch_size / world`` images.

    The loaders draw their worker seeds from their own generators, not from the global RNG
    (whose state a checkpoint restores). Each rank evaluates every ``world``-th test image.
    """
    per_rank = cfg.batch_size // world
    sampler = ResumableSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    args = dict(num_workers=cfg.workers, collate_fn=collate_skip, pin_memory=device.type == "cuda")
    train_loader = DataLoader(
        train_set, per_rank, sampler=sampler, drop_last=True, generator=torch.Generator().manual_seed(cfg.seed), **args
    )
    val_loader = DataLoader(
        Subset(val_set, range(rank, len(val_set), world)), per_rank, generator=torch.Generator(), **args
    )
    if len(train_loader) == 0:
        raise ValueError(f"{len(train_set)} training images make no batch of {cfg.batch_size}: lower --batch-size")
    return sampler, train_loader, val_loader


def build_optimizer(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int, device: torch.device):
    """SGD with the linearly scaled learning rate, its per-step schedule, and the fp16 scaler.

    The classifier's parameters come first (its learning rate is the one logged); the rest, the
    backbone, learn at ``backbone_lr_factor`` times that, and not at all for ``head_only_epochs``.
    """
    lr = cfg.lr * cfg.batch_size / cfg.lr_base_batch if cfg.lr_base_batch else cfg.lr
    head = classifier_parameters(model)
    backbone = [p for p in model.parameters() if all(p is not h for h in head)]
    factor = lr_factor(cfg, steps_per_epoch)
    frozen_steps = cfg.head_only_epochs * steps_per_epoch

    def backbone_factor(step: int) -> float:
        return 0.0 if step < frozen_steps else cfg.backbone_lr_factor * factor(step)

    groups, factors = [], []
    for params, f in ((head, factor), (backbone, backbone_factor)):
        for group in param_groups(params, cfg.weight_decay):
            if group["params"]:
                groups.append(group)
                factors.append(f)
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    return optimizer, scheduler, scaler


@dataclass
class RunState:
    """Where a run is: what a checkpoint stores besides the model and optimizer."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps in total
    totals: dict | None = None  # running sums of the current epoch (engine.train_one_epoch)
    history: list = field(default_factory=list)  # one metrics row per completed epoch


def check_resumable(saved: dict, cfg: TrainConfig, path: Path) -> None:
    """Name every recipe key where the checkpoint's run and this one differ."""
    current = dataclasses.asdict(cfg)
    diff = [
        f"{k}: checkpoint {saved.get(k)!r}, this run {current[k]!r}"
        for k in current
        if k not in RESUMABLE_KEYS and not same_values(saved.get(k), current[k])
    ]
    if diff:
        raise ValueError(
            f"cannot resume from {str(path)!r}: it was written by another model or recipe ({'; '.join(diff)}). "
            "Resume with the same settings (its config.yaml), or start a new run with another --output."
        )


def write_metrics(out: Path, history: list[dict], tensorboard=None) -> None:
    """``metrics.csv`` and ``curves.png``, rewritten whole (atomically) every epoch, and
    the last row to TensorBoard if a writer is given."""
    if not history:
        return
    if tensorboard is not None:
        for key, value in history[-1].items():
            tensorboard.add_scalar(key, value, history[-1]["epoch"])
    write_csv(out / "metrics.csv", history)
    epochs = [r["epoch"] for r in history]
    fig = new_figure((10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train (with label smoothing)")
    ax1.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax2.plot(epochs, [100 - r["train_acc"] for r in history], "o-", label="train (augmented)")
    ax2.plot(epochs, [r["val_top1_err"] for r in history], "o-", label="validation top-1")
    ax2.set(xlabel="epoch", ylabel="error (%)", title="top-1 error")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "curves.png", dpi=100)


# --------------------------------------------------------------------------- the run


def train(config: TrainConfig | dict | str | Path | None = None, **overrides) -> dict:
    """Train a model; returns the final metrics.

    Args:
        config: A :class:`TrainConfig`, a dict of its fields, a packaged recipe's name or a YAML path.
        **overrides: Config fields on top, e.g. ``train("fashion_mnist", epochs=2)``.

    Returns:
        ``test_top1_err``, ``test_top5_err``, ``test_loss`` (on the validation / test split),
        ``train_loss``, ``train_acc``, ``epochs``, ``steps``, ``img_per_s``, ``wall_time_s``
        (this call), ``train_time_s`` (all epochs, across resumes), ``params_m``, ``output``...

    Raises:
        ValueError: Bad config, data, or a checkpoint that does not fit.
        NonFiniteLossError: The loss became NaN/inf; the last good checkpoint is kept.
    """
    cfg = resolve_config(config, **overrides)
    rank, world, device = dist.init_distributed(cfg.device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(cfg, rank, world, device)
    finally:
        torch.use_deterministic_algorithms(deterministic)  # train() may be called again in this process
        dist.cleanup()


def _train(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> dict:
    t0 = time.perf_counter()
    out, main = Path(cfg.output), rank == 0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not cfg.resume:
        raise ValueError(f"{str(out)!r} already holds a run; pass --resume to continue it, or choose another --output")
    if cfg.resume and not ckpt_path.exists():
        raise FileNotFoundError(f"nothing to resume: {str(ckpt_path)!r} does not exist")
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} (global) does not split evenly over {world} processes")
    writer = _tensorboard(out) if cfg.tensorboard and main else None
    seed_everything(cfg.seed + rank)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)

    entry = get_model_entry(cfg.model)
    train_set, val_set, info = build_data(cfg, entry.input_size[0], entry.input_size[1:])
    model, model_overrides = build_model(cfg, info, device, world)
    sampler, train_loader, val_loader = build_loaders(cfg, train_set, val_set, rank, world, device)
    optimizer, scheduler, scaler = build_optimizer(cfg, model, len(train_loader), device)
    criterion = build_criterion(cfg)
    run = RunState()
    if cfg.resume:
        ck = load_checkpoint(ckpt_path)
        check_resumable(ck["config"], cfg, ckpt_path)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        run = RunState(**ck["run"])
        if len(ck["rng"]) == world:  # else: a different number of processes, keep the fresh seeds
            set_rng_state(ck["rng"][rank])
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    if main:
        remove_stale_temporaries(out)  # left by a writer killed mid-write
        write_text(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg)))
        _log.info(
            f"{cfg.model} ({params_m:.3f}M params) on {cfg.dataset}: {len(train_set)} train / {len(val_set)} test "
            f"images, {world} process(es) on {device}, batch {cfg.batch_size}, lr {optimizer.defaults['lr']:g}, "
            f"{len(train_loader)} steps/epoch" + (f", resuming at step {run.step}" if cfg.resume else "")
        )

    # Training goes through DDP (and torch.compile); evaluation and saving use the plain
    # module: each rank's share of the test set may have its own number of batches, and
    # DDP's forward would wait for the others.
    plain = model
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    size = [info.input_size[0], cfg.image_size, cfg.image_size] if cfg.image_size else list(info.input_size)
    meta = dict(
        model_name=cfg.model, overrides=model_overrides, num_classes=info.num_classes, input_size=size,
        mean=list(info.mean), std=list(info.std), classes=list(info.classes),
    )  # fmt: skip

    def save() -> None:
        rngs = dist.gather_objects(rng_state())  # every rank's, for an exact resume
        if main:
            save_checkpoint(ckpt_path, dict(
                model=plain.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict() if scaler else None, run=dataclasses.asdict(run), rng=rngs,
                config=dataclasses.asdict(cfg), meta=meta,
            ))  # fmt: skip

    def on_step(step: int, batches: int, totals: dict, start: int = 0) -> None:
        run.step, run.batch, run.totals = step, start + batches, dict(totals)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save()

    def test() -> dict:
        return evaluate(plain, val_loader, device, amp=cfg.amp, channels_last=cfg.channels_last,
                        desc="  test", progress=cfg.progress)  # fmt: skip

    stopped_mid_epoch = False
    try:
        while run.epoch < cfg.epochs and (cfg.max_steps is None or run.step < cfg.max_steps):
            if run.epoch == cfg.head_only_epochs > 0 and run.batch == 0:
                # The backbone starts learning: its momentum starts from zero, not from the gradients
                # it gathered (at learning rate 0) while the classifier trained alone.
                head = classifier_parameters(plain)
                for p in plain.parameters():
                    if all(p is not h for h in head):
                        optimizer.state.pop(p, None)
            sampler.set_epoch(run.epoch)  # the epoch's shuffle, and its augmentation seeds
            set_epoch(train_set, run.epoch)
            sampler.start = run.batch * train_loader.batch_size  # part-way after a resume
            r = train_one_epoch(
                model, train_loader, optimizer, device, criterion=criterion, scheduler=scheduler, scaler=scaler,
                amp=cfg.amp, channels_last=cfg.channels_last, step=run.step, max_steps=cfg.max_steps,
                on_step=partial(on_step, start=run.batch), totals=run.totals,
                desc=f"epoch {run.epoch + 1}/{cfg.epochs}", progress=cfg.progress,
            )  # fmt: skip
            if not r["completed"]:  # max_steps reached part-way through the epoch
                stopped_mid_epoch = True
                save()
                break
            val = test()
            run.epoch, run.batch, run.totals = run.epoch + 1, 0, None
            run.history.append(dict(
                epoch=run.epoch, step=run.step, train_loss=r["train_loss"], train_acc=r["train_acc"],
                val_loss=val["loss"], val_top1_err=val["top1_err"], val_top5_err=val["top5_err"],
                lr=optimizer.param_groups[0]["lr"], img_per_s=r["img_per_s"], epoch_s=r["seconds"],
                skipped=r["skipped"] + val["skipped"],
            ))  # fmt: skip
            save()
            if main:
                write_metrics(out, run.history, writer)
                _log.info(
                    f"epoch {run.epoch}/{cfg.epochs}: train loss {r['train_loss']:.4f} acc {r['train_acc']:.2f}% | "
                    f"test loss {val['loss']:.4f} top-1 err {val['top1_err']:.2f}% top-5 err {val['top5_err']:.2f}%"
                    f" | {r['img_per_s']:.0f} img/s, {r['seconds']:.0f} s"
                )
    except NonFiniteLossError as e:
        kept = (
            f"the last good checkpoint, {ckpt_path} (step {load_checkpoint(ckpt_path)['run']['step']}), is kept"
            if ckpt_path.exists() else "no checkpoint had been written yet"
        )  # fmt: skip
        raise NonFiniteLossError(
            f"{e}; training stopped and {kept}. Lower the learning rate (--lr), add warm-up, or use --amp off."
        ) from None

    last = run.history[-1] if run.history else {}
    if stopped_mid_epoch or not last:  # the weights changed since the last test: test them
        val = test()
        last = dict(last, val_loss=val["loss"], val_top1_err=val["top1_err"], val_top5_err=val["top5_err"])
    # Throughput over every step trained, a partial last epoch included.
    spans = [(h["img_per_s"] * h["epoch_s"], h["epoch_s"]) for h in run.history]
    if stopped_mid_epoch and run.totals:
        spans.append((run.totals["images"], run.totals["seconds"]))
    images, seconds = (sum(x) for x in zip(*spans)) if spans else (0.0, 0.0)
    result = dict(
        model=cfg.model, dataset=cfg.dataset, params_m=params_m, epochs=run.epoch, steps=run.step,
        test_top1_err=last["val_top1_err"], test_top5_err=last["val_top5_err"], test_loss=last["val_loss"],
        train_loss=last.get("train_loss", float("nan")), train_acc=last.get("train_acc", float("nan")),
        img_per_s=images / seconds if seconds else float("nan"), train_time_s=seconds, val_images=len(val_set),
        wall_time_s=time.perf_counter() - t0, output=str(out),
    )  # fmt: skip
    if main:
        save_weights(
            plain, out / "model.safetensors", model_name=cfg.model, overrides=model_overrides,
            num_classes=info.num_classes, input_size=tuple(size), mean=info.mean, std=info.std,
            classes=list(info.classes), metrics={k: result[k] for k in RESULT_METRICS},
            provenance=dict(config=dataclasses.asdict(cfg), torch=torch.__version__, processes=world),
        )  # fmt: skip
        if writer:
            writer.close()
    return result


RESULT_METRICS = ("test_top1_err", "test_top5_err", "test_loss", "epochs", "steps", "train_time_s")


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
    return SummaryWriter(str(out / "tensorboard"))
