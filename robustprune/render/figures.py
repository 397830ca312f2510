"""Report figures as PNG (or SVG) bytes: reliability diagrams (clean vs adversarial) and accuracy after each attack.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot: rendering works headless,
leaves the caller's backend alone and registers nothing global that could leak. Style is reset to matplotlib's
defaults, and PNG/SVG metadata (software, date) and SVG ids are pinned, so the same document gives the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import matplotlib
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robustprune.atomic import write_bytes
from robustprune.metrics.accuracy import wilson_pct
from robustprune.render.tables import attack_series, reliability_bins, threat_text
from robustprune.scoring.result import ReliabilityBin, ScoreResult

Format = Literal["png", "svg"]
DPI = 150
# parse_math off: architecture names and attack labels are user text, and a stray "$" must not become mathtext.
_RC = {
    "svg.hashsalt": "robustprune",
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.titlesize": 10,
    "text.parse_math": False,
}
_METADATA = {"png": {"Software": None}, "svg": {"Creator": None, "Date": None}}
ACC_COLOR, GAP_COLOR, COUNT_COLOR, CLEAN_COLOR = "#1f77b4", "#d62728", "#7f7f7f", "#2ca02c"


def render_figure(draw: Any, size: tuple[float, float], fmt: Format) -> bytes:
    """Draw on a fresh Figure under a pinned style and return its encoded bytes."""
    if fmt not in _METADATA:
        raise ValueError(f"unknown figure format {fmt!r}; use png or svg")
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        try:
            draw(fig)
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
        finally:
            fig.clear()
    return buffer.getvalue()


def _reliability_panel(ax: Any, ax_count: Any, bins: list[ReliabilityBin], title: str, ece: float | None) -> None:
    """Accuracy and gap bars of the NON-EMPTY bins only (an empty bin has no accuracy to draw), the diagonal, and
    below them each non-empty bin's count as a bar labelled with its number (rotated, so 15 bins never collide)."""
    full = [b for b in bins if b.count and b.accuracy is not None and b.confidence is not None]
    lo = [b.lo for b in full]
    width = [b.hi - b.lo for b in full]
    acc = [b.accuracy for b in full]
    gap = [b.confidence - b.accuracy for b in full]
    ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1, label="perfect calibration")
    ax.bar(lo, acc, width=width, align="edge", color=ACC_COLOR, edgecolor="black", linewidth=0.5, label="accuracy")
    # The gap bar spans accuracy -> mean confidence: above the bar means over-confident, below under-confident.
    ax.bar(
        lo,
        gap,
        bottom=acc,
        width=width,
        align="edge",
        color=GAP_COLOR,
        alpha=0.35,
        edgecolor=GAP_COLOR,
        hatch="//",
        linewidth=0.5,
        label="gap to confidence",
    )
    n_bins = len(bins)
    shown = f"{len(full)} of {n_bins} bins non-empty"
    ece_text = f"ECE = {ece:.4f} (B = {n_bins})" if ece is not None else f"ECE n/a (B = {n_bins})"
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    ax.legend(loc="upper left", title=f"{ece_text}\n{shown}", fontsize=8, title_fontsize=8)
    counts = [b.count for b in full]
    bars = ax_count.bar(
        lo, counts, width=width, align="edge", color=COUNT_COLOR, edgecolor="black", linewidth=0.5, gid="bin_counts"
    )
    ax_count.bar_label(bars, labels=[str(c) for c in counts], rotation=90, padding=1.5, fontsize=6)
    # Headroom for the rotated labels above the tallest bar.
    ax_count.set(xlim=(0, 1), ylim=(0, 1.9 * max(counts, default=1)), xlabel="confidence", ylabel="count")


