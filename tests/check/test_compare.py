"""`check`: paired regression comparison of results against a stored baseline (sweeps and single scores)."""

from __future__ import annotations

import copy
import io
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sweep_factory import make_sweep

from robustprune.atomic import write_json
from robustprune.check.compare import check_main, compare
from robustprune.check.report import FAIL, NOT_COMPARABLE, PASS
from robustprune.errors import UsageError
from robustprune.metrics import accuracy_with_ci
from robustprune.metrics.paired import one_sided_drop_pvalue
from robustprune.scoring import ScoreResult
from robustprune.scoring.per_sample import CLEAN, WORST, attack_metric


def correct_vectors(doc: dict[str, Any]) -> dict[str, np.ndarray]:
    return ScoreResult.from_json(doc).correct_vectors()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    make_sweep(root)
    return root


def cells(root: Path) -> list[dict[str, Any]]:
    return json.loads((root / "results.json").read_text())["cells"]


def cell_doc_path(root: Path, recipe: str, sparsity: float, seed: int) -> Path:
    record = next(c for c in cells(root) if (c["recipe"], c["sparsity"], c["seed"]) == (recipe, sparsity, seed))
    return root / record["result"]


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def copy_sweep(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def battery_attacks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The battery's own attacks (a score document also lists the health probes and escalations that ran)."""
    return [a for a in doc["attacks"] if a["role"] == "battery"]


def break_examples(doc: dict[str, Any], k: int) -> dict[str, Any]:
    """Mark the first k robust examples as broken by the last attack (a weaker model on those examples)."""
    doc = copy.deepcopy(doc)
    table = doc["per_sample"]
    last = battery_attacks(doc)[-1]["label"]
    flipped = 0
    for i, broken in enumerate(table["broken"]):
        if flipped == k:
            break
        if not broken:
            table["broken"][i] = True
            table["attacks"][last]["broken"][i] = True
            table["attacks"][last]["attempted"][i] = True
            flipped += 1
    assert flipped == k, "not enough robust examples to break"
    # the headline follows the table it is derived from (a document that disagrees with itself is refused)
    robust = accuracy_with_ci([not b for b in table["broken"]])
    doc["robust_acc"], doc["robust_acc_ci"] = robust["value"], robust["ci"]
    if "bounds" in doc:  # and so does the bracket: a broken example is no longer proven robust
        status = table["status"] = [
            "broken" if b and s not in ("wrong",) else s for s, b in zip(table["status"], table["broken"], strict=True)
        ]
        bounds = doc["bounds"]
        counts = {s: status.count(s) for s in ("wrong", "broken", "certified", "proved", "unknown")}
        certified = 100.0 * (counts["certified"] + counts["proved"]) / len(status)
        bounds.update(robust_acc=robust["value"], certified_acc=certified, counts=counts)
        bounds.update(
            gap_points=robust["value"] - certified, exact_acc=robust["value"] if not counts["unknown"] else None
        )
    return doc


def rows_by(comparison, cell: str) -> dict[str, Any]:
    return {r.metric: r for r in comparison.rows if r.cell == cell}


# ---------------------------------------------------------------- per-sample vectors


def test_cumulative_vectors_follow_battery_order_and_match_stored_aggregates(sweep):
    doc = load(cell_doc_path(sweep, "magnitude", 0.5, 1))
    # JSON sorts object keys; reverse them to prove the battery order comes from doc["attacks"], not from the dict.
    doc["per_sample"]["attacks"] = dict(reversed(list(doc["per_sample"]["attacks"].items())))
    vectors = correct_vectors(doc)
    assert list(vectors) == [CLEAN, *(attack_metric(a["label"]) for a in battery_attacks(doc)), WORST]
    assert 100 * vectors[CLEAN].mean() == pytest.approx(doc["clean_acc"])
    for attack in battery_attacks(doc):
        assert 100 * vectors[attack_metric(attack["label"])].mean() == pytest.approx(attack["robust_acc"])
    assert 100 * vectors[WORST].mean() == pytest.approx(doc["robust_acc"])
    # cumulative: after a later attack never more correct than after an earlier one
    after = [vectors[attack_metric(a["label"])] for a in battery_attacks(doc)]
    assert all(not np.any(b & ~a) for a, b in itertools.pairwise(after))


# ---------------------------------------------------------------- pass / fail


def test_identical_sweep_passes_and_lists_every_comparison(sweep):
    out = io.StringIO()
    assert check_main(sweep, sweep / "results.json", stream=out) == 0
    text = out.getvalue()
    comparison = compare(sweep, sweep)
    n_cells, n_attacks = len(cells(sweep)), len(battery_attacks(load(cell_doc_path(sweep, "dense", 0.0, 0))))
    # verdict, clean, attacks, worst, 4 calibration, and the certified accuracy where the cells have bounds
    certified = int("status" in load(cell_doc_path(sweep, "dense", 0.0, 0))["per_sample"])
    assert len(comparison.rows) == n_cells * (1 + 2 + n_attacks + 4 + certified)
    assert all(r.status == PASS and (r.delta == 0 or r.metric == "verdict") for r in comparison.rows)
    table_lines = [line for line in text.splitlines() if line.rstrip().endswith(("PASS", "no paired test"))]
    assert len(table_lines) == len(comparison.rows)
    for record in cells(sweep):
        label = f"{record['recipe']} s={record['sparsity']:g} seed={record['seed']}"
        assert sum(line.startswith(label + " ") for line in table_lines) == 1 + 2 + n_attacks + 4 + certified
    assert text.rstrip().splitlines()[-1].startswith("PASS:")
    assert "no paired test is applied to calibration" in text


def test_weakened_cell_fails_with_fail_rows(sweep, tmp_path):
    new = copy_sweep(sweep, tmp_path / "new")
    path = cell_doc_path(new, "magnitude", 0.5, 0)
    write_json(path, break_examples(load(path), 12))
    out = io.StringIO()
    assert check_main(new, sweep, stream=out) == 1
    comparison = compare(new, sweep)
    rows = rows_by(comparison, "magnitude s=0.5 seed=0")
    assert rows[WORST].status == FAIL and rows[WORST].delta == pytest.approx(-30.0) and rows[WORST].p_value < 0.05
    last = battery_attacks(load(path))[-1]["label"]
    assert rows[attack_metric(last)].status == FAIL
    assert rows[CLEAN].status == PASS  # clean predictions were not touched
    assert {r.cell for r in comparison.rows if r.status == FAIL} == {"magnitude s=0.5 seed=0"}
    text = out.getvalue()
    assert text.rstrip().splitlines()[-1].startswith("FAIL:") and " FAIL " in text


def with_verdict(doc: dict[str, Any], verdict: str | None) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    if verdict is None:  # a document scored before verdicts existed
        doc.pop("verdict")
        doc.pop("health")
    else:
        doc["verdict"] = doc["health"]["verdict"] = verdict
        doc["health"]["reasons"] = [f"S13 made up for the test ({verdict})"]
    return doc


def test_a_verdict_worse_than_the_baselines_fails_check(sweep, tmp_path):
    path = cell_doc_path(sweep, "dense", 0.0, 0)
    assert load(path)["verdict"] == "trusted"
    for verdict, status in (("trusted", PASS), ("caution", FAIL), ("untrusted", FAIL)):
        new = tmp_path / f"{verdict}.json"
        write_json(new, with_verdict(load(path), verdict))
        rows = rows_by(compare(new, path), "score")
        assert rows["verdict"].status == status
        assert (rows["verdict"].baseline, rows["verdict"].new) == ("trusted", verdict)
        if status == FAIL:
            assert "got worse" in rows["verdict"].note and "made up for the test" in rows["verdict"].note
            out = io.StringIO()
            assert check_main(new, path, stream=out) == 1 and "verdict got worse" in out.getvalue()
    # better than the baseline is fine
    worse_base = tmp_path / "base-caution.json"
    write_json(worse_base, with_verdict(load(path), "caution"))
    assert rows_by(compare(path, worse_base), "score")["verdict"].status == PASS


def test_a_baseline_scored_before_verdicts_existed_gets_no_verdict_row(sweep, tmp_path):
    path = cell_doc_path(sweep, "dense", 0.0, 0)
    old = tmp_path / "old.json"
    write_json(old, with_verdict(load(path), None))
    rows = rows_by(compare(path, old), "score")
    assert "verdict" not in rows and rows[WORST].status == PASS


def test_a_weaker_model_fails_as_a_single_score(sweep):
    strong, weak = cell_doc_path(sweep, "dense", 0.0, 0), cell_doc_path(sweep, "magnitude", 0.9, 0)
    comparison = compare(weak, strong.parent)  # a directory holding results.json works too
    rows = rows_by(comparison, "score")
    assert rows[CLEAN].status == FAIL and rows[CLEAN].delta < -10 and rows[CLEAN].p_value < 0.01
    assert rows[WORST].status == FAIL
    assert rows[WORST].p_value == pytest.approx(
        one_sided_drop_pvalue(correct_vectors(load(strong))[WORST], correct_vectors(load(weak))[WORST])
    )
    assert not comparison.passed
    assert check_main(weak, strong, stream=io.StringIO()) == 1
    assert check_main(strong, strong, stream=io.StringIO()) == 0


def test_a_small_drop_within_chance_passes(sweep):
    base = load(cell_doc_path(sweep, "dense", 0.0, 0))
    new = break_examples(base, 2)  # 5 pp on 40 examples: beyond the 1 pp tolerance, but p = 0.25
    comparison = compare(new, base)
    row = rows_by(comparison, "score")[WORST]
    assert row.delta == pytest.approx(-5.0) and row.p_value == pytest.approx(0.25)
    assert row.status == PASS and "within chance" in row.note
    assert comparison.passed
    # the same drop on more examples would not be chance: many flips fail at the same tolerance
    assert not compare(break_examples(base, 10), base).passed
    # and a tolerance above the drop passes whatever the test says
    assert compare(break_examples(base, 10), base, tolerance=30.0).passed


def test_added_and_missing_cells_are_reported(sweep, tmp_path):
    new = copy_sweep(sweep, tmp_path / "new")
    base = copy_sweep(sweep, tmp_path / "base")
    for root, drop in ((new, "pgd_at_agp"), (base, "pgd_at")):
        doc = load(root / "results.json")
        doc["cells"] = [c for c in doc["cells"] if c["recipe"] != drop]
        write_json(root / "results.json", doc)
    comparison = compare(new, base)
    assert comparison.added == ["pgd_at s=0 seed=0"]
    assert comparison.missing == ["pgd_at_agp s=0.5 seed=0"]
    assert not comparison.passed  # a baseline cell that vanished is never a silent pass
    assert compare(new, base, allow_missing=True).passed
    text = comparison.render()
    assert "added cells" in text and "pgd_at s=0 seed=0" in text
    assert "missing cells" in text and "pgd_at_agp s=0.5 seed=0" in text
    assert "1 baseline cell missing" in text.splitlines()[-1]
    assert not any(r.cell in ("pgd_at s=0 seed=0", "pgd_at_agp s=0.5 seed=0") for r in comparison.rows)


def _set_eps(doc: dict[str, Any], eps: float) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["eps"] = eps
    doc["provenance"]["battery"]["threat"]["eps"] = eps
    return doc


def test_changed_threat_battery_or_data_is_not_comparable(sweep, tmp_path):
    base = load(cell_doc_path(sweep, "dense", 0.0, 0))
    threat = compare(_set_eps(base, 0.2), base)
    assert [r.status for r in threat.rows] == [NOT_COMPARABLE] and "threat model differs" in threat.rows[0].note
    battery = copy.deepcopy(base)
    battery["provenance"]["battery"]["attacks"][-1]["params"]["steps"] = 5
    row = compare(battery, base).rows[0]
    assert row.status == NOT_COMPARABLE and "battery differs" in row.note
    extended = copy.deepcopy(base)
    extended["provenance"]["battery"]["attacks"].append({"name": "all_heads_pgd", "label": "adaptive"})
    row = compare(extended, base).rows[0]  # check is strict: an added attack is a changed battery too
    assert row.status == NOT_COMPARABLE and "battery differs" in row.note
    data = copy.deepcopy(base)
    data["data"]["fingerprint"] = "0" * 64
    row = compare(data, base).rows[0]
    assert row.status == NOT_COMPARABLE and "data fingerprint differs" in row.note
    assert (
        check_main(
            _write(tmp_path / "t.json", _set_eps(base, 0.2)), _write(tmp_path / "b.json", base), stream=io.StringIO()
        )
        == 1
    )
    # in a sweep: one cell with a different threat model is NOT-COMPARABLE, the others are still compared
    new = copy_sweep(sweep, tmp_path / "new")
    path = cell_doc_path(new, "magnitude", 0.9, 1)
    write_json(path, _set_eps(load(path), 0.2))
    comparison = compare(new, sweep)
    bad = [r for r in comparison.rows if r.status == NOT_COMPARABLE]
    assert [r.cell for r in bad] == ["magnitude s=0.9 seed=1"]
    assert not comparison.passed and "1 cell not comparable" in comparison.verdict()
    assert "NOT-COMPARABLE" in comparison.render() and "threat model differs" in comparison.render()


def _write(path: Path, doc: dict[str, Any]) -> Path:
    write_json(path, doc)
    return path


def test_calibration_rise_fails_without_a_paired_test(sweep):
    base = load(cell_doc_path(sweep, "dense", 0.0, 1))
    new = copy.deepcopy(base)
    new["calibration"]["adversarial"]["ece"]["value"] += 0.05
    rows = rows_by(compare(new, base), "score")
    assert rows["ECE adv"].status == FAIL and rows["ECE adv"].p_value is None
    assert rows["ECE clean"].status == PASS
    assert compare(new, base, calibration_tolerance=0.1).passed
    lower = copy.deepcopy(base)
    lower["calibration"]["adversarial"]["ece"]["value"] -= 0.05  # better calibration never fails
    assert compare(lower, base).passed


def test_to_dict_is_json_and_json_out_is_written(sweep, tmp_path):
    out = tmp_path / "check.json"
    assert check_main(sweep, sweep, json_out=out, stream=io.StringIO()) == 0
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["verdict"].startswith("PASS")
    assert len(data["rows"]) == len(compare(sweep, sweep).rows)
    assert {"cell", "metric", "baseline", "new", "delta", "p_value", "status"} <= set(data["rows"][0])


def test_partial_sweep_without_results_json_is_read_from_cells(sweep, tmp_path):
    new = copy_sweep(sweep, tmp_path / "new")
    (new / "results.json").unlink()
    comparison = compare(new, sweep)
    assert comparison.passed and len({r.cell for r in comparison.rows}) == len(cells(sweep))


def test_bad_input_is_a_usage_error(sweep, tmp_path):
    score = cell_doc_path(sweep, "dense", 0.0, 0)
    with pytest.raises(UsageError, match="compare a sweep with a sweep"):
        compare(sweep, score)
    with pytest.raises(UsageError, match="not found"):
        compare(tmp_path / "nope", score)
    with pytest.raises(UsageError, match="alpha"):
        compare(score, score, alpha=1.5)
    with pytest.raises(UsageError, match="tolerance"):
        compare(score, score, tolerance=-1)
    with pytest.raises(UsageError, match="nll-tolerance"):
        compare(score, score, nll_tolerance=float("nan"))  # NaN would pass every NLL row
    (tmp_path / "broken.json").write_text('{"schema_version": "1.0", "kind": "sco')
    with pytest.raises(UsageError, match="truncated"):
        compare(tmp_path / "broken.json", score)


def test_missing_score_document_in_a_sweep_is_not_comparable(sweep, tmp_path):
    new = copy_sweep(sweep, tmp_path / "new")
    cell_doc_path(new, "dense", 0.0, 1).unlink()
    comparison = compare(new, sweep)
    bad = [r for r in comparison.rows if r.status == NOT_COMPARABLE]
    assert [r.cell for r in bad] == ["dense s=0 seed=1"] and "not found" in bad[0].note
    assert not comparison.passed


def test_nll_rule_is_the_same_in_check_compare_and_the_plugin(sweep):
    base = load(cell_doc_path(sweep, "dense", 0.0, 0))
    worse = copy.deepcopy(base)
    worse["calibration"]["clean"]["nll"]["value"] += 0.05  # above the ECE tolerance, below the NLL one
    row = rows_by(compare(worse, base), "score")["NLL clean"]
    assert row.status == PASS and compare(worse, base).nll_tolerance == 0.1


def test_stale_cells_of_another_sweep_in_the_directory_are_ignored(sweep, tmp_path):
    new = copy_sweep(sweep, tmp_path / "new")
    (new / "results.json").unlink()  # the sweep was stopped: read cell by cell
    write_json(new / "sweep.json", {"spec": {}, "cells": [c["key"] for c in cells(sweep)]})
    dense = next(c for c in cells(sweep) if (c["recipe"], c["sparsity"], c["seed"]) == ("dense", 0.0, 0))
    stale_key = "0" * 16  # an earlier configuration's cell: same recipe, sparsity and seed
    shutil.copytree(new / "cells" / dense["key"], new / "cells" / stale_key)
    record = load(new / "cells" / stale_key / "cell.json")
    record |= {"key": stale_key, "result": record["result"].replace(dense["key"], stale_key)}
    write_json(new / "cells" / stale_key / "cell.json", record)
    comparison = compare(new, sweep)
    assert comparison.passed and len({r.cell for r in comparison.rows}) == len(cells(sweep))
    (new / "sweep.json").unlink()  # without the plan, two cells claim one (recipe, sparsity, seed): refused
    with pytest.raises(UsageError, match="two cells for dense s=0 seed=0"):
        compare(new, sweep)


def test_a_cell_without_per_sample_table_is_not_comparable_and_the_rest_is_compared(sweep, tmp_path):
    new = copy_sweep(sweep, tmp_path / "new")
    path = cell_doc_path(new, "dense", 0.0, 1)
    doc = load(path)
    del doc["per_sample"]
    write_json(path, doc)
    comparison = compare(new, sweep)
    bad = {r.cell for r in comparison.rows if r.status == NOT_COMPARABLE}
    assert bad == {"dense s=0 seed=1"} and not comparison.passed
    compared = [r for r in comparison.rows if r.status != NOT_COMPARABLE]
    assert compared and all(r.status == PASS for r in compared)
    assert comparison.verdict().startswith(f"FAIL: {len(compared)} comparisons, 0 failed, 1 cell not comparable")
