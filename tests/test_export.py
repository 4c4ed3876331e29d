"""Exports (ONNX in onnxruntime, TorchScript, torch.export) match the eager model; bad exports leave no file."""

import copy
import json

import pytest
import torch

import sknet
from sknet.cli import main
from sknet.deploy import export as sk_export

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def conditioned(model: torch.nn.Module, input_size, fc_scale: float = 10.0) -> torch.nn.Module:
    """A model with trained-looking statistics: BN affine terms drawn at random, running
    statistics measured on random data (so activations stay of order one through the
    network), and logits scaled to order 1-10 so a 1e-4 tolerance is meaningful."""
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        n = m.num_features
        m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
        m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration pass
    with torch.no_grad():
        model.train()(torch.randn(8, *input_size, generator=g))
        model.fc.weight.mul_(fc_scale)
    for m in bns:
        m.momentum = 0.1
    return model.eval()


FUSED = [False, True]


def _check_onnx(model, tmp_path, input_size, fused, dynamic, deep=False):
    """Export, then run the file again here, independently of the report, on fresh inputs.

    Small models: within 1e-4 absolute. Deep ones (``deep``): float32 itself is not that
    exact at logits of order 10 (eager float32 vs float64 differs by ~7e-4 on SKNet-50),
    so there we ask for 1e-4 relative to the largest logit, and that onnxruntime is no
    less accurate than eager PyTorch against a float64 reference.
    """
    path = tmp_path / "m.onnx"
    report = sk_export.export_model(model, path, "onnx", input_size, dynamic_batch=dynamic, fuse=fused)
    assert path.is_file()
    assert report.max_abs_eager > 1.0, "logits near zero would make the tolerance meaningless"
    batches = (1, 3) if dynamic else (1,)
    reference = copy.deepcopy(model).double() if deep else None
    for b in batches:
        x = torch.randn(b, *input_size)
        with torch.no_grad():
            ref = model(x)
        out = sk_export.run_exported(path, "onnx", x)
        assert out.shape == ref.shape
        diff = (out - ref).abs().max().item()
        if not deep:
            assert diff <= 1e-4
            continue
        assert diff <= 1e-4 * ref.abs().max().item()
        with torch.no_grad():
            exact = reference(x.double())
        eager_err = (ref.double() - exact).abs().max().item()
        onnx_err = (out.double() - exact).abs().max().item()
        assert onnx_err <= 2 * eager_err + 1e-5, f"onnxruntime off by {onnx_err:.3g}, eager float32 by {eager_err:.3g}"
    assert set(report.diffs) == set(batches)
    return report


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("fused", FUSED)
def test_onnx_small_sk_model_matches_eager(tmp_path, fused, dynamic):
    model = conditioned(sknet.create_model("sknet_mini"), (1, 28, 28))
    _check_onnx(model, tmp_path, (1, 28, 28), fused, dynamic)


@pytest.mark.slow
@pytest.mark.parametrize("fused", FUSED)
def test_onnx_sknet50_matches_eager(tmp_path, fused):
    model = conditioned(sknet.create_model("sknet50"), (3, 64, 64))
    _check_onnx(model, tmp_path, (3, 64, 64), fused, dynamic=True, deep=True)


