"""Fine-tuning: start from weights of another class count, a slower backbone, the head alone first,
on an image folder whose class names reach ``sknet predict``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sknet import cli, create_model, load_model, save_weights
from sknet.training import resolve_config, train
from sknet.training.checkpoint import load_checkpoint
from sknet.weights import adapt_input_conv, load_pretrained, read_record

pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny runs of the mini model on 16x16 crops of small image folders, 2 steps per epoch.
TINY = dict(
    model="sknet_mini", dataset="imagefolder", image_size=16, pad=2, eval_crop_ratio=1.0, batch_size=8, epochs=1,
    workers=0, progress=False, lr=0.1, lr_base_batch=None,
)  # fmt: skip


def image_folder(root: Path, classes: list[str], per_class: int = 8, seed: int = 0) -> Path:
    """ROOT/{train,val}/<class>/*.png: each class a colour, plus noise."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                base = np.full((20, 20, 3), 40 + 60 * c, dtype=np.int16)
                img = np.clip(base + rng.integers(-30, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A mini SKNet trained briefly on a 3-class folder (RGB): its model.safetensors."""
    tmp = tmp_path_factory.mktemp("pretrain")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = image_folder(tmp / "data", ["a", "b", "c"])
        train(**dict(TINY, epochs=2), data_dir=str(data), output=str(tmp / "run"))
    finally:
        torch.set_num_threads(threads)
    return tmp / "run" / "model.safetensors"


def test_weights_of_another_class_count_load_all_but_the_classifier(pretrained):
    model = create_model("sknet_mini", num_classes=2, in_chans=3)
    fresh_fc = model.fc.weight.detach().clone()
    report = load_pretrained(model, pretrained, model_name="sknet_mini")
    file = load_file(str(pretrained))
    assert report["reinitialised"] == ["fc.weight", "fc.bias"] and report["file_classes"] == 3
    assert report["loaded"] == len(file) - 2
    state = model.state_dict()
    for k, v in file.items():
        if not k.startswith("fc."):
            assert torch.equal(state[k], v), k  # every backbone tensor is the file's
    assert model.fc.out_features == 2 and torch.equal(model.fc.weight, fresh_fc)  # a fresh classifier


def test_finetuning_with_a_frozen_backbone_trains_only_the_classifier(pretrained, tmp_path, caplog):
    """backbone_lr_factor 0 for two steps: every conv weight is still the file's, the new classifier
    (2 classes) has moved; the run says what it loaded and re-initialised."""
    data = image_folder(tmp_path / "data", ["cat", "dog"], seed=1)
    with caplog.at_level("INFO", logger="sknet"):
        train(**TINY, data_dir=str(data), output=str(tmp_path / "ft"), weights=str(pretrained),
              backbone_lr_factor=0.0, max_steps=2)  # fmt: skip
    assert "classifier re-initialised for 2 classes (the file's has 3)" in caplog.text
    before, after = load_file(str(pretrained)), load_file(str(tmp_path / "ft" / "model.safetensors"))
    convs = [k for k, v in before.items() if v.dim() == 4]
    assert len(convs) > 10 and all(torch.equal(before[k], after[k]) for k in convs)
    assert after["fc.weight"].shape == (2, before["fc.weight"].shape[1])
    ck = load_checkpoint(tmp_path / "ft" / "checkpoint.pt")
    assert ck["run"]["step"] == 2 and ck["optimizer"]["param_groups"][0]["lr"] > 0  # the classifier's group
    assert all(g["lr"] == 0 for g in ck["optimizer"]["param_groups"][2:])  # the backbone's groups


def test_head_only_epochs_then_the_backbone_at_its_factor(pretrained, tmp_path):
    """The first epoch trains the classifier alone; then the backbone learns at a tenth of its rate."""
    data = image_folder(tmp_path / "data", ["cat", "dog"], seed=1)
    cfg = resolve_config(TINY, data_dir=str(data), weights=str(pretrained), head_only_epochs=1,
                         backbone_lr_factor=0.1, epochs=2)  # fmt: skip
    train(cfg, output=str(tmp_path / "ft"), max_steps=2)  # the head-only epoch
    convs = [k for k, v in load_file(str(pretrained)).items() if v.dim() == 4]
    first = load_file(str(tmp_path / "ft" / "model.safetensors"))
    assert all(torch.equal(first[k], load_file(str(pretrained))[k]) for k in convs)
    train(cfg, output=str(tmp_path / "ft"), resume=True)  # the second epoch
    second = load_file(str(tmp_path / "ft" / "model.safetensors"))
    assert any(not torch.equal(first[k], second[k]) for k in convs)
    groups = load_checkpoint(tmp_path / "ft" / "checkpoint.pt")["optimizer"]["param_groups"]
    assert groups[2]["lr"] == pytest.approx(0.1 * groups[0]["lr"])


def test_a_file_of_another_model_is_refused_and_nothing_is_written(pretrained, tmp_path, capsys):
    data = image_folder(tmp_path / "data", ["cat", "dog"], seed=1)
    out = tmp_path / "ft"
    with pytest.raises(ValueError, match="holds weights for model 'sknet_mini', not 'resnext_mini'"):
        train(**dict(TINY, model="resnext_mini"), data_dir=str(data), output=str(out), weights=str(pretrained))
    args = [
        "train",
        "--model",
        "sknet_mini",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(data),
        "--output",
        str(out),
        "--weights",
        str(pretrained),
        "--no-progress",
        "--set",
        "model_overrides={layers: [1, 2, 1]}",
    ]
    assert cli.main(args) == 2  # same name, another architecture: the mismatching tensors are named
    err = capsys.readouterr().err
    assert "does not fit model 'sknet_mini'" in err and "layer2.1" in err
    assert not out.exists() or not any(out.iterdir())


def test_the_image_folder_trains_and_predict_prints_its_class_names(pretrained, tmp_path, capsys):
    """The packaged finetune recipe on an image folder: normalised as the weights were trained (their
    record's mean / std), the folders' class names in the saved record and in sknet predict."""
    weights = save_weights(load_model(pretrained), tmp_path / "w.safetensors", mean=(0.4, 0.5, 0.6), std=(0.2,) * 3)
    data = image_folder(tmp_path / "data", ["cat", "dog"], seed=1)
    args = [
        "train",
        "--config",
        "finetune",
        "--model",
        "sknet_mini",
        "--data-dir",
        str(data),
        "--output",
        str(tmp_path / "ft"),
        "--weights",
        str(weights),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--no-progress",
        "--set",
        "image_size=16",
        "--set",
        "pad=2",
        "--set",
        "eval_crop_ratio=1.0",
    ]
    assert cli.main(args) == 0
    capsys.readouterr()
    record = load_checkpoint(tmp_path / "ft" / "checkpoint.pt")["meta"]
    assert record["classes"] == ["cat", "dog"]
    assert (record["mean"], record["std"]) == ([0.4, 0.5, 0.6], [0.2, 0.2, 0.2])
    image = str(next((data / "val" / "dog").iterdir()))
    assert cli.main(["predict", "--checkpoint", str(tmp_path / "ft" / "model.safetensors"), image, "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    assert {t["cls"] for t in top} == {"cat", "dog"}


# --------------------------------------------------------------------------- other input channels


@pytest.mark.parametrize("file_chans, model_chans", [(1, 3), (3, 1)])
def test_weights_for_other_input_channels_adapt_the_first_conv(tmp_path, file_chans, model_chans):
    """The first conv of a file made for other input channels is adapted as timm's adapt_input_conv
    does. Checked on what the conv computes: 1 -> 3 gives on an RGB image what the file's conv gives on
    its channel mean; 3 -> 1 gives on a grayscale image what the file's conv gives on it repeated in
    three channels."""
    source = create_model("sknet_mini", num_classes=2, in_chans=file_chans)
    path = save_weights(source, tmp_path / "w.safetensors")
    model = create_model("sknet_mini", num_classes=2, in_chans=model_chans)
    report = load_pretrained(model, path, model_name="sknet_mini")
    assert report["input_conv"] == dict(key="conv1.weight", file_in_chans=file_chans, model_in_chans=model_chans)
    x = torch.randn(2, model_chans, 16, 16)
    as_file_sees_it = x.mean(1, keepdim=True) if file_chans == 1 else x.repeat(1, file_chans, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.conv1(x), source.conv1(as_file_sees_it), rtol=1e-5, atol=1e-6)
    timm_manipulate = pytest.importorskip("timm.models._manipulate")
    expected = timm_manipulate.adapt_input_conv(model_chans, source.conv1.weight.detach(), base_chans=file_chans)
    torch.testing.assert_close(model.conv1.weight.detach(), expected)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items() if k != "conv1.weight")


@pytest.mark.parametrize("model_chans", [2, 4])
def test_rgb_weights_adapt_to_channel_counts_that_are_not_a_multiple_of_three(tmp_path, model_chans):
    """3 -> 2 and 3 -> 4: as timm's adapt_input_conv, the RGB channels repeated ceil(n / 3) times, the first n
    kept and scaled by 3 / n; the file's other tensors load as they are."""
    timm_manipulate = pytest.importorskip("timm.models._manipulate")
    source = create_model("sknet_mini", num_classes=2, in_chans=3)
    path = save_weights(source, tmp_path / "rgb.safetensors")
    model = create_model("sknet_mini", num_classes=2, in_chans=model_chans)
    report = load_pretrained(model, path, model_name="sknet_mini")
    assert report["input_conv"] == dict(key="conv1.weight", file_in_chans=3, model_in_chans=model_chans)
    expected = timm_manipulate.adapt_input_conv(model_chans, source.conv1.weight.detach(), base_chans=3)
    assert model.conv1.weight.shape[1] == model_chans
    torch.testing.assert_close(model.conv1.weight.detach(), expected)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items() if k != "conv1.weight")


@pytest.mark.parametrize("in_chans", [1, 4])
def test_an_adapted_half_precision_conv_keeps_its_dtype(in_chans):
    """Computed in float32, returned in the weight's own dtype, as timm's adapt_input_conv does."""
    timm_manipulate = pytest.importorskip("timm.models._manipulate")
    weight = torch.randn(8, 3, 3, 3).half()
    adapted = adapt_input_conv(weight, in_chans)
    expected = timm_manipulate.adapt_input_conv(in_chans, weight, base_chans=3)
    assert adapted.dtype == expected.dtype == torch.float16
    assert torch.equal(adapted, expected)


@pytest.fixture(scope="module")
def demo_on_rgb(tmp_path_factory):
    """``sknet train --config finetune`` of a one-channel model (the demo's kind: 10 classes, its own
    normalisation) on an RGB image folder: the run's folder, its standard output and the data."""
    tmp = tmp_path_factory.mktemp("demo_on_rgb")
    weights = save_weights(
        create_model("sknet_mini", num_classes=10), tmp / "demo.safetensors", mean=(0.3,), std=(0.35,)
    )  # fmt: skip
    data = image_folder(tmp / "data", ["cat", "dog"], seed=2)
    args = [
        "train", "--config", "finetune", "--model", "sknet_mini", "--data-dir", str(data), "--output",
        str(tmp / "ft"), "--weights", str(weights), "--batch-size", "8", "--workers", "0", "--max-steps", "1",
        "--no-progress", "--set", "image_size=16", "--set", "pad=2", "--set", "eval_crop_ratio=1.0",
    ]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            out = io.StringIO()
            mp.setattr("sys.stdout", out)
            assert cli.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return dict(run=tmp / "ft", stdout=out.getvalue(), args=args, data=data)


def test_the_one_channel_demo_model_fine_tunes_on_rgb_images(demo_on_rgb):
    """The stem is adapted (1 -> 3 channels), the run says so, and its record keeps it; the weights'
    one-channel normalisation holds for each of the three."""
    assert "the first conv (conv1.weight) was made for 1 input channel(s), the model takes 3" in demo_on_rgb["stdout"]
    record = read_record(demo_on_rgb["run"] / "model.safetensors")
    assert record.provenance["adapted_input_conv"] == dict(key="conv1.weight", file_in_chans=1, model_in_chans=3)
    assert (record.input_size, record.mean, record.std) == ([3, 16, 16], [0.3] * 3, [0.35] * 3)
    assert load_file(str(demo_on_rgb["run"] / "model.safetensors"))["conv1.weight"].shape[1] == 3


def test_an_in_chans_override_the_data_does_not_fit_is_one_line_and_writes_nothing(demo_on_rgb, tmp_path, capsys):
    args = list(demo_on_rgb["args"])
    args[args.index("--output") + 1] = str(tmp_path / "ft")
    assert cli.main([*args, "--set", "model_overrides={in_chans: 1}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "does not run on imagefolder's input 3x16x16" in err and "Leave in_chans out of model_overrides" in err
    assert not (tmp_path / "ft").exists()


def test_the_onnx_file_of_a_fine_tuned_model_carries_its_record(demo_on_rgb, tmp_path, capsys):
    """Exported as ``--model NAME --weights FILE``: the file's model (its in_chans), class names and
    normalisation reach the ONNX metadata."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    weights, out = demo_on_rgb["run"] / "model.safetensors", tmp_path / "ft.onnx"
    assert cli.main(["export", "--model", "sknet_mini", "--weights", str(weights), "-o", str(out)]) == 0
    capsys.readouterr()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["sknet.model_name"] == "sknet_mini" and json.loads(meta["sknet.overrides"]) == {"in_chans": 3}
    assert json.loads(meta["sknet.classes"]) == ["cat", "dog"]
    assert (json.loads(meta["sknet.mean"]), json.loads(meta["sknet.std"])) == ([0.3] * 3, [0.35] * 3)
    assert json.loads(meta["sknet.input_size"]) == [3, 16, 16]
