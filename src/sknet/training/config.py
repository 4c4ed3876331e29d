"""One config object for training: :class:`TrainConfig` holds the defaults, a YAML recipe overrides
them, keyword arguments (the command line's flags) override that.

Recipes ship with the package (``sknet/recipes/*.yaml``) and are found by name:
``resolve_config("imagenet_sknet50")``; a path to any YAML file works too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..data.transforms import EVAL_CROP_RATIO
from ..models import get_model_entry


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults: the Fashion-MNIST demo model on CPU."""

    # what
    model: str = "sknet_mini"
    model_overrides: dict = field(default_factory=dict)  # create_model(**overrides), e.g. {layers: [2, 2, 2]}
    dataset: str = "fashion-mnist"  # a name of sknet.data.DATASETS
    data_dir: str | None = None  # None: the dataset's default folder
    download: bool = False  # let torchvision fetch CIFAR / Fashion-MNIST if missing
    train_limit: int | None = None  # use only the first N training images (smoke runs)
    val_limit: int | None = None
    # fine-tuning: start from weights (ours, timm's or torchvision's for `model`); a classifier of
    # another class count is replaced by a fresh one
    weights: str | None = None
    # or grow `model`, an SK network, from a plain ResNeXt's weights (a file) or fresh one (its name)
    # so that it starts as that network's function (sknet.to_sk)
    init_from: str | None = None
    backbone_lr_factor: float = 1.0  # learning rate of everything but the classifier, relative to its
    head_only_epochs: int = 0  # the first N epochs train the classifier alone (the rest at learning rate 0)
    # data augmentation (docs/paper.md, 'Training on ImageNet')
    image_size: int | None = None  # crop size; None: the dataset's native size
    crop_scale_min: float = 0.08  # random-size crop area range [min, 1] (photos)
    pad: int | None = None  # pad + random crop instead (CIFAR: 4); None: the dataset's default
    hflip: bool = True
    eval_crop_ratio: float = EVAL_CROP_RATIO  # resize to image_size / ratio, then centre crop
    on_corrupt: str = "skip"  # unreadable images: skip (and count) or fail (naming the file)
    # optimisation
    epochs: int = 10
    batch_size: int = 128  # global: split across processes
    lr: float = 0.1  # at lr_base_batch images per step; scaled linearly with batch_size
    lr_base_batch: int | None = 256  # None: use lr as given
    lr_schedule: str = "step"  # step | cosine
    lr_milestones: list = field(default_factory=lambda: [30, 60, 90])  # epochs (step schedule)
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up from 0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4  # not on BN parameters nor biases
    label_smoothing: float = 0.0
    # how
    output: str = "runs/train"
    resume: bool = False
    max_steps: int | None = None  # stop after this many optimizer steps in total
    checkpoint_every: int = 0  # steps; 0: at the end of every epoch only
    device: str = "auto"
    amp: str = "off"  # off | bf16 | fp16
    channels_last: bool = False  # channels_last memory format (channels_last_3d for volumes)
    compile: bool = False
    sync_bn: bool = False  # BatchNorm statistics over all processes
    deterministic: bool = False  # torch.use_deterministic_algorithms
    seed: int = 0
    workers: int = 4
    progress: bool = True
    tensorboard: bool = False


# Keys that may differ between a checkpoint and the run resuming it (they do not change
# what is computed, or extend it); any other difference is a recipe mismatch.
RESUMABLE_KEYS = {
    "data_dir", "download", "epochs", "output", "resume", "max_steps", "checkpoint_every",
    "device", "compile", "workers", "progress", "tensorboard",
}  # fmt: skip
CHOICES = {
    "lr_schedule": ("step", "cosine"),
    "amp": ("off", "bf16", "fp16"),
    "on_corrupt": ("skip", "fail"),
}


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def load_config(recipe: str | Path) -> dict:
    """Read a YAML recipe, by packaged name (``"fashion_mnist"``) or path; unknown keys are an
    error that lists the valid ones."""
    path = recipe_path(recipe)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a mapping of config keys, got {type(data).__name__}")
    check_keys(data, f"config file {str(path)!r}")
    return data


def check_keys(data: dict, where: str) -> None:
    unknown = sorted(set(data) - set(config_keys()))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; valid keys: {', '.join(config_keys())}")


_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict, "list": (list, tuple)}


def check_type(key: str, value, annotation: str) -> None:
    """Values from YAML / --set must have the field's type (``int | None`` etc.)."""
    allowed = [t.strip() for t in annotation.split("|")]
    if value is None and "None" in allowed:
        return
    ok = any(
        isinstance(value, _TYPES[t]) and not (isinstance(value, bool) and t in ("int", "float"))
        for t in allowed
        if t in _TYPES
    )
    if not ok:
        raise ValueError(f"config key {key!r} must be {annotation}, got {value!r} ({type(value).__name__})")


def resolve_config(config: TrainConfig | dict | str | Path | None = None, **overrides) -> TrainConfig:
    """Defaults <- ``config`` (a TrainConfig, dict, recipe name or YAML path) <- ``overrides``, validated."""
    if isinstance(config, (str, Path)):
        config = load_config(config)
    base = dataclasses.asdict(config) if isinstance(config, TrainConfig) else dict(config or {})
    check_keys(base, "config")
    check_keys(overrides, "overrides")
    cfg = TrainConfig(**{**base, **overrides})
    for f in dataclasses.fields(TrainConfig):
        check_type(f.name, getattr(cfg, f.name), str(f.type))
    for key, valid in CHOICES.items():
        if getattr(cfg, key) not in valid:
            raise ValueError(f"{key} must be one of {valid}, got {getattr(cfg, key)!r}")
    get_model_entry(cfg.model)  # unknown model: lists the valid ones
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise ValueError("batch_size and epochs must be positive")
    if cfg.weights and cfg.init_from:
        raise ValueError("weights and init_from both start the model: weights loads its own, init_from grows it")
    if cfg.backbone_lr_factor < 0 or cfg.head_only_epochs < 0:
        raise ValueError("backbone_lr_factor and head_only_epochs must be >= 0")
    return cfg


def same_values(a, b) -> bool:
    """Config values compare equal with tuples and lists alike (YAML has no tuples)."""
    return _plain(a) == _plain(b)


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


# --------------------------------------------------------------------------- recipes


def _recipe_folder():
    return resources.files("sknet") / "recipes"


def list_recipes() -> dict[str, str]:
    """Packaged recipe names, each with the first line of its header comment."""
    out = {}
    for entry in sorted(_recipe_folder().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            lines = entry.read_text().splitlines() or [""]
            out[entry.name.removesuffix(".yaml")] = lines[0].lstrip("# ").strip()
    return out


def recipe_path(recipe: str | Path) -> Path:
    """The YAML file of a packaged recipe name, or ``recipe`` itself if it is a path.

    Raises:
        FileNotFoundError: Neither a packaged recipe nor an existing file (lists the recipes).
    """
    path = Path(recipe)
    if path.is_file():
        return path
    name = str(recipe).removesuffix(".yaml")
    packaged = _recipe_folder() / f"{name}.yaml"
    if "/" not in name and packaged.is_file():
        return Path(str(packaged))
    raise FileNotFoundError(
        f"config {str(recipe)!r} is neither a packaged recipe nor an existing file; "
        f"packaged recipes: {', '.join(list_recipes())} (sknet recipes lists them)"
    )
