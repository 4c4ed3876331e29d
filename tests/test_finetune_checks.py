"""Fine-tuning and model files checked against what they must be, not against what the code computes:
which tensors a weights file gives, the class count a model is saved with after ``reset_classifier``,
and the learning rates and momentum of the steps after the head-only epochs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from conftest import randomize_bn
from sknet import create_model, load_model, save_weights
from sknet.pretrained import from_pretrained, save_pretrained
from sknet.training import loop, resolve_config, train
from sknet.weights import load_pretrained, read_record
from test_finetune import TINY, image_folder

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- the class count a model is saved with


@pytest.mark.parametrize("n", [3, 0])
def test_a_model_with_a_new_classifier_saves_and_loads_with_its_size(tmp_path, n):
    """After reset_classifier(n) (0: no classifier) the files say n classes, and load as the model is now."""
    model = randomize_bn(create_model("sknet_mini")).eval()  # built for 10 classes
    model.reset_classifier(n)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
    assert expected.shape == (2, n or model.num_features)
    folder = save_pretrained(model, tmp_path / "folder")
    weights = save_weights(model, tmp_path / "w.safetensors")
    assert json.loads((folder / "config.json").read_text())["num_classes"] == n
    assert read_record(weights).num_classes == n
    for loaded in (from_pretrained(folder), load_model(weights)):
        assert loaded.num_classes == n
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x), expected)


def test_class_names_of_the_old_classifier_are_not_saved_with_a_new_one(tmp_path):
    names = [f"class {i}" for i in range(10)]
    model = load_model(save_weights(create_model("sknet_mini"), tmp_path / "ten.safetensors", classes=names))
    assert read_record(save_weights(model, tmp_path / "same.safetensors")).classes == names
    model.reset_classifier(3)
    record = read_record(save_weights(model, tmp_path / "three.safetensors"))
    assert (record.num_classes, record.classes) == (3, [])


# --------------------------------------------------------------------------- which tensors a file gives


@pytest.fixture
def source(tmp_path):
    """A 5-class sknet_mini with every tensor (BN statistics included) away from its initial value."""
    torch.manual_seed(1)
    model = randomize_bn(create_model("sknet_mini", num_classes=5))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def _fresh(num_classes: int):
    """The model create_model gives for seed 7: what a classifier that is not loaded must be."""
    torch.manual_seed(7)
    return create_model("sknet_mini", num_classes=num_classes)


@pytest.mark.parametrize("file_head", ["another class count", "none"])
def test_a_file_without_our_classifier_gives_every_other_tensor(tmp_path, source, file_head):
    if file_head == "none":
        source.reset_classifier(0)
    path = save_weights(source, tmp_path / "w.safetensors")
    file = load_file(str(path))
    model = _fresh(2)
    report = load_pretrained(model, path, model_name="sknet_mini")
    assert report["reinitialised"] == ["fc.weight", "fc.bias"]
    assert report["file_classes"] == (5 if file_head != "none" else None)
    state, fresh = model.state_dict(), _fresh(2).state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert sorted(backbone) == sorted(k for k in file if not k.startswith("fc."))
    for k in backbone:
        assert torch.equal(state[k], file[k]), k
    for k in ("fc.weight", "fc.bias"):  # the model's own initialisation, not the file's rows
        assert torch.equal(state[k], fresh[k]), k


def test_a_file_with_our_classifier_gives_every_tensor(tmp_path, source):
    path = save_weights(source, tmp_path / "w.safetensors")
    model = _fresh(5)
    report = load_pretrained(model, path, model_name="sknet_mini")
    assert report["reinitialised"] == [] and report["file_classes"] == 5
    file = load_file(str(path))
    assert all(torch.equal(v, file[k]) for k, v in model.state_dict().items())


def test_the_class_count_of_a_torchvision_mobilenet_v2_file_is_its_classifiers(tmp_path):
    """torchvision's MobileNetV2 names its classifier ``classifier.1``, not ``fc``: its 7 classes are counted in
    its state dict, and load_pretrained reports them while it gives the model a fresh 3-class classifier."""
    torchvision = pytest.importorskip("torchvision")
    from sknet.record import num_classes_of

    tv = torchvision.models.mobilenet_v2(weights=None, num_classes=7)
    assert num_classes_of(tv.state_dict()) == 7
    torch.save(tv.state_dict(), tmp_path / "mobilenet_v2.pth")
    model = create_model("mobilenetv2_100", num_classes=3)
    report = load_pretrained(model, tmp_path / "mobilenet_v2.pth", model_name="mobilenetv2_100")
    assert report["file_classes"] == 7 and report["reinitialised"] == ["fc.weight", "fc.bias"]
    assert model.fc.out_features == 3


# --------------------------------------------------------------------------- the steps after the head-only epochs

STEPS_PER_EPOCH, EPOCHS, FACTOR = 2, 3, 0.3


def recipe_schedule(step: int) -> float:
    """finetune.yaml's schedule by hand: one warm-up epoch rising linearly to 1 (step s of it at
    (s + 1) / steps), then a cosine from 1 at the start of epoch 2 to 0 at the end of the run."""
    warm = STEPS_PER_EPOCH
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / (EPOCHS * STEPS_PER_EPOCH - warm)))


class StepRecorder:
    """Per optimizer step: each parameter's learning rate, weight decay and value before the step,
    its gradient and momentum buffer after it."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def before(self, optimizer, args, kwargs) -> None:
        self.steps.append({
            p: dict(lr=group["lr"], wd=group["weight_decay"], value=p.detach().clone())
            for group in optimizer.param_groups
            for p in group["params"]
        })  # fmt: skip

    def after(self, optimizer, args, kwargs) -> None:
        for p, entry in self.steps[-1].items():
            entry.update(grad=p.grad.clone(), buf_after=optimizer.state[p]["momentum_buffer"].clone())