def reliability_figure(
    clean_bins: list[ReliabilityBin],
    adv_bins: list[ReliabilityBin],
    *,
    clean_ece: float | None = None,
    adv_ece: float | None = None,
    title: str | None = None,
    fmt: Format = "png",
) -> bytes:
    """Reliability diagrams side by side (clean | adversarial): accuracy per non-empty bin, gap, diagonal, counts
    below; `title` (what was measured: model, n, seed, battery) goes above both."""

    def draw(fig: Figure) -> None:
        axes = fig.subplots(2, 2, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
        _reliability_panel(axes[0][0], axes[1][0], clean_bins, "clean", clean_ece)
        _reliability_panel(axes[0][1], axes[1][1], adv_bins, "adversarial (worst case)", adv_ece)
        if title:
            fig.suptitle(title)

    return render_figure(draw, (9.0, 5.4 if title else 5.0), fmt)


def measured_text(result: ScoreResult) -> str:
    """What a score figure was measured on: examples, seed and battery."""
    return f"n = {result.n_examples}, seed {result.provenance.seed}, battery {result.battery}"


def attack_curve_figure(result: ScoreResult | dict[str, Any], fmt: Format = "png") -> bytes:
    """Accuracy after each attack (cumulative, with CI) as bars, clean accuracy as a dashed line."""
    result = ScoreResult.coerce(result)
    series = attack_series(result)

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        xs = list(range(len(series)))
        accs = [v if v is not None else 0.0 for _, v, _ in series]
        errs = (
            [
                [max(v - ci[0], 0.0) for (_, _, ci), v in zip(series, accs)],
                [max(ci[1] - v, 0.0) for (_, _, ci), v in zip(series, accs)],
            ]
            if all(ci for _, _, ci in series)
            else None
        )
        colors = [CLEAN_COLOR] + [ACC_COLOR] * (len(series) - 1)
        ax.bar(
            xs, accs, width=0.6, color=colors, edgecolor="black", linewidth=0.5, yerr=errs, capsize=4, ecolor="black"
        )
        ax.axhline(accs[0], linestyle="--", color=CLEAN_COLOR, linewidth=1, label=f"clean {accs[0]:.2f} %")
        for x, v in zip(xs, accs):
            # Inside the bar, clear of the CI whiskers; above it when the bar is too short to hold text.
            inside = v >= 12
            ax.text(
                x,
                v / 2 if inside else v + 1,
                f"{v:.1f}",
                ha="center",
                va="center" if inside else "bottom",
                fontsize=8,
                color="white" if inside else "black",
                fontweight="bold",
            )
        ax.set_xticks(xs, [label for label, _, _ in series], rotation=30 if len(series) > 6 else 0)
        ax.set(
            ylim=(0, 105),
            ylabel="accuracy (%)",
            xlabel="after attack (cumulative)",
            title=f"{result.architecture} on {result.dataset}: {threat_text(result)}\n{measured_text(result)}",
        )
        ax.legend(loc="upper right", fontsize=8)

    return render_figure(draw, (max(5.0, 1.0 + 0.9 * len(series)), 3.6), fmt)


def eps_curve_figure(result: ScoreResult | dict[str, Any], fmt: Format = "png") -> bytes:
    """Robust accuracy vs eps (upper bounds) with its hatched 95 % Wilson band, the battery's eps dotted and the
    battery's own robust accuracy marked there."""
    result = ScoreResult.coerce(result)
    curve = result.eps_curve
    assert curve is not None
    n = curve.n_examples

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        bands = [wilson_pct(a, n) or (a, a) for a in curve.robust_acc]
        ax.fill_between(
            curve.grid,
            [lo for lo, _ in bands],
            [hi for _, hi in bands],
            facecolor="none",
            edgecolor=ACC_COLOR,
            hatch="////",
            linewidth=0.0,
            alpha=0.45,
            label=f"95 % Wilson interval (n = {n})",
        )
        ax.plot(curve.grid, curve.robust_acc, color=ACC_COLOR, marker=".", label=f"upper bound from {curve.attack}")
        if curve.certified_acc:  # the truth lies between the two curves
            ax.plot(curve.grid, curve.certified_acc, color=ACC_COLOR, linestyle="--", label="lower bound (CROWN)")
            ax.fill_between(curve.grid, curve.certified_acc, curve.robust_acc, color=ACC_COLOR, alpha=0.12, linewidth=0)
        ax.axvline(result.eps, color=COUNT_COLOR, linestyle=":", linewidth=1.0)
        ax.plot(
            [result.eps],
            [result.robust_acc],
            linestyle="none",
            marker="D",
            color=GAP_COLOR,
            label=f"battery {result.battery}: {result.robust_acc:.1f} % (the headline)",
        )
        ax.set(
            ylim=(-2, 102),
            xlim=(min(curve.grid), max(curve.grid)),
            xlabel=f"eps ({curve.norm})",
            ylabel="robust accuracy (%)",
            title=f"{result.architecture} on {result.dataset}: robust accuracy vs eps\n{measured_text(result)}",
        )
        if curve.caveat:
            ax.text(
                0.5,
                0.02,
                f"CAUTION: evaluation {result.verdict}",
                transform=ax.transAxes,
                ha="center",
                color=GAP_COLOR,
                fontweight="bold",
            )
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.legend(loc="upper right", fontsize=8)

    return render_figure(draw, (6.0, 3.8), fmt)


def document_figures(result: ScoreResult | dict[str, Any], fmt: Format = "png") -> dict[str, bytes]:
    """Every figure of a report, keyed by file stem."""
    result = ScoreResult.coerce(result)
    extra = {"eps_curve": eps_curve_figure(result, fmt=fmt)} if result.eps_curve is not None else {}
    return extra | {
        "reliability": reliability_figure(
            reliability_bins(result, "clean"),
            reliability_bins(result, "adversarial"),
            clean_ece=result.calibration.clean.ece.value,
            adv_ece=result.calibration.adversarial.ece.value,
            title=f"{result.architecture} on {result.dataset}: {threat_text(result)}, {measured_text(result)}",
            fmt=fmt,
        ),
        "attacks": attack_curve_figure(result, fmt=fmt),
    }


def save_figures(
    result: ScoreResult | dict[str, Any], out_dir: str | Path, formats: tuple[Format, ...] = ("png", "svg")
) -> list[Path]:
    """Write <stem>.<fmt> for every figure and format, atomically; returns the paths written."""
    result = ScoreResult.coerce(result)
    paths = []
    for fmt in formats:
        for stem, data in document_figures(result, fmt).items():
            paths.append(write_bytes(Path(out_dir) / f"{stem}.{fmt}", data))
    return paths
