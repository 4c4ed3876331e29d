"""Figures written to files, without pyplot: no display, no global backend switched in the caller's process."""

from __future__ import annotations

from pathlib import Path

from .io import atomic_write

COLORS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b")


def new_figure(figsize: tuple[float, float]):
    """A ``matplotlib.figure.Figure`` not registered with pyplot (nothing to close, nothing shown)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def save_figure(fig, path: str | Path, dpi: int = 120, **kwargs) -> Path:
    """Save ``fig`` as a PNG at ``path``, atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, **kwargs))


def training_curves(history: list[dict]):
    """Loss and top-1 error against epochs, training beside validation, from a run's
    ``metrics.csv`` rows (:func:`sknet.training.train`)."""
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
    return fig
