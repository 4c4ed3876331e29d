"""Weights from timm and torchvision give the same logits; wrong checkpoints fail clearly."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import sknet
from conftest import randomize_bn


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_resnext50_gives_the_same_logits(tmp_path, fmt):
    torchvision = pytest.importorskip("torchvision")
    ref = randomize_bn(torchvision.models.resnext50_32x4d(weights=None))
    path = tmp_path / f"tv.{fmt}"
    torch.save(ref.state_dict(), path) if fmt == "pth" else save_file(ref.state_dict(), str(path))
    ours = sknet.create_model("resnext50_32x4d", weights=str(path))
    x = torch.randn(2, 3, 224, 224)
    ref_out = _logits(ref, x)
    assert ref_out.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    assert (_logits(ours, x) - ref_out).abs().max() <= 1e-4


@pytest.mark.parametrize("wrapped", [False, True])
def test_timm_skresnext50_gives_the_same_logits(tmp_path, wrapped):
    timm = pytest.importorskip("timm")
    ref = randomize_bn(timm.create_model("skresnext50_32x4d", pretrained=False))
    with torch.no_grad():  # move the logits away from zero so the tolerance means something
        ref.fc.weight.mul_(20)
    sd = ref.state_dict()
    path = tmp_path / "timm.pth"
    torch.save({"state_dict": sd} if wrapped else sd, path)
    ours = sknet.create_model("sknet50", weights=str(path))
    x = torch.randn(2, 3, 224, 224)
    ref_out = _logits(ref, x)
    assert ref_out.abs().max() > 0.1
    assert (_logits(ours, x) - ref_out).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["skresnet18", "skresnet34"])
def test_timm_skresnet_gives_the_same_logits(tmp_path, name):
    """timm's basic-block SK-ResNets (split-input SK, r=8, L=16) load into ours with the same logits."""
    timm = pytest.importorskip("timm")
    ref = randomize_bn(timm.create_model(name, pretrained=False)).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():  # logits of order 10, so that the tolerance means something
        ref.fc.weight.mul_(10 / ref(x).abs().max())
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    ours = sknet.create_model(name, weights=str(tmp_path / "timm.pth"))
    sks = [m for m in ours.modules() if isinstance(m, sknet.SKConv)]
    assert sks and all(m.split_input and m.impl == "fast" for m in sks)  # timm's SK, on our fast path
    ref_out = _logits(ref, x)
    assert ref_out.abs().max() > 5
    assert (_logits(ours, x) - ref_out).abs().max() <= 1e-4
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_own_weights_round_trip(tmp_path):
    a = randomize_bn(sknet.create_model("sknet26", num_classes=10))
    path = tmp_path / "w.safetensors"
    save_file(a.state_dict(), str(path), metadata={"model_name": "sknet26"})
    b = sknet.create_model("sknet26", num_classes=10, weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(_logits(a, x), _logits(b, x))


def test_checkpoint_of_another_model_names_the_mismatch(tmp_path):
    path = tmp_path / "sk.pth"
    torch.save(sknet.create_model("sknet26").state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit model 'resnext26_32x4d'.*unexpected key"):
        sknet.create_model("resnext26_32x4d", weights=str(path))
    with pytest.raises(ValueError, match="shape mismatch"):
        sknet.create_model("sknet26", num_classes=10, weights=str(path))
    named = tmp_path / "named.safetensors"
    save_file(sknet.create_model("sknet26").state_dict(), str(named), metadata={"model_name": "sknet26"})
    with pytest.raises(ValueError, match="holds weights for model 'sknet26', not 'sknet50'"):
        sknet.create_model("sknet50", weights=str(named))


def test_loading_never_unpickles_code(tmp_path, capsys):
    """A file with pickled objects is refused with a message that says so and how to convert a
    trusted one, never PyTorch's advice to load it with weights_only=False."""
    from sknet.cli import main

    path = tmp_path / "evil.pth"
    torch.save({"model": sknet.create_model("sknet26").state_dict(), "extra": object()}, path)
    with pytest.raises(ValueError, match="weights_only") as err:
        sknet.create_model("sknet26", weights=str(path))
    for message in (str(err.value), ""):
        if not message:  # the same through the command line, without a traceback
            assert main(["export", "--model", "sknet26", "--weights", str(path), "-o", str(tmp_path / "x.pt2")]) == 2
            message = capsys.readouterr().err
        assert "pickled Python objects" in message and "convert it once" in message
        assert "weights_only=False" not in message and "Re-running" not in message
        assert "Traceback" not in message
    assert not (tmp_path / "x.pt2").exists()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sknet.create_model("sknet26", weights=str(tmp_path / "nope.pth"))


def test_save_weights_and_load_model_round_trip_with_metadata(tmp_path):
    a = randomize_bn(sknet.create_model("sknet_mini", branches=[(3, 1, 8), (3, 3, 8)], select="sum"))
    path = sknet.save_weights(a, tmp_path / "m.safetensors", mean=(0.5,), std=(0.25,), metrics={"top1_err": 8.1})
    b = sknet.load_model(path)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(_logits(a, x), _logits(b, x))
    assert b.pretrained_cfg["mean"] == [0.5] and b.pretrained_cfg["metrics"] == {"top1_err": 8.1}
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file was left behind"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_write_gives_the_usual_permissions(tmp_path, umask, mode):
    """The mode a plain open() would give (mkstemp's own is 0600): 0666 less the umask."""
    import os

    from sknet.io import atomic_write

    before = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "f.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == mode


def test_a_checkpoint_without_meta_rebuilds_the_model_of_its_training_config(tmp_path):
    """A training checkpoint's config is a TrainConfig: the overrides are its ``model_overrides``, the
    class count is the classifier's."""
    import dataclasses

    from sknet.training.config import TrainConfig

    a = randomize_bn(sknet.create_model("sknet_mini", num_classes=5, branches=[(3, 1, 8), (3, 3, 8)], select="sum"))
    config = dataclasses.asdict(TrainConfig(model="sknet_mini", model_overrides=dict(a.pretrained_cfg["overrides"])))
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": a.state_dict(), "config": config}, path)
    b = sknet.load_model(path)
    assert b.pretrained_cfg["overrides"] == {"branches": [[3, 1, 8], [3, 3, 8]], "select": "sum"}
    assert b.pretrained_cfg["num_classes"] == 5
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(_logits(a, x), _logits(b, x))


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["while writing", "at fsync"])
@pytest.mark.parametrize("writer", ["save_weights", "save_checkpoint"])
def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, writer, where):
    """Ctrl-C (KeyboardInterrupt, not an OSError) half-way through a write: the old file is intact and
    nothing else is in the folder."""
    import os

    import safetensors.torch

    from sknet.training.checkpoint import save_checkpoint

    model = sknet.create_model("sknet_mini")
    path = tmp_path / "out.bin"
    path.write_bytes(b"the previous version")

    def half_then_interrupt(obj, tmp, *args, **kwargs):
        Path(tmp).write_bytes(b"half of a ")
        raise KeyboardInterrupt

    if where == "at fsync":
        monkeypatch.setattr(os, "fsync", _interrupted)
    else:
        monkeypatch.setattr(safetensors.torch, "save_file", half_then_interrupt)
        monkeypatch.setattr(torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        if writer == "save_weights":
            sknet.save_weights(model, path)
        else:
            save_checkpoint(path, dict(model=model.state_dict()))
    assert path.read_bytes() == b"the previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
