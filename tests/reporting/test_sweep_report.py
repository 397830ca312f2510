"""The sweep report: files, self-contained HTML, figures, fixed recipe styles, determinism, paired comparisons."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from sweep_factory import make_sweep

from robustprune.atomic import write_json
from robustprune.jsonio import dumps_json
from robustprune.metrics.paired import mcnemar_test
from robustprune.metrics.seeds import mean_band
from robustprune.reporting import styles, sweep_figures, sweep_tables
from robustprune.reporting import sweep_report as sr
from robustprune.reporting.view import ACC_BOUNDS, make_view
from robustprune.results import CellRecord
from robustprune.results.store import StoredCell, StoredSweep
from robustprune.scoring import ScoreResult
from robustprune.scoring.audit import clopper_pearson
from robustprune.scoring.per_sample import WORST


def correct_vectors(doc: dict[str, Any]) -> dict[str, Any]:
    return ScoreResult.from_json(doc).correct_vectors()


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    make_sweep(root)
    return root


@pytest.fixture(scope="module")
def built(sweep: Path) -> dict[str, str]:
    return sr.build_sweep_report(sweep)


def records(root: Path) -> list[dict[str, Any]]:
    return json.loads((root / "results.json").read_text())["cells"]


def key_of(root: Path, recipe: str, sparsity: float, seed: int) -> str:
    return next(r["key"] for r in records(root) if (r["recipe"], r["sparsity"], r["seed"]) == (recipe, sparsity, seed))


def stored_copy(src: Path, dst: Path) -> Path:
    """Only the stored inputs of a report (no report outputs), at another path."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report.*", "comparisons.json", "figures"))
    return dst


# ---------------------------------------------------------------- files


def test_report_files_are_written(sweep, built):
    for name in ("markdown", "html", "comparisons"):
        assert Path(built[name]).is_file() and Path(built[name]).parent == sweep
    # the bracket: these digits models are certified by default (--certify auto: CROWN)
    stems = {"robust_worst", "robust_after_fgsm", "robust_after_pgd", "calibration", "bracket"}
    stems |= {
        f"reliability_{r}_{key_of(sweep, r, s, 0)}"
        for r, s in (("dense", 0.0), ("magnitude", 0.9), ("pgd_at", 0.0), ("pgd_at_agp", 0.5))
    }
    written = {p.name for p in (sweep / "figures").iterdir()}
    assert written == {f"{stem}.{fmt}" for stem in stems for fmt in ("png", "svg")}
    for stem in stems:
        assert (sweep / "figures" / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)
        svg = (sweep / "figures" / f"{stem}.svg").read_text()
        assert svg.startswith("<?xml") and "<svg" in svg
    assert (sweep / "results.json").read_text() == dumps_json(json.loads((sweep / "results.json").read_text()))


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data") and value is not None:
                self.refs.append((tag, name, value))
        if tag in ("link", "script", "iframe", "object"):
            self.refs.append((tag, "tag", ""))


def test_html_is_self_contained_and_embeds_every_figure(sweep, built):
    html = (sweep / "report.html").read_text()
    parser = _Resources()
    parser.feed(html)
    assert parser.refs, "the report should embed its figures"
    assert all(
        tag == "img" and name == "src" and value.startswith("data:image/png;base64,")
        for tag, name, value in parser.refs
    ), parser.refs
    assert "url(" not in html and "@import" not in html
    embedded = {base64.b64decode(value.split(",", 1)[1]) for _, _, value in parser.refs}
    assert embedded == {p.read_bytes() for p in (sweep / "figures").glob("*.png")}


