"""The finding sentences of the paper: for each study, one sentence on its setting and one
verdict per comparison with the baseline (significant or not after Holm, with the interval,
the test and its n, and the seeds a non-significant difference would need), the variant
against the paper's Table 6 with TOST, and a study-level verdict; plus `define_study_numbers`,
the numbers.tex macros every sentence refers to. A rerun with other results rewrites every
claim from the statistics (summary.csv of studies.analyze).

Statistics as in studies.analyze: Holm 1979, Schuirmann 1987 (TOST), Welch 1947.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from resnet_repro import config as C
from studies.latex import (
    Macros,
    _finite,
    _is_true,
    _n_text,
    _str,
    integer,
    label,
    num,
    pval,
    signed,
    tex_escape,
    tt,
)
from studies.paper_results import StudyResults

# A study with more comparisons per depth than this gets one sentence per significant (or
# untestable) comparison and one sentence for all the others.
MAX_SENTENCES = 6


@dataclass
class Finding:
    """One comparison's verdict, for the conclusion."""

    study: str
    variant: str
    depth: int
    diff: float
    p_holm: float
    significant: bool
    text: str


def define_study_numbers(res: StudyResults, m: Macros) -> None:
    """Macros of every summary statistic of every (variant, depth) and the study's counts."""
    name = res.study.name
    for r in res.summary.to_dict("records"):
        key = (name, r["variant"], "D", int(r["depth"]))
        where = f"{name} {r['variant']} depth {int(r['depth'])}"
        stats = {
            "N": integer(r["n"]),
            "Mean": num(r["mean"]),
            "Std": num(r["std"]),
            "CILow": num(r["ci95_low"]),
            "CIHigh": num(r["ci95_high"]),
            "BootLow": num(r.get("boot_low")),
            "BootHigh": num(r.get("boot_high")),
            "Paper": num(r.get("paper_error")),
            "DiffPaper": signed(r.get("diff_vs_paper")),
            "PPaper": pval(r.get("p_vs_paper")),
            "TOSTP": pval(r.get("tost_p")),
            "Diff": signed(r.get("diff_vs_baseline")),
            "DiffLow": num(r.get("ci_diff_low")),
            "DiffHigh": num(r.get("ci_diff_high")),
            "P": pval(r.get("p_vs_baseline")),
            "PHolm": pval(r.get("p_vs_baseline_holm")),
            "PRank": pval(r.get("rank_p_vs_baseline")),
            "NPairs": integer(r.get("n_pairs")),
            "SeedsNeeded": integer(r.get("seeds_needed")),
            "NExcluded": integer(r.get("n_excluded", 0)),
        }
        for stat, value in stats.items():
            m.add((*key, stat), value, f"{where}: {stat} (summary.csv)")
    inc = res.included
    counts = res.meta.get("counts", {})
    n_runs = len(res.runs) if len(res.runs) else int(res.summary["n"].sum())
    m.add((name, "NRuns"), str(n_runs), f"{name}: runs in runs.csv")
    m.add((name, "NIncluded"), str(len(inc) if len(res.runs) else n_runs), f"{name}: analysed")
    m.add((name, "NExcluded"), str(n_runs - (len(inc) if len(res.runs) else n_runs)), "")
    m.add((name, "NPending"), str(int(counts.get("pending", 0))), f"{name}: cells pending")
    comps = _comparisons(res)
    m.add((name, "NComparisons"), str(len(comps)), f"{name}: comparisons with the baseline")
    sig = [
        r for r in comps if _finite(r["p_vs_baseline_holm"]) and r["p_vs_baseline_holm"] < res.alpha
    ]
    m.add((name, "NSignificant"), str(len(sig)), f"{name}: significant after Holm")


def _comparisons(res: StudyResults) -> list[dict[str, Any]]:
    return [r for r in res.summary.to_dict("records") if r["variant"] != res.study.baseline]


