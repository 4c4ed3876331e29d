"""Training checkpoints: one file, written atomically, holding everything a resume needs.

``OUTPUT/checkpoint.pt`` is a ``torch.save``'d dict of tensors and plain Python values
(model, optimizer, scheduler, scaler, epoch / batch / step, every rank's RNG states,
metrics history, resolved config), readable with ``weights_only=True``: no pickled
code runs when it is loaded.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write
from ..weights import load_torch_file


def rng_state() -> dict:
    """This process's random states (Python, NumPy, torch CPU and CUDA) as plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return dict(
        python=random.getstate(),
        numpy=(kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    )


def set_rng_state(state: dict) -> None:
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, checkpoint: dict) -> Path:
    """Write ``checkpoint`` to ``path`` through a temporary file, fsync and rename: a crash
    at any moment leaves the previous checkpoint or the new one."""
    return atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    ck = load_torch_file(path, "checkpoint")
    if not isinstance(ck, dict) or "model" not in ck or "config" not in ck:
        raise ValueError(f"{str(path)!r} is not an sknet training checkpoint (no 'model' / 'config' entries)")
    return ck


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files a killed writer left behind (``.NAME.*.tmp``)."""
    stale = list(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
