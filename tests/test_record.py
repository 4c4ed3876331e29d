"""One model record: written as safetensors metadata, a checkpoint's ``meta``, ``config.json``; read by one function."""

import json

import pytest
import torch
from safetensors import safe_open

import sknet
from sknet.record import ModelRecord, record_of
from sknet.weights import read_record

FIELDS = dict(mean=(0.5,), std=(0.25,), classes=["ant", "bee", "cat"], metrics={"top1_err": 8.25})


@pytest.fixture
def mini():
    return sknet.create_model("sknet_mini", num_classes=3, branches=[(3, 1, 8), (3, 3, 8)], select="sum")


def test_a_model_record_takes_what_create_model_recorded_and_the_classifier_size(mini):
    record = ModelRecord.from_model(mini, **FIELDS)
    assert record == ModelRecord(
        model_name="sknet_mini",
        overrides={"branches": [[3, 1, 8], [3, 3, 8]], "select": "sum"},
        num_classes=3,
        input_size=[1, 28, 28],
        mean=[0.5],
        std=[0.25],
        classes=FIELDS["classes"],
        metrics=FIELDS["metrics"],
    )
    mini.fc = torch.nn.Linear(mini.fc.in_features, 7)  # a new head since create_model
    assert ModelRecord.from_model(mini).num_classes == 7
    with pytest.raises(ValueError, match="needs model_name="):
        ModelRecord.from_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="must be JSON values"):
        ModelRecord.from_model(mini, metrics={"when": object()})


def test_the_fields_given_win_over_what_the_model_recorded(mini):
    """A model that was built or loaded with a record, then fine-tuned: the fields given are the
    record, even where they are empty (no overrides) or the model recorded others."""
    mini.pretrained_cfg.update(input_size=(1, 28, 28), mean=[0.1], std=[0.2], classes=["x", "y", "z"])
    given = dict(overrides={}, input_size=(1, 32, 32), mean=(0.5,), std=(0.25,), classes=["ant", "bee", "cat"])
    record = ModelRecord.from_model(mini, **given)
    assert record.to_dict() == dict(
        model_name="sknet_mini", overrides={}, num_classes=3, input_size=[1, 32, 32], mean=[0.5], std=[0.25],
        classes=["ant", "bee", "cat"], provenance={}, metrics={},
    )  # fmt: skip


def test_a_reloaded_models_record_drops_the_files_provenance_and_metrics(tmp_path):
    """load_model puts the file's provenance and metrics in pretrained_cfg; they describe those weights, which may
    change (fine-tuning), so a record of the model, and a file saved from it, has only what is given."""
    classes = [f"c{i}" for i in range(10)]
    first = sknet.save_weights(sknet.create_model("sknet_mini"), tmp_path / "first.safetensors", classes=classes,
                               provenance={"commit": "0" * 40}, metrics={"test_top1_err": 7.5})  # fmt: skip
    model = sknet.load_model(first)
    assert model.pretrained_cfg["provenance"]["commit"] == "0" * 40 and model.pretrained_cfg["metrics"]
    record = ModelRecord.from_model(model)
    assert (record.provenance, record.metrics, record.classes) == ({}, {}, classes)
    again = read_record(sknet.save_weights(model, tmp_path / "again.safetensors"))
    assert (again.provenance, again.metrics) == ({}, {})
    assert ModelRecord.from_model(model, provenance={"step": 1}).provenance == {"step": 1}


def test_one_encoding_round_trips_through_strings_and_json_values(mini):
    record = ModelRecord.from_model(mini, **FIELDS, provenance={"torch": "2"})
    metadata = record.to_metadata()
    assert all(isinstance(v, str) for v in metadata.values())
    assert metadata["format"] == "sknet" and metadata["model_name"] == "sknet_mini" and metadata["num_classes"] == "3"
    assert json.loads(metadata["classes"]) == FIELDS["classes"]
    assert ModelRecord.from_metadata(metadata) == record
    assert ModelRecord.from_metadata(record.to_metadata("sknet."), "sknet.") == record
    others = {"model_name": "x", "other.num_classes": "7", "other.classes": "[]"}  # another tool's keys beside ours
    assert ModelRecord.from_metadata({**record.to_metadata("sknet."), **others}, "sknet.") == record
    assert ModelRecord.from_metadata(json.loads(json.dumps(record.to_dict()))) == record  # config.json's values
    with pytest.raises(ValueError, match="no model_name"):
        ModelRecord.from_metadata({"format": "sknet"})


def test_the_record_of_every_file_we_write(tmp_path, mini):
    """save_weights' safetensors, a training checkpoint (its ``meta``, or its config alone), config.json;
    another library's file has none."""
    record = ModelRecord.from_model(mini, **FIELDS)
    path = sknet.save_weights(mini, tmp_path / "w.safetensors", record=record)
    assert read_record(path) == record
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == record.to_metadata()
    with pytest.raises(TypeError, match="not both"):
        sknet.save_weights(mini, tmp_path / "x.safetensors", record=record, mean=(0.1,))

    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": mini.state_dict(), "meta": record.to_dict(), "config": {"model": "sknet_mini"}}, checkpoint)
    assert read_record(checkpoint) == record
    expected = ModelRecord("sknet_mini", overrides={"select": "sum"}, num_classes=3)
    config = {"model": "sknet_mini", "model_overrides": {"select": "sum"}}  # a TrainConfig's keys
    assert record_of({"config": config}, mini.state_dict()) == expected
    config = {"model": "sknet_mini", "overrides": {"select": "sum"}, "num_classes": 3}  # the form docs/deploy.md shows
    assert record_of({"config": config}) == expected

    folder = sknet.save_pretrained(mini, tmp_path / "folder", **FIELDS)
    stated = record_of(json.loads((folder / "config.json").read_text()))
    assert stated == ModelRecord(**{**record.to_dict(), "metrics": {}})  # config.json leaves the metrics out

    plain = tmp_path / "plain.pth"
    torch.save(mini.state_dict(), plain)
    assert read_record(plain) is None


def test_files_written_before_the_record_was_one_class_still_load(tmp_path, mini):
    """A checkpoint's ``meta`` as training wrote it, and safetensors metadata with ``num_classes`` "None"."""
    meta = dict(model_name="sknet_mini", overrides=mini.pretrained_cfg["overrides"], num_classes=3,
                input_size=[1, 28, 28], mean=[0.5], std=[0.25], classes=FIELDS["classes"])  # fmt: skip
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": mini.state_dict(), "meta": meta, "config": {"model": "sknet_mini"}}, checkpoint)
    loaded = sknet.load_model(checkpoint)
    assert loaded.pretrained_cfg["classes"] == FIELDS["classes"] and loaded.pretrained_cfg["num_classes"] == 3

    metadata = dict(ModelRecord.from_model(mini).to_metadata(), num_classes="None")
    assert ModelRecord.from_metadata(metadata).num_classes is None
    assert record_of(metadata, mini.state_dict()).num_classes == 3  # then the classifier's size


def test_a_record_sknet_did_not_write_is_a_clear_error():
    """Metadata that names a model but whose fields are not our JSON (another tool's file) is refused
    with a message that says what to do, not a raw JSON error."""
    with pytest.raises(ValueError, match="not one sknet wrote.*create_model"):
        record_of({"model_name": "sknet_mini", "input_size": "28x28"})
