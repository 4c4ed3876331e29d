"""Published weights of our models: ``create_model(name, pretrained=True)``.

Each row of :data:`SOURCES` is one set of weights for a network that is one of ours: the model,
the library that publishes them (timm or torchvision), the library's name of the network and of
the weights (its tag), the licence, and the top-1 the library reports for them (their figure,
not ours: timm's results-imagenet.csv; torchvision reports it in its weights' metadata). Every row
loads with the same logits as the library's own model (tests/test_pretrained_sources.py).

One row is ours and ships with the package (library ``sknet``): ``sknet_mini`` trained by the
demo's Fashion-MNIST recipe, a file under ``sknet/models/weights/`` that never downloads. Its
record holds the class names, the normalisation, how it was made and its test accuracy, the
figure the table shows (docs/training.md, 'The demo: Fashion-MNIST on two CPU cores').

Nothing downloads unless pretrained weights are asked for. timm's files come from the Hugging
Face Hub with ``huggingface_hub`` (the ``hub`` extra) into its cache; torchvision's from the URL
its weights name, with ``torch.hub``, into torch's hub cache (``$TORCH_HOME/hub/checkpoints``),
where torchvision's own ``weights=`` keeps them. Both show a progress bar while downloading, and
both are read without unpickling code (safetensors; ``torch.load(weights_only=True)``). A cached
file loads offline; ``HF_HUB_OFFLINE=1`` keeps both libraries' downloads off.

Not every network of ours has published weights. The SK ablations, the CIFAR and mini models
and the 1-D / 3-D networks have none; timm's other ResNeXt-101 32x4d weights
(``fb_ssl_yfcc100m_ft_in1k``, ``fb_swsl_ig1b_ft_in1k``) would fit ``resnext101_32x4d`` but are
for non-commercial use only (CC-BY-NC-4.0), so they are left out.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..data.info import NORMALIZATION
from ..record import ModelRecord
from ..weights import load_pretrained, read_record
from .registry import get_model_entry

_log = logging.getLogger(__name__)

HUB_FILE = "model.safetensors"  # timm's weights in each of its Hub repositories
TIMM_RESULTS = "https://github.com/huggingface/pytorch-image-models/blob/main/results/results-imagenet.csv"
PACKAGED = Path(__file__).with_name("weights")  # the weights this project trained, shipped as package data


@dataclass(frozen=True)
class PretrainedSource:
    """One set of published weights for one of our models."""

    model: str  # ours
    library: str  # "timm", "torchvision", or "sknet" (ours, in the package)
    arch: str  # the library's name of the same network
    tag: str  # the library's name of these weights
    licence: str
    top1: float | None = None  # timm's reported ImageNet top-1, % (torchvision's is in its weights' metadata)
    top1_size: int = 224  # the image size that figure was measured at

    @property
    def name(self) -> str:
        """The weights as their library names them (``skresnext50_32x4d.ra_in1k``,
        ``ResNeXt50_32X4D_Weights.IMAGENET1K_V2``; ours ``sknet_mini.fashion_mnist``)."""
        if self.library in ("timm", "sknet"):
            return f"{self.arch}.{self.tag}"
        return f"{type(self.torchvision_weights()).__name__}.{self.tag}"

    @property
    def repo_id(self) -> str:
        """timm's Hugging Face Hub repository of these weights."""
        return f"timm/{self.arch}.{self.tag}"

    @property
    def packaged_file(self) -> Path:
        """Where the package holds the weights of a row of ours."""
        return PACKAGED / f"{self.name}.safetensors"

    def torchvision_weights(self):
        """torchvision's weights enum member (its ``url``, ``meta``: categories, metrics, file size)."""
        from torchvision.models import get_model_weights

        return get_model_weights(self.arch)[self.tag]

    def reported_top1(self) -> float:
        """The library's own ImageNet-1k validation top-1, %; for ours, the test accuracy in the file's record."""
        if self.library == "sknet":
            return round(100 - packaged_record(self).metrics["test_top1_err"], 2)
        if self.library == "timm":
            return self.top1
        return self.torchvision_weights().meta["_metrics"]["ImageNet-1K"]["acc@1"]

    def size_mib(self) -> float:
        """The file's size: torchvision's own figure; ours, the packaged file's; timm's files hold float32
        tensors, so the tensors' bytes."""
        if self.library == "torchvision":
            return self.torchvision_weights().meta["_file_size"]
        if self.library == "sknet":
            return self.packaged_file.stat().st_size / 2**20
        entry = get_model_entry(self.model)
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            tensors = entry.build(num_classes=entry.num_classes).state_dict().values()
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20


