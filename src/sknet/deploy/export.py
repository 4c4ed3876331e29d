"""Exports to ONNX, TorchScript and ``torch.export`` files, each checked right after writing (``sknet export``).

Every export is written to a temporary file beside the destination, loaded back, run
(ONNX in onnxruntime) on random inputs and compared with the eager PyTorch model; only
a file that matches is renamed into place, so a failed or mismatching export leaves
no file behind.

Choices (docs/deploy.md):

- **ONNX exporter**: ``torch.onnx.export(dynamo=True)`` (the ``torch.export``-based
  exporter, torch's default and the one maintained going forward) at **opset 20**
  (torch's default opset, run by onnxruntime >= 1.17), weights inside the ``.onnx``
  file (no external data file; SKNet-50 is ~110 MB, far below ONNX's 2 GB limit).
  The legacy TorchScript-based exporter gives the same numbers (checked during
  development) but is deprecated.
- **TorchScript**: ``torch.jit.trace`` (our forward has no data-dependent control flow
  in eval mode; scripting would add annotations to the model code for no gain).
- **Dynamic batch**: the example input has batch 2 (``torch.export`` specialises sizes
  0 and 1) and the check runs batches 1 and 3, neither seen while exporting.
- **Fused**: ``fuse=True`` (``--fuse``) exports ``sknet.fuse(model)`` (BatchNorm folded into the
  convolutions and into the attention fc) and checks it against the *unfused* eager model.
- **Tolerance**: the largest absolute difference must be at most ``atol * max(1, max|eager|)``
  (default ``atol = 1e-4``), i.e. absolute for outputs of order one, relative for larger ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..extras import require
from ..io import atomic_write
from ..record import ModelRecord
from .fusion import fuse as fuse_model

FORMATS = ("onnx", "torchscript", "exported")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "exported": ".pt2"}
ONNX_OPSET = 20
DYNAMIC_EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1
DYNAMIC_CHECK_BATCHES = (1, 3)
INPUT_NAME, OUTPUT_NAME = "input", "logits"
METADATA_PREFIX = "sknet."  # ONNX metadata_props: the model's record, ModelRecord.from_metadata(props, METADATA_PREFIX)


@dataclass
class ExportReport:
    """What was written and how closely it matches the eager model."""

    path: Path
    format: str
    input_size: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    dynamic_batch: bool
    fused: bool
    max_abs_diff: float
    max_abs_eager: float
    tolerance: float
    opset: int | None = None
    diffs: dict[int, float] = field(default_factory=dict)  # batch size -> max abs difference

    def summary(self) -> str:
        per_batch = ", ".join(f"batch {b}: {d:.3g}" for b, d in self.diffs.items())
        opset = f", opset {self.opset}" if self.opset else ""
        return (
            f"wrote {self.path} ({self.format}{opset}, input {'x'.join(map(str, self.input_size))}, "
            f"{'dynamic batch' if self.dynamic_batch else f'batch {self.batch_sizes[0]}'}"
            f"{', fused' if self.fused else ''})\n"
            f"max |exported - eager| = {self.max_abs_diff:.3g} ({per_batch}); max |eager| = {self.max_abs_eager:.3g}; "
            f"tolerance {self.tolerance:.3g}: OK"
        )


def _export_onnx(model, x, path, dynamic_batch, opset, metadata) -> None:
    import onnx

    kwargs = dict(
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, **kwargs)
    proto = onnx.load(path)
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, path)


def _export_torchscript(model, x, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x, check_trace=False)
    traced.save(path)


def _export_program(model, x, path, dynamic_batch) -> None:
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    program = torch.export.export(model, (x,), dynamic_shapes=dynamic)
    with open(path, "wb") as f:  # a file object: torch.export.save wants paths to end in .pt2
        torch.export.save(program, f)


def run_exported(path: str | Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Load an exported file and run it on ``x`` (onnxruntime on the CPU for ONNX)."""
    path = str(path)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        return torch.from_numpy(out)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        if fmt == "torchscript":
            return torch.jit.load(path, map_location="cpu")(x)
        if fmt == "exported":
            with open(path, "rb") as f:
                return torch.export.load(f).module()(x)
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")


