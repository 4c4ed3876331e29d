"""Initialisation of the released networks (docs/paper.md, 'Initialisation')."""

from __future__ import annotations

from torch import nn

from ..layers import BATCH_NORMS, CONVS, SKAttention, SqueezeExcite

_CONVS, _BATCH_NORMS = tuple(CONVS.values()), tuple(BATCH_NORMS.values())  # 1-D, 2-D and 3-D


def init_weights(model: nn.Module) -> None:
    """Convs "msra" (He normal, fan-in, as Caffe's filler), the attention fcs and the
    classifier gaussian std 0.01, BN scale 1 and shift 0, biases 0.

    SE fcs follow the attention fcs (std 0.01; our choice, docs/architecture.md).
    """
    for m in model.modules():
        if isinstance(m, _CONVS):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, _BATCH_NORMS):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
        if isinstance(m, (*_CONVS, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, SqueezeExcite):
            nn.init.normal_(m.fc1.weight, std=0.01)
            nn.init.normal_(m.fc2.weight, std=0.01)
        elif isinstance(m, SKAttention):
            nn.init.normal_(m.fc_reduce.weight, std=0.01)
            nn.init.normal_(m.fc_select.weight, std=0.01)
