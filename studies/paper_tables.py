"""The paper's generated tables: a study's summary (summary.tex) and every test
(tests.tex), Table 6 against the public reproduction (intro.tex), every RunConfig switch
with its provenance comment read from the source (protocol.tex), the budgets (budgets.tex)
and the catalog of studies (catalog.tex).

References: He et al. 2015 (arXiv:1512.03385) Table 6 and the reproductions in
resnet_repro.reference; the protocol in resnet_repro.config.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from typing import Any

import pandas as pd

import ablations
from resnet_repro import config as C
from resnet_repro import reference as R
from studies.latex import (
    _finite,
    _is_true,
    _n_text,
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
from studies.paper_results import StudyResults, ordered_studies


def summary_table(res: StudyResults) -> str:
    """The study's summary table: one row per (variant, depth)."""
    s = res.summary
    has_paper = "paper_error" in s and s["paper_error"].map(_finite).any()
    cols = ["variant", "depth", "$n$", r"mean $\pm$ sd", "95\\% CI"]
    align = "llrrr"
    if has_paper:
        cols += ["paper", "$p$ (paper)", rf"TOST $\pm${res.margin:g}"]
        align += "rrl"
    cols += [r"$\Delta$ vs baseline", r"95\% CI of $\Delta$", r"$p_{\mathrm{Holm}}$", "seeds"]
    align += "rrrr"
    rows = []
    for r in s.to_dict("records"):
        row = [
            tt(r["variant"]),
            integer(r["depth"]),
            integer(r["n"]),
            f"{num(r['mean'])} $\\pm$ {num(r['std'])}",
            ci(r["ci95_low"], r["ci95_high"]),
        ]
        if has_paper:
            row += [num(r.get("paper_error")), pval(r.get("p_vs_paper")), _tost_word(r)]
        if r["variant"] == res.study.baseline:
            row += ["baseline", "", "", ""]
        else:
            row += [
                signed(r.get("diff_vs_baseline")),
                ci(r.get("ci_diff_low"), r.get("ci_diff_high")),
                pval(r.get("p_vs_baseline_holm")),
                integer(r.get("seeds_needed")),
            ]
        rows.append(row)
    n = _n_text(s)
    caption = (
        f"{tt(res.study.name)}: {res.metric_label} (\\%), mean $\\pm$ sd over seeds ({n}) with "
        f"the 95\\% $t$ interval; $\\Delta$: variant minus the baseline {tt(res.study.baseline)}"
        f" at the same depth ({_test_phrase(s)}), $p$ Holm-adjusted over the study's "
        f"comparisons; seeds: seeds per arm to detect $\\Delta$ with power {res.power:g} at "
        f"$\\alpha = {res.alpha:g}$."
    )
    if has_paper:
        caption += (
            f" Paper: Table~6 of \\citet{{he2015deep}}; TOST: equivalence with it within "
            f"$\\pm{res.margin:g}$ points"
        )
        forms = set(s.get("tost_test", pd.Series(dtype=str)).dropna().astype(str))
        if "tost_welch_summary" in forms:
            caption += (
                " (two one-sided Welch tests from the paper's mean $\\pm$ sd where it gives "
                "one, i.e.\\ ResNet-110; elsewhere its single run is taken as exact)"
            )
        caption += "."
    return latex_table(
        cols, rows, align=align, caption=caption, label=label("tab", res.study.name, "summary")
    )


def _tost_word(r: dict[str, Any]) -> str:
    if not _finite(r.get("tost_p")):
        return "--"
    return "equivalent" if _is_true(r.get("equivalent")) else "not shown"


def _test_phrase(summary: pd.DataFrame) -> str:
    tests = set(summary.get("test_vs_baseline", pd.Series(dtype=str)).dropna().astype(str))
    tests.discard("")
    if tests == {"paired_t"}:
        return "paired $t$-test on matching seeds"
    if tests == {"welch_t"}:
        return "Welch $t$-test"
    return "paired $t$-test on matching seeds, Welch where seeds do not match"


def tests_table(res: StudyResults) -> str:
    """Every test of the study (tests.csv) as a longtable."""
    cols = ["variant", "depth", "comparison", "test", "$n$", "estimate", "interval", "$p$"]
    cols += [r"$p_{\mathrm{Holm}}$", "effect"]
    rows = []
    for r in res.tests.to_dict("records"):
        level = f" {float(r['ci_level']):.0%}" if _finite(r.get("ci_level")) else ""
        interval = ci(r.get("ci_low"), r.get("ci_high"))
        rows.append(
            [
                tt(r["variant"]),
                integer(r["depth"]),
                tex_escape(f"{r['comparison']} ({r['reference']})"),
                tex_escape(r["test"]),
                integer(r["n"]),
                signed(r.get("estimate")),
                interval + (tex_escape(level) if interval != "--" else ""),
                pval(r.get("p")),
                pval(r.get("p_holm")),
                (num(r.get("effect")) + " " + tex_escape(_str(r.get("effect_name")))).strip(),
            ]
        )
    if not rows:
        rows = [["--"] * len(cols)]
    caption = (
        f"{tt(res.study.name)}: every test on the {res.metric_label} (points); "
        "$p_{\\mathrm{Holm}}$ within each family (comparison and kind of test)."
    )
    return latex_table(
        cols,
        rows,
        align="llllrrlrrl",
        caption=caption,
        label=label("tab", res.study.name, "tests"),
        long=True,
        size=r"\scriptsize",
    )


