"""Optional dependencies: each comes with one of the package's extras (pyproject.toml), named when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

# The module -> the extra that installs it (``pip install 'sknet[EXTRA]'``).
EXTRAS = {
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "huggingface_hub": "hub",
    "tensorboard": "tensorboard",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import the optional ``module``, which ``purpose`` (e.g. ``"ONNX export"``) needs.

    Raises:
        ImportError: It is not installed; one line naming the extra that installs it.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module]
        raise ImportError(
            f"{purpose} needs the {module} package, which is not installed: pip install 'sknet[{extra}]'"
        ) from None
