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
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..data import DatasetInfo, build_dataset, collate_skip, set_epoch
from ..extras import require
from ..io import write_csv, write_text
from ..models import create_model, get_model_entry
from ..models.grow import grown_model
from ..plotting import save_figure, training_curves
from ..record import ModelRecord
from ..weights import describe_input_conv, load_pretrained, read_record, save_weights
from . import distributed as dist
from .checkpoint import load_checkpoint, remove_stale_temporaries, rng_state, save_checkpoint, set_rng_state
from .config import RESUMABLE_KEYS, TrainConfig, resolve_config, same_values
from .engine import (
    EpochProgress,
    NonFiniteLossError,
    TrainStep,
    channels_last_format,
    evaluate,
    new_totals,
    train_one_epoch,
)

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pieces


def param_groups(model: nn.Module | Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Weight decay on conv / linear weights, none on BN parameters and biases (docs/paper.md, 'Initialisation')."""
    decay, no_decay = [], []
    for p in model.parameters() if isinstance(model, nn.Module) else model:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters (``fc`` in every model of ours, timm's and torchvision's ResNets)."""
    fc = getattr(model, "fc", None)
    return list(fc.parameters()) if isinstance(fc, nn.Module) else []


def head_and_backbone(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The classifier's parameters, and all the others (the backbone's)."""
    head = classifier_parameters(model)
    return head, [p for p in model.parameters() if all(p is not h for h in head)]


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
    weights = cfg.weights or (cfg.init_from if cfg.init_from and Path(cfg.init_from).is_file() else None)
    record = read_record(weights) if weights else None
    if record and record.mean and record.std:  # normalise as the weights were trained
        options.update(mean=record.mean, std=record.std)
    train_set = build_dataset(cfg.dataset, cfg.data_dir, "train", **options)
    val_set = build_dataset(cfg.dataset, cfg.data_dir, "val", **options)
    info = train_set.info
    if len(info.mean) == 1 < info.input_size[0]:  # a one-channel model's normalisation, for every channel (as timm)
        info = dataclasses.replace(info, mean=info.mean * info.input_size[0], std=info.std * info.input_size[0])
    if cfg.train_limit:
        train_set = Subset(train_set, range(min(cfg.train_limit, len(train_set))))
    if cfg.val_limit:
        val_set = Subset(val_set, range(min(cfg.val_limit, len(val_set))))
    return train_set, val_set, info


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (:meth:`set_start`), so a
    resumed run sees exactly the batches the interrupted one had not seen yet."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's share of the epoch, in every pass until set again."""
        self.start = start

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return super().__len__() - self.start


def build_model(cfg: TrainConfig, info, device: torch.device, world: int) -> tuple[nn.Module, dict, dict]:
    """The model for ``info``'s classes and channels, on ``device``; returns it, the overrides used and
    what starting from the weights changed, for the run's record (``adapted_input_conv``, or nothing)."""
    entry = get_model_entry(cfg.model)
    overrides = dict(cfg.model_overrides)
    if "in_chans" in entry.overrides and "in_chans" not in overrides and entry.input_size[0] != info.input_size[0]:
        overrides["in_chans"] = info.input_size[0]  # e.g. an RGB model on grayscale data
    if cfg.init_from and not cfg.resume:  # a resumed run's checkpoint holds the weights
        model, loaded = grown_model(cfg.init_from, cfg.model, num_classes=info.num_classes, **overrides)
        _log.info(f"{cfg.model} grown from the plain network of {cfg.init_from} (sknet.to_sk)")
    else:
        model = create_model(cfg.model, num_classes=info.num_classes, **overrides)
        loaded = load_pretrained(model, cfg.weights, model_name=cfg.model) if cfg.weights and not cfg.resume else None
    if loaded:
        new_head = (
            f"; classifier re-initialised for {info.num_classes} classes (the file's has {loaded['file_classes']})"
            if loaded["reinitialised"] else "; every tensor loaded, none skipped"
        )  # fmt: skip
        _log.info(f"weights: {loaded['loaded']} tensors loaded from {cfg.weights or cfg.init_from}{new_head}")
        if loaded["input_conv"]:
            _log.info(f"weights: {describe_input_conv(loaded['input_conv'])}")
    model.to(device)
    if cfg.channels_last:  # the layout of the model's kind of input (images, volumes; signals have none)
        model.to(memory_format=channels_last_format(1 + len(info.input_size)))
    if cfg.sync_bn and world > 1:
        model = dist.convert_sync_batchnorm(model, device)
    start = dict(adapted_input_conv=loaded["input_conv"]) if loaded and loaded["input_conv"] else {}
    return model, overrides, start


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
    head, backbone = head_and_backbone(model)
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


def drop_backbone_momentum(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Forget the backbone's optimizer state: when it starts learning after the head-only epochs, its
    momentum starts from zero, not from the gradients it gathered (at learning rate 0) meanwhile."""
    for p in head_and_backbone(model)[1]:
        optimizer.state.pop(p, None)


def check_input(model: nn.Module, input_size: list[int], device: torch.device, cfg: TrainConfig) -> None:
    """Refuse, before anything is written, a model that does not run on the data's input (e.g. an
    ``in_chans`` override against the data's channels): one eval-mode forward of a zero image."""
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=device))
    except RuntimeError as e:
        raise ValueError(
            f"model {cfg.model} (model_overrides {cfg.model_overrides}) does not run on {cfg.dataset}'s input "
            f"{'x'.join(map(str, input_size))}: {str(e).splitlines()[0]}. Leave in_chans out of model_overrides "
            "(the model takes the data's channels, and weights for other channels are adapted), or change image_size."
        ) from None
    finally:
        model.train(training)