def intro_table() -> str:
    """Table 6 against the public reproduction and two other reproductions."""
    depths = sorted(set(R.TABLE6) | set(R.REPRODUCTION["resnet"]))
    others = list(R.OTHER_REPRODUCTIONS)
    cols = ["depth", "params", "paper", "reproduction", "gap"] + [tt(o) for o in others]
    rows = []
    for d in depths:
        paper = R.TABLE6.get(d)
        rep = R.REPRODUCTION["resnet"].get(d)
        p_txt = num(paper.error) if paper else "--"
        if paper and paper.std is not None:
            p_txt += f" ($\\pm${num(paper.std)}, $n = {paper.n}$)"
        gap = signed(rep - paper.error) if rep is not None and paper else "--"
        row = [str(d), f"{R.PARAMS[d]:,}".replace(",", "\\,") if d in R.PARAMS else "--"]
        row += [p_txt, num(rep) if rep is not None else "--", gap]
        row += [num(R.OTHER_REPRODUCTIONS[o].get(d, math.nan)) for o in others]
        rows.append(row)
    caption = (
        "CIFAR-10 test error (\\%) of ResNets with option-A shortcuts: Table~6 of "
        "\\citet{he2015deep} (single runs; ResNet-110 mean $\\pm$ sd over five), the public "
        "PyTorch re-implementation under investigation (best epoch of one run), the gap "
        "between them, and two other public reproductions (200 epochs; single runs)."
    )
    return latex_table(
        cols, rows, align="rrrrr" + "r" * len(others), caption=caption, label="tab:gap"
    )


def _field_comments() -> dict[str, str]:
    """RunConfig field -> its provenance comment (the lines above it and the inline one)."""
    src = inspect.getsource(C.RunConfig)
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in src.splitlines():
        s = line.strip()
        if s.startswith("#"):
            text = s.lstrip("#").strip()
            if text.startswith("---"):
                pending = []
            else:
                pending.append(text)
            continue
        mt = re.match(r"^(\w+): [^=]+=\s*(.+?)(?:\s+#\s*(.*))?$", s)
        if mt and mt.group(1) in {f.name for f in dataclasses.fields(C.RunConfig)}:
            out[mt.group(1)] = " ".join([*pending, mt.group(3) or ""]).strip()
            pending = []
        elif not s:
            pending = []
    return out


def _value_text(v: Any) -> str:
    if isinstance(v, tuple):
        return ", ".join(map(str, v))
    return str(v)


def protocol_table() -> str:
    """Every RunConfig switch: the paper's value (the default), the alternatives, provenance."""
    comments = _field_comments()
    cfg = C.RunConfig()
    rows = []
    for f in dataclasses.fields(C.RunConfig):
        default = getattr(cfg, f.name)
        allowed = getattr(C, f"{f.name.upper()}S", None)
        if isinstance(default, bool):
            alts = str(not default)
        elif isinstance(allowed, tuple):
            alts = ", ".join(str(a) for a in allowed if a != default)
        else:
            alts = "--"
        rows.append(
            [
                tt(f.name),
                tt(_value_text(default)),
                tex_escape(alts),
                tex_escape(comments.get(f.name, "")),
            ]
        )
    return latex_table(
        ["field", "default", "alternatives", "provenance (the comment in \\texttt{config.py})"],
        rows,
        align=r"l>{\raggedright\arraybackslash}p{2.1cm}>{\raggedright\arraybackslash}p{2.6cm}"
        r">{\raggedright\arraybackslash}p{8.2cm}",
        caption="Every switch of a run (\\texttt{RunConfig}); defaults are the paper's "
        "protocol. Generated from the source, so the table and the code cannot disagree.",
        label="tab:protocol",
        long=True,
        size=r"\scriptsize",
    )


def budgets_table() -> str:
    cols = ["budget", "iterations", "lr drops at", "batch", "training images", "eval every"]
    rows = []
    for b in C.BUDGETS:
        cfg = C.apply_budget(C.RunConfig(), b)
        rows.append(
            [
                tt(b),
                str(cfg.iterations),
                ", ".join(map(str, cfg.milestones)),
                str(cfg.batch_size),
                str(cfg.subset or cfg.train_size),
                str(cfg.eval_every),
            ]
        )
    return latex_table(
        cols,
        rows,
        align="lrrrrr",
        caption="Budgets: iterations and milestones scale together (\\texttt{apply\\_budget}).",
        label="tab:budgets",
        size=r"\small",
    )


def catalog_table(results: dict[str, StudyResults], selected: set[str]) -> str:
    rows = []
    for name in ordered_studies():
        s = ablations.get(name)
        res = results.get(name)
        status = f"{len(res.included)} runs" if res else ("none" if name in selected else "--")
        rows.append(
            [
                rf"\hyperref[{label('sec', name)}]{{{tt(name)}}}",
                tex_escape(s.question),
                str(len(s.variants)),
                ", ".join(map(str, s.depths)),
                status,
            ]
        )
    return latex_table(
        ["study", "question", "variants", "depths", "results"],
        rows,
        align=r"l>{\raggedright\arraybackslash}p{6.4cm}rll",
        caption="The catalog of studies (\\texttt{ablations/}): one per suspected cause; "
        "results: runs analysed in this build.",
        label="tab:catalog",
        size=r"\footnotesize",
    )
