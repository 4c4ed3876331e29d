"""Model folders in the Hugging Face style: ``config.json``, ``model.safetensors`` and a ``README.md`` model card.

:func:`save_pretrained` writes a folder; :func:`from_pretrained` loads one from disk (offline) or,
given a Hub repo id like ``"owner/name"``, downloads it first with ``huggingface_hub`` (an optional
dependency: ``pip install sknet[hub]``).

The folder adds no second format: ``model.safetensors`` is written by :func:`sknet.save_weights`,
so its metadata record is what the model is rebuilt from (by :func:`sknet.load_model`, the one
loader). ``config.json`` is a readable copy of that record's fields for people and for the Hub;
when the two disagree (a hand-edited ``config.json``, or files from two different saves),
:func:`from_pretrained` refuses the folder and names the fields, rather than guess which is right.

A crash while writing never leaves a folder that loads as a mix: every file is written atomically
(:func:`sknet.io.atomic_write`), and ``config.json`` is the folder's completion mark: an existing
one is deleted first and the new one written last. An interrupted write leaves either the old
folder or a folder without ``config.json``, which :func:`from_pretrained` refuses with a message
that says to write it again.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from torch import nn

from .complexity import complexity
from .io import write_text
from .models.factory import load_model
from .models.registry import get_model_entry
from .record import FORMAT, ModelRecord, record_of
from .weights import save_weights

_log = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
# The record's fields config.json repeats (metrics and provenance are in the weights' record and the card).
CONFIG_FIELDS = ("model_name", "overrides", "num_classes", "input_size", "mean", "std", "classes")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def save_pretrained(model: nn.Module | str | Path, directory: str | Path, **fields) -> Path:
    """Write ``model`` as a model folder: ``config.json``, ``model.safetensors`` and a ``README.md`` card.

    Args:
        model: A model built by :func:`sknet.create_model` / :func:`sknet.load_model`, or the path
            of a weights file sknet wrote (a training run's ``model.safetensors``): a file's
            whole record is kept, its ``metrics`` and ``provenance`` included.
        directory: The folder; created if needed. Other files in it are left alone (e.g. a
            clone of a Hub repo); ``config.json``, ``model.safetensors`` and ``README.md`` are
            replaced, the card regenerated.
        **fields: The record's fields (``model_name``, ``overrides``, ``num_classes``,
            ``input_size``, ``mean``, ``std``, ``classes``, ``metrics``, ``provenance``); unset
            ones default as in :func:`sknet.save_weights` (:meth:`sknet.record.ModelRecord.from_model`),
            then to the registry entry. For a model object, ``metrics`` and ``provenance`` are
            only what is passed here (a model's weights may have changed since its record was
            written); for a file, its own.

    Returns:
        The folder.

    Raises:
        ValueError: No model name (the model was not built by ``create_model``), an unknown
            model, fields that are not JSON values, or ``directory`` is a file.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{str(directory)!r} is a file; save_pretrained writes a folder: give a folder's path")
    if isinstance(model, (str, Path)):
        _log.debug("save_pretrained: the model and record of %s", model)
        model = load_model(model)
        results = {k: model.pretrained_cfg.get(k) for k in ("metrics", "provenance")}
        fields = {**results, **{k: v for k, v in fields.items() if v is not None}}
    record = ModelRecord.from_model(model, **fields)
    entry = get_model_entry(record.model_name)
    record.input_size = record.input_size or list(entry.input_size)
    record.num_classes = entry.num_classes if record.num_classes is None else record.num_classes

    # Everything that can fail on bad input is done before the folder is touched.
    values = record.to_dict()
    config = {"format": FORMAT, **{k: values[k] for k in CONFIG_FIELDS}}
    card = model_card(model, record, directory.name)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG).unlink(missing_ok=True)  # the completion mark goes first, comes back last
    save_weights(model, directory / WEIGHTS, record=record)
    write_text(directory / CARD, card)
    write_text(directory / CONFIG, json.dumps(config, indent=2) + "\n")
    _log.debug("wrote model folder %s (%s)", directory, record.model_name)
    return directory


