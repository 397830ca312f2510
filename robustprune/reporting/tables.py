"""Every report table built once from the result document, as strings, so Markdown, HTML and stdout never disagree.

Formatting is fixed (percent with 2 decimals, metrics with 4, seconds with 3, integers with thousands separators,
missing values as "n/a") so the same document always renders to the same bytes.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from statistics import median
from typing import Any

NA = "n/a"
CALIBRATION_METRICS = {
    "ece": "ECE",
    "ece_equal_mass": "ECE (equal mass)",
    "mce": "MCE",
    "classwise_ece": "Classwise ECE",
    "nll": "NLL",
    "brier": "Brier",
    "aurc": "AURC",
}


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


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> Table:
    assert len(align) == len(headers), "one alignment per column"
    return Table(tuple(headers), tuple(tuple(r) for r in rows), align)


def kv_table(rows: Sequence[tuple[str, str]]) -> Table:
    return _table(("field", "value"), rows, "ll")


# ---------------------------------------------------------------- number formatting


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt_pct(value: Any) -> str:
    return f"{value:.2f}" if _is_num(value) else NA


def fmt_p(value: Any, missing: str = NA) -> str:
    """p-values: 4 decimals, and 2 significant digits below 0.001 so a tiny p never reads as 0."""
    if not _is_num(value):
        return missing
    return "1" if value >= 1 else f"{value:.4f}" if value >= 1e-3 else f"{value:.1e}"


def fmt_ci(ci: Any) -> str:
    if isinstance(ci, Sequence) and len(ci) == 2 and all(_is_num(v) for v in ci):
        return f"[{ci[0]:.2f}, {ci[1]:.2f}]"
    return NA


def fmt_num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if _is_num(value) else NA


def fmt_int(value: Any) -> str:
    return f"{value:,}" if _is_num(value) else NA


def fmt_seconds(value: Any) -> str:
    return f"{value:.3f}" if _is_num(value) else NA


def fmt_frac_pct(value: Any) -> str:
    """A 0-1 fraction shown as a percentage."""
    return f"{100.0 * value:.2f} %" if _is_num(value) else NA


def fmt_eps(norm: str, eps: Any) -> str:
    """eps with 6 significant digits, plus k/255 when a Linf eps is a whole number of 8-bit steps."""
    if not _is_num(eps):
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


# ---------------------------------------------------------------- headline and attacks


def threat_text(doc: dict[str, Any]) -> str:
    return f"{doc.get('norm', NA)}, eps = {fmt_eps(doc.get('norm', ''), doc.get('eps'))}"


def summary_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    prov = doc.get("provenance") or {}
    return [
        ("model", str(doc.get("architecture", NA))),
        ("dataset", f"{doc.get('dataset', NA)} ({(doc.get('data') or {}).get('split', NA)} split)"),
        ("threat model", threat_text(doc)),
        ("battery", str(doc.get("battery", NA))),
        ("examples", fmt_int(doc.get("n_examples"))),
        ("classes", fmt_int(doc.get("num_classes"))),
        ("seed", str(prov.get("seed", NA))),
        (
            "randomized model",
            f"{'yes' if doc.get('randomized') else 'no'}; evaluation passes: {doc.get('n_eval_passes', 1)}",
        ),
        ("confidence intervals", f"{doc.get('ci_method', NA)}, {fmt_frac_pct(doc.get('ci_confidence'))}"),
    ]


def headline_table(doc: dict[str, Any]) -> Table:
    rows = [
        ("clean accuracy", fmt_pct(doc.get("clean_acc")) + " %", fmt_ci(doc.get("clean_acc_ci"))),
        ("robust accuracy (worst case)", fmt_pct(doc.get("robust_acc")) + " %", fmt_ci(doc.get("robust_acc_ci"))),
    ]
    if doc.get("autoattack_acc") is not None:
        rows.append(("AutoAttack accuracy", fmt_pct(doc["autoattack_acc"]) + " %", fmt_ci(doc.get("robust_acc_ci"))))
    sparsity = doc.get("sparsity") or {}
    rows.append(("sparsity (Conv/Linear weights)", fmt_frac_pct(sparsity.get("sparsity")), ""))
    rows.append(("ECE clean / adversarial", " / ".join(_ece_pair(doc)), ""))
    rows.append(("warnings", str(len(doc.get("warnings") or [])), ""))
    return _table(("metric", "value", "CI"), rows, "lrl")


def _ece_pair(doc: dict[str, Any]) -> tuple[str, str]:
    cal = doc.get("calibration") or {}
    return tuple(fmt_num(((cal.get(side) or {}).get("ece") or {}).get("value")) for side in ("clean", "adversarial"))


def _median_norm(doc: dict[str, Any], label: str) -> str:
    """Median perturbation norm over the examples this attack broke (from the per-sample table)."""
    cols = ((doc.get("per_sample") or {}).get("attacks") or {}).get(label) or {}
    norms = [v for v, b in zip(cols.get("norm") or [], cols.get("broken") or []) if b and _is_num(v)]
    return fmt_num(median(norms)) if norms else NA


ATTACK_HEADERS = (
    "step",
    "attack",
    "implementation",
    "library",
    "attempted",
    "broken",
    "acc %",
    "CI",
    "seconds",
    "s/attempted",
    "forward",
    "backward",
    "median norm",
    "notes",
)


def attack_table(doc: dict[str, Any]) -> Table:
    """Accuracy after each step of the battery: clean first, then cumulatively after every attack, then totals."""
    n = doc.get("n_examples")
    rows = [
        (
            "0",
            "clean",
            "",
            "",
            fmt_int(n),
            "",
            fmt_pct(doc.get("clean_acc")),
            fmt_ci(doc.get("clean_acc_ci")),
            "",
            "",
            "",
            "",
            "",
            "",
        )
    ]
    for i, a in enumerate(doc.get("attacks") or [], start=1):
        attempted, seconds = a.get("n_attempted"), a.get("seconds")
        per_example = seconds / attempted if _is_num(seconds) and _is_num(attempted) and attempted else None
        library = " ".join(str(v) for v in (a.get("library"), a.get("library_version")) if v)
        rows.append(
            (
                str(i),
                str(a.get("label", NA)),
                str(a.get("implementation") or NA),
                library or NA,
                fmt_int(attempted),
                fmt_int(a.get("n_broken")),
                fmt_pct(a.get("robust_acc")),
                fmt_ci(a.get("robust_acc_ci")),
                fmt_seconds(seconds),
                fmt_num(per_example),
                fmt_int(a.get("n_forward")),
                fmt_int(a.get("n_backward")),
                _median_norm(doc, str(a.get("label"))),
                attack_notes(a),
            )
        )
    # Totals: every attack sees only the survivors of the ones before, so attempted/broken add up without overlap.
    attacks = doc.get("attacks") or []
    cost = doc.get("cost") or {}
    attempted = sum(a.get("n_attempted") or 0 for a in attacks)
    seconds = cost.get("seconds")
    rows.append(
        (
            "",
            "worst case",
            "",
            "",
            fmt_int(attempted),
            fmt_int(sum(a.get("n_broken") or 0 for a in attacks)),
            fmt_pct(doc.get("robust_acc")),
            fmt_ci(doc.get("robust_acc_ci")),
            fmt_seconds(seconds),
            fmt_num(seconds / attempted) if _is_num(seconds) and attempted else NA,
            fmt_int(cost.get("n_forward")),
            fmt_int(cost.get("n_backward")),
            "",
            "",
        )
    )
    return _table(ATTACK_HEADERS, rows, "rlllrrrlrrrrrl")


def attack_series(doc: dict[str, Any]) -> list[tuple[str, float | None, list[float] | None]]:
    """(step label, accuracy %, CI) for the figure: clean, then after each attack."""
    series = [("clean", doc.get("clean_acc"), doc.get("clean_acc_ci"))]
    series += [(str(a.get("label")), a.get("robust_acc"), a.get("robust_acc_ci")) for a in doc.get("attacks") or []]
    return series


# ---------------------------------------------------------------- calibration


MULTI_HEAD_NOTE = (
    "A randomized multi-head (DIO) model: the headline numbers score its random-head mode (every verdict over "
    "repeated passes, the adaptive all-heads attack first). Below, each head alone (fixed mode) under the "
    "per-head battery; a deployment that pins one head gets that head's numbers, and the worst head bounds them all."
)


def multi_head_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Summary of the per-head report; [] for an ordinary model."""
    mh = doc.get("multi_head")
    if not mh:
        return []
    adaptive = mh.get("adaptive_attack") or {}
    settings = ", ".join(f"{k}={v}" for k, v in sorted(adaptive.items()) if k not in ("name", "label"))
    return [
        ("heads", fmt_int(mh.get("n_heads"))),
        ("scored mode", f"{mh.get('scored_mode')} (handed over in {mh.get('original_mode')} mode)"),
        ("adaptive attack", f"{adaptive.get('label', adaptive.get('name'))} ({settings})"),
        ("per-head battery", str(mh.get("per_head_battery"))),
        (
            "worst head: clean / robust %",
            f"{fmt_pct(mh.get('worst_head_clean_acc'))} / {fmt_pct(mh.get('worst_head_robust_acc'))}",
        ),
        (
            "mean head: clean / robust %",
            f"{fmt_pct(mh.get('mean_head_clean_acc'))} / {fmt_pct(mh.get('mean_head_robust_acc'))}",
        ),
    ]


