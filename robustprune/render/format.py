"""Tables as strings and the fixed number formats every report uses (percent with 2 decimals, metrics with 4,
seconds with 3, integers with thousands separators, missing values as "n/a"), so the same document always renders
to the same bytes in Markdown, HTML and on stdout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NA = "n/a"


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str  # one "l" or "r" per column: numbers are right-aligned

    def select(self, headers: Sequence[str]) -> Table:
        """The same rows restricted to `headers` (in that order)."""
        idx = [self.headers.index(h) for h in headers]
        return Table(
            tuple(headers), tuple(tuple(r[i] for i in idx) for r in self.rows), "".join(self.align[i] for i in idx)
        )


def make_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> Table:
    assert len(align) == len(headers), "one alignment per column"
    return Table(tuple(headers), tuple(tuple(r) for r in rows), align)


def kv_table(rows: Sequence[tuple[str, str]]) -> Table:
    return make_table(("field", "value"), rows, "ll")


# ---------------------------------------------------------------- number formatting


def is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt_pct(value: Any) -> str:
    return f"{value:.2f}" if is_num(value) else NA


def fmt_p(value: Any, missing: str = NA) -> str:
    """p-values: 4 decimals, and 2 significant digits below 0.001 so a tiny p never reads as 0."""
    if not is_num(value):
        return missing
    return "1" if value >= 1 else f"{value:.4f}" if value >= 1e-3 else f"{value:.1e}"


def fmt_ci(ci: Any) -> str:
    if isinstance(ci, Sequence) and len(ci) == 2 and all(is_num(v) for v in ci):
        return f"[{ci[0]:.2f}, {ci[1]:.2f}]"
    return NA


def fmt_num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if is_num(value) else NA


def fmt_int(value: Any) -> str:
    return f"{value:,}" if is_num(value) else NA


def fmt_seconds(value: Any) -> str:
    return f"{value:.3f}" if is_num(value) else NA


def fmt_frac_pct(value: Any) -> str:
    """A 0-1 fraction shown as a percentage."""
    return f"{100.0 * value:.2f} %" if is_num(value) else NA


def fmt_eps(norm: str, eps: Any) -> str:
    """eps with 6 significant digits, plus k/255 when a Linf eps is a whole number of 8-bit steps."""
    if not is_num(eps):
        return NA
    text = f"{eps:.6g}"
    steps = eps * 255.0
    if norm == "Linf" and eps > 0 and abs(steps - round(steps)) < 1e-6:
        text += f" ({round(steps)}/255)"
    return text


def fmt_value(value: Any) -> str:
    """A setting or other scalar: JSON spelling (true/false/null), compact JSON for containers."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def fmt_mapping(mapping: Any) -> str:
    if not isinstance(mapping, dict) or not mapping:
        return "-"
    return ", ".join(f"{k}={fmt_value(mapping[k])}" for k in sorted(mapping))
