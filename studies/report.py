"""A study's report: a W&B report online, a self-contained HTML file always.

`python -m studies.report STUDY [--out runs] [--offline] [--project resnet-repro] [--entity E]`

W&B (wandb-workspaces, `wandb_workspaces.reports.v2`): `build_report` assembles a Report
whose run sets select the study's runs (W&B group = study, job type = variant, as logged by
studies.tracking), one panel grid per depth: test- and training-error curves grouped by
variant (mean over seeds, min-max band), a bar plot of the final test error by variant, and
a run comparer; then the question, hypothesis and the summary table as text. The report is
saved only online with an API key (studies.tracking.has_api_key); building it needs neither.

HTML: `<out>/<study>/report.html` holds the same figures drawn with matplotlib from the
analysis (runs.csv, curves.csv) plus the analysis' forest and EDF figures, every PNG
embedded as a base64 data URI, the summary table, the verdicts and a run comparison table:
it opens in a browser with no network (no external CSS, scripts or fonts). The analysis is
run first where it is missing or stale (studies.paper.ensure_analysis).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import wandb_workspaces.reports.v2 as wr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import ablations
from ablations import Study
from resnet_repro.config import field_names
from studies import paper as P
from studies.tracking import has_api_key

PROJECT = "resnet-repro"
METRIC = "test_error"  # logged at every evaluation (studies.tracking.WandbRun.on_eval)
FINAL = "final_test_error"  # W&B run summary
RC = {"font.size": 9, "axes.titlesize": 9, "figure.titlesize": 10}


# ------------------------------------------------------------------------------ W&B


def runset_filter(study: str, depth: int | None = None, budget: str | None = None) -> str:
    """The W&B filter expression selecting a study's runs (at one depth, one budget)."""
    parts = [f"Group = '{study}'"]
    if depth is not None:
        parts.append(f"Config('depth') = {int(depth)}")
    if budget:
        parts.append(f"Config('budget') = '{budget}'")
    return " and ".join(parts)


def build_report(
    study: str | Study,
    *,
    project: str = PROJECT,
    entity: str = "",
    depths: Sequence[int] | None = None,
    budget: str | None = None,
    summary_markdown: str = "",
) -> wr.Report:
    """The study's W&B report, built and not saved (saving needs a login and network).

    depths: one panel grid per depth (default: the study's default depths); budget: keep only
    runs of that budget (W&B config key `budget`); summary_markdown: a table to append.
    """
    s = ablations.get(study) if isinstance(study, str) else study
    blocks: list[Any] = [
        wr.P(f"Question: {s.question}"),
        wr.P(f"Hypothesis: {s.hypothesis}"),
        wr.P(f"Why suspected: {s.source}"),
        wr.P(
            f"Baseline: {s.baseline}. Variants: "
            + "; ".join(f"{v} ({_overrides(o)})" for v, o in s.variants.items())
            + ". Every variant runs the same seeds (paired)."
        ),
    ]
    for depth in depths or s.depths:
        runset = wr.Runset(
            entity=entity,
            project=project,
            name=f"{s.name} depth {depth}",
            filters=runset_filter(s.name, depth, budget),
            groupby=["JobType"],
        )
        panels: list[Any] = [
            wr.LinePlot(
                title=f"test error (%), depth {depth}: mean over seeds, min-max band",
                x="Step",
                y=[METRIC],
                title_x="iteration",
                title_y="test error (%)",
                groupby="JobType",
                groupby_aggfunc="mean",
                groupby_rangefunc="minmax",
                layout=wr.Layout(x=0, y=0, w=12, h=8),
            ),
            wr.LinePlot(
                title=f"training error (%), depth {depth}: mean over seeds, min-max band",
                x="Step",
                y=["train_error"],
                title_x="iteration",
                title_y="training error (%)",
                groupby="JobType",
                groupby_aggfunc="mean",
                groupby_rangefunc="minmax",
                layout=wr.Layout(x=12, y=0, w=12, h=8),
            ),
            wr.BarPlot(
                title=f"final test error (%), depth {depth}: mean and min-max by variant",
                metrics=[wr.SummaryMetric(FINAL)],
                orientation="v",
                groupby="JobType",
                groupby_aggfunc="mean",
                groupby_rangefunc="minmax",
                layout=wr.Layout(x=0, y=8, w=12, h=8),
            ),
            wr.RunComparer(diff_only="split", layout=wr.Layout(x=12, y=8, w=12, h=8)),
        ]
        blocks += [wr.H2(f"Depth {depth}"), wr.PanelGrid(runsets=[runset], panels=panels)]
    if summary_markdown:
        blocks += [wr.H2("Summary"), wr.MarkdownBlock(summary_markdown)]
    return wr.Report(
        project=project,
        entity=entity,
        title=f"{s.name}: {s.question}"[:128],
        description=f"resnet-repro study {s.name}: {s.hypothesis}",
        blocks=blocks,
    )