@pytest.mark.slow
def test_onnx_sk_shufflenet_matches_eager(tmp_path):
    model = conditioned(sknet.create_model("shufflenetv2_x0_5_sk"), (3, 64, 64))
    _check_onnx(model, tmp_path, (3, 64, 64), fused=False, dynamic=True, deep=True)


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
@pytest.mark.parametrize(
    "name, input_size",
    [
        ("sknet_mini", (1, 28, 28)),
        pytest.param("sknet26", (3, 64, 64), marks=pytest.mark.slow),
        pytest.param("shufflenetv2_x0_5_sk", (3, 64, 64), marks=pytest.mark.slow),
    ],
)
def test_torchscript_and_torch_export_match_eager(tmp_path, fmt, name, input_size):
    model = conditioned(sknet.create_model(name), input_size)
    path = tmp_path / f"m{sk_export.SUFFIX[fmt]}"
    report = sk_export.export_model(model, path, fmt, input_size, dynamic_batch=True)
    assert report.max_abs_eager > 1.0
    x = torch.randn(3, *input_size)
    with torch.no_grad():
        ref = model(x)
    assert (sk_export.run_exported(path, fmt, x) - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
@pytest.mark.parametrize("fused", FUSED)
def test_static_batch_exports_of_the_fused_and_plain_model(tmp_path, fmt, fused):
    model = conditioned(sknet.create_model("sknet_mini"), (1, 28, 28))
    path = tmp_path / f"m{sk_export.SUFFIX[fmt]}"
    report = sk_export.export_model(model, path, fmt, (1, 28, 28), batch_size=2, fuse=fused)
    assert report.batch_sizes == (2,) and report.max_abs_diff <= 1e-4 * max(1.0, report.max_abs_eager)


def test_a_mismatching_export_raises_and_leaves_no_file(tmp_path, monkeypatch):
    model = conditioned(sknet.create_model("sknet_mini"), (1, 28, 28))
    real = sk_export.run_exported
    monkeypatch.setattr(sk_export, "run_exported", lambda p, f, x: real(p, f, x) + 1e-2)
    path = tmp_path / "m.pt"
    with pytest.raises(ValueError, match="does not match the eager model"):
        sk_export.export_model(model, path, "torchscript", (1, 28, 28))
    assert list(tmp_path.iterdir()) == [], "a rejected export must leave nothing behind"


def test_bad_arguments_are_clear_errors(tmp_path):
    model = sknet.create_model("sknet_mini")
    with pytest.raises(ValueError, match="unknown export format"):
        sk_export.export_model(model, tmp_path / "m.x", "tflite", (1, 28, 28))
    with pytest.raises(ValueError, match=r"must end in \.pt2"):
        sk_export.export_model(model, tmp_path / "m.pt", "exported", (1, 28, 28))
    with pytest.raises(ValueError, match="does not run on input"):
        sk_export.export_model(model, tmp_path / "m.onnx", "onnx", (3, 28, 28))
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_a_shared_weights_file_and_records_the_model(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    model = conditioned(sknet.create_model("sknet_mini", select="sum", num_classes=7), (1, 28, 28))
    weights = sknet.save_weights(model, tmp_path / "w.safetensors", mean=(0.5,), std=(0.25,))
    out = tmp_path / "w.onnx"
    assert main(["export", "--checkpoint", str(weights), "--output", str(out), "--dynamic-batch"]) == 0
    printed = capsys.readouterr().out
    assert "max |exported - eager|" in printed and "OK" in printed
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["sknet.model_name"] == "sknet_mini" and json.loads(props["sknet.overrides"]) == {"select": "sum"}
    assert json.loads(props["sknet.mean"]) == [0.5] and props["sknet.num_classes"] == "7"
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert (sk_export.run_exported(out, "onnx", x) - model(x)).abs().max().item() <= 1e-4
    fused = tmp_path / "w_fused.onnx"
    assert main(["export", "--checkpoint", str(weights), "-o", str(fused), "--fuse"]) == 0
    assert {p.key: p.value for p in onnx.load(str(fused)).metadata_props}["sknet.fused"] == "True"
    with torch.no_grad():
        assert (sk_export.run_exported(fused, "onnx", x[:1]) - model(x[:1])).abs().max().item() <= 1e-4


def test_the_onnx_file_carries_the_model_record_and_follows_the_umask(tmp_path):
    """Class names, normalisation, model and input size reach the ONNX metadata_props, in the weights'
    record's own encoding; the file's mode is the umask's, as for every file sknet writes."""
    import os

    onnx = pytest.importorskip("onnx")
    from sknet.record import ModelRecord

    model = sknet.create_model("sknet_mini", select="sum", num_classes=3)
    fields = dict(mean=(0.5,), std=(0.25,), classes=["ant", "bee", "cat"])
    model = sknet.load_model(sknet.save_weights(model, tmp_path / "w.safetensors", **fields))
    before = os.umask(0o027)
    try:
        path = sk_export.export_model(model, tmp_path / "w.onnx", "onnx", (1, 32, 32)).path
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == 0o640
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    record = ModelRecord.from_metadata(props, prefix="sknet.")
    assert record.model_name == "sknet_mini" and record.overrides == {"select": "sum"} and record.num_classes == 3
    assert (record.classes, record.mean, record.std) == (fields["classes"], [0.5], [0.25])
    assert record.input_size == [1, 32, 32]  # the exported size, not the model's default 28 x 28
    assert json.loads(props["sknet.classes"]) == fields["classes"] and props["sknet.fused"] == "False"


def test_shared_weights_round_trip_gives_identical_outputs_and_features(tmp_path):
    overrides = dict(branches=[(3, 1, 32), (3, 2, 32), (3, 3, 32)], reduction=8)
    model = conditioned(sknet.create_model("sknet26", num_classes=12, **overrides), (3, 64, 64))
    path = sknet.save_weights(model, tmp_path / "sk26.safetensors", provenance={"run": "test"})
    loaded = sknet.load_model(path).eval()
    assert loaded.pretrained_cfg["overrides"]["reduction"] == 8 and loaded.pretrained_cfg["provenance"] == {
        "run": "test"
    }
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        a, b = sknet.features(model)(x), sknet.features(loaded)(x)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_model_and_weights_and_a_training_checkpoint(tmp_path, capsys):
    model = conditioned(sknet.create_model("sknet_mini", num_classes=5), (1, 28, 28))
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "config": {"model": "sknet_mini"}, "epoch": 3}, ckpt)
    out = tmp_path / "a.pt2"
    assert (
        main(["export", "--checkpoint", str(ckpt), "--format", "exported", "-o", str(out), "--input-size", "28"]) == 0
    )
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(sk_export.run_exported(out, "exported", x), model(x), atol=1e-5)
    out2 = tmp_path / "b.pt"
    args = ["export", "--model", "sknet_mini", "--weights", str(ckpt), "--format", "torchscript"]  # 5 classes: read
    assert main([*args, "-o", str(out2)]) == 0
    with torch.no_grad():
        assert torch.allclose(sk_export.run_exported(out2, "torchscript", x), model(x), atol=1e-5)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(ckpt), "--model", "sknet_mini", "-o", str(tmp_path / "c.onnx")]) == 2
    assert "not both" in capsys.readouterr().err
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    assert main(["export", "--checkpoint", str(plain), "-o", str(tmp_path / "d.onnx")]) == 2
    assert "--model NAME --weights PATH" in capsys.readouterr().err