def test_markdown_holds_every_cell_and_the_cost(sweep, built):
    md = (sweep / "report.md").read_text()
    assert "TARGET sparsity" in md
    for record in records(sweep):
        row = next(
            line
            for line in md.splitlines()
            if f"| {record['key']} |" in line and "ECE" not in line and re.search(r"\|\s+[\d.]+ %", line)
        )
        assert f"{record['robust_acc']:.2f}" in row and f"{record['clean_acc']:.2f}" in row
        assert f"{record['ece_adv']:.4f}" in row and f"{record['nll_clean']:.4f}" in row
        cost = next(line for line in md.split("## Cost")[1].splitlines() if f"| {record['key']} |" in line)
        assert f"{record['train_seconds']:.3f}" in cost and f"{record['n_forward']:,}" in cost
    for stem in ("robust_worst", "robust_after_fgsm", "calibration"):
        assert f"](figures/{stem}.png)" in md


# ---------------------------------------------------------------- comparisons


def test_mcnemar_comparisons_against_parent_and_dense_baseline(sweep, built):
    comparisons = json.loads((sweep / "comparisons.json").read_text())["comparisons"]
    by = {(c["cell"], c["against"]): c for c in comparisons}
    docs = {r["key"]: json.loads((sweep / r["result"]).read_text()) for r in records(sweep)}
    dense0, at0 = key_of(sweep, "dense", 0.0, 0), key_of(sweep, "pgd_at", 0.0, 0)
    pruned = key_of(sweep, "magnitude", 0.9, 0)
    entry = by[(pruned, "parent = dense baseline")]
    expected = mcnemar_test(correct_vectors(docs[dense0])[WORST], correct_vectors(docs[pruned])[WORST])
    assert entry["reference"] == dense0 and entry["status"] == "ok"
    assert entry["robust"]["p_value"] == pytest.approx(expected["p_value"]) and entry["robust"]["p_value"] < 0.05
    assert entry["robust"]["delta_pp"] == pytest.approx(expected["delta_pct"]) and expected["delta_pct"] < 0
    assert entry["robust"]["lost"] == expected["a_only"] and entry["robust"]["gained"] == expected["b_only"]
    agp = key_of(sweep, "pgd_at_agp", 0.5, 0)
    assert by[(agp, "parent")]["reference"] == at0  # a parent that is not the dense baseline: both rows
    assert by[(agp, "dense baseline")]["reference"] == dense0
    assert by[(at0, "dense baseline")]["reference"] == dense0  # trained from scratch: the dense baseline only
    assert not any(c["cell"] == dense0 for c in comparisons)  # the baseline is not compared with itself
    md = (sweep / "report.md").read_text()
    assert "McNemar p" in md and md.count("parent = dense baseline") == 4


def test_different_data_is_marked_not_comparable(sweep, tmp_path):
    copy = stored_copy(sweep, tmp_path / "copy")
    doc = json.loads((copy / "results.json").read_text())
    target = key_of(copy, "magnitude", 0.5, 1)
    for cell in doc["cells"]:
        if cell["key"] == target:
            cell["config"]["data_fingerprint"] = "f" * 64
    write_json(copy / "results.json", doc)
    comparisons = [c.to_json() for c in sr.prepare_report(copy).comparisons]
    entry = next(c for c in comparisons if c["cell"] == target)
    assert entry["status"].startswith("not comparable") and "data fingerprint differs" in entry["status"]
    assert "robust" not in entry
    others = [c for c in comparisons if c["cell"] != target]
    assert others and all(c["status"] == "ok" for c in others)


def _edit_battery(root: Path, key: str, edit) -> None:
    record = next(r for r in records(root) if r["key"] == key)
    path = root / record["result"]
    doc = json.loads(path.read_text())
    edit(doc["provenance"]["battery"]["attacks"])
    write_json(path, doc)


def test_an_added_adaptive_attack_is_compared_on_the_worst_case_a_missing_attack_is_not(sweep, tmp_path):
    copy = stored_copy(sweep, tmp_path / "copy")
    extended, reduced = key_of(copy, "magnitude", 0.5, 1), key_of(copy, "magnitude", 0.9, 1)
    _edit_battery(copy, extended, lambda attacks: attacks.append({"name": "all_heads_pgd", "label": "adaptive"}))
    _edit_battery(copy, reduced, lambda attacks: attacks.pop())
    comparisons = [c.to_json() for c in sr.prepare_report(copy).comparisons]
    entry = next(c for c in comparisons if c["cell"] == extended)
    assert entry["status"] == "ok; worst case over the reference's attacks plus adaptive" and "robust" in entry
    entry = next(c for c in comparisons if c["cell"] == reduced)
    assert entry["status"].startswith("not comparable") and "battery differs" in entry["status"]
    assert "robust" not in entry