def _overrides(o: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in o.items()) or "defaults"


# ---------------------------------------------------------------------------- figures


def _figure(n_panels: int, *, w: float = 4.2, h: float = 3.0) -> Figure:
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    with mpl.rc_context(RC):
        fig = Figure(figsize=(max(w * ncols, 7.5), h * nrows), layout="constrained")
        FigureCanvasAgg(fig)
        fig.subplots(nrows, ncols, squeeze=False)
    for ax in fig.axes[n_panels:]:
        ax.set_visible(False)
    return fig


def _colors(variants: Sequence[str]) -> dict[str, Any]:
    cmap = mpl.colormaps["tab10" if len(variants) <= 10 else "tab20"]
    return {v: cmap(i % cmap.N) for i, v in enumerate(variants)}


def curves_figure(curves: pd.DataFrame, order: Sequence[str], title: str) -> Figure:
    """Test error against iterations, one line per variant (mean over seeds) with a min-max
    band, one panel per depth. curves: curves.csv rows (variant, depth, seed, iteration,
    test_error)."""
    done = curves[curves["status"] == "finished"] if "status" in curves else curves
    done = done.dropna(subset=["test_error"])
    depths = sorted(done["depth"].unique()) if len(done) else []
    fig = _figure(max(len(depths), 1))
    if not depths:
        fig.axes[0].text(0.5, 0.5, "no finished runs with curves", ha="center", va="center")
        fig.axes[0].set_axis_off()
        return fig
    colors = _colors(order)
    for ax, depth in zip(fig.axes, depths):
        at = done[done["depth"] == depth]
        for v in [v for v in order if v in set(at["variant"])]:
            g = at[at["variant"] == v].groupby("iteration")["test_error"]
            stats = g.agg(["mean", "min", "max", "count"])
            n = at[at["variant"] == v]["seed"].nunique()
            ax.plot(stats.index, stats["mean"], color=colors[v], lw=1.6, label=f"{v} (n={n})")
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colors[v], alpha=0.2)
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3)
        if len(order) > 5:  # many variants: the legend beside the axes, not over the lines
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        else:
            ax.legend(fontsize=7)
    fig.suptitle(f"{title}: test error (mean over seeds, min-max band)")
    return fig


def bar_figure(runs: pd.DataFrame, order: Sequence[str], title: str, label: str) -> Figure:
    """Final test error by variant: bar = mean over seeds, whisker = min-max, dots = runs;
    one panel per depth. runs: included rows of runs.csv with `analysed_error`."""
    depths = sorted(runs["depth"].unique()) if len(runs) else []
    fig = _figure(max(len(depths), 1))
    if not depths:
        fig.axes[0].text(0.5, 0.5, "no finished runs", ha="center", va="center")
        fig.axes[0].set_axis_off()
        return fig
    colors = _colors(order)
    for ax, depth in zip(fig.axes, depths):
        at = runs[runs["depth"] == depth]
        vs = [v for v in order if v in set(at["variant"])]
        for i, v in enumerate(vs):
            x = at[at["variant"] == v]["analysed_error"].to_numpy(dtype=float)
            mean = float(np.mean(x))
            ax.bar(i, mean, color=colors[v], alpha=0.6)
            ax.errorbar(
                i,
                mean,
                yerr=[[mean - x.min()], [x.max() - mean]],
                color="black",
                capsize=3,
                lw=1,
            )
            ax.scatter(np.full(x.size, i), x, color="black", s=8, zorder=3)
        ax.set_xticks(range(len(vs)))
        ax.set_xticklabels(
            vs, rotation=45 if len(vs) > 4 else 0, ha="right" if len(vs) > 4 else "center"
        )
        ax.set_title(f"depth {depth}")
        ax.set_ylabel(f"{label} (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}: {label} (bar: mean, whisker: min-max, dots: runs)")
    return fig


