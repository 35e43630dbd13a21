"""The learned support functions (Olausson et al., ICML 2026): SupportNet, KeyNet and the
max-affine network, their targets and training, and numpy-in / numpy-out inference. Needs torch
(``pip install "amips_plugins[learn]"``)."""

from .._optional import require

require("torch", "learn")

from .models import KeyNet, MaxAffineNet, SupportNet, load_model, width_for_budget
from .training import (
    Targets,
    augment_queries,
    compute_targets,
    fit,
    fit_max_affine,
    key_recovery,
    relative_key_error,
    routing_accuracy,
)
from .transform import QueryTransform

__all__ = [
    "KeyNet",
    "MaxAffineNet",
    "QueryTransform",
    "SupportNet",
    "Targets",
    "augment_queries",
    "compute_targets",
    "fit",
    "fit_max_affine",
    "key_recovery",
    "load_model",
    "relative_key_error",
    "routing_accuracy",
    "width_for_budget",
]