_APACHE, _BSD, _MIT = "apache-2.0", "bsd-3-clause", "mit"
SOURCES: tuple[PretrainedSource, ...] = (  # a model's first row is its default
    PretrainedSource("sknet50", "timm", "skresnext50_32x4d", "ra_in1k", _APACHE, 80.162),
    PretrainedSource("skresnet18", "timm", "skresnet18", "ra_in1k", _APACHE, 73.038),
    PretrainedSource("skresnet34", "timm", "skresnet34", "ra_in1k", _APACHE, 76.910),
    PretrainedSource("resnext50_32x4d", "torchvision", "resnext50_32x4d", "IMAGENET1K_V2", _BSD),
    PretrainedSource("resnext50_32x4d", "torchvision", "resnext50_32x4d", "IMAGENET1K_V1", _BSD),
    PretrainedSource("senet50", "timm", "seresnext50_32x4d", "racm_in1k", _APACHE, 82.196, top1_size=288),
    PretrainedSource("senet50", "timm", "seresnext50_32x4d", "gluon_in1k", _APACHE, 79.910),
    PretrainedSource("resnext101_32x4d", "timm", "resnext101_32x4d", "gluon_in1k", _APACHE, 80.340),
    PretrainedSource("senet101", "timm", "seresnext101_32x4d", "gluon_in1k", _APACHE, 80.892),
    PretrainedSource("mobilenetv2_100", "torchvision", "mobilenet_v2", "IMAGENET1K_V2", _BSD),
    PretrainedSource("mobilenetv2_100", "torchvision", "mobilenet_v2", "IMAGENET1K_V1", _BSD),
    PretrainedSource("sknet_mini", "sknet", "sknet_mini", "fashion_mnist", _MIT),  # the demo's, packaged
)


def pretrained_sources(name: str) -> list[PretrainedSource]:
    """The published weights of model ``name``, the default first (``[]``: none)."""
    get_model_entry(name)  # an unknown name is an error that lists the valid ones
    return [s for s in SOURCES if s.model == name]


def pretrained_source(name: str, tag: str | None = None) -> PretrainedSource:
    """The weights ``tag`` of model ``name`` (None: its default).

    Raises:
        ValueError: The model has no published weights, or none with that tag (the message lists what there is).
    """
    sources = pretrained_sources(name)
    if not sources:
        models = sorted({s.model for s in SOURCES})
        raise ValueError(
            f"model {name!r} has no published pretrained weights; models that have: {', '.join(models)} "
            "(sknet models --pretrained). Load a file of your own with weights=PATH (--weights PATH)."
        )
    if tag is None:
        return sources[0]
    for s in sources:
        if s.tag == tag:
            return s
    raise ValueError(f"model {name!r} has no pretrained weights {tag!r}; its tags: {', '.join(s.tag for s in sources)}")


def load_source(model: nn.Module, name: str, pretrained: bool | str) -> None:
    """Load the published weights ``pretrained`` (True: the default; or a tag) of model ``name`` into ``model``.

    A classifier of another size than the weights' (``num_classes``) is kept as built, freshly
    initialised, as for fine-tuning. ``model.pretrained_cfg`` gets the weights' record: the input
    size, mean and std they were trained with (ImageNet's; ours: the file's record), their class
    names and metrics (when the classifier is theirs) and where they come from.
    """
    source = pretrained_source(name, None if pretrained is True else pretrained)
    path = pretrained_file(source)
    loaded = load_pretrained(model, path, model_name=name)
    record = source_record(source)
    provenance = dict(pretrained=f"{source.library} {source.name}", licence=source.licence, file=str(path))
    model.pretrained_cfg.update(
        input_size=record.input_size,
        mean=record.mean,
        std=record.std,
        provenance={**record.provenance, **provenance},
    )
    if not loaded["reinitialised"]:  # the names and figures are the file's classifier's
        model.pretrained_cfg.update({k: getattr(record, k) for k in ("classes", "metrics") if getattr(record, k)})


def source_record(source: PretrainedSource) -> ModelRecord:
    """What goes with a source's weights: ours, the packaged file's record; the others, ImageNet's
    input size, mean / std and class names."""
    if source.library == "sknet":
        return packaged_record(source)
    mean, std = NORMALIZATION["imagenet"]
    return ModelRecord(source.model, input_size=[3, 224, 224], mean=mean, std=std, classes=imagenet_classes())


