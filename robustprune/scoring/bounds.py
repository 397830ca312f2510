"""The bracket: certified lower bounds (CROWN) and exact answers (big-M MILP) beside the attacked upper bound.

Runs after the battery, the probes and the escalations, so the attacked number is final: CROWN on every correctly
classified example (broken ones too: a certificate on an example an attack broke is a contradiction the verdict
must see), then, for `exact`, the MILP on the survivors CROWN leaves. The MILP's counterexamples go back through
the engine as the `replay` attack, so each is verified against the threat model and judged by the real model in
its own precision; one that does not fool it leaves its example unknown, never broken.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from robustprune.config import AUTO_MAX_RELUS, AttackSpec, CertifySpec
from robustprune.scoring.bounds_report import PROVEN, STATUSES, BoundsReport, UnknownExample
from robustprune.scoring.health.base import HealthContext
from robustprune.verify.bounds import CERTIFY_TOLERANCE
from robustprune.verify.certify import (
    CertifyRun,
    NotVerifiable,
    certify_examples,
    project_linf,
    verifiable_network,
)
from robustprune.verify.milp import MARGIN_SLACK

log = logging.getLogger("robustprune.score")

EXACT_LABEL = "exact (MILP)"


def not_applicable(ctx: HealthContext, multi_head: bool) -> str | None:
    """Why bounds mean nothing for this evaluation (None: they apply)."""
    if ctx.randomized or multi_head:
        return "the model is randomized: a bound on one draw of its forward pass says nothing about the next"
    if ctx.battery.threat.eps == 0:
        return "eps is 0: there is no ball to certify"
    if ctx.battery.threat.norm not in ("Linf", "L2"):
        return f"bounds support the Linf and L2 balls, not {ctx.battery.threat.norm}"
    return None


def compute_bounds(
    ctx: HealthContext, spec: CertifySpec, *, multi_head: bool
) -> tuple[BoundsReport, np.ndarray | None]:
    """The bracket and every example's status (STATUSES; None when nothing was bounded), the MILP's verified
    counterexamples merged into ctx.outcome. Raises only on engine failures; a model the verifier cannot read is a
    `skipped` report."""
    started = time.perf_counter()
    outcome = ctx.outcome
    clean_ok = np.asarray(outcome.clean.correct, dtype=bool)
    robust = _pct(~np.asarray(outcome.broken, dtype=bool) & clean_ok)
    why = not_applicable(ctx, multi_head)
    if why is None:
        auto = spec.method == "auto"
        try:
            network, walk_gap = verifiable_network(
                ctx.model, ctx.x, ctx.num_classes, *([AUTO_MAX_RELUS] if auto else [])
            )
        except NotVerifiable as exc:
            hint = (
                "; --certify auto bounds small networks only: pass --certify crown"
                if auto and "guard" in str(exc)
                else ""
            )
            why = f"the model is not supported by the verifier: {exc}{hint}"
    if why is not None:
        return BoundsReport.not_computed(spec.method, robust, why), None
    ctx.cache["verified_network"] = network  # the eps curve's lower curve reuses the proved walk
    threat = ctx.battery.threat
    exact = spec.method == "exact"
    run = certify_examples(
        network,
        ctx.x,
        ctx.y,
        norm=threat.norm,
        eps=threat.eps,
        bound=clean_ok,
        search=(clean_ok & ~np.asarray(outcome.broken, dtype=bool)) if exact else None,
        time_limit=spec.exact_time_limit,
        budget=spec.exact_budget,
    )
    run.walk_gap = walk_gap
    exact_breaks, rejected = _replay(ctx, run) if run.counterexamples else ([], [])
    broken = np.asarray(ctx.outcome.broken, dtype=bool)
    status = _statuses(clean_ok, broken, run)
    contradictions = np.flatnonzero((run.certified | run.proved) & broken & clean_ok).tolist()
    robust = _pct(~broken & clean_ok)
    counts = {s: int((status == s).sum()) for s in STATUSES}
    certified_acc = _pct(np.isin(status, PROVEN))
    undecided = counts["unknown"]
    why = dict(run.unknown_reason)
    for i in rejected:
        why[i] = "the MILP's counterexample did not fool the model in its own precision (within the solver's tolerance)"
    unknown = {int(i): why.get(int(i), "undecided") for i in np.flatnonzero(status == "unknown")}
    reasons: dict[str, int] = {}
    for reason in unknown.values():
        key = reason.split(" (")[0] if "time limit" in reason or "budget" in reason else reason
        reasons[key] = reasons.get(key, 0) + 1
    report = BoundsReport(
        method=run.method,
        requested=spec.method,
        certified_acc=certified_acc,
        robust_acc=robust,
        exact_acc=robust if undecided == 0 and not contradictions else None,
        gap_points=round(robust - certified_acc, 10),
        counts=counts,
        exact_breaks=exact_breaks,
        rejected=rejected,
        contradictions=contradictions,
        unknown_reasons=reasons,
        unknown_examples=[UnknownExample(index=i, reason=reason) for i, reason in sorted(unknown.items())],
        methods=["IBP", "CROWN" if run.intermediate == "crown" else "CROWN-IBP (IBP intermediate bounds)"]
        + (["big-M MILP"] if exact and run.solver else []),
        limits={
            "certify_tolerance": CERTIFY_TOLERANCE,
            "margin_slack": MARGIN_SLACK,
            "exact_time_limit": spec.exact_time_limit if exact else None,
            "exact_budget": spec.exact_budget if exact else None,
            "budget_exhausted": run.budget_exhausted,
            "exact_skipped": run.exact_skipped,
            "max_gap": spec.max_gap,
        },
        solver=run.solver,
        n_relus=run.n_relus,
        n_unstable_mean=run.n_unstable_mean,
        walk_gap=run.walk_gap,
        seconds=time.perf_counter() - started,
        seconds_crown=run.seconds_crown,
        seconds_exact=run.seconds_exact,
    )
    log.info("bounds: %s (%.1f s)", report.line(), report.seconds)
    return report, status


def _replay(ctx: HealthContext, run: CertifyRun) -> tuple[list[int], list[int]]:
    """The MILP's counterexamples through the engine: (examples they broke, examples whose point did not)."""
    eps = ctx.battery.threat.eps
    points = {i: project_linf(p, ctx.x[i], eps).to(ctx.x.device) for i, p in run.counterexamples.items()}
    only = np.asarray(sorted(points), dtype=np.int64)
    ctx.run_attacks([AttackSpec(name="replay", label=EXACT_LABEL)], role="exact", only=only, points=points)
    column = ctx.outcome.columns[EXACT_LABEL]
    broke = [int(i) for i in only if column.broken[i]]
    missed = [int(i) for i in only if not column.broken[i]]
    return broke, missed


def _statuses(clean_ok: np.ndarray, broken: np.ndarray, run: CertifyRun) -> np.ndarray:
    """Per example, the strongest evidence: misclassified, then a verified break, then a proof, else unknown."""
    status = np.full(len(clean_ok), "unknown", dtype=object)
    status[run.proved] = "proved"
    status[run.certified] = "certified"
    status[broken] = "broken"
    status[~clean_ok] = "wrong"
    return status


def _pct(mask: np.ndarray) -> float:
    return float(100.0 * mask.sum() / len(mask)) if len(mask) else 0.0
