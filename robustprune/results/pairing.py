"""When two score results can be compared example by example, and the paired vectors to compare.

Both `check` and the sweep report pair results scored on the same examples: the same threat model, the same
battery (attacks and settings as resolved) and the same data fingerprint. A result with every attack of the other
plus more (the adaptive attack a randomized model gets) may be compared on its worst case, which the extra attacks
can only lower.
"""

from __future__ import annotations

from typing import Any

from robustprune.scoring.result import ScoreResult

AttackKey = tuple[Any, ...]


def battery_signature(result: ScoreResult) -> tuple[tuple[str, float], list[AttackKey]]:
    """(threat, attacks as resolved) of a result; the battery's name and description do not matter."""
    threat = (result.norm, result.eps)
    battery = result.provenance.battery
    attacks: list[AttackKey] = (
        [(a.name, a.label, sorted(a.norms), dict(a.params)) for a in battery.attacks] if battery is not None else []
    )
    if not attacks:  # an older document without the resolved battery: the attacks that ran, by label
        attacks = [(a.name, a.label) for a in result.attacks]
    return threat, attacks


def added_attacks(baseline: ScoreResult, new: ScoreResult) -> list[str]:
    """Labels of the attacks `new` ran beyond `baseline`'s, when it ran every one of those unchanged; else []."""
    b_attacks, n_attacks = battery_signature(baseline)[1], battery_signature(new)[1]
    if len(n_attacks) <= len(b_attacks) or any(a not in n_attacks for a in b_attacks):
        return []
    return [str(a[1]) for a in n_attacks if a not in b_attacks]


def _attack_names(attacks: list[AttackKey]) -> str:
    return "[" + ", ".join(str(a[1]) for a in attacks) + "]"


def incomparable_reason(
    baseline: ScoreResult,
    new: ScoreResult,
    baseline_fingerprint: str | None = None,
    new_fingerprint: str | None = None,
    *,
    allow_added_attacks: bool = False,
) -> str | None:
    """Why two score results cannot be compared example by example, or None when they can.

    `*_fingerprint`: the data fingerprints their sweep cells were planned with, checked too when given.
    `allow_added_attacks`: `new` may run every attack of `baseline` plus more (see the module docstring).
    """
    for side, result in (("baseline", baseline), ("new", new)):
        if result.per_sample is None:
            return f"no per-sample table in the {side} result (paired tests need it; rescore it)"
    reasons = []
    (b_threat, b_attacks), (n_threat, n_attacks) = battery_signature(baseline), battery_signature(new)
    if b_threat != n_threat:
        reasons.append(f"threat model differs ({b_threat[0]} eps={b_threat[1]} vs {n_threat[0]} eps={n_threat[1]})")
    if b_attacks != n_attacks and not (allow_added_attacks and added_attacks(baseline, new)):
        reasons.append(
            f"battery differs ({baseline.battery} {_attack_names(b_attacks)} vs "
            f"{new.battery} {_attack_names(n_attacks)}, or their settings)"
        )
    fingerprints = [(baseline.data.fingerprint, new.data.fingerprint)]
    if baseline_fingerprint is not None or new_fingerprint is not None:
        fingerprints.append((baseline_fingerprint, new_fingerprint))
    if any(b != n for b, n in fingerprints) or baseline.n_examples != new.n_examples:
        reasons.append(f"data fingerprint differs (different examples: n={baseline.n_examples} vs n={new.n_examples})")
    elif list(baseline.per_sample.label) != list(new.per_sample.label):
        reasons.append("per-sample labels differ although the data fingerprints match")
    return "; ".join(reasons) or None
