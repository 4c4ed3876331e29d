"""Attention recording, the paper's scaling, the scale-varied Fashion-MNIST and ``sknet analyze``."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import randomize_bn
from sknet import create_model
from sknet.analysis import (
    AttentionRecorder,
    find_sk_units,
    run_analysis,
    scale_center,
    scaled_batches,
    select_units,
    summarize,
)
from sknet.analysis.report import fmt_num
from sknet.cli import main
from sknet.data import ScaledFashionMNIST, read_idx


def _lively(model):
    """Random BN statistics and larger attention weights, so attention is far from uniform."""
    randomize_bn(model)
    g = torch.Generator().manual_seed(3)
    for unit in find_sk_units(model):
        for fc in (unit.module.attn.fc_reduce, unit.module.attn.fc_select):
            fc.weight.data.copy_(torch.randn(fc.weight.shape, generator=g) * 0.5)
    return model.eval()


# --------------------------------------------------------------------------- units and recording


def test_units_are_named_like_the_paper_for_sknet50():
    units = find_sk_units(create_model("sknet50"))
    names = [u.name for u in units]
    expected = [f"SK_{s}_{u}" for s, n in zip((2, 3, 4, 5), (3, 4, 6, 3)) for u in range(1, n + 1)]
    assert names == expected
    by_name = {u.name: u for u in units}
    assert by_name["SK_3_4"].path == "layer2.3.conv2"
    assert by_name["SK_5_3"].path == "layer4.2.conv2"
    assert by_name["SK_2_1"].receptive_fields == (3, 5)  # K3 and 3x3 dilated 2
    assert (by_name["SK_2_1"].large, by_name["SK_2_1"].small) == (1, 0)


def test_larger_branch_is_chosen_by_effective_receptive_field():
    model = create_model("sknet_mini", branches=[(3, 3, 8), (3, 1, 8), (3, 2, 8)])  # K7, K3, K5
    u = find_sk_units(model)[0]
    assert u.receptive_fields == (7, 3, 5)
    assert (u.large, u.small) == (0, 1)


def test_units_without_attention_are_not_recorded_and_names_stay_unique():
    assert find_sk_units(create_model("sknet_mini", select="sum")) == []
    with pytest.raises(ValueError, match="no SK convolution with attention"):
        AttentionRecorder(create_model("resnext_mini"))
    names = [u.name for u in find_sk_units(create_model("shufflenetv2_x0_5_sk"))]
    assert len(names) == len(set(names))
    assert "SK_2_2" in names and "SK_2_1.branch1.0" in names and "SK_2_1.branch2.3" in names
    with pytest.raises(ValueError, match="unknown SK unit"):
        select_units(create_model("sknet_mini"), ["SK_3_4"])


@pytest.mark.parametrize("branches", [[(3, 1, 8), (3, 2, 8)], [(3, 1, 8), (3, 2, 8), (3, 3, 8)]])
def test_recorded_attention_shape_sums_to_one_and_is_per_image(branches):
    model = _lively(create_model("sknet_mini", branches=branches))
    x = torch.randn(5, 1, 28, 28)
    with AttentionRecorder(model) as rec:
        model(x)
        model(x[:2])  # a second batch is appended
    att = rec.attention
    assert list(att) == ["SK_2_1", "SK_3_1", "SK_4_1"]
    for name, channels in zip(att, (32, 64, 128)):
        a = att[name]
        assert a.shape == (7, len(branches), channels)
        torch.testing.assert_close(a.sum(1), torch.ones(7, channels))
        assert a.std() > 0.01  # not uniform: the test would otherwise not see a mix-up of images
        torch.testing.assert_close(a[5:], a[:2])
    with AttentionRecorder(model) as rec:  # image 3 alone gives its own row of the batch
        model(x[3:4])
    for name in att:
        torch.testing.assert_close(rec.attention[name][0], att[name][3], atol=1e-5, rtol=1e-5)


def test_hooks_are_removed_after_use_even_on_error():
    model = create_model("sknet_mini")
    attn_modules = [u.module.attn for u in find_sk_units(model)]
    with AttentionRecorder(model, ["SK_3_1"]) as rec:
        assert [len(m._forward_hooks) for m in attn_modules] == [0, 1, 0]
        model(torch.randn(2, 1, 28, 28))
    assert all(len(m._forward_hooks) == 0 for m in attn_modules)
    model(torch.randn(2, 1, 28, 28))  # no longer recorded
    assert rec.attention["SK_3_1"].shape[0] == 2
    with pytest.raises(RuntimeError, match="boom"), AttentionRecorder(model):
        raise RuntimeError("boom")
    assert all(len(m._forward_hooks) == 0 for m in attn_modules)


def test_pop_empties_the_record():
    model = create_model("sknet_mini").eval()
    with AttentionRecorder(model) as rec:
        model(torch.randn(2, 1, 28, 28))
        assert rec.pop()["SK_2_1"].shape[0] == 2
        assert rec.attention == {}
        model(torch.randn(3, 1, 28, 28))
        assert rec.pop()["SK_2_1"].shape[0] == 3


# --------------------------------------------------------------------------- scaling


def test_scale_two_is_the_centre_half_resized():
    img = torch.arange(64.0).view(1, 1, 8, 8)
    centre = img[..., 2:6, 2:6]
    # nearest: every centre pixel becomes a 2x2 block
    expected = centre.repeat_interleave(2, -1).repeat_interleave(2, -2)
    torch.testing.assert_close(scale_center(img, 2.0, mode="nearest"), expected)
    # bilinear: the same crop through a plain interpolate
    x = torch.rand(2, 3, 16, 16)
    ref = F.interpolate(x[..., 4:12, 4:12], size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(scale_center(x, 2.0), ref)


def test_scale_keeps_size_crops_one_over_s_and_rejects_shrinking():
    x = torch.rand(1, 3, 30, 30)
    assert scale_center(x, 1.0) is x
    y = scale_center(x, 1.5, mode="nearest")
    assert y.shape == x.shape
    # a 20x20 centre crop (30 / 1.5) starting at 5, resized 20 -> 30 by nearest
    idx = (torch.arange(30) * 20 / 30).floor().long() + 5
    torch.testing.assert_close(y, x[..., idx[:, None], idx[None, :]])
    with pytest.raises(ValueError, match=">= 1"):
        scale_center(x, 0.5)


# --------------------------------------------------------------------------- scaled Fashion-MNIST


def _write_idx(path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fake_fashion(tmp_path_factory):
    """Fashion-MNIST-format files: bright 28x28 squares (so the object's extent is known)."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 30)):
        images = rng.integers(60, 256, (n, 28, 28)).astype(np.uint8)
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_read_idx_round_trip(fake_fashion):
    arr = read_idx(fake_fashion / "t10k-labels-idx1-ubyte.gz")
    assert arr.tolist() == [i % 10 for i in range(30)]
    assert read_idx(fake_fashion / "train-images-idx3-ubyte.gz").shape == (40, 28, 28)


def test_scaled_items_are_deterministic_and_lie_on_the_canvas(fake_fashion):
    a = ScaledFashionMNIST(fake_fashion, seed=1, normalize=False)
    b = ScaledFashionMNIST(fake_fashion, seed=1, max_items=10, normalize=False)
    c = ScaledFashionMNIST(fake_fashion, seed=2, normalize=False)
    assert len(a) == 40 and len(b) == 10
    torch.testing.assert_close(a.images[:10], b.images)  # per index, whatever the subset
    assert not torch.equal(a.images, c.images)
    assert (a.sides >= 21).all() and (a.sides <= 56).all() and len(a.sides.unique()) > 5
    for i in range(len(a)):
        img, side, (top, left) = a.images[i], int(a.sides[i]), a.offsets[i].tolist()
        assert top >= 0 and left >= 0 and top + side <= 56 and left + side <= 56
        rows, cols = img.nonzero(as_tuple=True)  # the object fills exactly its box (pixels >= 60)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (top, top + side - 1, left, left + side - 1)
    x, y = a[3]
    assert x.shape == (1, 56, 56) and y == 3 and float(x.min()) >= 0 and float(x.max()) <= 1
    test = ScaledFashionMNIST(fake_fashion, train=False, seed=1, normalize=False)
    assert len(test) == 30 and not torch.equal(test.sides[:30], a.sides[:30])  # each split draws its own


def test_render_draws_the_item_centred_at_each_scale(fake_fashion):
    ds = ScaledFashionMNIST(fake_fashion, seed=0, normalize=False)
    out = ds.render(4, [1.0, 1.5, 2.0])
    assert out.shape == (3, 1, 56, 56)
    torch.testing.assert_close(out[0, 0, 14:42, 14:42], ds.base[4].float() / 255)  # 28 px at 1.0x, centred
    assert out[0, 0, :14].abs().sum() == 0 and out[0, 0, 42:].abs().sum() == 0
    assert (out[1, 0, 7:49, 7:49] > 0).all() and out[1, 0, :7].abs().sum() == 0  # 42 px at 1.5x
    assert (out[2, 0] > 0).all()  # 56 px: the whole canvas
    with pytest.raises(ValueError, match="does not fit"):
        ds.render(0, [2.5])


# --------------------------------------------------------------------------- statistics and the command


def test_summary_numbers_match_a_direct_computation():
    model = _lively(create_model("sknet_mini", branches=[(3, 2, 8), (3, 1, 8)]))  # larger branch first
    g = torch.Generator().manual_seed(5)
    data = [(torch.randn(1, 28, 28, generator=g), i % 3) for i in range(12)]
    scales = [1.0, 2.0]
    stats = run_analysis(model, scaled_batches(data, scales, batch_size=5), scales)
    s = summarize(stats, "SK_3_1", ["SK_2_1", "SK_4_1"], [1.0, 2.0], channel_group=16)
    x = torch.stack([d[0] for d in data])
    labels = torch.tensor([d[1] for d in data])
    for scale in scales:
        with AttentionRecorder(model) as rec, torch.no_grad():
            logits = model(scale_center(x, scale))
        att = rec.attention
        for unit in ("SK_2_1", "SK_3_1", "SK_4_1"):
            d = (att[unit][:, 0] - att[unit][:, 1]).mean(1).double()  # branch 0 is the dilated one
            row = next(r for r in s["fig3_right"] if r["unit"] == unit and r["scale"] == scale)
            assert row["n"] == 12
            assert row["mean"] == pytest.approx(float(d.mean()), abs=1e-6)
            assert row["std"] == pytest.approx(float(d.std()), abs=1e-6)
            if unit != "SK_3_1":
                for c in range(3):
                    r4 = next(
                        r
                        for r in s["fig4"]["rows"]
                        if r["unit"] == unit and r["scale"] == scale and r["class_index"] == c
                    )
                    assert r4["mean"] == pytest.approx(float(d[labels == c].mean()), abs=1e-6)
        large = att["SK_3_1"][:, 0].double().mean(0)  # (64,)
        expected = [float(large[i : i + 16].mean()) for i in range(0, 64, 16)]
        assert s["fig3_left"]["mean_attention"][str(scale)] == pytest.approx(expected, abs=1e-6)
        assert s["accuracy"][str(scale)] == pytest.approx(float((logits.argmax(1) == labels).double().mean()))


def test_analyze_command_writes_figures_json_and_csv(tmp_path, fake_fashion):
    out = tmp_path / "an"
    rc = main(
        ["analyze", "--model", "sknet_mini", "--dataset", "fake", "--max-images", "20", "--batch-size", "8",
         "--channel-group", "8", "--output", str(out), "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0
    for name in (
        "analysis.json",
        "analysis.md",
        "fig3.png",
        "fig4.png",
        "examples.png",
        "fig3_left.csv",
        "fig3_right.csv",
        "fig4.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    s = json.loads((out / "analysis.json").read_text())
    assert s["num_images"] == 20 and s["scales"] == [1.0, 1.5, 2.0]
    assert s["fig3_left"]["unit"] == "SK_3_1" and s["fig4"]["units"] == ["SK_2_1", "SK_3_1", "SK_4_1"]
    assert len(s["fig3_left"]["mean_attention"]["2.0"]) == 64 // 8
    assert len(s["fig3_right"]) == 3 * 3
    csv_rows = (out / "fig3_right.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 9 and csv_rows[0].startswith("unit,scale,n,mean,std")
    # the scale-varied data set, drawing each item at each scale
    out2 = tmp_path / "an2"
    rc = main(
        ["analyze", "--model", "sknet_mini", "--dataset", "fashion-mnist-scaled", "--data-dir", str(fake_fashion),
         "--scaling", "render", "--unit", "SK_2_1", "--units", "SK_4_1", "--output", str(out2), "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0
    s2 = json.loads((out2 / "analysis.json").read_text())
    assert s2["num_images"] == 30 and s2["settings"]["input_size"] == [1, 28, 28]
    assert {r["class_name"] for r in s2["fig4"]["rows"]} >= {"T-shirt/top", "Ankle boot"}


def test_analyze_command_rejects_bad_input(tmp_path, capsys):
    args = ["analyze", "--model", "sknet_mini", "--dataset", "fake", "--output", str(tmp_path / "x")]
    assert main([*args, "--unit", "SK_9_9"]) == 2
    assert "unknown SK unit" in capsys.readouterr().err
    assert main([*args, "--scales", "0.5", "1.0"]) == 2
    assert main(["analyze", "--model", "resnext_mini", "--dataset", "fake", "--output", str(tmp_path / "y")]) == 2
    assert "no SK convolution" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_analyze_imagefolder_with_weights_and_checkpoint(tmp_path):
    """The ImageNet path: an ImageFolder tree, --model + --weights, and --checkpoint, at a small input size."""
    from PIL import Image

    from sknet import save_weights

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "val" / cls / f"{i}.png")
    model = _lively(create_model("sknet26", num_classes=2))
    save_weights(model, tmp_path / "w.safetensors")
    common = ["--dataset", "imagefolder", "--data-dir", str(tmp_path / "val"), "--input-size", "32", "32"]
    assert main(["analyze", "--model", "sknet26", "--num-classes", "2", "--weights", str(tmp_path / "w.safetensors"),
                 *common, "--output", str(tmp_path / "a")]) == 0  # fmt: skip
    assert (
        main(["analyze", "--checkpoint", str(tmp_path / "w.safetensors"), *common, "--output", str(tmp_path / "b")])
        == 0
    )
    a = json.loads((tmp_path / "a" / "analysis.json").read_text())
    b = json.loads((tmp_path / "b" / "analysis.json").read_text())
    assert a["num_images"] == 6 and a["settings"]["input_size"] == [3, 32, 32]
    assert [u["name"] for u in a["units"]][:3] == ["SK_2_1", "SK_2_2", "SK_3_1"]
    assert a["fig3_left"]["unit"] == "SK_4_1" and {r["class_name"] for r in a["fig4"]["rows"]} == {"cat", "dog"}
    assert a["fig3_right"] == b["fig3_right"]  # the same weights either way


def test_analysis_md_lists_every_unit_and_scale(tmp_path):
    out = tmp_path / "an"
    assert main(["analyze", "--model", "sknet_mini", "--dataset", "fake", "--max-images", "8", "--output", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    s = json.loads((out / "analysis.json").read_text())
    md = (out / "analysis.md").read_text()
    for r in s["fig3_right"]:
        assert fmt_num(r["mean"]) in md
    assert md.count("| SK_") == 3 and "1.5x - 1x" in md and "2x - 1x" in md


def test_compare_runs_aggregates_each_run_change(tmp_path, capsys):
    """--compare reads finished analyses and reports, per unit and scale, each run's change
    against the first scale, their mean and std over runs, and how many runs moved up."""
    outs = []
    for seed in range(3):
        out = tmp_path / f"seed{seed}"
        torch.manual_seed(seed)  # different random weights: different attention
        model = _lively(create_model("sknet_mini"))
        from sknet import save_weights

        save_weights(model, tmp_path / f"w{seed}.safetensors")
        assert main(["analyze", "--checkpoint", str(tmp_path / f"w{seed}.safetensors"), "--dataset", "fake",
                     "--max-images", "8", "--device", "cpu", "--output", str(out)]) == 0  # fmt: skip
        outs.append(out)
    cmp_dir = tmp_path / "cmp"
    assert main(["analyze", "--compare", *map(str, outs), "--output", str(cmp_dir)]) == 0
    comparison = json.loads((cmp_dir / "comparison.json").read_text())
    summaries = [json.loads((o / "analysis.json").read_text()) for o in outs]
    assert comparison["labels"] == ["seed0", "seed1", "seed2"]
    units = [u["name"] for u in summaries[0]["units"]]
    assert len(comparison["rows"]) == len(units) * (len(summaries[0]["scales"]) - 1)
    for row in comparison["rows"]:
        expected = [
            next(r for r in s["fig3_right"] if r["unit"] == row["unit"] and r["scale"] == row["scale"])[
                "change_vs_first_scale"
            ]
            for s in summaries
        ]
        assert row["changes"] == pytest.approx(expected)
        assert row["mean_change"] == pytest.approx(float(np.mean(expected)))
        assert row["std_change"] == pytest.approx(float(np.std(expected, ddof=1)))
        assert row["runs_up"] == sum(c > 0 for c in expected)
    md = (cmp_dir / "comparison.md").read_text()
    assert all(u in md for u in units) and (cmp_dir / "comparison.png").stat().st_size > 0
    csv_lines = (cmp_dir / "comparison.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 3 * len(comparison["rows"])
    # bad input: a folder without analysis.json, analyses of different scales
    assert main(["analyze", "--compare", str(tmp_path), "--output", str(tmp_path / "bad")]) == 2
    assert "analysis.json" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    other = tmp_path / "other"
    assert main(["analyze", "--checkpoint", str(tmp_path / "w0.safetensors"), "--dataset", "fake", "--max-images",
                 "8", "--device", "cpu", "--scales", "1.0", "2.0", "--output", str(other)]) == 0  # fmt: skip
    assert main(["analyze", "--compare", str(outs[0]), str(other), "--output", str(tmp_path / "bad2")]) == 2
    assert "differ" in capsys.readouterr().err and not (tmp_path / "bad2").exists()
    assert main(["analyze", "--output", str(tmp_path / "bad3")]) == 2  # neither --dataset nor --compare
