"""Training: config and recipes, the run (:func:`train`), one epoch and one evaluation, checkpoints, processes."""

from .config import TrainConfig, list_recipes, load_config, recipe_path, resolve_config
from .engine import EpochProgress, NonFiniteLossError, TrainStep, evaluate, train_one_epoch
from .loop import train

__all__ = [
    "EpochProgress",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainStep",
    "evaluate",
    "list_recipes",
    "load_config",
    "recipe_path",
    "resolve_config",
    "train",
    "train_one_epoch",
]
