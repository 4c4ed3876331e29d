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