def _p_phrase(p: Any, macro: str, sub: str = "") -> str:
    """`$p = 0.123$` through its macro, or `$p < 0.001$`."""
    sym = f"p_{{\\mathrm{{{sub}}}}}" if sub else "p"
    if _finite(p) and float(p) < 0.001:
        return f"${sym} < 0.001$"
    return f"${sym} = {macro}$"


def _direction(x: Any) -> str:
    return "raises" if float(x) > 0 else "lowers"


def _setup_sentence(res: StudyResults, m: Macros) -> str:
    name = res.study.name
    runs = res.runs
    inc = res.included
    depths = sorted({int(d) for d in res.summary["depth"]})
    variants = list(dict.fromkeys(res.summary["variant"]))
    parts = [
        f"We analysed {m.use((name, 'NIncluded'))} runs of {len(variants)} variants at "
        f"depth{'s' if len(depths) > 1 else ''} {', '.join(map(str, depths))} "
        f"(seeds per cell: {_n_text(res.summary)}); the response is the {res.metric_label}."
    ]
    if len(runs) and len(inc) < len(runs):
        parts.append(
            f"{m.use((name, 'NExcluded'))} further runs failed or diverged and are excluded "
            "(listed in the analysis' runs.csv)."
        )
    if int(res.meta.get("counts", {}).get("pending", 0)):
        parts.append(f"{m.use((name, 'NPending'))} cells were still pending.")
    caveat = setup_caveat(inc if len(inc) else runs)
    if caveat:
        parts.append(caveat)
    return " ".join(parts)


def setup_caveat(runs: pd.DataFrame) -> str:
    """A sentence when the runs are not the paper's setting (dataset, budget, subset)."""
    if runs.empty or "dataset" not in runs:
        return ""
    datasets = sorted(set(runs["dataset"].astype(str)))
    iters = sorted({int(i) for i in runs["iterations"] if _finite(i)})
    budgets = sorted(set(runs["budget"].dropna().astype(str))) if "budget" in runs else []
    subset = sorted({int(i) for i in runs.get("subset", pd.Series([0])) if _finite(i)})
    paper_iters = C.RunConfig().iterations
    off = datasets != ["cifar10"] or iters != [paper_iters] or any(subset)
    if not off:
        return ""
    what = (
        f"dataset {', '.join(tt(d) for d in datasets)}, "
        f"{', '.join(map(str, iters))} iterations"
        + (f" (budget {', '.join(tt(b) for b in budgets)})" if budgets else "")
        + (f", training subsets of {', '.join(map(str, subset))} images" if any(subset) else "")
    )
    return (
        f"These runs use {what}, not the paper's CIFAR-10 protocol of {paper_iters} "
        "iterations: they exercise the pipeline, and their errors are not comparable with "
        "the paper's numbers."
    )


def vs_baseline_sentence(res: StudyResults, r: dict[str, Any], m: Macros) -> str:
    """The verdict of one variant against the baseline at one depth."""
    name, v, d = res.study.name, r["variant"], int(r["depth"])
    key = (name, v, "D", d)
    base = tt(res.study.baseline)
    p = r.get("p_vs_baseline_holm")
    if not _finite(p) or not _finite(r.get("diff_vs_baseline")):
        why = tex_escape(_str(r.get("note")) or "too few runs")
        return (
            f"At depth {d}, {tt(v)} ($n = {m.use((*key, 'N'))}$) cannot be tested against "
            f"{base}: {why}."
        )
    paired = _is_true(r.get("paired"))
    test = (
        f"paired $t$-test on $n = {m.use((*key, 'NPairs'))}$ seed pairs"
        if paired
        else f"Welch $t$-test, $n = {m.use((*key, 'N'))}$ runs against the baseline's"
    )
    head = (
        f"At depth {d}, {tt(v)} (mean {m.use((*key, 'Mean'))}, $n = {m.use((*key, 'N'))}$) "
        f"differs from {base} by {m.use((*key, 'Diff'))} points "
        f"(95\\% CI [{m.use((*key, 'DiffLow'))}, {m.use((*key, 'DiffHigh'))}], {test})"
    )
    holm = _p_phrase(p, m.use((*key, "PHolm")), "Holm")
    n_comp = m.use((name, "NComparisons"))
    if float(p) < res.alpha:
        tail = (
            f"; the difference is significant after Holm correction over the study's "
            f"{n_comp} comparisons ({holm}): {tt(v)} {_direction(r['diff_vs_baseline'])} the "
            f"{res.metric_label}."
        )
    else:
        tail = (
            f"; the difference is not significant after Holm correction over the study's "
            f"{n_comp} comparisons ({holm})"
        )
        seeds = r.get("seeds_needed")
        if _finite(seeds) and float(seeds) > float(r["n"]):
            tail += (
                f", and about {m.use((*key, 'SeedsNeeded'))} seeds would be needed to detect a "
                f"difference of this size with power {res.power:g}."
            )
        else:
            tail += "."
    return head + tail


