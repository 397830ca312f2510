"""Sparsity: masks on Conv/Linear weights, accounting on effective weights, pruning criteria and schedules.

Criteria (`PRUNING_CRITERIA`: unstructured ones in criteria.py, channel ones in structured.py) and schedules (`SCHEDULES`) are registries: adding one is one registered entry.
"""

from robustprune.sparsity.accounting import sparsity_report
from robustprune.sparsity.criteria import PRUNING_CRITERIA, global_magnitude, layerwise_magnitude, random_pruning
from robustprune.sparsity.masks import (
    PRUNABLE_TYPES,
    apply_masks,
    check_sparsity,
    current_masks,
    effective_weight,
    measuring,
    prunable_modules,
    remove_masks,
)
from robustprune.sparsity.schedules import (
    SCHEDULES,
    Schedule,
    agp_sparsity,
    iterative_sparsities,
    one_cycle_sparsity,
    register_schedule,
)
from robustprune.sparsity.structured import apply_structured, channel_sparsity, is_structured, zero_channels

__all__ = [
    "PRUNABLE_TYPES",
    "PRUNING_CRITERIA",
    "SCHEDULES",
    "Schedule",
    "agp_sparsity",
    "apply_masks",
    "apply_structured",
    "channel_sparsity",
    "check_sparsity",
    "current_masks",
    "effective_weight",
    "global_magnitude",
    "is_structured",
    "iterative_sparsities",
    "layerwise_magnitude",
    "measuring",
    "one_cycle_sparsity",
    "prunable_modules",
    "random_pruning",
    "register_schedule",
    "remove_masks",
    "sparsity_report",
    "zero_channels",
]
