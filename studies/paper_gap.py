"""The gap attribution of the paper (gap.tex): for each factorial study, the suspected causes
ranked by main effect (table, with each cause's share of the predicted gap), one paragraph
per depth setting the predicted gap against the public reproduction's gap to Table 6, and
the two-way interactions.

The predicted gap is the sum of the main effects: with -1/+1 coding, the model's predicted
error with every factor at its reproduction level minus that of the paper's protocol (each
two-way term is +1 at both of these opposite corners and cancels). A cause's share is its
main effect over that sum, negative for a cause whose reproduction level narrows the gap.
"Significant" means Holm-adjusted p < alpha (Holm 1979), within each depth: over the main
effects, and separately over the two-way interactions.

Inputs: factorial_ranking.csv and factorial_effects.csv of studies.analyze (OLS on
effect-coded factors, stats.factorial_analysis); the gap from resnet_repro.reference (He et
al. 2015, Table 6).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import ablations
from resnet_repro import reference as R
from studies import stats as S
from studies.findings import _p_phrase
from studies.latex import (
    Macros,
    _finite,
    _str,
    ci,
    integer,
    label,
    latex_table,
    num,
    pval,
    signed,
    tex_escape,
    tt,
)
from studies.paper_results import StudyResults


def gap_section(results: dict[str, StudyResults], m: Macros) -> str:
    """The gap attribution from the factorial studies (ranking and effects tables, prose)."""
    fact = [r for r in results.values() if r.study.factors]
    if not fact:
        names = [n for n, s in ablations.all_studies().items() if s.factors]
        return (
            f"\\emph{{No results yet}}: the factorial study ({', '.join(map(tt, names))}) has "
            "no analysis in this build, so the gap is not attributed.\n"
        )
    return "\n".join(_gap_one(res, m) for res in fact)


def _gap_one(res: StudyResults, m: Macros) -> str:
    name = res.study.name
    ranking, effects = res.ranking, res.effects
    if ranking is None or ranking.empty:
        note = ""
        if effects is not None and len(effects) and "note" in effects:
            note = tex_escape(
                _str(effects["note"].dropna().iloc[0]) if effects["note"].notna().any() else ""
            )
        return (
            f"The factorial analysis of {tt(name)} could not be computed"
            + (f": {note}" if note else "")
            + ".\n"
        )
    out = [
        f"The fractional factorial study {tt(name)} (Section~\\ref{{{label('sec', name)}}}) "
        f"moves {len(res.study.factors)} suspected causes between the paper's level and the "
        "common reproduction level in one design, so each main effect is estimated with every "
        "other factor averaged over both of its levels, and the two-way interactions are "
        "estimated too (OLS on effect-coded factors; an effect is the change in error when the "
        "factor leaves the paper's level). The model's predicted difference between the design "
        "with every factor at its reproduction level and the paper's protocol is the sum of "
        "the main effects (the two-way interactions cancel between these opposite corners); "
        "each cause's share is its effect over that sum, negative for a cause that narrows "
        "the gap. A main effect or interaction is called significant when its Holm-adjusted "
        "$p$ is below $\\alpha$, adjusted within each depth over the main effects and "
        "separately over the interactions."
    ]
    ranking = _with_holm(ranking, "depth")
    rows = []
    for r in ranking.to_dict("records"):
        d, f = int(r["depth"]), r["factor"]
        key = (name, "Factor", f, "D", d)
        m.add((*key, "Effect"), signed(r["effect"]), f"{name} depth {d}: main effect of {f}")
        m.add((*key, "Low"), num(r.get("ci_low")), "")
        m.add((*key, "High"), num(r.get("ci_high")), "")
        m.add((*key, "P"), pval(r.get("p")), "")
        m.add((*key, "PHolm"), pval(r.get("p_holm")), "Holm over the main effects at this depth")
        share = f"{float(r['share']) * 100:.0f}\\%" if _finite(r.get("share")) else "--"
        m.add((*key, "Share"), share, "")
        rows.append(
            [
                str(d),
                integer(r["rank"]),
                tt(f),
                f"{tt(r.get('paper_level'))} $\\to$ {tt(r.get('reproduction_level'))}",
                signed(r["effect"]),
                ci(r.get("ci_low"), r.get("ci_high")),
                pval(r.get("p")),
                pval(r.get("p_holm")),
                share,
            ]
        )
    out.append(
        latex_table(
            ["depth", "rank", "factor", "paper $\\to$ reproduction", "effect", "95\\% CI", "$p$"]
            + ["$p_{\\mathrm{Holm}}$", "share"],
            rows,
            align="rrllrrrrr",
            caption=f"{tt(name)}: suspected causes ranked by main effect on the "
            f"{res.metric_label} (points); $p_{{\\mathrm{{Holm}}}}$: Holm over the main "
            "effects at each depth; share: the effect over the sum of the main effects, which "
            "is the model's predicted difference between every factor at its reproduction "
            "level and the paper's protocol (negative: the factor narrows the gap).",
            label=label("tab", name, "ranking"),
        )
    )
    for depth in sorted({int(d) for d in ranking["depth"]}):
        out.append(_gap_prose(res, ranking, depth, m))
    if effects is not None and len(effects):
        out.append(_interactions(res, m))
    return "\n\n".join(out) + "\n"


def _with_holm(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """df with p_holm: kept where analyze wrote it, else Holm over `p` within each `by` group
    (an analysis from before the column existed)."""
    if "p_holm" in df and df["p_holm"].notna().any():
        return df
    out = df.copy()
    out["p_holm"] = np.nan
    for _, idx in out.groupby(out[by].astype(int)).groups.items():
        out.loc[idx, "p_holm"] = S.holm(out.loc[idx, "p"].to_numpy(dtype=float))
    return out


def _gap_prose(res: StudyResults, ranking: pd.DataFrame, depth: int, m: Macros) -> str:
    name = res.study.name
    rank = ranking[ranking["depth"].astype(int) == depth].sort_values("rank")
    parts = []
    for r in rank.to_dict("records"):
        f = r["factor"]
        key = (name, "Factor", f, "D", depth)
        p, p_holm = r.get("p"), r.get("p_holm")
        if _finite(p):
            verdict = "significant after Holm" if float(p_holm) < res.alpha else "not significant"
            stat = (
                f"95\\% CI [{m.use((*key, 'Low'))}, {m.use((*key, 'High'))}], "
                f"{_p_phrase(p, m.use((*key, 'P')))}, "
                f"{_p_phrase(p_holm, m.use((*key, 'PHolm')), 'Holm')}, {verdict}"
            )
        else:
            stat = "no interval: one seed saturates the design"
        parts.append(
            f"{tt(f)} ({tt(r.get('paper_level'))} $\\to$ {tt(r.get('reproduction_level'))}) "
            f"{m.use((*key, 'Effect'))} points ({stat})"
        )
    total = float(rank["effect"].sum())
    gap_key = (name, "D", depth, "PredictedGap")
    m.add(gap_key, signed(total), f"{name}: sum of main effects (predicted gap)")
    interval = ""
    if "predicted_gap_ci_low" in rank and _finite(rank["predicted_gap_ci_low"].iloc[0]):
        m.add((*gap_key, "Low"), num(rank["predicted_gap_ci_low"].iloc[0]), "")
        m.add((*gap_key, "High"), num(rank["predicted_gap_ci_high"].iloc[0]), "")
        interval = f" (95\\% CI [{m.use((*gap_key, 'Low'))}, {m.use((*gap_key, 'High'))}])"
    text = (
        f"At depth {depth}, ordered by main effect: " + "; ".join(parts) + ". "
        f"The main effects sum to {m.use(gap_key)} points{interval}: the model's predicted "
        "error with every suspected cause at its reproduction level minus that of the paper's "
        "protocol (the two-way interactions cancel between these opposite corners)"
    )
    gap = R.REPRODUCTION["resnet"].get(depth)
    paper = R.TABLE6.get(depth)
    if gap is not None and paper is not None:
        text += (
            f", against a reproduction gap of {m.use(('Repro', 'Gap', 'D', depth))} points at "
            "this depth (best epoch of one run against Table~6)."
        )
    else:
        text += (
            f"; the public reproduction reports no number at depth {depth}, so the sum cannot "
            "be set against its gap."
        )
    return text + " Each share in the table is a main effect over this sum."


def _interactions(res: StudyResults, m: Macros) -> str:
    e = res.effects
    inter = e[e.get("kind", pd.Series(dtype=str)).astype(str) == "interaction"]
    if inter.empty:
        return ""
    p = inter["p"].to_numpy(dtype=float)
    finite = np.isfinite(p)
    if not finite.any():
        return f"The {len(inter)} two-way interactions have no $p$-values (the model is saturated)."
    # Holm within each depth, as for the main effects.
    adj = _with_holm(inter, "depth")["p_holm"].to_numpy(dtype=float)
    sig = inter[np.nan_to_num(adj, nan=1.0) < res.alpha]
    name = res.study.name
    m.add((name, "NInteractions"), str(int(finite.sum())), f"{name}: interactions tested")
    m.add((name, "NInteractionsSignificant"), str(len(sig)), f"{name}: after Holm")
    text = (
        f"Of the {m.use((name, 'NInteractions'))} two-way interactions, "
        f"{m.use((name, 'NInteractionsSignificant'))} "
        f"{'is' if len(sig) == 1 else 'are'} significant after Holm correction within "
        "their depth"
    )
    if len(sig):
        items = ", ".join(
            f"{tex_escape(r['term'])} at depth {int(r['depth'])} ({signed(r['effect'])} points)"
            for r in sig.to_dict("records")
        )
        text += f": {items}."
    else:
        text += ", so the main effects add up without detectable interplay at this $n$."
    return text
