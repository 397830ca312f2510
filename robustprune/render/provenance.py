"""The provenance part of a score report: data, environment, checkpoint and battery as resolved."""

from __future__ import annotations

import shlex

from robustprune.render.format import NA, Table, fmt_eps, fmt_mapping, fmt_value, make_table
from robustprune.scoring.result import ScoreResult


def data_rows(result: ScoreResult) -> list[tuple[str, str]]:
    data = result.data
    return [
        ("dataset", str(result.dataset)),
        ("source", str(data.source)),
        ("split", str(data.split)),
        ("fingerprint", str(data.fingerprint)),
        ("input shape", "x".join(str(d) for d in data.input_shape) or NA),
    ]


def provenance_rows(result: ScoreResult) -> list[tuple[str, str]]:
    prov = result.provenance
    versions = prov.versions
    rows = [("robustprune", str(prov.robustprune))]
    rows += [
        (name, str(versions[name]) if versions[name] is not None else "not installed") for name in sorted(versions)
    ]
    rows += [
        ("python", str(prov.python)),
        ("platform", str(prov.platform)),
        ("device", str(prov.device)),
        ("threads", str(prov.threads)),
        ("seed", str(prov.seed)),
        ("batch size", str(prov.batch_size if prov.batch_size is not None else NA)),
        ("command", shlex.join(prov.command) if isinstance(prov.command, list) else "Python API"),
        ("created", str(prov.created)),
    ]
    return rows


_CHECKPOINT_ROWS = ("path", "sha256", "format", "trusted", "folded_pruning", "manifest")


def checkpoint_rows(result: ScoreResult) -> list[tuple[str, str]]:
    ckpt = result.provenance.checkpoint
    if ckpt is None:
        return [("checkpoint", "none (weights passed in memory)")]
    rows = [
        ("path", ckpt.path),
        ("sha256", ckpt.sha256),
        ("format", ckpt.format),
        ("trusted load", "YES (code in the file could run)" if ckpt.trusted else "no (tensors only)"),
        ("folded pruning", "yes" if ckpt.folded_pruning else "no"),
    ]
    if ckpt.manifest is not None:
        rows.extend(_manifest_rows(ckpt.manifest))
    stored = ckpt.to_json()  # the remaining fields, whatever a newer robustprune added
    rows += [(k.replace("_", " "), fmt_value(stored[k])) for k in sorted(stored) if k not in _CHECKPOINT_ROWS]
    return rows


def battery_rows(result: ScoreResult) -> list[tuple[str, str]]:
    battery = result.provenance.battery
    if battery is None:
        return [("name", str(result.battery)), ("description", "-"), ("source", "-"), ("threat model", NA)]
    threat = battery.threat
    return [
        ("name", battery.name),
        ("description", battery.description or "-"),
        ("source", battery.source or "-"),
        ("threat model", f"{threat.norm}, eps = {fmt_eps(threat.norm, threat.eps)}"),
    ]


def battery_table(result: ScoreResult) -> Table:
    """Each attack as configured (battery file) beside the settings it actually ran with (defaults filled in)."""
    ran = {a.label: a for a in result.attacks}
    specs = result.provenance.battery.attacks if result.provenance.battery is not None else ()
    rows = []
    for spec in specs:
        norms = ", ".join(spec.norms) or "any"
        settings = fmt_mapping(ran[spec.label].settings) if spec.label in ran else f"not run ({result.norm} threat)"
        rows.append((spec.label, spec.name, norms, fmt_mapping(spec.params), settings))
    return make_table(("label", "attack", "norms", "configured", "ran with"), rows, "lllll")


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
