"""Parameters and multiply-adds (the paper's "FLOPs"), counted by torch.utils.flop_counter."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    params: int  # trainable parameters
    macs: int  # multiply-adds for one image (convolutions and linear layers)

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


@torch.no_grad()
def complexity(model: nn.Module, input_size: tuple[int, ...] = (3, 224, 224)) -> Complexity:
    """Count parameters and multiply-adds of ``model`` for one image of ``input_size``.

    ``FlopCounterMode`` counts 2 FLOPs per multiply-add of convolutions and matrix
    products; we halve it. Normalisation, pooling and element-wise work are not
    counted, as in the paper's figures. The model runs once in eval mode on zeros.
    """
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(1, *input_size, device=p.device if p is not None else None)
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
    finally:
        model.train(was_training)
    return Complexity(params=params, macs=counter.get_total_flops() // 2)