# ---------------------------------------------------------------- verdicts


def test_the_verdict_panel_comes_first_with_every_check(sweep, built):
    md = (sweep / "report.md").read_text()
    assert md.index("## Evaluation verdict") < md.index("## Robust accuracy vs sparsity")
    heading = next(line for line in md.splitlines() if line.startswith("## Evaluation verdict"))
    n = len(records(sweep))
    assert heading.startswith(f"## Evaluation verdict: {n} trusted, 0 caution, 0 untrusted")
    panel = sr.prepare_report(sweep).tables()["verdicts"]
    assert len(panel.rows) == n and {"S1", "S6", "S13", "S20", "S21", "S22"} <= set(panel.headers)
    assert all(row[panel.headers.index("verdict")] == "trusted" for row in panel.rows)
    cells = sr.prepare_report(sweep).tables()["cells"]
    assert "verdict" in cells.headers
    assert 'id="verdict"' in (sweep / "report.html").read_text()


def test_a_cell_that_is_not_trusted_is_flagged_in_the_panel_tables_and_figures(sweep, tmp_path, monkeypatch):
    copy = stored_copy(sweep, tmp_path / "copy")
    doc = json.loads((copy / "results.json").read_text())
    target = key_of(copy, "magnitude", 0.9, 1)
    for cell in doc["cells"]:
        if cell["key"] == target:
            cell["verdict"] = "untrusted"
            cell["verdict_reasons"] = ["S13 an unbounded attack reaches chance: 90 % survive"]
            cell["checks"]["S13"] = "fail"
    write_json(copy / "results.json", doc)
    report = sr.prepare_report(copy)
    md = sr.render_sweep_markdown(report)
    assert "1 untrusted" in md.split("\n## Evaluation verdict: ")[1].split("\n")[0]
    assert "**magnitude s=0.9 seed=1: UNTRUSTED**: S13 an unbounded attack reaches chance" in md
    panel = report.tables()["verdicts"]
    row = next(r for r in panel.rows if r[:3] == ("magnitude", "0.9", "1"))
    assert row[panel.headers.index("verdict")] == "UNTRUSTED" and row[panel.headers.index("S13")] == "FAIL"
    means = report.tables()["means"]
    flagged = [r for r in means.rows if r[0] == "magnitude" and r[1] == "0.9"]
    assert flagged[0][-1] == "UNTRUSTED"
    rings = []
    original = sweep_figures._verdict_rings
    monkeypatch.setattr(sweep_figures, "_verdict_rings", lambda *a: rings.append(original(*a)) or rings[-1])
    sweep_figures.accuracy_figure(report.view, None, "svg")
    assert rings == [["untrusted"]]


def test_audits_are_shown_per_cell_and_pooled(sweep, tmp_path):
    copy = stored_copy(sweep, tmp_path / "copy")
    doc = json.loads((copy / "results.json").read_text())
    for i, cell in enumerate(doc["cells"]):
        cell["audit_n_audited"], cell["audit_n_broken"] = 4, 1 if i == 0 else 0
    write_json(copy / "results.json", doc)
    report = sr.prepare_report(copy)
    panel = report.tables()["verdicts"]
    column = [row[panel.headers.index("audit")] for row in panel.rows]
    assert column.count("1/4 BROKE") == 1 and column.count("0/4") == len(column) - 1
    n = len(doc["cells"])
    high = clopper_pearson(1, 4 * n)[1]
    pooled = f"the reference attack broke 1 of {4 * n} audited survivors"
    md = sr.render_sweep_markdown(report)
    assert pooled in md and f"at most {high:.1%} of survivors" in md
    sr.build_sweep_report(copy)
    assert pooled in (copy / "report.html").read_text()