def _input_size(cfg: TrainConfig, info: DatasetInfo) -> list[int]:
    """The size of one input the model sees: (C, *spatial sizes)."""
    return [info.input_size[0], cfg.image_size, cfg.image_size] if cfg.image_size else list(info.input_size)


def _run_record(cfg: TrainConfig, info: DatasetInfo, model_overrides: dict) -> ModelRecord:
    """What rebuilds the model and prepares its input: the checkpoint's ``meta`` and, with the
    run's metrics and provenance, the record in ``model.safetensors``."""
    return ModelRecord(
        model_name=cfg.model, overrides=model_overrides, num_classes=info.num_classes,
        input_size=_input_size(cfg, info), mean=info.mean, std=info.std, classes=info.classes,
    )  # fmt: skip


@dataclass
class RunState:
    """Where a run is: what a checkpoint stores besides the model and optimizer."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps in total
    totals: dict | None = None  # running sums of the current epoch (engine.EpochProgress)
    history: list = field(default_factory=list)  # one metrics row per completed epoch
    start: dict = field(default_factory=dict)  # what starting from the weights changed (build_model), for the record

    def progress(self) -> EpochProgress:
        """The current epoch's progress, for :func:`train_one_epoch` to continue from."""
        return EpochProgress(self.step, self.batch, self.totals or new_totals())

    def at(self, progress: EpochProgress) -> RunState:
        """This run, ``progress`` into its current epoch."""
        return dataclasses.replace(self, step=progress.step, batch=progress.batch, totals=dict(progress.totals))


