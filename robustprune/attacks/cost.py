"""Bounds on attack settings robustprune does not know by name, and what a battery will cost before it runs.

An attack class named in a battery (`torchattacks:SPSA`, a user's `package.module:Class`) has settings robustprune
never documented: their sizes are bounded by what their names and defaults say. A name that counts iterations,
restarts, samples or queries is an iteration count (1 - 100,000; queries 1 - 1,000,000); a name that scales an image
or a window (`resize_rate`, `kernel_size`, ...) may grow to ten times its default; any other number to a hundred
times its default. A value beyond is refused naming the setting, before any compute: `SPSA nb_iter = 2^31-1` would
never end, `DIFGSM resize_rate = 5000` asks for a hundred gigabytes.

The whole battery's cost is then estimated in model passes (forward and backward) per attacked example, from the
iteration-like settings of each attack, and a battery above MAX_PASSES_PER_EXAMPLE is refused unless the run allows
long runs (--allow-long; robustprune.config.allowing_long).
"""

from __future__ import annotations

import math
import re
from typing import Any

from robustprune.errors import UsageError
from robustprune.validation import escape

ITERATION = re.compile(
    r"^(n_|nb_|num_|max_)?(iter|iters|iteration|iterations|steps?|restarts?|samples?|trials?|eot_iter|m|n|k|"
    r"population|popsize|candidates?|pixels?|targets?|target_classes)$"
)
QUERIES = re.compile(r"^(n_|nb_|num_|max_)?quer(y|ies)$")
SIZE = re.compile(r"(resize|rate|scale|size|ratio|factor|length|width|kernel|window)")
MAX_ITERATIONS = 100_000
MAX_QUERIES = 1_000_000
SIZE_GROWTH = 10  # a size-like setting may be this many times its default (or 10, whichever is more)
VALUE_GROWTH = 100  # any other number this many times its default (or 1000, whichever is more)
MAX_PASSES_PER_EXAMPLE = 1_000_000  # AutoAttack's standard version spends about 10,000 on a robust example


def check_unknown_setting(key: str, value: Any, default: Any, where: str) -> None:
    """Refuse a numeric setting of an attack robustprune does not know beyond what its name and default allow."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if QUERIES.match(key):
        limit, why = MAX_QUERIES, "a query count"
    elif ITERATION.match(key) and isinstance(default, int) and not isinstance(default, bool):
        limit, why = MAX_ITERATIONS, "an iteration count: the run would not end"
    elif SIZE.search(key):
        limit, why = max(SIZE_GROWTH * abs(float(default or 0)), 10.0), f"up to {SIZE_GROWTH}x its default"
    else:
        limit, why = max(VALUE_GROWTH * abs(float(default or 0)), 1000.0), f"up to {VALUE_GROWTH}x its default"
    if abs(value) > limit:
        raise UsageError(
            f"{where} setting {key!r} = {escape(repr(value))} is beyond {limit:,g} ({why}); lower it, or name an "
            "attack robustprune knows"
        )


def passes_per_example(settings: dict[str, Any]) -> float:
    """Model passes (forward and backward) one attacked example costs, estimated from the iteration-like settings:
    their product, twice (a gradient step is a forward and a backward pass); queries count once each."""
    product = 1.0
    queries = 0.0
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            continue
        if QUERIES.match(key):
            queries = max(queries, float(value))
        elif ITERATION.match(key) and isinstance(value, int):
            product *= float(value)
    return max(2.0 * product, queries) if product > 1 or not queries else queries


def check_battery_cost(estimates: list[tuple[str, float]], allowed: bool, battery: str) -> float:
    """The battery's estimated passes per example; refused above MAX_PASSES_PER_EXAMPLE unless `allowed`."""
    total = math.fsum(cost for _, cost in estimates)
    if total > MAX_PASSES_PER_EXAMPLE and not allowed:
        label, top = max(estimates, key=lambda item: item[1])
        raise UsageError(
            f"battery {battery!r} would cost about {total:,.0f} model passes per example ({label}: {top:,.0f}), beyond "
            f"{MAX_PASSES_PER_EXAMPLE:,}; lower its settings, or pass --allow-long if you mean it"
        )
    return total