def multi_head_table(doc: dict[str, Any]) -> Table:
    """Clean and robust accuracy of every head alone; empty for an ordinary model."""
    mh = doc.get("multi_head") or {}
    clean, robust = mh.get("per_head_clean_acc") or [], mh.get("per_head_robust_acc") or []
    worst = mh.get("worst_head_robust_acc")
    rows = [
        (str(i), fmt_pct(c), fmt_pct(r), "worst" if r == worst else "")
        for i, (c, r) in enumerate(zip(clean, robust, strict=True))
    ]
    return _table(("head", "clean %", "robust %", ""), rows, "rrrl")


def _binning_text(metric: dict[str, Any]) -> str:
    """Everything stored beside a number except the number: binning and bin count first, the rest sorted."""
    parts = []
    if "binning" in metric:
        parts.append(str(metric["binning"]) + (f", {metric['n_bins']} bins" if "n_bins" in metric else ""))
    parts += [f"{k}={fmt_value(metric[k])}" for k in sorted(metric) if k not in ("value", "binning", "n_bins")]
    return "; ".join(parts) or "-"


def calibration_table(doc: dict[str, Any]) -> Table:
    cal = doc.get("calibration") or {}
    clean, adv = cal.get("clean") or {}, cal.get("adversarial") or {}
    rows = [("examples", "-", fmt_int(clean.get("n")), fmt_int(adv.get("n")))]
    extra = sorted(
        k
        for k in set(clean) | set(adv)
        if k not in CALIBRATION_METRICS
        and isinstance((clean.get(k) or adv.get(k)), dict)
        and "value" in (clean.get(k) or adv.get(k))
    )
    for key in [*CALIBRATION_METRICS, *extra]:
        c, a = clean.get(key), adv.get(key)
        if not isinstance(c, dict) and not isinstance(a, dict):
            continue
        c, a = c or {}, a or {}
        binning = _binning_text(c or a)
        if c and a and _binning_text(a) != binning:
            binning = f"clean: {binning}; adversarial: {_binning_text(a)}"
        rows.append((CALIBRATION_METRICS.get(key, key), binning, fmt_num(c.get("value")), fmt_num(a.get("value"))))
    return _table(("metric", "binning", "clean", "adversarial"), rows, "llrr")