@functools.cache
def packaged_record(source: PretrainedSource) -> ModelRecord:
    """The record of the packaged file of a row of ours (read once)."""
    return read_record(pretrained_file(source))


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, in the order every source's classifier has them (torchvision's list)."""
    from torchvision.models import ResNeXt50_32X4D_Weights

    return list(ResNeXt50_32X4D_Weights.IMAGENET1K_V1.meta["categories"])


def source_table() -> list[dict]:
    """One row per published set of weights, as ``sknet models --pretrained`` shows them."""
    return [
        dict(
            model=s.model,
            tag=s.tag,
            default=s is pretrained_sources(s.model)[0],
            source=f"{s.library} {s.name}",
            licence=s.licence,
            size_mib=round(s.size_mib(), 1),
            top1=s.reported_top1(),
            top1_size=s.top1_size,
            top1_on="Fashion-MNIST test" if s.library == "sknet" else "ImageNet-1k val",
            reported_in=_reported_in(s),
        )
        for s in SOURCES
    ]


def _reported_in(source: PretrainedSource) -> str:
    if source.library == "sknet":
        return "the file's record (docs/training.md, 'The demo: Fashion-MNIST on two CPU cores')"
    return TIMM_RESULTS if source.library == "timm" else f"torchvision {source.name}.meta['_metrics']"


# --------------------------------------------------------------------------- fetching the files


def pretrained_file(source: PretrainedSource, cache_dir: str | Path | None = None) -> Path:
    """The local file of ``source``: ours in the package; the others from their library's cache,
    downloaded there first if needed.

    Args:
        source: The weights.
        cache_dir: Instead of the library's cache (the Hugging Face cache, or torch's
            ``hub/checkpoints``), this folder. Not used for ours.

    Raises:
        FileNotFoundError: Not cached, and no download (offline) or a download that failed: the
            message names the file, the cache, how to retry and how to load a copy downloaded
            elsewhere. Ours: the package lacks the file (an incomplete installation).
        ImportError: A Hub file without ``huggingface_hub`` installed (the message names the extra).
    """
    if source.library == "sknet":
        return _packaged_file(source)
    if source.library == "timm":
        return _hub_file(source, cache_dir)
    return _torch_hub_file(source, cache_dir)


def _packaged_file(source: PretrainedSource) -> Path:
    path = source.packaged_file
    if not path.is_file():
        raise FileNotFoundError(
            f"the weights of model {source.model!r} ({source.name}) should ship with sknet but {str(path)!r} is "
            "missing: install sknet again from its source (pip install -e . in your checkout), or make the file "
            "again from a demo run: bash scripts/make_demo_weights.sh RUN"
        )
    return path


def _hub_file(source: PretrainedSource, cache_dir: str | Path | None) -> Path:
    try:
        import huggingface_hub
        from huggingface_hub import constants
        from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError:
        raise ImportError(
            f"the pretrained weights of {source.model!r} are timm's, on the Hugging Face Hub ({source.repo_id}), "
            "and downloading them needs the huggingface_hub package: pip install 'sknet[hub]' "
            "(or pip install huggingface_hub)"
        ) from None
    offline = offline_mode() or constants.is_offline_mode()
    what = f"{source.repo_id}/{HUB_FILE}"
    _log.debug("pretrained weights of %s: %s from the Hugging Face Hub (or its cache)", source.model, what)
    cache = cache_dir or constants.HF_HUB_CACHE
    try:
        path = huggingface_hub.hf_hub_download(source.repo_id, HUB_FILE, cache_dir=cache_dir, local_files_only=offline)
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(_not_cached(source, what, "the Hugging Face cache", cache)) from e
    except Exception as e:  # noqa: BLE001 - a connection lost part-way, an HTTP error, a full disk, ...
        raise FileNotFoundError(_download_failed(source, what, "the Hugging Face cache", cache, e)) from e
    return Path(path)


def _torch_hub_file(source: PretrainedSource, cache_dir: str | Path | None) -> Path:
    url = source.torchvision_weights().url
    folder = Path(cache_dir or Path(torch.hub.get_dir()) / "checkpoints")  # where torchvision's weights= keeps it
    path = folder / os.path.basename(urlparse(url).path)
    if path.is_file():
        return path
    if offline_mode():
        raise FileNotFoundError(_not_cached(source, url, "torch's hub cache", folder))
    _log.debug("pretrained weights of %s: downloading %s to %s", source.model, url, path)
    folder.mkdir(parents=True, exist_ok=True)
    hash_prefix = torch.hub.HASH_REGEX.search(path.name).group(1)  # torchvision's files are named NAME-SHA256PREFIX.pth
    try:  # into a temporary file, renamed once whole: a failed download leaves nothing behind
        torch.hub.download_url_to_file(url, str(path), hash_prefix, progress=True)
    except Exception as e:  # noqa: BLE001 - no network (URLError), a connection lost part-way, a wrong hash, ...
        raise FileNotFoundError(_download_failed(source, url, "torch's hub cache", folder, e)) from e
    return path


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` is set (read now, so a change after import counts): no download, of either library."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _not_cached(source: PretrainedSource, what: str, cache_name: str, cache) -> str:
    return (
        f"no pretrained weights for model {source.model!r} ({source.library} {source.name}) here: {what} is not in "
        f"{cache_name} ({str(cache)!r}) and cannot be downloaded now (no network, or HF_HUB_OFFLINE=1). Connect "
        f"to download it once, or {_elsewhere(source)}"
    )


def _download_failed(source: PretrainedSource, what: str, cache_name: str, cache, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
    return (
        f"downloading the pretrained weights of model {source.model!r} ({source.library} {source.name}) failed: "
        f"{what} into {cache_name} ({str(cache)!r}): {type(error).__name__}: {reason}. Run the same command again "
        f"to retry, or {_elsewhere(source)}"
    )


def _elsewhere(source: PretrainedSource) -> str:
    return f"use a copy downloaded elsewhere: --weights FILE (Python: create_model({source.model!r}, weights=FILE))."
