"""Markdown, HTML and stdout reports of a real score result: content, determinism, self-containment, escaping."""

from __future__ import annotations

import base64
import copy
import json
import re
import sys
from html.parser import HTMLParser
from typing import Any

import pytest
import torch
from torch import nn

from robustprune.jsonio import dumps_json
from robustprune.render import render_html, render_markdown, summary_table
from robustprune.render.figures import attack_curve_figure, reliability_figure, save_figures
from robustprune.render.tables import attack_table
from robustprune.scoring import ScoreResult
from robustprune.scoring.result import ReliabilityBin

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHA = "ab" * 32
MALICIOUS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """A real result: a briefly trained MLP with half of its first layer pruned, 40 digits, the quick battery."""
    from robustprune.data import load_dataset
    from robustprune.scoring import score
    from robustprune.sparsity import apply_masks

    torch.manual_seed(0)
    train = load_dataset("digits", split="train")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    for _ in range(60):  # plain full-batch gradient descent: ~93 % test accuracy in well under a second
        model.zero_grad()
        nn.functional.cross_entropy(model(train.x), train.y).backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= 0.5 * param.grad
    weight = model[1].weight.detach()
    apply_masks(model, {"1": weight.abs() > weight.abs().median()})
    checkpoint = {
        "path": "runs/m.safetensors",
        "sha256": SHA,
        "format": "safetensors",
        "trusted": False,
        "folded_pruning": True,
        "manifest": {"recipe": "magnitude"},
        "size_bytes": 9000,
        "masked": ["1.weight"],
    }
    result = score(
        model.eval(),
        "digits",
        "quick",
        eps=0.05,
        n=40,
        batch_size=64,
        architecture="mlp-64-32",
        checkpoint=checkpoint,
        command=["robustprune", "score", "--n", "40"],
    )
    doc = result.document
    assert doc["clean_acc"] > 50 and doc["sparsity"]["sparsity"] > 0.3, "fixture model should be trained and pruned"
    return doc


@pytest.fixture(scope="module")
def markdown(document: dict[str, Any]) -> str:
    return render_markdown(document)


@pytest.fixture(scope="module")
def html(document: dict[str, Any]) -> str:
    return render_html(document)


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


# ---------------------------------------------------------------- markdown


def test_markdown_holds_the_key_numbers(document: dict[str, Any], markdown: str) -> None:
    lo, hi = document["clean_acc_ci"]
    assert "| clean accuracy | " in re.sub(r" +", " ", markdown)
    assert f"{document['clean_acc']:.2f} %" in markdown and f"[{lo:.2f}, {hi:.2f}]" in markdown
    assert f"{document['robust_acc']:.2f} %" in markdown
    assert f"{100 * document['sparsity']['sparsity']:.2f} %" in markdown
    for side in ("clean", "adversarial"):
        for metric in ("ece", "ece_equal_mass", "nll", "brier", "aurc"):
            assert f"{document['calibration'][side][metric]['value']:.4f}" in markdown
    assert "equal_mass, 15 bins" in markdown and "equal_width, 15 bins" in markdown
    assert SHA in markdown and "no (tensors only)" in markdown
    assert document["provenance"]["versions"]["torch"] in markdown
    assert "robustprune score --n 40" in markdown and "steps=40" in markdown


def test_markdown_attack_table_has_every_attack_with_its_cost(document: dict[str, Any], markdown: str) -> None:
    attacks = _section(markdown, "## Attacks", "## Calibration")
    for a in document["attacks"]:
        row = next(line for line in attacks.splitlines() if re.match(rf"\|\s+\d+ \| {a['label']}\s+\|", line))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[6] == f"{a['robust_acc']:.2f}"
        assert cells[10] == f"{a['n_forward']:,}" and cells[11] == f"{a['n_backward']:,}"
        assert cells[8] == f"{a['seconds']:.3f}"
    assert re.search(r"\|\s+\| worst case\s+\|", attacks)


def test_markdown_is_deterministic_and_depends_only_on_the_document(document: dict[str, Any], markdown: str) -> None:
    assert render_markdown(document) == markdown
    assert render_markdown(json.loads(dumps_json(document))) == markdown  # as read back from results.json
    other = copy.deepcopy(document)
    other["provenance"]["seed"] = 12345
    assert render_markdown(other) != markdown