def vs_paper_sentence(res: StudyResults, r: dict[str, Any], m: Macros) -> str:
    """The variant's mean against the paper's Table 6 number, with TOST."""
    name, v, d = res.study.name, r["variant"], int(r["depth"])
    key = (name, v, "D", d)
    if not _finite(r.get("paper_error")):
        return ""
    head = (
        f"At depth {d}, {tt(v)} has mean {m.use((*key, 'Mean'))} "
        f"(95\\% CI [{m.use((*key, 'CILow'))}, {m.use((*key, 'CIHigh'))}], "
        f"$n = {m.use((*key, 'N'))}$) against the paper's {m.use((*key, 'Paper'))}"
    )
    p = r.get("p_vs_paper")
    if not _finite(p):
        return head + " (with $n < 2$ no test against the paper is possible)."
    how = (
        "Welch $t$-test from the paper's mean $\\pm$ sd"
        if str(r.get("test_vs_paper")) == "welch_t_summary"
        else "one-sample $t$-test, the paper's single run taken as exact"
    )
    diff = m.use((*key, "DiffPaper"))
    sig = "differs significantly" if float(p) < res.alpha else "does not differ significantly"
    out = f"{head}: a difference of {diff} points, which {sig} from zero ({how}, "
    out += _p_phrase(p, m.use((*key, "PPaper"))) + ")"
    tost = r.get("tost_p")
    if _finite(tost):
        tp = _p_phrase(tost, m.use((*key, "TOSTP")), "TOST")
        # The TOST has the form of the test above: Welch from the paper's mean +- sd where
        # the paper gives one (ResNet-110), else one-sample against its number as exact.
        if str(r.get("tost_test")) == "tost_welch_summary":
            tp += ", two one-sided Welch tests from the paper's mean $\\pm$ sd"
        if _is_true(r.get("equivalent")):
            out += f"; it is equivalent to the paper within $\\pm{res.margin:g}$ points ({tp})."
        else:
            out += (
                f"; equivalence with the paper within $\\pm{res.margin:g}$ points is not "
                f"shown ({tp})."
            )
    else:
        out += "."
    return out


