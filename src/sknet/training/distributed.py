"""One distributed code path: torchrun sets RANK / LOCAL_RANK / WORLD_SIZE, a plain run is rank 0 of 1.

gloo on CPU, nccl on GPU. Only rank 0 writes files; metrics are summed across ranks
before anyone prints them.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def init_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """Start the process group if launched by torchrun; returns ``(rank, world_size, device)``."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return rank, world, dev


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of numbers over all ranks (float64, so counts stay exact)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (one-element list in a plain run)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are taken over all ranks, for CPU (gloo).

    ``torch.nn.SyncBatchNorm`` only runs on GPUs. This is the same arithmetic with
    differentiable all-reduces (``torch.distributed.nn``): the forward pass sees the
    statistics of the global batch and the backward pass carries gradients through
    them, so N processes match one process with the whole batch.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = all_reduce(torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device))
        mean = all_reduce(x.sum(dims)) / count  # (C,)
        var = all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / count  # biased, as BN normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * count / (count - 1), m)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm becomes a synchronised one: torch's on GPU, :class:`CPUSyncBatchNorm` on CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        out = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine)
            out.load_state_dict(module.state_dict())
        for name, child in module.named_children():
            out.add_module(name, convert(child))
        return out

    return convert(model)