# ---------------------------------------------------------------- determinism


def test_rebuild_gives_byte_identical_tables(sweep, built, tmp_path):
    first_md = (sweep / "report.md").read_bytes()
    first_json = (sweep / "comparisons.json").read_bytes()
    # From the same stored files at another path (no figure drawing needed for the tables).
    copy = stored_copy(sweep, tmp_path / "copy")
    report = sr.prepare_report(copy)
    assert sr.render_sweep_markdown(report).encode() == first_md
    assert (
        dumps_json(
            {
                "schema_version": "1.0",
                "kind": "sweep_comparisons",
                "test": "mcnemar-exact (two-sided)",
                "comparisons": [c.to_json() for c in report.comparisons],
            }
        ).encode()
        == first_json
    )
    # A full rebuild in place: same Markdown, same comparisons, same figure bytes.
    figures = {p.name: p.read_bytes() for p in (sweep / "figures").iterdir()}
    sr.build_sweep_report(sweep)
    assert (sweep / "report.md").read_bytes() == first_md
    assert (sweep / "comparisons.json").read_bytes() == first_json
    assert {p.name: p.read_bytes() for p in (sweep / "figures").iterdir()} == figures


def test_partial_sweep_is_reported_from_its_cells(sweep, tmp_path):
    copy = stored_copy(sweep, tmp_path / "copy")
    (copy / "results.json").unlink()
    md = sr.render_sweep_markdown(sr.prepare_report(copy))
    assert "partial" in md
    assert all(r["key"] in md for r in records(sweep))


# ---------------------------------------------------------------- styles and curves


def _capture(monkeypatch) -> list[Figure]:
    figures: list[Figure] = []

    def fake_render(draw, size, fmt):
        fig = Figure(figsize=size)
        draw(fig)
        figures.append(fig)
        return b""

    monkeypatch.setattr(sweep_figures, "render_figure", fake_render)
    return figures


def _styles(fig: Figure) -> set[tuple[str, str]]:
    return {
        (to_hex(line.get_color()), str(line.get_marker()))
        for ax in fig.axes
        for line in ax.lines
        if line.get_marker() not in (None, "None", "none", "")
    }


def test_recipe_colors_do_not_depend_on_order(sweep, tmp_path, monkeypatch):
    copy = stored_copy(sweep, tmp_path / "copy")
    doc = json.loads((copy / "results.json").read_text())
    for cell in doc["cells"]:  # one recipe the fixed table does not know
        if cell["recipe"] == "pgd_at_agp":
            cell["recipe"] = "my_new_recipe"
    doc["spec"]["recipes"] = list(reversed(doc["spec"]["recipes"]))
    write_json(copy / "results.json", doc)
    figures = _capture(monkeypatch)
    sweep_figures.accuracy_figure(sr.prepare_report(sweep).view, None, "png")
    sweep_figures.accuracy_figure(sr.prepare_report(copy).view, None, "png")
    forward, backward = (_styles(f) for f in figures)
    for recipe in ("dense", "magnitude", "pgd_at"):
        color, marker = styles.recipe_style(recipe)
        assert color == styles.RECIPE_STYLES[recipe][0]
        assert (color, marker) in forward and (color, marker) in backward
    new = styles.recipe_style("my_new_recipe")
    assert new in backward and new not in forward
    assert new[0] not in {c for c, _ in styles.RECIPE_STYLES.values()}
    colors = [c for c, _ in styles.RECIPE_STYLES.values()]
    assert len(set(colors)) == len(colors) == 13  # every known recipe has its own colour
    # a stable hash, not Python's salted hash(): another interpreter with another hash seed agrees
    code = "from robustprune.reporting.styles import recipe_style; print(recipe_style('my_new_recipe'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(new)