@dataclass(frozen=True)
class RunContext:
    """What a run trains with: built once (:func:`_setup`), then read by every phase of the run."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    info: DatasetInfo  # the training set's classes, input size and normalisation
    model_overrides: dict  # create_model's, as the model was built
    train_set: Dataset
    val_set: Dataset
    sampler: ResumableSampler
    train_loader: DataLoader
    val_loader: DataLoader
    model_without_ddp: nn.Module  # what is evaluated, checkpointed and saved
    train_step: TrainStep  # optimizer, scheduler, fp16 scaler, criterion
    writer: object | None = None  # TensorBoard's SummaryWriter (rank 0, if asked)
    model: nn.Module | None = None  # what trains: model_without_ddp, in DDP and compiled if asked (_for_training)
    start: dict = field(default_factory=dict)  # build_model's account of the starting weights

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def out(self) -> Path:
        return Path(self.cfg.output)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"


def check_resumable(saved: dict, cfg: TrainConfig, path: Path) -> None:
    """Name every recipe key where the saved run (a checkpoint's config, or a config.yaml) and this one differ."""
    current = dataclasses.asdict(cfg)
    diff = [
        f"{k}: {path.stem} {saved.get(k)!r}, this run {current[k]!r}"
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
    save_figure(training_curves(history), out / "curves.png", dpi=100)


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
    cfg = _start_if_nothing_to_resume(cfg, rank)
    ctx = _setup(cfg, rank, world, device)
    run = _resume(ctx) if cfg.resume else RunState(start=ctx.start)
    _announce(ctx, run)
    ctx = dataclasses.replace(ctx, model=_for_training(ctx))
    run, stopped_mid_epoch = _train_epochs(ctx, run)
    return _finish(ctx, run, stopped_mid_epoch, t0)


def _start_if_nothing_to_resume(cfg: TrainConfig, rank: int) -> TrainConfig:
    """``resume`` where there is no checkpoint yet starts the run, so that one command serves for the
    first start and every restart (preemptible jobs). The folder must be missing, empty, or hold only
    what a start of this same run leaves before its first checkpoint (``config.yaml``, TensorBoard's
    folder); a folder of another run, a finished one or a different config is refused."""
    out = Path(cfg.output)
    if not cfg.resume or (out / "checkpoint.pt").exists():
        return cfg
    leftovers = {"config.yaml", "tensorboard"}
    files = out.iterdir() if out.is_dir() else ()
    others = sorted(p.name for p in files if p.name not in leftovers and not p.name.endswith(".tmp"))
    if others:
        raise ValueError(
            f"nothing to resume in {str(out)!r}: it has no checkpoint.pt, yet holds {', '.join(others[:5])}: the "
            "files of another or a finished run. Choose another --output."
        )
    config_file = out / "config.yaml"
    if config_file.is_file():
        saved = yaml.safe_load(config_file.read_text())
        check_resumable(saved if isinstance(saved, dict) else {}, cfg, config_file)
    if rank == 0:
        _log.info(f"nothing to resume in {out} (no checkpoint.pt yet): starting the run")
    return dataclasses.replace(cfg, resume=False)


def _setup(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> RunContext:
    """Check the output folder, seed every generator, build the data, model, loaders and optimizer."""
    out = Path(cfg.output)
    if (out / "checkpoint.pt").exists() and not cfg.resume:
        raise ValueError(f"{str(out)!r} already holds a run; pass --resume to continue it, or choose another --output")
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} (global) does not split evenly over {world} processes")
    if cfg.tensorboard and rank == 0:
        require("tensorboard", "--tensorboard")
    seed_everything(cfg.seed + rank)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    entry = get_model_entry(cfg.model)
    train_set, val_set, info = build_data(cfg, entry.input_size[0], entry.input_size[1:])
    model, model_overrides, start = build_model(cfg, info, device, world)
    check_input(model, _input_size(cfg, info), device, cfg)
    sampler, train_loader, val_loader = build_loaders(cfg, train_set, val_set, rank, world, device)
    optimizer, scheduler, scaler = build_optimizer(cfg, model, len(train_loader), device)
    train_step = TrainStep(optimizer, build_criterion(cfg), scheduler, scaler, cfg.amp, cfg.channels_last)
    writer = _tensorboard(out) if cfg.tensorboard and rank == 0 else None  # its folder: only once all is well
    return RunContext(
        cfg, rank, world, device, info, model_overrides, train_set, val_set, sampler, train_loader, val_loader,
        model_without_ddp=model, train_step=train_step, writer=writer, start=start,
    )  # fmt: skip


def _resume(ctx: RunContext) -> RunState:
    """Load the checkpoint into the model, optimizer, scheduler and scaler, and each rank's random
    states (if the run has as many processes as the checkpoint's); returns where the run was."""
    ck = load_checkpoint(ctx.checkpoint_path)
    check_resumable(ck["config"], ctx.cfg, ctx.checkpoint_path)
    ctx.model_without_ddp.load_state_dict(ck["model"])
    ctx.train_step.optimizer.load_state_dict(ck["optimizer"])
    ctx.train_step.scheduler.load_state_dict(ck["scheduler"])
    if ctx.train_step.scaler is not None and ck.get("scaler"):
        ctx.train_step.scaler.load_state_dict(ck["scaler"])
    if len(ck["rng"]) == ctx.world:  # else: a different number of processes, keep the fresh seeds
        set_rng_state(ck["rng"][ctx.rank])
    return RunState(**ck["run"])


def _announce(ctx: RunContext, run: RunState) -> None:
    """Rank 0: remove a killed writer's temporary files, write ``config.yaml``, log what trains."""
    if not ctx.main:
        return
    cfg = ctx.cfg
    remove_stale_temporaries(ctx.out)
    write_text(ctx.out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg)))
    _log.info(
        f"{cfg.model} ({_params_m(ctx):.3f}M params) on {cfg.dataset}: {len(ctx.train_set)} train / "
        f"{len(ctx.val_set)} test images, {ctx.world} process(es) on {ctx.device}, batch {cfg.batch_size}, "
        f"lr {ctx.train_step.optimizer.defaults['lr']:g}, {len(ctx.train_loader)} steps/epoch"
        + (f", resuming at step {run.step}" if cfg.resume else "")
    )


