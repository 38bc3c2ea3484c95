"""The paper's generated prose sections: one subsection per catalog study with its figure
(studies.tex), the numbers that do not belong to one study (Table 6, the reproduction's gap,
the protocol's defaults, the statistical settings and the counts over the build), the
threats to validity that depend on the results (threats.tex), the conclusion's findings
(conclusion.tex) and the appendix (appendix.tex).

References: He et al. 2015 (arXiv:1512.03385) Table 6 and the reproductions in
resnet_repro.reference; the protocol in resnet_repro.config.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd

import ablations
from ablations import Study
from resnet_repro import config as C
from resnet_repro import reference as R
from resnet_repro.train import LR_DROP
from studies import stats as S
from studies.findings import Finding, setup_caveat
from studies.latex import Macros, _finite, _is_true, integer, label, num, signed, tex_escape, tt
from studies.paper_results import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    DEFAULT_POWER,
    StudyResults,
)

# The directory under the paper directory that studies.paper rewrites.
GENERATED = "generated"
# The fixed difference (points) of summary.csv's power column seeds_needed_0.3
# (studies.analyze.POWER_DIFF), whatever the analysis' TOST margin.
POWER_DIFF = 0.3
POWER_COL = f"seeds_needed_{POWER_DIFF:g}"


def _variants_text(study: Study) -> str:
    if study.factors:
        factors = "; ".join(
            f"{tt(f)}: {tt(a)} $\\to$ {tt(b)}" for f, (a, b) in study.factors.items()
        )
        letters = {chr(ord("a") + i): f for i, f in enumerate(study.factors)}
        legend = ", ".join(f"{tt(k)} = {tt(f)}" for k, f in letters.items())
        named = all(
            {letters.get(ch) for ch in (v if v != study.baseline else "")}
            == {f for f, val in ov.items() if f in study.factors and val == study.factors[f][1]}
            for v, ov in study.variants.items()
        )
        naming = (
            f"; a variant's name lists the factors it moves to the reproduction level "
            f"({legend}; {tt(study.baseline)}: none)"
            if named
            else ""
        )
        return (
            f"{len(study.variants)} runs of a two-level design in {len(study.factors)} factors "
            f"(paper's level $\\to$ reproduction level: {factors}){naming}: "
            + ", ".join(tt(v) for v in study.variants)
        )
    parts = []
    for v, overrides in study.variants.items():
        what = ", ".join(f"{tt(k)} = {tt(val)}" for k, val in overrides.items()) or "defaults"
        parts.append(f"{tt(v)} ({what})")
    return "; ".join(parts)


def figure_block(res: StudyResults, rel: str) -> str:
    """The study's forest plot and EDFs side by side (one depth) or stacked."""
    forest, edf = res.figure("forest"), res.figure("edf")
    if not (forest or edf):
        return ""
    n_depths = res.summary["depth"].nunique()
    paths = [p for p in (forest, edf) if p is not None]
    if n_depths == 1:
        # Side by side at one scale: widths in proportion to the figures' natural widths.
        natural = [pdf_size(p)[0] for p in paths]
        widths = [0.98 * w / sum(natural) for w in natural]
        sep = r"\hfill"
    else:
        widths, sep = [1.0] * len(paths), r"\\[1ex]"
    imgs = [
        rf"\includegraphics[width={w:.3f}\linewidth,height=0.36\textheight,keepaspectratio]"
        rf"{{{rel}/{p.name}}}"
        for p, w in zip(paths, widths)
    ]
    what = []
    if forest:
        what.append(
            f"{'left' if n_depths == 1 else 'top'}: each variant's difference from the baseline "
            f"{tt(res.study.baseline)} with its 95\\% interval (labels give $n$ and "
            "$p_{\\mathrm{Holm}}$)"
        )
    if edf:
        what.append(
            f"{'right' if n_depths == 1 else 'bottom'}: empirical distribution of the "
            f"{res.metric_label} over seeds, one step line per variant (every run shown)"
        )
    caption = f"{tt(res.study.name)}: " + "; ".join(what) + "."
    lines = [r"\begin{figure}[htbp]", r"\centering", f"{sep}\n".join(imgs)]
    lines += [rf"\caption{{{caption}}}\label{{{label('fig', res.study.name)}}}", r"\end{figure}"]
    blocks = ["\n".join(lines)]
    curves = res.figure("fig6_curves")
    if curves is not None and res.study.name == "paper_baseline":
        blocks.append(
            "\n".join(
                [
                    r"\begin{figure}[htbp]",
                    r"\centering",
                    rf"\includegraphics[width=\linewidth,height=0.4\textheight,keepaspectratio]"
                    rf"{{{rel}/{curves.name}}}",
                    rf"\caption{{{tt(res.study.name)}: Figure~6 of \citet{{he2015deep}} "
                    "recreated: training error (dashed) and test error (bold) against "
                    "iterations, mean over seeds with a min-max band.}"
                    rf"\label{{{label('fig', res.study.name, 'curves')}}}",
                    r"\end{figure}",
                ]
            )
        )
    return "\n".join(blocks) + "\n"