def reliability_bins(doc: dict[str, Any], side: str) -> list[dict[str, Any]]:
    return (((doc.get("calibration") or {}).get(side) or {}).get("reliability") or {}).get("bins") or []


def reliability_table(doc: dict[str, Any]) -> Table:
    rows = []
    for i, (c, a) in enumerate(zip_longest(reliability_bins(doc, "clean"), reliability_bins(doc, "adversarial"))):
        edges = c or a
        rows.append(
            (
                str(i + 1),
                f"{'[' if i == 0 else '('}{edges['lo']:.3f}, {edges['hi']:.3f}]",  # bin 0 is closed at 0
                *(
                    cell
                    for b in (c or {}, a or {})
                    for cell in (
                        fmt_int(b.get("count")),
                        fmt_num(b.get("accuracy")),
                        fmt_num(b.get("confidence")),
                        fmt_num(b.get("gap")),
                    )
                ),
            )
        )
    headers = (
        "bin",
        "confidence range",
        "clean n",
        "clean acc",
        "clean conf",
        "clean gap",
        "adv n",
        "adv acc",
        "adv conf",
        "adv gap",
    )
    return _table(headers, rows, "rl" + "r" * 8)


# ---------------------------------------------------------------- sparsity


def _share(sparsity: Any, nonzero: Any, total: Any) -> str:
    return f"{fmt_frac_pct(sparsity)} ({fmt_int(nonzero)} of {fmt_int(total)} nonzero)"