@pytest.fixture(scope="module")
def finetune_steps(tmp_path_factory):
    """The packaged finetune recipe, head-only first epoch, backbone at 0.3: every step of a 3-epoch
    run of 2 steps per epoch, and the classifier's parameters."""
    tmp = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    weights = save_weights(create_model("sknet_mini", num_classes=3, in_chans=3), tmp / "w.safetensors")
    data = image_folder(tmp / "data", ["cat", "dog"], per_class=8)
    cfg = resolve_config("finetune", **{k: v for k, v in TINY.items() if k not in ("epochs", "lr", "lr_base_batch")},
                         data_dir=str(data), output=str(tmp / "run"), weights=str(weights),
                         backbone_lr_factor=FACTOR, epochs=EPOCHS)  # fmt: skip
    assert (cfg.lr_schedule, cfg.warmup_epochs, cfg.head_only_epochs, cfg.momentum) == ("cosine", 1, 1, 0.9)
    models, recorder = [], StepRecorder()
    build = loop.build_optimizer
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "build_optimizer", lambda cfg, model, *a: models.append(model) or build(cfg, model, *a))
        pre = register_optimizer_step_pre_hook(recorder.before)
        post = register_optimizer_step_post_hook(recorder.after)
        torch.set_num_threads(1)
        try:
            train(cfg)
        finally:
            pre.remove()
            post.remove()
            torch.set_num_threads(threads)
    assert len(recorder.steps) == EPOCHS * STEPS_PER_EPOCH
    return cfg, recorder.steps, list(models[0].fc.parameters())


def test_the_backbone_learns_at_its_factor_times_the_schedule_from_the_first_step_after_the_head_epoch(
    finetune_steps,
):
    cfg, steps, head = finetune_steps
    base_lr = cfg.lr * cfg.batch_size / cfg.lr_base_batch  # the recipe's lr per 256 images, scaled linearly
    for s, step in enumerate(steps):
        head_lrs = [step[p]["lr"] for p in head]
        backbone_lrs = [entry["lr"] for p, entry in step.items() if all(p is not h for h in head)]
        backbone = 0.0 if s < STEPS_PER_EPOCH else FACTOR * base_lr * recipe_schedule(s)
        assert head_lrs == pytest.approx([base_lr * recipe_schedule(s)] * len(head_lrs), rel=1e-12), s
        assert backbone_lrs == pytest.approx([backbone] * len(backbone_lrs), rel=1e-12, abs=0.0), s


def test_the_backbone_momentum_starts_afresh_when_it_starts_learning_and_the_classifiers_is_kept(finetune_steps):
    _, steps, head = finetune_steps
    first = STEPS_PER_EPOCH  # the first step after the head-only epoch
    for s in range(1, len(steps)):
        for p, entry in steps[s].items():
            d_p = entry["grad"] + entry["wd"] * entry["value"]  # SGD's step direction, weight decay included
            fresh = s == first and all(p is not h for h in head)
            # SGD's buffer: the direction itself on a fresh start, else momentum * buffer + direction
            expected = d_p if fresh else 0.9 * steps[s - 1][p]["buf_after"] + d_p
            torch.testing.assert_close(entry["buf_after"], expected, rtol=1e-5, atol=1e-7)