def _check_export_args(output, fmt: str, input_size: Sequence[int], batch_size: int) -> tuple[int, ...]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "exported" and Path(output).suffix != ".pt2":
        raise ValueError(f"torch.export files must end in .pt2 (torch.export.load requires it), got {str(output)!r}")
    input_size = tuple(int(s) for s in input_size)
    if not 2 <= len(input_size) <= 4 or min(input_size) < 1:
        raise ValueError(
            f"input_size must be (channels, *spatial sizes) with 1-3 positive spatial sizes, got {input_size}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if fmt == "onnx":  # what writing (torch's exporter: onnxscript), reading and checking the file need
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module, "ONNX export")
    return input_size


def export_model(
    model: nn.Module,
    output: str | Path,
    fmt: str = "onnx",
    input_size: Sequence[int] = (3, 224, 224),
    batch_size: int = 1,
    dynamic_batch: bool = False,
    fuse: bool = False,
    opset: int = ONNX_OPSET,
    atol: float = 1e-4,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` to ``output``, then load the file, run it and compare it with the eager model.

    Args:
        model: The model (its weights loaded); it is put in eval mode, otherwise left as it is.
        output: Destination file.
        fmt: ``"onnx"``, ``"torchscript"`` or ``"exported"`` (``torch.export``'s ``.pt2``).
        input_size: ``(C, H, W)`` of the example and check inputs (``(C, L)`` or ``(C, T, H, W)``
            for 1-D and 3-D models).
        batch_size: Batch of the exported graph when ``dynamic_batch`` is off.
        dynamic_batch: Export with a symbolic batch dimension; checked on batches 1 and 3.
        fuse: Export the fused inference model (:func:`sknet.fuse`).
        opset: ONNX opset.
        atol: Tolerance, see the module docstring.
        seed: Seed of the random check inputs.

    Raises:
        ValueError: Unknown format or bad sizes; or the exported file does not match the
            eager model (nothing is written then).
        ImportError: ONNX without the ``export`` extra's packages (the message names it).
    """
    input_size = _check_export_args(output, fmt, input_size, batch_size)
    eager = model.eval()
    exported = fuse_model(eager) if fuse else eager  # a fused deep copy
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(DYNAMIC_EXAMPLE_BATCH if dynamic_batch else batch_size, *input_size, generator=gen)
    checks = DYNAMIC_CHECK_BATCHES if dynamic_batch else (batch_size,)
    inputs = {b: torch.randn(b, *input_size, generator=gen) for b in checks}
    with torch.no_grad():
        try:
            expected = {b: eager(x) for b, x in inputs.items()}
        except RuntimeError as e:
            raise ValueError(f"the model does not run on input {input_size}: {e}") from e
    # What the model is, for whoever receives an ONNX file: its record, at the exported input size.
    name = (getattr(model, "pretrained_cfg", None) or {}).get("name") or type(model).__name__
    record = ModelRecord.from_model(model, model_name=name, input_size=input_size)
    metadata = {**record.to_metadata(prefix=METADATA_PREFIX), METADATA_PREFIX + "fused": str(bool(fuse))}
    report: ExportReport | None = None

    def write(tmp: str) -> None:
        nonlocal report
        with torch.no_grad():
            if fmt == "onnx":
                _export_onnx(exported, example, tmp, dynamic_batch, opset, metadata)
            elif fmt == "torchscript":
                _export_torchscript(exported, example, tmp)
            else:
                _export_program(exported, example, tmp, dynamic_batch)
        diffs = {b: (run_exported(tmp, fmt, inputs[b]) - expected[b]).abs().max().item() for b in checks}
        scale = max(expected[b].abs().max().item() for b in checks)
        report = ExportReport(
            Path(output), fmt, input_size, checks, dynamic_batch, fuse, max(diffs.values()), scale,
            atol * max(1.0, scale), opset if fmt == "onnx" else None, diffs,
        )  # fmt: skip
        if not report.max_abs_diff <= report.tolerance:  # also catches NaN
            raise ValueError(
                f"the {fmt} export does not match the eager model: max |exported - eager| = "
                f"{report.max_abs_diff:.3g} > tolerance {report.tolerance:.3g} ({diffs}); {output} was not written"
            )

    atomic_write(output, write)
    return report