def from_pretrained(path_or_repo_id: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None):
    """Load a model folder written by :func:`save_pretrained`: a local folder, or a Hugging Face Hub repo id.

    A local folder is read offline. A string that is no existing path and looks like
    ``"owner/name"`` is a Hub repo id: the folder is downloaded (or taken from the local cache)
    with ``huggingface_hub``, which is imported only then.

    The model is rebuilt by :func:`sknet.load_model` from ``model.safetensors``; its record lands
    in ``model.pretrained_cfg``. ``config.json`` must agree with that record.

    Args:
        path_or_repo_id: A folder, or a Hub repo id.
        revision: Hub only: a branch, tag or commit.
        cache_dir: Hub only: where downloads are kept (default: huggingface_hub's cache).

    Raises:
        FileNotFoundError: No such folder, or one without ``config.json`` / ``model.safetensors``
            (e.g. a training run folder, or an interrupted save_pretrained).
        NotADirectoryError: A file (load weights files with :func:`sknet.load_model`).
        ValueError: ``config.json`` is not an sknet config, or disagrees with the weights' record.
        ImportError: A repo id without ``huggingface_hub`` installed.
        OSError: The download failed (no network and not cached, no such repo or revision, ...).
    """
    if isinstance(path_or_repo_id, Path) or Path(path_or_repo_id).exists():
        folder = Path(path_or_repo_id)
        return _load_folder(folder, repr(str(folder)))
    if not _REPO_ID.fullmatch(path_or_repo_id):
        raise FileNotFoundError(
            f"no model folder {path_or_repo_id!r}; give the path of a folder written by sknet.save_pretrained, "
            "or a Hugging Face Hub repo id of the form 'owner/name'"
        )
    folder = _download(path_or_repo_id, revision, cache_dir)
    return _load_folder(folder, f"Hub repo {path_or_repo_id!r} (downloaded to {str(folder)!r})")


def model_card(model: nn.Module, record: ModelRecord, title: str = "") -> str:
    """The ``README.md`` of a model folder: what the model is, its size, its inputs and record, how to load it."""
    name = record.model_name
    entry = get_model_entry(name)
    size = "x".join(map(str, record.input_size))  # C x H x W (C x L, C x T x H x W in 1-D, 3-D)
    kind = {2: "signal", 3: "image", 4: "volume"}[len(record.input_size)]
    cost = complexity(model, tuple(record.input_size))
    classes = record.classes
    overrides = record.overrides
    rows = [
        ("model", f"`{name}`: {entry.doc}" if entry.doc else f"`{name}`"),
        ("overrides", f"`{json.dumps(overrides)}`" if overrides else "none (the registered model)"),
        ("classes", f"{record.num_classes}" + (f" ({_shorten(classes)})" if classes else "")),
        ("input", size),
        ("mean / std", f"{record.mean} / {record.std}" if record.mean else "not recorded"),
        ("parameters", f"{cost.params:,} ({cost.params_m:.2f} M)"),
        ("multiply-adds", f"{cost.macs:,} ({cost.gmacs:.3f} G) per {size} {kind}"),
    ]
    lines = [
        "---",
        "library_name: sknet",
        *(["pipeline_tag: image-classification"] if kind == "image" else []),  # none fits signals, volumes
        "tags:",
        "- sknet",
        "- selective-kernel-networks",
        *(["- image-classification"] if kind == "image" else []),
        "---",
        "",
        f"# {title or name}",
        "",
        f"A `{name}` model written by `sknet.save_pretrained` (sknet: Selective Kernel Networks, "
        "Li et al., CVPR 2019, in PyTorch).",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
    ]
    if record.metrics:
        lines += ["## Metrics", "", "As recorded with these weights.", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_number(v)} |" for k, v in record.metrics.items()]
        lines.append("")
    provenance = record.provenance
    if provenance:
        lines += ["## Provenance", ""]
        known = {"torch": "torch version", "processes": "training processes"}
        lines += [f"- {label}: {provenance[k]}" for k, label in known.items() if k in provenance]
        config = provenance.get("config")
        if isinstance(config, dict):
            what = ", ".join(f"{k} {config[k]}" for k in ("dataset", "epochs", "batch_size", "lr") if k in config)
            lines.append(f"- trained with `sknet.training.train`{': ' + what if what else ''}")
        record_json = json.dumps(provenance, indent=2, sort_keys=True)
        lines += [
            "",
            "<details><summary>the whole record</summary>",
            "",
            "```json",
            record_json,
            "```",
            "",
            "</details>",
            "",
        ]
    lines += [
        "## How to load",
        "",
        "```python",
        "import sknet",
        "",
        f'model = sknet.from_pretrained("{title or name}").eval()  # this folder, or its Hub repo id "owner/name"',
        "```",
        "",
        "A Hub repo id needs `pip install sknet[hub]` (huggingface_hub). `model.safetensors` alone also loads with "
        "`sknet.load_model(path)`; `config.json` repeats its record (model, overrides, classes, input size, "
        "mean / std). Inputs are "
        + (f"{size} {kind}s normalised with the mean and std above." if record.mean else f"{size} {kind}s."),
        "",
    ]
    return "\n".join(lines)


