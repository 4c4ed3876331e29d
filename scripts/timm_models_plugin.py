"""pytest plugin for scripts/test_timm.sh: timm's own tests/test_models.py, run over the models
``import sknet.timm`` registers and nothing else.

test_models.py builds its parameter lists from ``timm.list_models()`` when it is imported; this
plugin is imported first, so our models are in those lists. Every test whose ``model_name`` is not
one of ours is deselected, as are the TorchScript tests (timm deprecates TorchScript, and sknet's
layers are not written for it).
"""

from __future__ import annotations

import sknet.timm

TORCHSCRIPT_TESTS = (
    "test_model_forward_torchscript",
    "test_model_forward_fx_torchscript",
    "test_model_forward_torchscript_with_features_fx",
)


def _ours(item) -> bool:
    callspec = getattr(item, "callspec", None)
    name = callspec.params.get("model_name") if callspec else None
    # test_model_default_cfgs runs each tagged cfg too ("senet50.gluon_in1k")
    return isinstance(name, str) and name.partition(".")[0] in sknet.timm.REGISTERED


def pytest_collection_modifyitems(config, items):
    kept = [item for item in items if _ours(item) and item.originalname not in TORCHSCRIPT_TESTS]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
