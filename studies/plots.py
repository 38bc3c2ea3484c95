"""Figures of a study's analysis: Figure 6 recreated, test-error EDFs and a forest plot.

Pure functions from tidy DataFrames to matplotlib `Figure`s, plus `save`, which writes each
figure as PDF (fonts embedded as TrueType: rcParams pdf.fonttype = 42, so journals and
arXiv accept them) and PNG. Figures are built with the object-oriented API on an Agg canvas,
never through pyplot: no global backend or figure registry, so plotting works headless and
in parallel processes.

- `fig6_curves`: He et al. 2015 (arXiv:1512.03385), Figure 6: error (%) against iterations,
  training error dashed and test error bold, plain nets beside ResNets, one line per depth;
  here the line is the mean over seeds and the band the min-max over seeds.
- `edf`: empirical distribution function of test error over seeds, one step line per variant
  (one panel per depth), the paper's number as a vertical line: every run shown, as rliable
  (Agarwal et al. 2021, NeurIPS) recommends over a bare mean.
- `forest`: each variant's difference from the baseline with its 95% interval (one panel per
  depth), a vertical line at no difference.

A figure with nothing to show still gets written, with a line of text saying why, so the
set of files an analysis writes does not depend on the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

# pdf.fonttype 42 embeds TrueType fonts (the default, 3, embeds Type 3 fonts that some
# publishers reject); the same for PostScript.
RC = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "font.size": 9,
    "axes.titlesize": 9,
    "figure.titlesize": 9,
}
PNG_DPI = 150
FORMATS = ("pdf", "png")
# The paper's Figure 6 shows plain nets on the left, ResNets on the right.
ARCH_ORDER = ("plain", "resnet")
ARCH_LABEL = {"plain": "plain", "resnet": "ResNet"}


def _new_figure(
    n_panels: int, *, panel_w: float = 3.6, panel_h: float = 2.8, ncols: int | None = None
) -> Figure:
    """A figure with n_panels axes (up to 4 a row unless ncols is given), extras hidden."""
    ncols = ncols or (min(n_panels, 4) if n_panels > 2 else max(n_panels, 1))
    nrows = max(1, math.ceil(n_panels / ncols))
    with mpl.rc_context(RC):
        fig = Figure(figsize=(panel_w * ncols, panel_h * nrows), layout="constrained")
        FigureCanvasAgg(fig)
        fig.subplots(nrows, ncols, squeeze=False)
    for ax in fig.axes[n_panels:]:
        ax.set_visible(False)
    return fig


def _empty(message: str) -> Figure:
    fig = _new_figure(1)
    ax = fig.axes[0]
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _depth_colors(depths: Sequence[int]) -> dict[int, tuple[float, ...]]:
    """The same colour for a depth in every panel (tab10, in depth order)."""
    cmap = mpl.colormaps["tab10"]
    return {d: cmap(i % 10) for i, d in enumerate(sorted(set(depths)))}


def _ordered(values: Sequence[str], order: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(values))
    first = [v for v in (order or []) if v in present]
    return first + sorted(v for v in present if v not in first)


# ------------------------------------------------------------------------------ Figure 6


def fig6_curves(
    curves: pd.DataFrame,
    *,
    order: Sequence[str] | None = None,
    paper: Mapping[int, float] | None = None,
    title: str = "",
) -> Figure:
    """Figure 6 of the paper: training (dashed) and test (bold) error against iterations.

    curves: long format, one row per (run, evaluation), columns variant, arch, depth, seed,
    iteration, train_error, test_error (percent). One panel per arch (plain left, ResNet
    right) when each arch has one variant, else one panel per variant; one colour per depth;
    line = mean over seeds at each iteration, band = min-max over seeds (test error only, so
    the dashed lines stay readable). paper: depth -> the paper's ResNet test error, drawn as a
    dotted horizontal line in ResNet panels.
    """
    need = {"variant", "arch", "depth", "seed", "iteration", "train_error", "test_error"}
    if curves.empty or not need <= set(curves.columns):
        return _empty("no finished runs with curves")
    variants = _ordered(curves["variant"].tolist(), order)
    arch_of = curves.groupby("variant", sort=False)["arch"].first().to_dict()
    archs = [a for a in ARCH_ORDER if a in set(arch_of.values())]
    archs += sorted(set(arch_of.values()) - set(archs))
    per_arch = {a: [v for v in variants if arch_of[v] == a] for a in archs}
    one_each = all(len(vs) == 1 for vs in per_arch.values())
    panels = [(a, v) for a in archs for v in per_arch[a]]
    colors = _depth_colors(curves["depth"].tolist())
    fig = _new_figure(len(panels))
    for ax, (arch, variant) in zip(fig.axes, panels):
        sub = curves[curves["variant"] == variant]
        label = ARCH_LABEL.get(arch, arch)
        for depth, g in sub.groupby("depth"):
            by_it = g.groupby("iteration")[["train_error", "test_error"]]
            mean, low, high = by_it.mean(), by_it.min(), by_it.max()
            it = mean.index.to_numpy()
            c = colors[int(depth)]
            n_seeds = g["seed"].nunique()
            ax.plot(it, mean["train_error"], "--", lw=0.9, color=c)
            ax.plot(it, mean["test_error"], "-", lw=2.0, color=c, label=f"{label}-{depth}")
            if n_seeds > 1:
                ax.fill_between(it, low["test_error"], high["test_error"], color=c, alpha=0.2)
            if paper and arch == "resnet" and int(depth) in paper:
                ax.axhline(paper[int(depth)], color=c, lw=0.8, ls=":")
        ax.set_title(label if one_each else f"{variant} ({label})")
        ax.set_xlabel("iterations")
        ax.set_ylabel("error (%)")
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        style = [
            Line2D([], [], color="k", ls="--", lw=0.9, label="train"),
            Line2D([], [], color="k", ls="-", lw=2.0, label="test"),
        ]
        if paper and arch == "resnet":
            style.append(Line2D([], [], color="k", ls=":", lw=0.8, label="paper (Table 6)"))
        ax.legend(handles=handles + style, fontsize=7, loc="upper right")
    n = curves.groupby(["variant", "depth"])["seed"].nunique()
    fig.suptitle(
        _title(
            title,
            "training error (dashed) and test error (bold), "
            f"mean over seeds (n = {_n_range(n)}), band: min-max",
        )
    )
    return fig


def _title(title: str, what: str) -> str:
    return f"{title}\n{what}" if title else what


def _n_range(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


# ------------------------------------------------------------------------------------ EDF


def edf(
    values: pd.DataFrame,
    *,
    order: Sequence[str] | None = None,
    paper: Mapping[int, float] | None = None,
    metric_label: str = "test error (%)",
    title: str = "",
) -> Figure:
    """Empirical distribution functions of test error, one panel per depth.

    values: one row per run, columns variant, depth, error (percent; NaN rows dropped).
    paper: depth -> the paper's number, a dashed vertical line.
    """
    if values.empty:
        return _empty("no finished runs")
    values = values[np.isfinite(values["error"].astype(float))]
    if values.empty:
        return _empty("no finite test errors")
    depths = sorted(values["depth"].unique())
    variants = _ordered(values["variant"].tolist(), order)
    cmap = mpl.colormaps["tab10" if len(variants) <= 10 else "tab20"]
    many = len(variants) > 6  # the legend goes beside the panel, which grows to hold it
    fig = _new_figure(
        len(depths),
        panel_w=5.2 if many else 3.6,
        panel_h=max(2.8, 0.2 * len(variants) + 0.8),
        ncols=min(len(depths), 2) if many else None,
    )
    for ax, depth in zip(fig.axes, depths):
        sub = values[values["depth"] == depth]
        for i, variant in enumerate(variants):
            x = sub.loc[sub["variant"] == variant, "error"].to_numpy(dtype=float)
            if x.size:
                ax.ecdf(x, color=cmap(i % cmap.N), label=f"{variant} (n = {x.size})")
        if paper and int(depth) in paper:
            ax.axvline(paper[int(depth)], color="0.3", ls="--", lw=1, label="paper (Table 6)")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel(metric_label)
        ax.set_ylabel("fraction of runs")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if many:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        else:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(_title(title, f"empirical distribution of {metric_label}"))
    return fig


# --------------------------------------------------------------------------------- forest


def forest(
    comparisons: pd.DataFrame,
    *,
    order: Sequence[str] | None = None,
    baseline: str = "baseline",
    metric_label: str = "test error",
    title: str = "",
) -> Figure:
    """Each variant's difference from the baseline with its 95% interval, one panel per depth.

    comparisons: one row per (variant, depth) compared, columns variant, depth, diff,
    ci_low, ci_high (points; variant minus baseline), and optionally n and p_holm for the
    labels. A difference whose interval is not computable (n < 2) is drawn as a hollow point.
    """
    need = {"variant", "depth", "diff", "ci_low", "ci_high"}
    if comparisons.empty or not need <= set(comparisons.columns):
        return _empty(f"no comparisons with the baseline {baseline!r}")
    comparisons = comparisons[np.isfinite(comparisons["diff"].astype(float))]
    if comparisons.empty:
        return _empty(f"no computable difference from the baseline {baseline!r}")
    depths = sorted(comparisons["depth"].unique())
    n_rows = comparisons.groupby("depth").size().max()
    # Depths stacked: each panel's labels are the variants, read down the page.
    fig = _new_figure(len(depths), panel_w=5.0, panel_h=1.2 + 0.3 * n_rows, ncols=1)
    for ax, depth in zip(fig.axes, depths):
        _forest_panel(ax, comparisons[comparisons["depth"] == depth], order)
        ax.set_title(f"depth {depth}")
        ax.set_xlabel(f"{metric_label}: variant - {baseline} (points)")
    fig.suptitle(_title(title, "difference from the baseline, 95% CI"))
    return fig


def _forest_panel(ax: Axes, rows: pd.DataFrame, order: Sequence[str] | None) -> None:
    variants = _ordered(rows["variant"].tolist(), order)
    rows = rows.set_index("variant").loc[variants]
    y = np.arange(len(variants))[::-1]
    diff = rows["diff"].to_numpy(dtype=float)
    low = rows["ci_low"].to_numpy(dtype=float)
    high = rows["ci_high"].to_numpy(dtype=float)
    has_ci = np.isfinite(low) & np.isfinite(high)
    err = np.vstack([np.where(has_ci, diff - low, 0.0), np.where(has_ci, high - diff, 0.0)])
    ax.errorbar(diff[has_ci], y[has_ci], xerr=err[:, has_ci], fmt="o", color="C0", capsize=3)
    ax.plot(diff[~has_ci], y[~has_ci], "o", mfc="none", color="C0")
    ax.axvline(0.0, color="0.3", lw=1, ls="--")
    labels = []
    for v in variants:
        r = rows.loc[v]
        extra = []
        if "n" in rows.columns and np.isfinite(r["n"]):
            extra.append(f"n={int(r['n'])}")
        if "p_holm" in rows.columns and np.isfinite(r["p_holm"]):
            extra.append(f"p_Holm={r['p_holm']:.2g}")
        labels.append(f"{v}" + (f" ({', '.join(extra)})" if extra else ""))
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.7, len(variants) - 0.3)
    ax.grid(axis="x", alpha=0.3)


# ------------------------------------------------------------------------------- writing


def save(fig: Figure, stem: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write `fig` as stem.pdf and stem.png (TrueType fonts in the PDF); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with mpl.rc_context(RC):
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            # bbox "tight" grows the canvas to hold a long title or tick label.
            fig.savefig(path, dpi=PNG_DPI if fmt == "png" else None, bbox_inches="tight")
            paths.append(path)
    return paths


def plot_all(
    directory: str | Path,
    *,
    curves: pd.DataFrame,
    values: pd.DataFrame,
    comparisons: pd.DataFrame,
    order: Sequence[str] | None = None,
    baseline: str = "baseline",
    paper: Mapping[int, float] | None = None,
    metric_label: str = "test error (%)",
    title: str = "",
) -> dict[str, list[Path]]:
    """The three figures of an analysis under `directory`: fig6_curves, edf, forest
    (each .pdf and .png). Returns name -> paths."""
    directory = Path(directory)
    figures = {
        "fig6_curves": fig6_curves(curves, order=order, paper=paper, title=title),
        "edf": edf(values, order=order, paper=paper, metric_label=metric_label, title=title),
        "forest": forest(
            comparisons,
            order=order,
            baseline=baseline,
            metric_label=metric_label.replace(" (%)", ""),
            title=title,
        ),
    }
    return {name: save(fig, directory / name) for name, fig in figures.items()}
