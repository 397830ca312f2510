"""Exact robustness of one example: the big-M mixed-integer program of Tjeng, Xiao and Tedrake (ICLR 2019).

Over the Linf ball intersected with the [0, 1] box, with the certified pre-activation bounds [l, u] of every ReLU
(verify/bounds.py): a ReLU with u <= 0 is 0, one with l >= 0 is its input, and each unstable one gets a binary d with
a >= z, a >= 0, a <= u d, a <= z - l (1 - d). For one target t at a time, the program asks for an input whose margin
z_y - z_t is at most -MARGIN_SLACK: feasible means a counterexample (returned, to be re-checked on the real model in
float32), infeasible means no adversarial example of that target exists. Targets CROWN already excludes are
skipped, the others tried weakest first; the first counterexample ends the search.

HiGHS solves it: `highspy` when installed (one thread, fixed seed, an objective cutoff), else the HiGHS that SciPy
ships (`scipy.optimize.milp`, as a feasibility problem). Each target gets what is left of the example's time limit.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robustprune.verify.bounds import CERTIFY_TOLERANCE, Bounds, margin_matrix
from robustprune.verify.network import Affine, Network, ReLU

MARGIN_SLACK = 1e-6  # a counterexample's margin must be at most -this (then it is re-checked in float32)
# A program of more non-zero weights than this is not built: its constraint lists alone would take gigabytes, and
# HiGHS would not finish within any per-example limit (pruning is what brings a network under it).
MAX_PROGRAM_NONZEROS = 2_000_000
MIP_FEASIBILITY = 1e-7


@dataclass
class Outcome:
    """What the exact search found for one example."""

    status: str  # proved | counterexample | unknown
    x: Tensor | None = None  # the counterexample (flattened, float64) when status is counterexample
    target: int | None = None
    reason: str = ""
    seconds: float = 0.0
    targets_solved: int = 0


def solver_name() -> str:
    """The MILP solver this installation uses, with its version."""
    try:
        from importlib.metadata import version

        import highspy  # noqa: F401  (an optional extra: [verify])

        return f"highspy {version('highspy')}"
    except ImportError:
        import scipy

        return f"scipy.optimize.milp (HiGHS) from scipy {scipy.__version__}"


def _program(
    network: Network, bounds: Bounds, lower: np.ndarray, upper: np.ndarray, margin_row: np.ndarray, bias: float
):
    """The constraint matrix, row bounds, variable bounds and integrality of the feasibility program."""
    from scipy import sparse

    n_in = len(lower)
    layers = [(p, i + 1 < len(network.pieces) and isinstance(network.pieces[i + 1], ReLU))
              for i, p in enumerate(network.pieces) if isinstance(p, Affine)]  # fmt: skip
    var_lo, var_hi, integral = list(lower), list(upper), [0] * n_in
    rows, cols, vals, row_lo, row_hi = [], [], [], [], []
    prev = list(range(n_in))  # variable index of each input of the current layer
    relu_index = 0
    for affine, relu in layers[:-1]:
        assert relu
        weight = affine.weight.numpy()
        bias_vec = affine.bias.numpy()
        lo_t, hi_t = bounds.pre[relu_index]
        lo, hi = lo_t.reshape(-1).numpy(), hi_t.reshape(-1).numpy()  # a batch of one
        relu_index += 1
        outs = []
        for i in range(weight.shape[0]):
            w = weight[i]
            nz = np.flatnonzero(w)
            a = len(var_lo)
            if hi[i] <= 0:
                var_lo.append(0.0)
                var_hi.append(0.0)
                integral.append(0)
                outs.append(a)
                continue
            var_lo.append(0.0 if lo[i] < 0 else float(lo[i]))
            var_hi.append(float(hi[i]))
            integral.append(0)
            if lo[i] >= 0:  # active: a = w . prev + b
                r = len(row_lo)
                rows += [r] * (len(nz) + 1)
                cols += [a, *(prev[j] for j in nz)]
                vals += [1.0, *(-w[nz])]
                row_lo.append(float(bias_vec[i]))
                row_hi.append(float(bias_vec[i]))
                outs.append(a)
                continue
            d = len(var_lo)
            var_lo.append(0.0)
            var_hi.append(1.0)
            integral.append(1)
            # a - w.prev >= b
            r = len(row_lo)
            rows += [r] * (len(nz) + 1)
            cols += [a, *(prev[j] for j in nz)]
            vals += [1.0, *(-w[nz])]
            row_lo.append(float(bias_vec[i]))
            row_hi.append(np.inf)
            # a - u d <= 0
            r = len(row_lo)
            rows += [r, r]
            cols += [a, d]
            vals += [1.0, -float(hi[i])]
            row_lo.append(-np.inf)
            row_hi.append(0.0)
            # a - w.prev - l d <= b - l
            r = len(row_lo)
            rows += [r] * (len(nz) + 2)
            cols += [a, d, *(prev[j] for j in nz)]
            vals += [1.0, -float(lo[i]), *(-w[nz])]
            row_lo.append(-np.inf)
            row_hi.append(float(bias_vec[i] - lo[i]))
            outs.append(a)
        prev = outs
    # the margin: margin_row . prev + bias <= -MARGIN_SLACK
    nz = np.flatnonzero(margin_row)
    r = len(row_lo)
    rows += [r] * len(nz)
    cols += [prev[j] for j in nz]
    vals += list(margin_row[nz])
    row_lo.append(-np.inf)
    row_hi.append(-MARGIN_SLACK - bias)
    matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(len(row_lo), len(var_lo)))
    return matrix, np.array(row_lo), np.array(row_hi), np.array(var_lo), np.array(var_hi), np.array(integral)


def _solve_scipy(program, time_limit: float) -> tuple[str, np.ndarray | None]:
    from scipy.optimize import Bounds as VarBounds
    from scipy.optimize import LinearConstraint, milp

    matrix, row_lo, row_hi, var_lo, var_hi, integral = program
    result = milp(
        c=np.zeros(len(var_lo)),
        constraints=LinearConstraint(matrix, row_lo, row_hi),
        bounds=VarBounds(var_lo, var_hi),
        integrality=integral,
        options={"time_limit": max(time_limit, 0.01), "disp": False, "presolve": True},
    )
    if result.status == 0 and result.x is not None:
        return "feasible", np.asarray(result.x)
    if result.status == 2:
        return "infeasible", None
    return "unknown", None  # 1: time limit, 3: unbounded (cannot be), 4: other


@functools.cache
def _highs() -> object:
    """One HiGHS instance per process, created with file descriptor 1 closed off: its constructor prints a banner
    to the C-level stdout that would corrupt `--json` output. Each solve passes its own model to it."""
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 1)
            solver = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    solver.setOptionValue("output_flag", False)
    return solver


def _solve_highspy(program, time_limit: float) -> tuple[str, np.ndarray | None]:
    import highspy

    matrix, row_lo, row_hi, var_lo, var_hi, integral = program
    h = _highs()
    h.clearModel()
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("time_limit", max(time_limit, 0.01))
    h.setOptionValue("mip_max_improving_sols", 1)
    lp = highspy.HighsLp()
    lp.num_col_ = len(var_lo)
    lp.num_row_ = len(row_lo)
    lp.col_cost_ = np.zeros(len(var_lo))
    lp.col_lower_ = var_lo
    lp.col_upper_ = var_hi
    lp.row_lower_ = row_lo
    lp.row_upper_ = row_hi
    csc = matrix.tocsc()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = csc.indptr
    lp.a_matrix_.index_ = csc.indices
    lp.a_matrix_.value_ = csc.data
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integral]
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return "infeasible", None
    solution = h.getSolution()
    if h.getInfo().primal_solution_status == 2 and solution.col_value:  # a feasible point
        return "feasible", np.asarray(solution.col_value)
    return "unknown", None


def program_size(network: Network) -> int:
    """Non-zero weights of the network: the size of every program exact_search builds for it."""
    return sum(int((p.weight != 0).sum()) for p in network.pieces if isinstance(p, Affine))


def exact_search(network: Network, bounds: Bounds, x: Tensor, label: int, eps: float, *, time_limit: float) -> Outcome:
    """Search for an adversarial example of `x` (Linf, eps) with the certified `bounds` of its ReLUs (a batch of one,
    Bounds.example; see the module docstring). `time_limit` is the example's whole budget in seconds."""
    started = time.perf_counter()
    size = program_size(network)
    if size > MAX_PROGRAM_NONZEROS:
        return Outcome(
            "unknown",
            reason=f"the MILP would hold {size:,} non-zero weights, beyond the {MAX_PROGRAM_NONZEROS:,} it builds",
        )
    flat = x.reshape(-1).double()
    lower = (flat - eps).clamp(0, 1).numpy()
    upper = (flat + eps).clamp(0, 1).numpy()
    last = next(p for p in reversed(network.pieces) if isinstance(p, Affine))
    spec = margin_matrix(network.num_classes, label)
    targets = [t for t in range(network.num_classes) if t != label]
    margins = bounds.margins.reshape(-1) if bounds.margins is not None else torch.full((len(targets),), -1.0)
    order = sorted(range(len(targets)), key=lambda i: float(margins[i]))
    try:
        import highspy  # noqa: F401

        solve = _solve_highspy
    except ImportError:
        solve = _solve_scipy
    solved = 0
    for i in order:
        if float(margins[i]) > CERTIFY_TOLERANCE:
            solved += 1
            continue  # CROWN already excludes this target
        left = time_limit - (time.perf_counter() - started)
        if left <= 0:
            return Outcome("unknown", reason="time limit", seconds=time.perf_counter() - started, targets_solved=solved)
        row = (spec[i] @ last.weight).numpy()
        bias = float(spec[i] @ last.bias)
        program = _program(network, bounds, lower, upper, row, bias)
        found, solution = solve(program, left)
        if found == "feasible":
            point = torch.from_numpy(solution[: len(lower)]).double()
            return Outcome(
                "counterexample",
                x=point,
                target=targets[i],
                seconds=time.perf_counter() - started,
                targets_solved=solved,
            )
        if found == "unknown":
            return Outcome("unknown", reason="time limit", seconds=time.perf_counter() - started, targets_solved=solved)
        solved += 1
    return Outcome("proved", seconds=time.perf_counter() - started, targets_solved=solved)
