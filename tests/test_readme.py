"""README.md's Python snippets run as written, so they cannot drift from the package.

Its ```python blocks run top to bottom in one namespace (a later block may use what an earlier one
made), in a temporary folder that holds the files they name. To take seconds and no network, the
text changes in three ways only, each listed here:

- ``STAND_INS``: the ImageNet-size models are built as the mini model of the same family with three
  input channels (the same code, ~0.2M parameters), the 3-D one as the mini 3-D model. Lines that
  call timm keep their names: timm builds its model without weights or a forward pass.
- ``PLACES``: the checkout that ``torch.hub.load`` reads is this one.
- ``ONLINE``: a line that downloads published weights is left out (tests/test_pretrained_sources.py
  covers that path with both libraries' caches laid out offline).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import sknet

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

IMAGENET_STAND_IN = {"in_chans": 3}
STAND_INS = {
    '"sknet50"': '"sknet_mini", in_chans=3',
    '"resnext50_32x4d"': '"resnext_mini", in_chans=3',
    '"sknet50_3d"': '"sknet_mini_3d"',
}
PLACES = {'"path/to/sknet"': repr(str(ROOT))}
ONLINE = ("pretrained=True",)
# The files the snippets read, written from the stand-ins: (model, overrides, how it is saved).
FILES = {
    "skresnext50.pth": ("sknet_mini", IMAGENET_STAND_IN, "state_dict"),
    "resnext50.pth": ("resnext_mini", IMAGENET_STAND_IN, "state_dict"),
    "sknet50.safetensors": ("sknet_mini", IMAGENET_STAND_IN, "save_weights"),
    "runs/demo/model.safetensors": ("sknet_mini", {}, "save_weights"),
}


def snippets() -> list[tuple[int, str]]:
    """``(first line number, code)`` of every ```python block of README.md."""
    text = README.read_text()
    return [(text[: m.start(1)].count("\n") + 1, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


def runnable(code: str) -> tuple[str, list[str]]:
    """The block with the documented changes, and the lines left out."""
    lines, left_out = [], []
    for line in code.splitlines():
        if any(marker in line for marker in ONLINE):
            left_out.append(line.strip())
            line = ""
        elif "timm." not in line:
            for old, new in {**STAND_INS, **PLACES}.items():
                line = line.replace(old, new)
        lines.append(line)
    return "\n".join(lines), left_out


def lay_out_files(folder: Path) -> None:
    for name, (model_name, overrides, how) in FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        model = sknet.create_model(model_name, **overrides)
        if how == "state_dict":
            torch.save(model.state_dict(), path)
        else:
            sknet.save_weights(model, path)


def test_the_readme_has_python_snippets_and_leaves_out_only_downloads():
    blocks = snippets()
    assert len(blocks) >= 2
    left_out = [line for _, code in blocks for line in runnable(code)[1]]
    assert left_out and all("pretrained=True" in line for line in left_out)
    assert sum(len(code.splitlines()) for _, code in blocks) > 5 * len(left_out)


def test_the_readme_python_snippets_run(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lay_out_files(tmp_path)
    namespace: dict = {}
    for first_line, code in snippets():
        source, _ = runnable(code)
        # Padded so that a traceback names the README's own line numbers.
        exec(compile("\n" * (first_line - 1) + source, str(README), "exec"), namespace)
    models = [v for v in namespace.values() if isinstance(v, nn.Module)]
    assert {"model", "seg", "backbone", "inference"} <= namespace.keys()
    assert all(isinstance(m, nn.Module) for m in models) and len(models) >= 4