def sparsity_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    s = doc.get("sparsity") or {}
    ratio = s.get("compression_ratio")
    dense, effective = s.get("macs_dense"), s.get("macs_effective")
    reduction = f"{dense / effective:.2f}x" if _is_num(dense) and _is_num(effective) and effective else NA
    return [
        (
            "sparsity (Conv/Linear weights)",
            _share(s.get("sparsity"), s.get("prunable_nonzero"), s.get("prunable_params")),
        ),
        ("sparsity (all parameters)", _share(s.get("all_sparsity"), s.get("all_nonzero"), s.get("all_params"))),
        ("compression ratio", f"{ratio:.2f}x" if _is_num(ratio) else NA),
        ("MACs per example, dense", fmt_int(dense)),
        (
            "MACs per example, effective",
            fmt_int(effective) + (f" (dense / effective = {reduction})" if reduction != NA else ""),
        ),
    ]


def layer_table(doc: dict[str, Any]) -> Table:
    rows = [
        (
            str(r.get("name", NA)),
            str(r.get("type", NA)),
            "x".join(str(d) for d in r.get("shape") or []) or "-",
            fmt_int(r.get("numel")),
            fmt_int(r.get("nonzero")),
            fmt_frac_pct(r.get("sparsity")),
            fmt_int(r.get("macs_dense")),
            fmt_int(r.get("macs_effective")),
        )
        for r in (doc.get("sparsity") or {}).get("layers") or []
    ]
    return _table(
        ("layer", "type", "shape", "params", "nonzero", "sparsity", "MACs dense", "MACs effective"), rows, "lllrrrrr"
    )


# ---------------------------------------------------------------- warnings and provenance


def attack_notes(attack: dict[str, Any]) -> str:
    """Why an attack did not run, what it changed about itself for this model, and its own flags."""
    skipped = attack.get("skipped")
    notes = [f"SKIPPED: {skipped}"] if skipped else []
    notes += [str(n) for n in attack.get("notes") or []] + [str(f) for f in attack.get("flags") or []]
    return "; ".join(notes) or "-"


def alert_lines(doc: dict[str, Any]) -> list[str]:
    """The findings a reader must see before any number (e.g. gradient attacks that could not run)."""
    return [f"{a.get('check', NA)}: {a.get('message', '')}" for a in doc.get("alerts") or []]


def warnings_table(doc: dict[str, Any]) -> Table:
    rows = [(str(w.get("check", NA)), str(w.get("message", ""))) for w in doc.get("warnings") or []]
    return _table(("check", "message"), rows, "ll")