def test_curves_dense_reference_clean_dashed_and_bands(sweep, monkeypatch):
    figures = _capture(monkeypatch)
    view = sr.prepare_report(sweep).view
    sweep_figures.accuracy_figure(view, None, "png")
    ax = figures[0].axes[0]
    at_color = styles.recipe_style("pgd_at")[0]
    at_robust = next(r["robust_acc"] for r in records(sweep) if r["recipe"] == "pgd_at")
    # pgd_at has only a dense cell: a horizontal reference line spanning the axes at its robust accuracy
    hlines = [line for line in ax.lines if to_hex(line.get_color()) == at_color and list(line.get_xdata()) == [0, 1]]
    assert any(list(line.get_ydata()) == [at_robust, at_robust] and line.get_linestyle() == "-" for line in hlines)
    assert any(line.get_linestyle() == "--" for line in hlines)  # its clean accuracy, dashed
    # magnitude: solid robust line and dashed clean line in the same colour through its target sparsities (in %)
    mag_color = styles.recipe_style("magnitude")[0]
    mag = [line for line in ax.lines if to_hex(line.get_color()) == mag_color and len(line.get_xdata()) == 2]
    assert {line.get_linestyle() for line in mag} >= {"-", "--"}
    assert all(list(line.get_xdata()) == [50.0, 90.0] for line in mag if line.get_linestyle() in ("-", "--"))
    # two seeds give a band (fill_between) for magnitude; pgd_at_agp (one seed) gets Wilson error bars instead
    bands = {
        c.get_gid(): to_hex(c.get_facecolor()[0][:3]) for c in ax.collections if c.get_gid() and "band" in c.get_gid()
    }
    assert bands.get("t_band_magnitude") == mag_color and "t_band_pgd_at_agp" not in bands
    bars = {c.get_gid(): c for c in ax.collections if c.get_gid() and c.get_gid().startswith("wilson_bars_")}
    assert set(bars) == {"wilson_bars_pgd_at", "wilson_bars_pgd_at_agp"}
    assert to_hex(bars["wilson_bars_pgd_at_agp"].get_color()[0][:3]) == styles.recipe_style("pgd_at_agp")[0]


def test_mean_band_is_t_based_clipped_and_absent_for_one_seed():
    from scipy import stats

    assert mean_band([42.0]) == (42.0, None, None)
    mean, lo, hi = mean_band([60.0, 62.0, 64.0])
    half = stats.t.ppf(0.975, 2) * 2.0 / 3**0.5
    assert mean == 62.0 and lo == pytest.approx(62.0 - half) and hi == pytest.approx(62.0 + half)
    assert mean_band([95.0, 100.0], bounds=ACC_BOUNDS)[2] == 100.0
    assert mean_band([0.0, 5.0], bounds=ACC_BOUNDS)[1] == 0.0


def test_reliability_cells_default_and_explicit(sweep):
    view = sr.prepare_report(sweep).view
    chosen = {(c.recipe, c.sparsity, c.seed) for c in sweep_figures.reliability_cells(view)}
    assert chosen == {("dense", 0.0, 0), ("magnitude", 0.9, 0), ("pgd_at", 0.0, 0), ("pgd_at_agp", 0.5, 0)}
    key = key_of(sweep, "magnitude", 0.5, 1)
    assert [c.key for c in sweep_figures.reliability_cells(view, [key])] == [key]
    from robustprune.errors import UsageError

    with pytest.raises(UsageError, match="no cell"):
        sweep_figures.reliability_cells(view, ["nope"])


def battery_dict(name: str, labels: list[tuple[str, list[str]]], norm: str = "Linf", eps: float = 0.1) -> dict:
    attacks = [{"name": label, "label": label, "norms": norms, "params": {}} for label, norms in labels]
    return {"name": name, "threat": {"norm": norm, "eps": eps}, "attacks": attacks}


def record(key: str, recipe: str, battery: dict, attacks: dict[str, float]) -> CellRecord:
    return CellRecord.from_json(
        {"key": key, "recipe": recipe, "sparsity": 0.0, "seed": 0, "parent_key": None, "config": {"battery": battery}}
        | {"attacks": attacks}
    )