def pdf_size(path: Path) -> tuple[float, float]:
    """(width, height) in points of a PDF's first MediaBox; (1, 1) when it has none."""
    mt = re.search(
        rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)", path.read_bytes()
    )
    if not mt:
        return 1.0, 1.0
    x0, y0, x1, y1 = (float(v) for v in mt.groups())
    return x1 - x0, y1 - y0


def study_section(
    study: Study,
    res: StudyResults | None,
    *,
    selected: bool,
    out: str,
    rel: str,
    findings_tex: str = "",
) -> str:
    """One subsection of studies.tex."""
    lines = [
        rf"\subsection{{{tt(study.name)}}}\label{{{label('sec', study.name)}}}",
        rf"\textbf{{Question.}} {tex_escape(study.question)}"
        rf" \textbf{{Hypothesis.}} {tex_escape(study.hypothesis)}"
        rf" \textbf{{Why suspected.}} {tex_escape(study.source)}",
        "",
        rf"\textbf{{Variants}} (baseline {tt(study.baseline)} first; other fields at the "
        rf"paper's values): {_variants_text(study)}. Default depths: "
        f"{', '.join(map(str, study.depths))}; compared with {tex_escape(study.compare)}.",
        "",
    ]
    if res is None:
        cmd = f"python -m studies.run {study.name}"
        why = (
            f"\\emph{{No results yet}}: no analysis under {tt(out + '/' + study.name)} "
            f"(run {tt(cmd)})."
            if selected
            else f"\\emph{{Not included in this build}} (not among the studies given to "
            f"{tt('studies.paper')})."
        )
        return "\n".join([*lines, why, ""])
    lines += [
        rf"\input{{{rel}/summary.tex}}",
        figure_block(res, rel),
        rf"\input{{{rel}/findings.tex}}",
        rf"Every test of the study is listed in Table~\ref{{{label('tab', study.name, 'tests')}}}.",
        "",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------- global numbers


def define_reference_numbers(m: Macros) -> None:
    """Table 6, the public reproduction and its gap, the protocol and the budgets."""
    for d, p in R.TABLE6.items():
        m.add(("Paper", "Error", "D", d), num(p.error), f"{R.PAPER}, depth {d}")
    m.add(("Paper", "Best", "D", 110), num(R.TABLE6_BEST_110), "Table 6: best of 5 runs")
    m.add(("Paper", "Std", "D", 110), num(R.TABLE6[110].std), "Table 6: sd over 5 runs")
    m.add(("Paper", "Runs", "D", 110), str(R.TABLE6[110].n), "")
    gaps = []
    for d, e in R.REPRODUCTION["resnet"].items():
        m.add(("Repro", "Error", "D", d), num(e), R.REPRODUCTION_SOURCE)
        if d in R.TABLE6:
            gap = e - R.TABLE6[d].error
            gaps.append(gap)
            m.add(("Repro", "Gap", "D", d), signed(gap), "reproduction minus Table 6")
    m.add(("Repro", "Gap", "Mean"), num(float(np.mean(gaps))), "mean gap over its depths")
    m.add(("Repro", "Gap", "Min"), num(min(gaps)), "")
    m.add(("Repro", "Gap", "Max"), num(max(gaps)), "")
    depths = sorted(R.REPRODUCTION["resnet"])
    m.add(("Repro", "Depths"), ", ".join(map(str, depths)), "")
    cfg = C.RunConfig()
    proto = {
        "Lr": f"{cfg.lr:g}",
        "Momentum": f"{cfg.momentum:g}",
        "WeightDecay": f"{cfg.weight_decay:g}",
        "BatchSize": str(cfg.batch_size),
        "Iterations": str(cfg.iterations),
        "Milestones": " and ".join(map(str, cfg.milestones)),
        "CropPad": str(cfg.crop_pad),
        "TrainSize": str(cfg.train_size),
        "TrainSizeHeldOut": str(min(C.TRAIN_SIZES)),
        "WarmupIters": str(cfg.warmup_iters),
        "Epochs": f"{cfg.iterations * cfg.batch_size / cfg.train_size:.0f}",
        "LrDrop": f"{1 / LR_DROP:g}",
    }
    for k, v in proto.items():
        m.add(("Proto", k), v, f"RunConfig default {k}")
    m.add(("Num", "Fields"), str(len(dataclasses.fields(C.RunConfig))), "RunConfig fields")


# What the response of an analysis is (studies.analyze --metric), as the Method states it.
METRIC_PHRASE = {
    "final": "test error at the end of training",
    "best": "lowest test error over a run's evaluations (the best epoch)",
}


def define_global_numbers(results: dict[str, StudyResults], m: Macros) -> None:
    """Statistical settings and the counts over every study in the build."""
    first = next(iter(results.values()), None)
    alpha = first.alpha if first else DEFAULT_ALPHA
    power = first.power if first else DEFAULT_POWER
    margin = first.margin if first else DEFAULT_MARGIN
    m.add(("Stat", "Alpha"), f"{alpha:g}", "significance level (analysis meta.json)")
    m.add(("Stat", "Power"), f"{power:g}", "target power")
    m.add(("Stat", "Margin"), f"{margin:g}", "TOST equivalence margin, points")
    confidence = float(first.meta.get("confidence", S.CONFIDENCE)) if first else S.CONFIDENCE
    m.add(("Stat", "Confidence"), f"{100 * confidence:g}", "level of the intervals, percent")
    m.add(("Stat", "Tost", "Level"), f"{100 * (1 - 2 * alpha):g}", "TOST interval, percent")
    metrics = {str(r.meta.get("metric", "final")) for r in results.values()} or {"final"}
    m.add(("Stat", "Metric"), " or ".join(METRIC_PHRASE[k] for k in sorted(metrics)), "")
    boots = {int(r.meta.get("n_boot", 0)) for r in results.values() if r.meta.get("n_boot")}
    m.add(("Stat", "Boot"), ", ".join(map(str, sorted(boots))) or "--", "bootstrap resamples")
    m.add(("Num", "Studies"), str(len(ablations.all_studies())), "studies in the catalog")
    m.add(("Num", "Studies", "With", "Results"), str(len(results)), "studies with results")
    n_runs = sum(len(r.included) for r in results.values())
    m.add(("Num", "Runs", "Total"), str(n_runs), "analysed runs over every study")


def selection_text(runs: pd.DataFrame, m: Macros) -> str:
    """The selection-bias paragraph: final minus best test error over every finished run of
    the build, averaged per seed first (stats.selection_bias with seeds), because runs that
    share a seed share initialisation and data order (eval-only variants even one training):
    the mean and its t interval are over seeds, n = seeds. "" without usable runs."""
    cols = {"status", "seed", "best_test_error", "final_test_error"}
    if runs.empty or not cols <= set(runs.columns):
        return ""
    done = runs[runs["status"] == "finished"]
    r = S.selection_bias(
        done["best_test_error"].to_numpy(dtype=float),
        done["final_test_error"].to_numpy(dtype=float),
        seeds=done["seed"].to_numpy(),
        n_boot=0,  # the text gives the t interval; no bootstrap, nothing random
    )
    if not _finite(r["mean"]):
        return ""
    key = ("Selection", "Bias")
    m.add((*key, "Mean"), num(r["mean"]), "final minus best test error, points, over seeds")
    m.add((*key, "Low"), num(r["ci95_low"]), "95% t interval over seeds")
    m.add((*key, "High"), num(r["ci95_high"]), "")
    m.add((*key, "N"), str(r["n"]), "seeds behind it (n)")
    m.add((*key, "N", "Runs"), str(r["n_runs"]), "finished runs averaged per seed")
    interval = (
        f", 95\\% CI [{m.use((*key, 'Low'))}, {m.use((*key, 'High'))}]"
        if _finite(r["ci95_low"])
        else ""
    )
    return (
        "\\emph{Selection.} The reproduction reports the best test error over all epochs, a "
        "choice made on the test set. Over the "
        f"{m.use((*key, 'N', 'Runs'))} finished runs here, averaged per seed first because "
        "runs with the same seed share initialisation and data order, the final error exceeds "
        f"the best one by {m.use((*key, 'Mean'))} points on average ($n = "
        f"{m.use((*key, 'N'))}$ seeds{interval}; per-study intervals in "
        "selection\\_bias.csv); the analyses here use the final error."
    )


def threats_text(results: dict[str, StudyResults], m: Macros) -> str:
    """Threats to validity that depend on the results: setting, n, exclusions, selection."""
    if not results:
        return (
            "No study has results in this build, so none of the threats below has been "
            "measured yet.\n"
        )
    runs = pd.concat([r.runs for r in results.values() if len(r.runs)], ignore_index=True)
    paras = []
    caveat = setup_caveat(runs[runs["status"] == "finished"] if len(runs) else runs)
    if caveat:
        paras.append("\\emph{Setting.} " + caveat.replace("These runs", "The runs of this build"))
    ns = pd.concat([r.summary["n"] for r in results.values()]).astype(float)
    m.add(("Num", "Seeds", "Min"), str(int(ns.min())), "fewest seeds in a cell")
    m.add(("Num", "Seeds", "Max"), str(int(ns.max())), "most seeds in a cell")
    held = (
        f"Every cell holds {m.use(('Num', 'Seeds', 'Min'))} seeds"
        if ns.min() == ns.max()
        else f"Cells hold between {m.use(('Num', 'Seeds', 'Min'))} and "
        f"{m.use(('Num', 'Seeds', 'Max'))} seeds"
    )
    paras.append(
        f"\\emph{{Seeds.}} {held}. Seed-to-seed spread is of the same order as "
        "the effects sought (reruns of one public ResNet-56 by a user span "
        f"{num(R.RESNET56_RERUN_RANGE[0])} to {num(R.RESNET56_RERUN_RANGE[1])}\\%), and Table~6 "
        "reports single runs, which the one-sample tests treat as exact although they carry "
        "the same noise."
    )
    power_rows = []
    for res in results.values():
        base = res.summary[res.summary["variant"] == res.study.baseline]
        if POWER_COL in base:
            for r in base.to_dict("records"):
                if _finite(r[POWER_COL]):
                    power_rows.append((res, r))
    if power_rows:
        res, r = power_rows[0]
        key = (res.study.name, "D", int(r["depth"]), "Seeds", "For", "Fixed", "Diff")
        m.add(key, integer(r[POWER_COL]), f"{res.study.name}: {POWER_COL} of the baseline")
        paras[-1] += (
            f" With the baseline spread of {tt(res.study.name)} at depth {int(r['depth'])}, "
            f"about {m.use(key)} seeds per arm would detect a difference of "
            f"{POWER_DIFF:g} points with power {res.power:g} at $\\alpha = {res.alpha:g}$."
        )
    n_failed = int((runs["status"] == "failed").sum()) if len(runs) else 0
    n_div = int((runs["status"] == "diverged").sum()) if len(runs) else 0
    m.add(("Num", "Runs", "Failed"), str(n_failed), "failed runs over every study")
    m.add(("Num", "Runs", "Diverged"), str(n_div), "diverged runs over every study")
    paras.append(
        f"\\emph{{Exclusions.}} {m.use(('Num', 'Runs', 'Failed'))} runs failed and "
        f"{m.use(('Num', 'Runs', 'Diverged'))} diverged; they are listed in each study's "
        "runs.csv and left out of the statistics, which would bias a variant that diverges "
        "more often towards its successful runs."
    )
    selection = selection_text(runs, m)
    if selection:
        paras.append(selection)
    det = set(runs.get("deterministic", pd.Series(dtype=str)).dropna().astype(str))
    devices = sorted(set(runs.get("device_name", pd.Series(dtype=str)).dropna().astype(str)))
    torch_v = sorted(set(runs.get("torch_version", pd.Series(dtype=str)).dropna().astype(str)))
    shas = sorted(set(runs.get("git_sha", pd.Series(dtype=str)).dropna().astype(str)))
    dirty = set(runs.get("git_dirty", pd.Series(dtype=str)).dropna().astype(str))
    if len(runs):
        text = (
            f"\\emph{{Software.}} Runs were made on {', '.join(map(tt, devices)) or 'unknown'} "
            f"with torch {', '.join(map(tt, torch_v)) or 'unknown'} at commit"
            f"{'s' if len(shas) > 1 else ''} {', '.join(tt(s[:10]) for s in shas) or 'unknown'}"
        )
        if "True" in dirty:
            text += " (with uncommitted changes in the working tree for some runs)"
        text += "; "
        if det == {"True"}:
            text += "every run was deterministic."
        elif "True" in det:
            text += "some runs were not deterministic."
        else:
            text += "runs were not deterministic, so reruns of a cell vary."
        paras.append(text)
    return "\n\n".join(paras) + "\n"


def conclusion_text(
    results: dict[str, StudyResults], findings: dict[str, list[Finding]], m: Macros
) -> str:
    """The conclusion's findings: every significant difference, else none, with the n."""
    if not results:
        return (
            "No study has results in this build: run a study "
            "(\\texttt{python -m studies.run STUDY}) and rebuild.\n"
        )
    allf = [f for fs in findings.values() for f in fs]
    sig = [f for f in allf if f.significant]
    m.add(("Num", "Comparisons", "Total"), str(len(allf)), "comparisons over every study")
    m.add(("Num", "Significant", "Total"), str(len(sig)), "significant after Holm")
    text = (
        f"Over the {m.use(('Num', 'Studies', 'With', 'Results'))} studies with results "
        f"({m.use(('Num', 'Runs', 'Total'))} runs), "
        f"{m.use(('Num', 'Significant', 'Total'))} of "
        f"{m.use(('Num', 'Comparisons', 'Total'))} comparisons with a baseline are "
        "significant after Holm correction within their study"
    )
    if sig:
        items = "; ".join(
            f"{tt(f.variant)} in {tt(f.study)} at depth {f.depth} "
            f"({m.use((f.study, f.variant, 'D', f.depth, 'Diff'))} points)"
            for f in sig
        )
        text += f": {items}."
    else:
        text += (
            ". At these $n$ no suspected cause is shown to move the error; the seeds needed "
            "to resolve the observed differences are given per comparison in "
            "Section~\\ref{sec:studies}."
        )
    base = results.get("paper_baseline")
    if base is not None:
        rows = base.summary[
            (base.summary["variant"] == base.study.baseline)
            & base.summary["paper_error"].map(_finite)
        ]
        eq = [r for r in rows.to_dict("records") if _is_true(r.get("equivalent"))]
        text += (
            f" With every switch at the paper's value, the ResNet baseline is equivalent to "
            f"Table~6 within $\\pm{base.margin:g}$ points at {len(eq)} of {len(rows)} depths."
        )
    for res in results.values():
        if res.study.factors and res.ranking is not None and len(res.ranking):
            top = res.ranking.sort_values(["depth", "rank"]).iloc[0]
            key = (res.study.name, "Factor", top["factor"], "D", int(top["depth"]))
            p = top.get("p")
            sig_word = (
                "significant"
                if _finite(p) and float(p) < res.alpha
                else ("not significant" if _finite(p) else "without a test")
            )
            text += (
                f" In the factorial study, the largest main effect at depth {int(top['depth'])} "
                f"is {tt(top['factor'])} ({m.use((*key, 'Effect'))} points, {sig_word})."
            )
    return text + "\n"


def appendix_text(results: dict[str, StudyResults]) -> str:
    if not results:
        return "No study has results in this build.\n"
    return "\n".join(rf"\input{{{GENERATED}/{name}/tests.tex}}" for name in results) + "\n"
