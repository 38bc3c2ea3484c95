"""The gap attribution of the paper (gap.tex): for each factorial study, the suspected causes
ranked by main effect (table, with share of the positive effects), one paragraph per depth
setting their sum against the public reproduction's gap to Table 6, and the two-way
interactions, Holm-adjusted.

Inputs: factorial_ranking.csv and factorial_effects.csv of studies.analyze (OLS on
effect-coded factors); the gap from resnet_repro.reference (He et al. 2015, Table 6).
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
        "factor leaves the paper's level)."
    ]
    rows = []
    for r in ranking.to_dict("records"):
        d, f = int(r["depth"]), r["factor"]
        key = (name, "Factor", f, "D", d)
        m.add((*key, "Effect"), signed(r["effect"]), f"{name} depth {d}: main effect of {f}")
        m.add((*key, "Low"), num(r.get("ci_low")), "")
        m.add((*key, "High"), num(r.get("ci_high")), "")
        m.add((*key, "P"), pval(r.get("p")), "")
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
                share,
            ]
        )
    out.append(
        latex_table(
            ["depth", "rank", "factor", "paper $\\to$ reproduction", "effect", "95\\% CI", "$p$"]
            + ["share"],
            rows,
            align="rrllrrrr",
            caption=f"{tt(name)}: suspected causes ranked by main effect on the "
            f"{res.metric_label} (points); share: the effect over the sum of the positive main "
            "effects.",
            label=label("tab", name, "ranking"),
        )
    )
    for depth in sorted({int(d) for d in ranking["depth"]}):
        out.append(_gap_prose(res, depth, m))
    if effects is not None and len(effects):
        out.append(_interactions(res, m))
    return "\n\n".join(out) + "\n"


def _gap_prose(res: StudyResults, depth: int, m: Macros) -> str:
    name = res.study.name
    rank = res.ranking[res.ranking["depth"].astype(int) == depth].sort_values("rank")
    parts = []
    for r in rank.to_dict("records"):
        f = r["factor"]
        key = (name, "Factor", f, "D", depth)
        p = r.get("p")
        if _finite(p):
            verdict = "significant" if float(p) < res.alpha else "not significant"
            stat = (
                f"95\\% CI [{m.use((*key, 'Low'))}, {m.use((*key, 'High'))}], "
                f"{_p_phrase(p, m.use((*key, 'P')))}, {verdict}"
            )
        else:
            stat = "no interval: one seed saturates the design"
        parts.append(
            f"{tt(f)} ({tt(r.get('paper_level'))} $\\to$ {tt(r.get('reproduction_level'))}) "
            f"{m.use((*key, 'Effect'))} points ({stat})"
        )
    pos = rank[rank["effect"] > 0]
    total = float(pos["effect"].sum()) if len(pos) else 0.0
    m.add((name, "D", depth, "PositiveEffects"), num(total), f"{name}: sum of positive effects")
    text = (
        f"At depth {depth}, ordered by main effect: " + "; ".join(parts) + ". "
        f"The factors whose reproduction level raises the error add up to "
        f"{m.use((name, 'D', depth, 'PositiveEffects'))} points"
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
    return text


def _interactions(res: StudyResults, m: Macros) -> str:
    e = res.effects
    inter = e[e.get("kind", pd.Series(dtype=str)).astype(str) == "interaction"]
    if inter.empty:
        return ""
    p = inter["p"].to_numpy(dtype=float)
    finite = np.isfinite(p)
    if not finite.any():
        return f"The {len(inter)} two-way interactions have no $p$-values (the model is saturated)."
    adj = np.full_like(p, np.nan)
    adj[finite] = S.holm(p[finite])
    sig = inter[np.nan_to_num(adj, nan=1.0) < res.alpha]
    name = res.study.name
    m.add((name, "NInteractions"), str(int(finite.sum())), f"{name}: interactions tested")
    m.add((name, "NInteractionsSignificant"), str(len(sig)), f"{name}: after Holm")
    text = (
        f"Of the {m.use((name, 'NInteractions'))} two-way interactions, "
        f"{m.use((name, 'NInteractionsSignificant'))} "
        f"{'is' if len(sig) == 1 else 'are'} significant after Holm correction"
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