def test_a_randomized_cells_adaptive_attack_comes_first_in_the_columns():
    battery = battery_dict("standard", [("apgd-ce", []), ("square", [])])

    def cell(recipe: str, attacks: list[str]) -> StoredCell:
        return StoredCell(record(recipe, recipe, battery, dict.fromkeys(sorted(attacks), 50.0)))

    stored = StoredSweep(
        Path("."),
        None,
        [cell("dense", ["apgd-ce", "square"]), cell("dio_at", ["all_heads_pgd", "apgd-ce", "square"])],
        True,
    )
    view = make_view(stored)
    assert view.labels == ["all_heads_pgd", "apgd-ce", "square"]  # the order scoring runs them in
    assert dict(sweep_tables.summary_rows(view))["battery"] == (
        "standard: apgd-ce, square (randomized cells: all_heads_pgd first, adaptive)"
    )


def test_the_battery_summary_lists_only_the_attacks_for_the_threat_norm():
    battery = battery_dict("full", [("fgsm", ["Linf"]), ("pgd", [])], norm="L2", eps=0.5)
    view = make_view(StoredSweep(Path("."), None, [StoredCell(record("a", "dense", battery, {"pgd": 50.0}))], True))
    assert dict(sweep_tables.summary_rows(view))["battery"] == "full: pgd"


# ---------------------------------------------------------------- reconstructions


def test_a_cell_record_carries_the_reconstruction_mark(sweep):
    stored = records(sweep)[0]
    result = ScoreResult.from_json(json.loads((sweep / stored["result"]).read_text()))
    base = CellRecord.from_json(stored)
    fields = {
        "key": base.key,
        "recipe": "deadwooding",
        "sparsity": base.sparsity,
        "seed": base.seed,
        "parent_key": base.parent_key,
        "config": base.config,
        "result": result,
        "architecture": base.architecture,
        "train_seconds": base.train_seconds,
        "result_path": base.result,
    }
    marked = CellRecord.summarize(**fields, reconstruction=True)
    assert marked.to_json()["reconstruction"] is True
    assert CellRecord.from_json(json.loads(dumps_json(marked.to_json()))).reconstruction is True
    plain = CellRecord.summarize(**fields)
    assert "reconstruction" not in plain.to_json() and not plain.reconstruction  # existing records are unchanged
    assert "reconstruction" not in stored


def test_reconstruction_rows_are_marked_in_the_tables_and_explained(sweep, tmp_path):
    plain = sr.render_sweep_markdown(sr.prepare_report(sweep))
    assert "(reconstruction)" not in plain and "reconstructions" not in plain
    copy = stored_copy(sweep, tmp_path / "copy")
    doc = json.loads((copy / "results.json").read_text())
    for cell in doc["cells"]:
        if cell["recipe"] == "magnitude":  # stands in for a Deadwooding recipe
            cell["reconstruction"] = True
    write_json(copy / "results.json", doc)
    report = sr.prepare_report(copy)
    tables = report.tables()
    for name in ("cells", "means"):
        labels = {row[0] for row in tables[name].rows}
        assert "magnitude (reconstruction)" in labels and "magnitude" not in labels
        assert "dense" in labels and "dense (reconstruction)" not in labels
    summary = dict(sweep_tables.summary_rows(report.view))
    assert summary["reconstructions"].startswith("magnitude: rows marked (reconstruction)")
    assert "not the published algorithm" in summary["reconstructions"]
    md = sr.render_sweep_markdown(report)
    assert re.search(r"\|\s*magnitude \(reconstruction\)\s*\|\s*0\.9\s*\|", md)
    assert re.search(r"\|\s*reconstructions\s*\|\s*magnitude: rows marked \(reconstruction\)", md)
    sr.build_sweep_report(copy)
    html = (copy / "report.html").read_text()
    assert "<td>magnitude (reconstruction)</td>" in html and "<th>reconstructions</th>" in html