def png_data_uri(fig_or_path: Figure | Path) -> str:
    """A PNG as a data URI (figures rendered at 110 dpi; files embedded as they are)."""
    if isinstance(fig_or_path, Figure):
        buf = io.BytesIO()
        fig_or_path.savefig(buf, format="png", dpi=110, metadata={"Software": None})
        raw = buf.getvalue()
    else:
        raw = Path(fig_or_path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


# ------------------------------------------------------------------------------- HTML

CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border-bottom: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { border-bottom: 2px solid #444; } td.l, th.l { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; height: auto; } .note { color: #555; font-size: 0.9em; }
.sig { color: #a00; font-weight: bold; }
"""


def _table(df: pd.DataFrame, left: Sequence[str] = ()) -> str:
    head = "".join(
        f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>' for c in df.columns
    )
    rows = []
    for r in df.itertuples(index=False):
        cells = "".join(
            f'<td class="{"l" if c in left else ""}">{html.escape(str(v))}</td>'
            for c, v in zip(df.columns, r)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _plain_p(p: Any) -> str:
    return P.pval(p).replace("$<$", "<")


def summary_frame(res: P.StudyResults) -> pd.DataFrame:
    """The summary table as display strings (the same numbers and formats as the paper)."""
    rows = []
    for r in res.summary.to_dict("records"):
        base = r["variant"] == res.study.baseline
        rows.append(
            {
                "variant": r["variant"],
                "depth": P.integer(r["depth"]),
                "n": P.integer(r["n"]),
                "mean ± sd": f"{P.num(r['mean'])} ± {P.num(r['std'])}",
                "95% CI": P.ci(r["ci95_low"], r["ci95_high"]),
                "paper": P.num(r.get("paper_error")),
                "p (paper)": _plain_p(r.get("p_vs_paper")),
                f"TOST ±{res.margin:g}": P._tost_word(r),
                "diff vs baseline": "baseline" if base else P.signed(r.get("diff_vs_baseline")),
                "95% CI of diff": "" if base else P.ci(r.get("ci_diff_low"), r.get("ci_diff_high")),
                "p (Holm)": "" if base else _plain_p(r.get("p_vs_baseline_holm")),
                "seeds needed": "" if base else P.integer(r.get("seeds_needed")),
            }
        )
    return pd.DataFrame(rows)


def summary_markdown(res: P.StudyResults) -> str:
    df = summary_frame(res)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def verdicts(res: P.StudyResults) -> list[tuple[str, bool]]:
    """(sentence, significant) per comparison with the baseline, plain text."""
    out = []
    for r in res.summary.to_dict("records"):
        if r["variant"] == res.study.baseline:
            continue
        p = r.get("p_vs_baseline_holm")
        head = f"Depth {P.integer(r['depth'])}, {r['variant']} vs {res.study.baseline}: "
        if not P._finite(p):
            out.append((head + "not testable (" + P._str(r.get("note")) + ").", False))
            continue
        sig = float(p) < res.alpha
        word = "significant" if sig else "not significant"
        out.append(
            (
                f"{head}{P.signed(r['diff_vs_baseline'])} points "
                f"(95% CI {P.ci(r.get('ci_diff_low'), r.get('ci_diff_high'))}, "
                f"n = {P.integer(r['n'])}); {word} after Holm correction "
                f"(p_Holm = {_plain_p(p)}).",
                sig,
            )
        )
    return out


def comparer_frame(res: P.StudyResults) -> pd.DataFrame:
    """The run comparer: each run with the config fields that differ between runs."""
    runs = res.runs
    if runs.empty:
        return pd.DataFrame()
    fields = [f for f in field_names() if f in runs and runs[f].astype(str).nunique() > 1]
    cols = ["run_id", "variant", "depth", "seed", "status", *fields]
    cols += [c for c in ("final_test_error", "best_test_error", "wall_seconds") if c in runs]
    df = runs[cols].copy()
    for c in ("final_test_error", "best_test_error", "wall_seconds"):
        if c in df:
            df[c] = df[c].map(P.num)
    return df


def render_html(res: P.StudyResults) -> str:
    """The study's report as one self-contained HTML page."""
    s = res.study
    order = [v for v in s.variants if v in set(res.summary["variant"])]
    order += sorted(set(res.summary["variant"]) - set(order))
    curves = P._read_csv(res.directory / "curves.csv")
    inc = res.included
    figs = [
        (
            png_data_uri(curves_figure(curves, order, s.name)) if len(curves) else "",
            "Test error against iterations, grouped by variant: mean over seeds, min-max band.",
        ),
        (
            png_data_uri(bar_figure(inc, order, s.name, res.metric_label)),
            f"{res.metric_label.capitalize()} by variant: mean, min-max and every run.",
        ),
    ]
    for name, caption in (
        ("forest", "Difference from the baseline with its 95% interval (analysis)."),
        ("edf", "Empirical distribution of the error over seeds (analysis)."),
    ):
        png = res.directory / f"{name}.png"
        if png.is_file():
            figs.append((png_data_uri(png), caption))
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(s.name)}: report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(s.name)}: {e(s.question)}</h1>",
        f"<p><b>Hypothesis.</b> {e(s.hypothesis)}</p>",
        f"<p><b>Why suspected.</b> {e(s.source)}</p>",
        f"<p><b>Baseline</b> {e(s.baseline)}; <b>variants</b>: "
        + "; ".join(f"{e(v)} ({e(_overrides(o))})" for v, o in s.variants.items())
        + ". Every variant runs the same seeds, so comparisons are paired.</p>",
        f'<p class="note">{len(inc)} runs analysed ({len(res.runs) - len(inc)} excluded); '
        f"metric: {e(res.metric_label)}; alpha {res.alpha:g}; TOST margin ±{res.margin:g} "
        f"points; power {res.power:g}. Analysis: {e(str(res.directory))}.</p>",
        "<h2>Summary</h2>",
        _table(summary_frame(res), left=("variant", f"TOST ±{res.margin:g}")),
        "<h2>Verdicts</h2>",
        "<ul>"
        + "".join(f'<li class="{"sig" if sig else ""}">{e(t)}</li>' for t, sig in verdicts(res))
        + "</ul>",
        "<h2>Figures</h2>",
    ]
    for uri, caption in figs:
        if uri:
            parts.append(
                f'<figure><img src="{uri}" alt="{e(caption)}">'
                f"<figcaption>{e(caption)}</figcaption></figure>"
            )
    comp = comparer_frame(res)
    if len(comp):
        parts += [
            "<h2>Run comparer</h2>",
            '<p class="note">Every run with the config fields that differ between runs.</p>',
            _table(comp, left=("run_id", "variant", "status")),
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(res: P.StudyResults, path: str | Path) -> Path:
    path = Path(path)
    P.write_atomic(path, render_html(res))
    return path


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m studies.report",
        description="A study's W&B report (online) and self-contained report.html.",
    )
    p.add_argument("study", help="study name (python -m studies.run --list)")
    p.add_argument("--out", default="runs", help="output directory of studies.run (default runs)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite)")
    p.add_argument("--offline", action="store_true", help="write report.html only")
    p.add_argument("--project", default=PROJECT, help=f"W&B project (default {PROJECT})")
    p.add_argument("--entity", default=None, help="W&B entity (default: the API key's)")
    args = p.parse_args(argv)
    try:
        study = ablations.get(args.study)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    directory = P.ensure_analysis(study.name, args.out, storage=args.storage)
    res = P.load_results(study, directory) if directory else None
    if res is None:
        print(
            f"error: study {study.name!r} has no results under {args.out} "
            f"(run `python -m studies.run {study.name}` first)",
            file=sys.stderr,
        )
        return 1
    path = write_html(res, Path(args.out) / study.name / "report.html")
    print(f"wrote {path}")
    if args.offline or not has_api_key():
        why = "--offline" if args.offline else "no W&B API key"
        print(f"W&B report not saved ({why}); open {path} in a browser")
        return 0
    budgets = sorted(set(res.runs.get("budget", pd.Series(dtype=str)).dropna().astype(str)))
    try:
        import wandb  # noqa: PLC0415 - only online

        entity = args.entity or wandb.Api().default_entity
        report = build_report(
            study,
            project=args.project,
            entity=entity,
            depths=sorted(int(d) for d in res.summary["depth"].unique()),
            budget=budgets[0] if len(budgets) == 1 else None,
            summary_markdown=summary_markdown(res),
        )
        url = save_report(report)
    except Exception as e:  # noqa: BLE001 - network and auth errors of every kind
        print(f"error: saving the W&B report failed ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    print(f"saved W&B report: {url}")
    return 0


def save_report(report: wr.Report) -> str:
    """Save the report to W&B (needs a login and network); its URL."""
    report.save()
    return str(report.url)


if __name__ == "__main__":
    sys.exit(main())