def _for_training(ctx: RunContext) -> nn.Module:
    """The module that trains: ``model_without_ddp`` in DDP over the processes, compiled if asked.

    Evaluation and saving use ``model_without_ddp``: each rank's share of the test set may have
    its own number of batches, and DDP's forward would wait for the others.
    """
    model = ctx.model_without_ddp
    if ctx.world > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if ctx.cfg.compile:
        model = torch.compile(model)
    return model


def _train_epochs(ctx: RunContext, run: RunState) -> tuple[RunState, bool]:
    """Train epoch after epoch up to ``cfg.epochs``, or until ``max_steps``; returns the run's state
    and whether ``max_steps`` stopped an epoch part-way (the checkpoint then holds that point)."""
    cfg = ctx.cfg
    try:
        while run.epoch < cfg.epochs and (cfg.max_steps is None or run.step < cfg.max_steps):
            progress = _train_epoch(ctx, run)
            run = run.at(progress)
            if not progress.completed:
                _save_checkpoint(ctx, run)
                return run, True
            run = _end_epoch(ctx, run, progress)
    except NonFiniteLossError as e:
        raise _non_finite(e, ctx.checkpoint_path) from None
    return run, False


def _train_epoch(ctx: RunContext, run: RunState) -> EpochProgress:
    """Train the rest of the current epoch, writing the checkpoint every ``checkpoint_every`` steps."""
    cfg = ctx.cfg
    if run.epoch == cfg.head_only_epochs > 0 and run.batch == 0:
        drop_backbone_momentum(ctx.train_step.optimizer, ctx.model_without_ddp)
    ctx.sampler.set_epoch(run.epoch)  # the epoch's shuffle, and its augmentation seeds
    set_epoch(ctx.train_set, run.epoch)
    ctx.sampler.set_start(run.batch * ctx.train_loader.batch_size)  # part-way after a resume
    return train_one_epoch(
        ctx.model, ctx.train_loader, ctx.train_step, ctx.device, start=run.progress(), max_steps=cfg.max_steps,
        checkpoint_every=cfg.checkpoint_every, checkpoint=lambda progress: _save_checkpoint(ctx, run.at(progress)),
        desc=f"epoch {run.epoch + 1}/{cfg.epochs}", progress=cfg.progress,
    )  # fmt: skip


def _end_epoch(ctx: RunContext, run: RunState, progress: EpochProgress) -> RunState:
    """Test the model after a completed epoch; checkpoint and record the epoch (``metrics.csv``)."""
    val = _test(ctx)
    row = dict(
        epoch=run.epoch + 1, step=run.step, train_loss=progress.train_loss, train_acc=progress.train_acc,
        val_loss=val["loss"], val_top1_err=val["top1_err"], val_top5_err=val["top5_err"],
        lr=ctx.train_step.optimizer.param_groups[0]["lr"], img_per_s=progress.img_per_s,
        epoch_s=progress.totals["seconds"], skipped=progress.totals["skipped"] + val["skipped"],
    )  # fmt: skip
    run = dataclasses.replace(run, epoch=run.epoch + 1, batch=0, totals=None, history=[*run.history, row])
    _save_checkpoint(ctx, run)
    if ctx.main:
        cfg = ctx.cfg
        write_metrics(ctx.out, run.history, ctx.writer)
        _log.info(
            f"epoch {run.epoch}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}% | "
            f"test loss {val['loss']:.4f} top-1 err {val['top1_err']:.2f}% top-5 err {val['top5_err']:.2f}%"
            f" | {row['img_per_s']:.0f} img/s, {row['epoch_s']:.0f} s"
        )
    return run