def data_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    data = doc.get("data") or {}
    return [
        ("dataset", str(doc.get("dataset", NA))),
        ("source", str(data.get("source", NA))),
        ("split", str(data.get("split", NA))),
        ("fingerprint", str(data.get("fingerprint", NA))),
        ("input shape", "x".join(str(d) for d in data.get("input_shape") or []) or NA),
    ]


def provenance_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    prov = doc.get("provenance") or {}
    versions = prov.get("versions") or {}
    command = prov.get("command")
    rows = [("robustprune", str(prov.get("robustprune", NA)))]
    rows += [
        (name, str(versions[name]) if versions[name] is not None else "not installed") for name in sorted(versions)
    ]
    rows += [
        ("python", str(prov.get("python", NA))),
        ("platform", str(prov.get("platform", NA))),
        ("device", str(prov.get("device", NA))),
        ("threads", str(prov.get("threads", NA))),
        ("seed", str(prov.get("seed", NA))),
        ("batch size", str(prov.get("batch_size", NA))),
        ("command", shlex.join(command) if isinstance(command, list) else "Python API"),
        ("created", str(prov.get("created", NA))),
    ]
    return rows


def checkpoint_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    ckpt = (doc.get("provenance") or {}).get("checkpoint")
    if not isinstance(ckpt, dict):
        return [("checkpoint", "none (weights passed in memory)")]
    trusted = ckpt.get("trusted")
    rows = [
        ("path", str(ckpt.get("path", NA))),
        ("sha256", str(ckpt.get("sha256", NA))),
        ("format", str(ckpt.get("format", NA))),
        ("trusted load", "YES (code in the file could run)" if trusted else "no (tensors only)"),
        ("folded pruning", "yes" if ckpt.get("folded_pruning") else "no"),
    ]
    if ckpt.get("manifest") is not None:
        rows.extend(_manifest_rows(ckpt["manifest"]))
    rows += [
        (k.replace("_", " "), fmt_value(ckpt[k]))
        for k in sorted(ckpt)
        if k not in ("path", "sha256", "format", "trusted", "folded_pruning", "manifest")
    ]
    return rows


def battery_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    battery = (doc.get("provenance") or {}).get("battery") or {}
    threat = battery.get("threat") or {}
    return [
        ("name", str(battery.get("name", doc.get("battery", NA)))),
        ("description", str(battery.get("description") or "-")),
        ("source", str(battery.get("source") or "-")),
        ("threat model", f"{threat.get('norm', NA)}, eps = {fmt_eps(threat.get('norm', ''), threat.get('eps'))}"),
    ]


def battery_table(doc: dict[str, Any]) -> Table:
    """Each attack as configured (battery file) beside the settings it actually ran with (defaults filled in)."""
    ran = {a.get("label"): a for a in doc.get("attacks") or []}
    rows = []
    for spec in ((doc.get("provenance") or {}).get("battery") or {}).get("attacks") or []:
        label = spec.get("label") or spec.get("name")
        norms = ", ".join(spec.get("norms") or []) or "any"
        settings = fmt_mapping(ran[label].get("settings")) if label in ran else f"not run ({doc.get('norm')} threat)"
        rows.append((str(label), str(spec.get("name", NA)), norms, fmt_mapping(spec.get("params")), settings))
    return _table(("label", "attack", "norms", "configured", "ran with"), rows, "lllll")


def _manifest_rows(manifest: dict) -> list[tuple[str, str]]:
    """The manifest's scalar fields; nested ones (training log, masks, recipe) are summarised, not dumped."""
    rows = []
    for key in sorted(manifest):
        value = manifest[key]
        if isinstance(value, list):
            rows.append((f"manifest.{key}", f"{len(value)} entries"))
        elif isinstance(value, dict):
            rows.append((f"manifest.{key}", f"{len(value)} fields"))
        else:
            rows.append((f"manifest.{key}", fmt_value(value)))
    return rows