def test_markdown_escapes_user_text(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    doc["architecture"] = MALICIOUS
    doc["warnings"] = [{"check": "S1", "message": "a | b\nc"}]
    text = render_markdown(doc)
    assert MALICIOUS not in text and "&lt;script&gt;" in text
    warnings = text.split("## Warnings")[1]
    row = next(line for line in warnings.splitlines() if line.startswith("| S1"))
    assert row.count("|") - row.count("\\|") == 3  # the pipe in the message did not add a column


# ---------------------------------------------------------------- HTML


class _Checker(HTMLParser):
    """Rough well-formedness: every non-void element is closed in order; collects img sources."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def test_html_is_well_formed_with_embedded_png_figures(html: str) -> None:
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.stack == []
    assert len(checker.images) == 2
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_html_is_self_contained(html: str) -> None:
    lowered = html.lower()
    for needle in (
        'src="http',
        'href="http',
        "src='http",
        'href="//',
        'src="//',
        '<link rel="stylesheet"',
        "<script",
        "@import",
        "url(",
    ):
        assert needle not in lowered, needle
    assert "<style>" in html


def test_html_has_every_section_and_attack(document: dict[str, Any], html: str) -> None:
    for anchor in ("headline", "attacks", "calibration", "sparsity", "warnings", "provenance"):
        assert f'<h2 id="{anchor}">' in html
    attacks = _section(html, '<h2 id="attacks">', '<h2 id="calibration">')
    for a in document["attacks"]:
        assert f"<td>{a['label']}</td>" in attacks
        assert f'<td class="num">{a["robust_acc"]:.2f}</td>' in attacks
    assert SHA in html and f"{document['clean_acc']:.2f} %" in html


def test_html_escapes_and_is_deterministic(document: dict[str, Any], html: str) -> None:
    doc = copy.deepcopy(document)
    doc["architecture"] = MALICIOUS
    doc["attacks"][0]["label"] = "$x<b>"  # "$" must not reach matplotlib's mathtext, "<b>" not the page
    text = render_html(doc)
    assert MALICIOUS not in text and "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "$x&lt;b&gt;" in text
    assert render_html(document) == html


# ---------------------------------------------------------------- stdout summary and figures


def test_summary_table_rows(document: dict[str, Any]) -> None:
    text = summary_table(document)
    lines = text.splitlines()
    clean = next(line for line in lines if line.startswith("clean "))
    worst = next(line for line in lines if line.startswith("worst case"))
    assert f"{document['clean_acc']:.2f}" in clean
    assert f"{document['robust_acc']:.2f}" in worst and f"{document['cost']['n_forward']:,}" in worst
    for a in document["attacks"]:
        assert any(line.startswith(a["label"] + " ") and f"{a['robust_acc']:.2f}" in line for line in lines)
    assert any(line.startswith("ECE ") for line in lines) and any(line.startswith("NLL ") for line in lines)
    assert f"warnings {len(document['warnings'])}" in text and "sparsity" in text
    # Fixed width: the accuracy column ends at the same offset on every row.
    header = next(line for line in lines if line.startswith("attack"))
    end = header.index("acc %") + len("acc %")
    assert all(line[end - 1].isdigit() for line in (clean, worst))


def test_reports_share_one_set_of_rows(document: dict[str, Any], markdown: str, html: str) -> None:
    table = attack_table(ScoreResult.from_json(document))
    ci = table.headers.index("CI")
    for row in table.rows:
        assert row[ci] in markdown and row[ci] in html and row[ci] in summary_table(document)


def test_figures_carry_no_metadata_and_svg_is_deterministic(document: dict[str, Any]) -> None:
    bins = [ReliabilityBin.from_json(b) for b in document["calibration"]["clean"]["reliability"]["bins"]]
    adv = [ReliabilityBin.from_json(b) for b in document["calibration"]["adversarial"]["reliability"]["bins"]]
    png = reliability_figure(bins, adv, clean_ece=0.1)  # byte-identical PNGs are covered by the HTML test
    assert png.startswith(PNG_MAGIC) and b"Software" not in png and b"matplotlib" not in png.lower()
    svg = attack_curve_figure(document, fmt="svg")
    assert b"<svg" in svg and b"<dc:date>" not in svg and attack_curve_figure(document, fmt="svg") == svg
    if "matplotlib.pyplot" in sys.modules:  # rendering must not register figures with pyplot
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_figures_handle_empty_inputs(document: dict[str, Any]) -> None:
    empty = [
        ReliabilityBin.from_json(
            {"lo": i / 4, "hi": (i + 1) / 4, "count": 0, "accuracy": None, "confidence": None, "gap": None}
        )
        for i in range(4)
    ]
    assert reliability_figure(empty, empty).startswith(PNG_MAGIC)
    doc = copy.deepcopy(document)
    doc["attacks"] = []
    assert attack_curve_figure(doc).startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="unknown figure format"):
        attack_curve_figure(doc, fmt="gif")  # type: ignore[arg-type]


def test_save_figures_writes_every_format(document: dict[str, Any], tmp_path: Any) -> None:
    paths = save_figures(document, tmp_path, formats=("png",))
    assert sorted(p.name for p in paths) == ["attacks.png", "reliability.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in paths)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- reliability diagram: what it shows


def _kept_figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Figures drawn through render_figure, on an Agg canvas under the report's style, kept for inspection."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from robustprune.render import figures

    kept: list[Any] = []

    def keep(draw: Any, size: tuple[float, float], fmt: str) -> bytes:
        with matplotlib.style.context("default"), matplotlib.rc_context(figures._RC):
            fig = Figure(figsize=size, dpi=figures.DPI, layout="constrained")
            FigureCanvasAgg(fig)
            draw(fig)
            fig.canvas.draw()
        kept.append(fig)
        return b""

    monkeypatch.setattr(figures, "render_figure", keep)
    return kept


def test_score_figures_state_n_seed_and_battery(document: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from robustprune.render.figures import document_figures

    kept = _kept_figures(monkeypatch)
    document_figures(document)
    reliability, attacks = kept
    measured = f"n = {document['n_examples']}, seed {document['provenance']['seed']}, battery {document['battery']}"
    assert measured in reliability._suptitle.get_text() and "mlp-64-32 on digits" in reliability._suptitle.get_text()
    assert measured in attacks.axes[0].get_title()


def _bins(counts: list[int]) -> list[ReliabilityBin]:
    width = 1 / len(counts)
    return [
        ReliabilityBin(
            lo=i * width,
            hi=(i + 1) * width,
            count=c,
            accuracy=(i + 0.3) * width if c else None,
            confidence=(i + 0.5) * width if c else None,
            gap=0.2 * width if c else None,
        )
        for i, c in enumerate(counts)
    ]


def test_reliability_hides_empty_bins_and_labels_counts(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _kept_figures(monkeypatch)
    counts = [0, 0, 3, 0, 17, 250, 0, 1, 0, 0, 4, 0, 0, 9000, 0]  # 15 bins, 9 of them empty
    reliability_figure(_bins(counts), _bins(counts))
    fig = kept[0]
    top, count_ax = fig.axes[0], fig.axes[2]
    full = [c for c in counts if c]
    # accuracy + gap bars for the non-empty bins only; count bars (and their labels) for the non-empty bins only
    assert len(top.patches) == 2 * len(full)
    assert sorted(round(p.get_x() * 15) for p in count_ax.patches) == [i for i, c in enumerate(counts) if c]
    assert [round(p.get_height()) for p in count_ax.patches] == full
    assert [t.get_text() for t in count_ax.texts] == [str(c) for c in full]
    assert f"{len(full)} of 15 bins non-empty" in top.get_legend().get_title().get_text()


def test_count_labels_never_overlap_at_15_bins(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = _kept_figures(monkeypatch)
    reliability_figure(_bins([88888] * 15), _bins([99999 - 1111 * i for i in range(15)]), title="n = 10000")
    fig = kept[0]
    renderer = fig.canvas.get_renderer()
    for count_ax in fig.axes[2:]:
        boxes = [t.get_window_extent(renderer) for t in count_ax.texts]
        assert len(boxes) == 15
        area = count_ax.get_window_extent(renderer)
        for i, a in enumerate(boxes):
            assert area.x0 <= a.x0 and a.x1 <= area.x1 and area.y0 <= a.y0 and a.y1 <= area.y1, "label leaves its panel"
            assert not any(a.overlaps(b) for b in boxes[i + 1 :]), "count labels overlap"