def study_findings(res: StudyResults, m: Macros) -> tuple[str, list[Finding]]:
    """The finding sentences of a study (LaTeX) and its comparisons' verdicts."""
    paras = [_setup_sentence(res, m)]
    findings: list[Finding] = []
    for depth in sorted({int(d) for d in res.summary["depth"]}):
        rows = [r for r in res.summary.to_dict("records") if int(r["depth"]) == depth]
        sentences = []
        for r in rows:
            if r["variant"] == res.study.baseline or res.study.name == "paper_baseline":
                sentences.append(vs_paper_sentence(res, r, m))
        comps = [r for r in rows if r["variant"] != res.study.baseline]
        quiet = []  # not significant, summarised in one sentence when there are many
        for r in comps:
            text = vs_baseline_sentence(res, r, m)
            p = r.get("p_vs_baseline_holm")
            significant = _finite(p) and float(p) < res.alpha
            diff = r.get("diff_vs_baseline")
            findings.append(
                Finding(
                    study=res.study.name,
                    variant=r["variant"],
                    depth=depth,
                    diff=float(diff) if _finite(diff) else math.nan,
                    p_holm=float(p) if _finite(p) else math.nan,
                    significant=significant,
                    text=text,
                )
            )
            if len(comps) > MAX_SENTENCES and _finite(p) and not significant:
                quiet.append(r)
            else:
                sentences.append(text)
        if quiet:
            other = len(quiet) < len(comps)
            sentences.append(_quiet_sentence(res, depth, quiet, m, other=other))
        paras.append(" ".join(s for s in sentences if s))
    paras.append(_study_verdict(res, findings, m))
    return "\n\n".join(p for p in paras if p) + "\n", findings


def _quiet_sentence(
    res: StudyResults, depth: int, rows: list[dict[str, Any]], m: Macros, *, other: bool
) -> str:
    """One sentence for the many non-significant comparisons of a large study."""
    name = res.study.name
    low = min(float(r["p_vs_baseline_holm"]) for r in rows)
    key = (name, "D", depth, "Min", "P", "Holm", "Not", "Significant")
    m.add(key, pval(low), f"{name} depth {depth}: smallest non-significant Holm p")
    names = ", ".join(tt(r["variant"]) for r in rows)
    return (
        f"At depth {depth}, the{' other' if other else ''} {len(rows)} variants ({names}) do not "
        "differ significantly "
        f"from {tt(res.study.baseline)} after Holm correction (each "
        f"$p_{{\\mathrm{{Holm}}}} \\geq {m.use(key)}$; differences and intervals in "
        f"Table~\\ref{{{label('tab', name, 'summary')}}})."
    )


def _study_verdict(res: StudyResults, findings: list[Finding], m: Macros) -> str:
    name = res.study.name
    if not findings:
        return ""
    sig = [f for f in findings if f.significant]
    n_comp = m.use((name, "NComparisons"))
    if not sig and len(findings) == 1:
        return (
            f"\\emph{{Verdict:}} the one comparison with the baseline {tt(res.study.baseline)} "
            f"is not significant at $\\alpha = {res.alpha:g}$ ({_n_text(res.summary)}); at this "
            "$n$ the study cannot tell its variants apart, which is not evidence that they are "
            "equivalent."
        )
    if not sig:
        return (
            f"\\emph{{Verdict:}} none of the {n_comp} comparisons with the baseline "
            f"{tt(res.study.baseline)} is significant after Holm correction at "
            f"$\\alpha = {res.alpha:g}$ ({_n_text(res.summary)}); at this $n$ the study cannot "
            "tell its variants apart, which is not evidence that they are equivalent."
        )
    if len(findings) == 1:
        f = sig[0]
        return (
            f"\\emph{{Verdict:}} the one comparison with the baseline {tt(res.study.baseline)} "
            f"is significant after Holm correction at $\\alpha = {res.alpha:g}$: {tt(f.variant)} "
            f"{_direction(f.diff)} the {res.metric_label} by "
            f"{m.use((name, f.variant, 'D', f.depth, 'Diff'))} points."
        )
    items = ", ".join(
        f"{tt(f.variant)} at depth {f.depth} "
        f"({m.use((name, f.variant, 'D', f.depth, 'Diff'))} points)"
        for f in sig
    )
    return (
        f"\\emph{{Verdict:}} {m.use((name, 'NSignificant'))} of the {n_comp} comparisons "
        f"with the baseline {tt(res.study.baseline)} are significant after Holm correction at "
        f"$\\alpha = {res.alpha:g}$: {items}."
    )
