from .conv_bn_act import ConvBnAct, same_padding
from .se import SqueezeExcite
from .sk_conv import SELECT_MODES, AttentionNorm, Branch, SKAttention, SKConv, parse_branches

__all__ = [
    "SELECT_MODES",
    "AttentionNorm",
    "Branch",
    "ConvBnAct",
    "SKAttention",
    "SKConv",
    "SqueezeExcite",
    "parse_branches",
    "same_padding",
]
