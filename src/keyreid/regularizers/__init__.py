"""Regularizers added to the training loss."""

from keyreid.regularizers.adaptive_l2 import (
    DEFAULT_MODULE_TYPES,
    AdaptiveL2,
    keras_hard_sigmoid,
    param_groups,
    regularized_parameters,
)

__all__ = [
    "DEFAULT_MODULE_TYPES",
    "AdaptiveL2",
    "keras_hard_sigmoid",
    "param_groups",
    "regularized_parameters",
]