def _finish(ctx: RunContext, run: RunState, stopped_mid_epoch: bool, t0: float) -> dict:
    """The run's result; rank 0 writes ``model.safetensors`` (weights, record, the result's metrics)."""
    cfg = ctx.cfg
    last = run.history[-1] if run.history else {}
    if stopped_mid_epoch or not last:  # the weights changed since the last test: test them
        val = _test(ctx)
        last = dict(last, val_loss=val["loss"], val_top1_err=val["top1_err"], val_top5_err=val["top5_err"])
    images, seconds = _trained(run, stopped_mid_epoch)
    result = dict(
        model=cfg.model, dataset=cfg.dataset, params_m=_params_m(ctx), epochs=run.epoch, steps=run.step,
        test_top1_err=last["val_top1_err"], test_top5_err=last["val_top5_err"], test_loss=last["val_loss"],
        train_loss=last.get("train_loss", float("nan")), train_acc=last.get("train_acc", float("nan")),
        img_per_s=images / seconds if seconds else float("nan"), train_time_s=seconds, val_images=len(ctx.val_set),
        wall_time_s=time.perf_counter() - t0, output=str(ctx.out),
    )  # fmt: skip
    if ctx.main:
        record = dataclasses.replace(
            _run_record(cfg, ctx.info, ctx.model_overrides), metrics={k: result[k] for k in RESULT_METRICS},
            provenance=dict(config=dataclasses.asdict(cfg), torch=torch.__version__, processes=ctx.world, **run.start),
        )  # fmt: skip
        save_weights(ctx.model_without_ddp, ctx.out / "model.safetensors", record=record)
        if ctx.writer:
            ctx.writer.close()
    return result


RESULT_METRICS = ("test_top1_err", "test_top5_err", "test_loss", "epochs", "steps", "train_time_s")


def _trained(run: RunState, stopped_mid_epoch: bool) -> tuple[float, float]:
    """Images and seconds of every step trained, across resumes, a partial last epoch included."""
    spans = [(h["img_per_s"] * h["epoch_s"], h["epoch_s"]) for h in run.history]
    if stopped_mid_epoch and run.totals:
        spans.append((run.totals["images"], run.totals["seconds"]))
    return tuple(sum(x) for x in zip(*spans)) if spans else (0.0, 0.0)


def _test(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    return evaluate(ctx.model_without_ddp, ctx.val_loader, ctx.device, amp=cfg.amp, channels_last=cfg.channels_last,
                    desc="  test", progress=cfg.progress)  # fmt: skip


def _save_checkpoint(ctx: RunContext, run: RunState) -> None:
    """Rank 0 writes ``checkpoint.pt`` at ``run``; every rank must call it (it gathers their random states)."""
    rngs = dist.gather_objects(rng_state())  # every rank's, for an exact resume
    if ctx.main:
        step = ctx.train_step
        save_checkpoint(ctx.checkpoint_path, dict(
            model=ctx.model_without_ddp.state_dict(), optimizer=step.optimizer.state_dict(),
            scheduler=step.scheduler.state_dict(), scaler=step.scaler.state_dict() if step.scaler else None,
            run=dataclasses.asdict(run), rng=rngs, config=dataclasses.asdict(ctx.cfg),
            meta=_run_record(ctx.cfg, ctx.info, ctx.model_overrides).to_dict(),
        ))  # fmt: skip


def _non_finite(error: NonFiniteLossError, ckpt_path: Path) -> NonFiniteLossError:
    """``error``, saying which checkpoint survives and what to change."""
    kept = (
        f"the last good checkpoint, {ckpt_path} (step {load_checkpoint(ckpt_path)['run']['step']}), is kept"
        if ckpt_path.exists() else "no checkpoint had been written yet"
    )  # fmt: skip
    return NonFiniteLossError(
        f"{error}; training stopped and {kept}. Lower the learning rate (--lr), add warm-up, or use --amp off."
    )


def _params_m(ctx: RunContext) -> float:
    return sum(p.numel() for p in ctx.model_without_ddp.parameters()) / 1e6


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter  # the package is there: _setup required it

    return SummaryWriter(str(out / "tensorboard"))