ONNX_EXPORT = ["export", "--checkpoint", "{weights}", "-o", "{out}.onnx"]
MISSING_EXTRAS = [  # (module, the extra that installs it, a command that needs it; {out}: what it would write)
    ("onnx", "export", ONNX_EXPORT),
    ("onnxscript", "export", ONNX_EXPORT),
    ("onnxruntime", "export", ONNX_EXPORT),
    (
        "huggingface_hub",
        "hub",
        ["export", "--model", "skresnet18", "--pretrained", "--format", "torchscript", "-o", "{out}"],
    ),
    (
        "tensorboard",
        "tensorboard",
        ["train", "--output", "{out}", "--tensorboard", "--dataset", "fake", "--no-progress"],
    ),
]


@pytest.mark.parametrize("module, extra, command", MISSING_EXTRAS, ids=[m for m, _, _ in MISSING_EXTRAS])
def test_a_missing_optional_package_is_one_line_naming_its_extra(tmp_path, monkeypatch, capsys, module, extra, command):
    import sys

    weights = sknet.save_weights(sknet.create_model("sknet_mini", num_classes=3), tmp_path / "w.safetensors")
    out = tmp_path / "out"
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    assert main([a.format(weights=weights, out=out) for a in command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"pip install 'sknet[{extra}]'" in err and f"the {module} package" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # nothing written


def test_each_optional_package_is_in_the_extra_its_message_names():
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from sknet.extras import EXTRAS

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for module, extra in EXTRAS.items():
        names = [re.split(r"[<>=!~;\[ ]", req)[0] for req in extras[extra]]
        assert module in names, (module, extra, extras[extra])
