"""Model folders (save_pretrained / from_pretrained, the Hub path mocked) and torch.hub entry points.

Nothing here touches the network: Hub downloads are replaced by a copy of a local folder or by
huggingface_hub's own offline error.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import sknet
from conftest import randomize_bn

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _json(value):
    return json.loads(json.dumps(value))


@pytest.fixture
def mini():
    """The mini SK model with overrides, 4 named classes and non-trivial BatchNorm statistics."""
    return randomize_bn(sknet.create_model("sknet_mini", num_classes=4, branches=[(3, 1, 8), (3, 3, 8)], select="sum"))


FIELDS = dict(mean=(0.5,), std=(0.25,), classes=["ant", "bee", "cat", "dog"], metrics={"top1_err": 8.25})


@pytest.fixture
def folder(tmp_path, mini):
    return sknet.save_pretrained(mini, tmp_path / "mini-sk", **FIELDS)


def test_round_trip_gives_identical_logits_and_record(tmp_path, mini, folder):
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    b = sknet.from_pretrained(folder)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(_logits(mini, x), _logits(b, x))
    cfg = b.pretrained_cfg
    assert cfg["name"] == "sknet_mini" and cfg["num_classes"] == 4
    assert (
        cfg["overrides"]
        == _json(mini.pretrained_cfg["overrides"])
        == {"branches": [[3, 1, 8], [3, 3, 8]], "select": "sum"}
    )
    assert cfg["input_size"] == [1, 28, 28] and cfg["mean"] == [0.5] and cfg["std"] == [0.25]
    assert cfg["classes"] == FIELDS["classes"] and cfg["metrics"] == FIELDS["metrics"]
    config = json.loads((folder / "config.json").read_text())
    assert config == dict(format="sknet", model_name="sknet_mini", overrides=cfg["overrides"], num_classes=4,
                          input_size=[1, 28, 28], mean=[0.5], std=[0.25], classes=FIELDS["classes"])  # fmt: skip
    # A string path works too, and the folder's weights file is an ordinary sknet weights file.
    assert torch.equal(
        _logits(sknet.from_pretrained(str(folder)), x), _logits(sknet.load_model(folder / "model.safetensors"), x)
    )


def test_the_card_says_what_the_model_is_and_how_to_load_it(mini, folder):
    card = (folder / "README.md").read_text()
    cost = sknet.complexity(mini, (1, 28, 28))
    assert card.startswith("---\nlibrary_name: sknet\n")
    assert sknet.get_model_entry("sknet_mini").doc in card
    assert f"| parameters | {cost.params:,} " in card and f"| multiply-adds | {cost.macs:,} " in card
    assert '`{"branches": [[3, 1, 8], [3, 3, 8]], "select": "sum"}`' in card
    assert "| classes | 4 (ant, bee, cat, dog) |" in card and "| input | 1x28x28 |" in card
    assert "| top1_err | 8.25 |" in card
    assert 'sknet.from_pretrained("mini-sk")' in card
    assert "## Provenance" not in card  # none was given


def test_a_folder_from_a_training_run_keeps_its_record(tmp_path):
    """A tiny run on synthetic data, then its weights file made into a model folder."""
    from sknet.training import train

    run = tmp_path / "run"
    train(model="sknet_mini", model_overrides={"select": "sum"}, dataset="fake", image_size=16, train_limit=32,
          val_limit=16, batch_size=16, epochs=1, workers=0, progress=False, lr=0.1, lr_base_batch=None,
          output=str(run))  # fmt: skip
    trained = sknet.load_model(run / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"has no config\.json.*training run folder.*sknet\.load_model"):
        sknet.from_pretrained(run)  # a run folder is no model folder: the message says what to do
    folder = sknet.save_pretrained(run / "model.safetensors", tmp_path / "trained")
    b = sknet.from_pretrained(folder)
    x = torch.randn(2, *trained.pretrained_cfg["input_size"])
    assert torch.equal(_logits(trained, x), _logits(b, x))
    for key in ("name", "overrides", "num_classes", "input_size", "mean", "std", "classes", "metrics", "provenance"):
        assert b.pretrained_cfg[key] == trained.pretrained_cfg[key], key
    assert b.pretrained_cfg["overrides"] == {"select": "sum"} and b.pretrained_cfg["metrics"]["steps"] == 2
    card = (folder / "README.md").read_text()
    assert "## Metrics" in card and "| test_top1_err |" in card and "| steps | 2 |" in card
    assert f"- torch version: {torch.__version__}" in card and "dataset fake, epochs 1" in card
    # A model object carries only the metrics given (its weights may have changed since).
    again = sknet.save_pretrained(trained, tmp_path / "again")
    assert "## Metrics" not in (again / "README.md").read_text()
    assert sknet.from_pretrained(again).pretrained_cfg.get("metrics") is None


def test_config_json_that_disagrees_with_the_weights_is_refused(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, classes=["a", "b", "c", "d"], num_classes=5)))
    with pytest.raises(ValueError, match=r"disagrees with the record in model\.safetensors \(num_classes: config\.json "
                       r"5, weights 4; classes: .*save_pretrained\(sknet\.load_model"):  # fmt: skip
        sknet.from_pretrained(folder)
    # Fields config.json leaves out are not a disagreement; extra keys are ignored.
    (folder / "config.json").write_text(json.dumps({"model_name": "sknet_mini", "license": "mit"}))
    assert sknet.from_pretrained(folder).pretrained_cfg["classes"] == FIELDS["classes"]


def test_a_second_save_replaces_the_model_files_and_keeps_other_files(tmp_path, mini, folder):
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    other = sknet.create_model("resnext_mini", num_classes=3)
    sknet.save_pretrained(other, folder)
    b = sknet.from_pretrained(folder)
    assert b.pretrained_cfg["name"] == "resnext_mini" and b.pretrained_cfg.get("classes") is None
    assert (folder / ".gitattributes").is_file()
    assert not list(folder.glob(".*.tmp")), "a temporary file was left behind"


def test_an_interrupted_save_leaves_no_folder_that_loads(tmp_path, folder, monkeypatch):
    """config.json is deleted first and written last: a write that fails in between leaves a folder
    from_pretrained refuses, never old config with new weights."""
    import sknet.pretrained as pretrained

    real = pretrained.write_text

    def failing(path, text):
        if Path(path).name == "README.md":
            raise OSError(28, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(pretrained, "write_text", failing)
    with pytest.raises(OSError, match="No space left"):
        sknet.save_pretrained(sknet.create_model("resnext_mini"), folder)
    with pytest.raises(FileNotFoundError, match=r"no config\.json.*interrupted.*write the folder again"):
        sknet.from_pretrained(folder)


def test_bad_input_fails_before_the_folder_is_touched(tmp_path, mini, folder):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ValueError, match="must be JSON values"):
        sknet.save_pretrained(mini, folder, metrics={"when": object()})
    with pytest.raises(ValueError, match="needs model_name="):
        sknet.save_pretrained(torch.nn.Linear(2, 2), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; save_pretrained writes a folder"):
        sknet.save_pretrained(mini, tmp_path / "file")


def test_folders_that_are_not_model_folders_are_clear_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="no model folder"):
        sknet.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"no model folder 'nope'.*'owner/name'"):
        sknet.from_pretrained("nope")  # neither an existing path nor a repo id
    with pytest.raises(NotADirectoryError, match=r"is a file.*sknet\.load_model"):
        sknet.from_pretrained(folder / "model.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config\.json and no model\.safetensors"):
        sknet.from_pretrained(empty)
    (folder / "config.json").write_text('{"architecture": "skresnet18", "num_classes": 1000}')
    with pytest.raises(ValueError, match=r"not an sknet model config \(no \"model_name\".*create_model"):
        sknet.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        sknet.from_pretrained(folder)


def test_a_local_folder_needs_no_huggingface_hub(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # importing it now fails
    assert sknet.from_pretrained(folder).pretrained_cfg["name"] == "sknet_mini"
    with pytest.raises(ImportError, match=r"pip install 'sknet\[hub\]' \(or pip install huggingface_hub\)"):
        sknet.from_pretrained("someone/sknet-mini")


def test_a_hub_repo_id_is_downloaded_with_huggingface_hub(tmp_path, mini, folder, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None, **kw):
        calls.append(dict(repo_id=repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns))
        copy = tmp_path / "cache" / repo_id.replace("/", "--")
        shutil.copytree(folder, copy, dirs_exist_ok=True)
        return str(copy)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    b = sknet.from_pretrained("someone/sknet-mini", revision="v1", cache_dir=tmp_path / "cache")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(_logits(mini, x), _logits(b, x)) and b.pretrained_cfg["classes"] == FIELDS["classes"]
    assert calls == [dict(repo_id="someone/sknet-mini", revision="v1", cache_dir=tmp_path / "cache",
                          allow_patterns=["config.json", "model.safetensors", "README.md"])]  # fmt: skip

    # A repo that is not an sknet model folder names the repo.
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"Hub repo 'someone/other' \(downloaded to .*\) is not an sknet"):
        sknet.from_pretrained("someone/other")


def test_hub_errors_become_clear_messages(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub
    import huggingface_hub.constants
    from huggingface_hub.utils import RepositoryNotFoundError

    # No network: huggingface_hub's own offline error (offline mode makes it without any request).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    real = huggingface_hub.snapshot_download

    def offline(*args, **kw):
        assert huggingface_hub.constants.HF_HUB_OFFLINE  # never a request from this test
        return real(*args, **kw)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(OSError, match=r"cannot download 'someone/sknet-mini' .* not in the local cache: no network"):
        sknet.from_pretrained("someone/sknet-mini", cache_dir=tmp_path)

    class NotFound(RepositoryNotFoundError):  # the real one needs an HTTP response, whose type varies by version
        def __init__(self, message):
            Exception.__init__(self, message)

    def not_found(*args, **kw):
        raise NotFound("404 Client Error. Repository Not Found for url: https://huggingface.co/api/models/someone/x")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    with pytest.raises(OSError, match=r"'someone/nothing' is neither a local folder nor a Hugging Face Hub repo"):
        sknet.from_pretrained("someone/nothing")

    def broken(*args, **kw):
        raise ConnectionResetError("reset by peer")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", broken)
    with pytest.raises(OSError, match=r"downloading 'someone/x' at revision 'main' .* failed: ConnectionResetError"):
        sknet.from_pretrained("someone/x", revision="main")


# --------------------------------------------------------------------------- torch.hub


def test_torch_hub_load_from_the_repository_gives_a_working_model():
    model = torch.hub.load(str(ROOT), "sknet50", source="local", num_classes=10)
    assert model.pretrained_cfg == dict(name="sknet50", overrides={}, num_classes=10, input_size=(3, 224, 224))
    assert _logits(model, torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_torch_hub_load_with_weights_and_overrides(tmp_path, mini):
    path = sknet.save_weights(mini, tmp_path / "w.safetensors")
    model = torch.hub.load(str(ROOT), "sknet_mini", source="local", weights=str(path), num_classes=4,
                           branches=[(3, 1, 8), (3, 3, 8)], select="sum")  # fmt: skip
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(_logits(mini, x), _logits(model, x))


def test_torch_hub_list_and_help_show_one_documented_entry_per_model(monkeypatch):
    """``torch.hub.list`` / ``help`` take only GitHub repos; the download is replaced by this checkout."""
    import torch.hub

    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *a, **k: str(ROOT))
    assert torch.hub.list("owner/sknet", trust_repo=True) == sknet.list_models()  # no helpers among them
    doc = torch.hub.help("owner/sknet", "sknet50", trust_repo=True)
    assert doc.startswith(f"sknet50: {sknet.get_model_entry('sknet50').doc}")
    assert "weights:" in doc and "num_classes: Classifier outputs (default 1000)" in doc and "select" in doc


def test_hubconf_dependencies_are_the_packages_dependencies():
    import torch.hub

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    hubconf = torch.hub._import_module("hubconf", str(ROOT / "hubconf.py"))
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {"pyyaml": "yaml"}
    wanted = [names.get(n, n) for n in (d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in deps)]
    assert hubconf.dependencies == wanted


def test_fields_given_for_a_weights_file_win_over_the_files_own(tmp_path, mini):
    """save_pretrained(FILE, metrics=...) records the metrics given; the file's provenance, not given, is kept."""
    path = sknet.save_weights(mini, tmp_path / "w.safetensors", metrics={"top1_err": 9.0}, provenance={"torch": "2"})
    folder = sknet.save_pretrained(path, tmp_path / "folder", metrics={"top1_err": 7.5})
    cfg = sknet.from_pretrained(folder).pretrained_cfg
    assert cfg["metrics"] == {"top1_err": 7.5} and cfg["provenance"] == {"torch": "2"}