def _shorten(names: list[str], n: int = 10) -> str:
    shown = ", ".join(str(x) for x in names[:n])
    return shown + (f", ... ({len(names) - n} more; all in config.json)" if len(names) > n else "")


def _number(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _load_folder(folder: Path, label: str) -> nn.Module:
    if not folder.exists():
        raise FileNotFoundError(f"no model folder {label}; write one with sknet.save_pretrained(model, DIR)")
    if folder.is_file():
        raise NotADirectoryError(
            f"{label} is a file; from_pretrained loads a model folder (config.json + model.safetensors, written "
            "by sknet.save_pretrained). Load a weights file with sknet.load_model(path)."
        )
    missing = [n for n in (CONFIG, WEIGHTS) if not (folder / n).is_file()]
    if missing:
        hint = (
            " If it is a training run folder, load its weights with sknet.load_model('.../model.safetensors'), or "
            "make a model folder of it with sknet.save_pretrained('.../model.safetensors', DIR). If save_pretrained "
            "was interrupted (it writes config.json last), write the folder again."
            if missing == [CONFIG]
            else " Write model folders with sknet.save_pretrained(model, DIR)."
        )
        raise FileNotFoundError(f"{label} is not an sknet model folder: it has no {' and no '.join(missing)}.{hint}")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{label}: config.json is not valid JSON ({e}); write the folder again with sknet.save_pretrained"
        ) from None
    stated = record_of(config) if isinstance(config, dict) else None
    if stated is None:
        keys = sorted(config)[:8] if isinstance(config, dict) else type(config).__name__
        raise ValueError(
            f'{label}: config.json is not an sknet model config (no "model_name"; it has {keys}). '
            "sknet.from_pretrained loads folders written by sknet.save_pretrained; other libraries' weights "
            "(timm, torchvision) load with sknet.create_model(name, weights=path_to_weights)."
        )
    model = load_model(folder / WEIGHTS)
    held = ModelRecord.from_model(model)
    differ = [
        f"{k}: config.json {config[k]!r}, weights {getattr(held, k)!r}"
        for k in CONFIG_FIELDS
        if k in config and getattr(stated, k) != getattr(held, k)
    ]
    if differ:
        raise ValueError(
            f"{label}: config.json disagrees with the record in model.safetensors ({'; '.join(differ)}). The model "
            "is built from the weights' record and config.json is its copy, so one of them was changed by hand or "
            "they come from different saves. Write the folder again from the weights, with the fields you want: "
            "sknet.save_pretrained(sknet.load_model('DIR/model.safetensors'), 'DIR', classes=[...], ...)."
        )
    return model


def _download(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path:
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(
            f"{repo_id!r} is no local folder, and loading it from the Hugging Face Hub needs the huggingface_hub "
            "package: pip install 'sknet[hub]' (or pip install huggingface_hub)"
        ) from None
    from huggingface_hub.utils import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    _log.info("loading %s from the Hugging Face Hub (or its local cache)", where)
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=[CONFIG, WEIGHTS, CARD]
        )
    except GatedRepoError as e:
        raise OSError(
            f"Hub repo {where} is gated: accept its conditions on its Hub page and log in "
            f"(huggingface_hub login, or set HF_TOKEN). ({_first_line(e)})"
        ) from e
    except RepositoryNotFoundError as e:
        raise OSError(
            f"{repo_id!r} is neither a local folder nor a Hugging Face Hub repo that can be read (no such repo, or "
            f"a private one: log in with huggingface_hub or set HF_TOKEN). ({_first_line(e)})"
        ) from e
    except RevisionNotFoundError as e:
        raise OSError(f"Hub repo {repo_id!r} has no revision {revision!r} ({_first_line(e)})") from e
    except LocalEntryNotFoundError as e:
        raise OSError(
            f"cannot download {where} from the Hugging Face Hub, and it is not in the local cache: no network "
            "connection, or HF_HUB_OFFLINE=1 is set. Connect and retry, or download the folder where the Hub is "
            f"reachable and give its local path. ({_first_line(e)})"
        ) from e
    except Exception as e:  # noqa: BLE001 - any other download failure, re-raised with what was being done
        raise OSError(
            f"downloading {where} from the Hugging Face Hub failed: {type(e).__name__}: {_first_line(e)}"
        ) from e
    return Path(folder)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
