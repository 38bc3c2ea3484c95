"""Write the paper's generated sources and build the PDF: `python -m studies.paper [STUDY ...]`.

`paper/main.tex` is static prose; everything that depends on results lives in
`paper/generated/`, which this module rewrites from the analysis outputs of studies.analyze
(`<out>/<study>/analysis/`, the results contract of DESIGN.md), running the analysis first
where it is missing or older than the study's store:

- numbers.tex: one `\\newcommand` per number (letters-only names, e.g.
  `\\CropAblationPadBlackDTwentyMean`): every summary statistic of every (study, variant,
  depth), the study-level counts, the paper's Table 6, the reproduction gap, the protocol's
  defaults and the statistical settings. Prose refers to numbers only through these macros.
- studies.tex: one subsection per catalog study: question, hypothesis and provenance from
  the registry (ablations), then, where results exist, the summary table, the figure and the
  finding sentences; otherwise one line saying there are none.
- <study>/summary.tex, <study>/tests.tex, <study>/findings.tex, <study>/*.pdf (figures
  copied from the analysis), gap.tex (factorial attribution), intro.tex, protocol.tex,
  budgets.tex, catalog.tex, threats.tex, conclusion.tex, appendix.tex.

Finding sentences are generated from the statistics (significant or not after Holm, TOST
equivalence shown or not, each with its n), so a rerun with other results rewrites every
claim with them. Every file is written atomically (temporary file + rename); files of an
earlier run that this one did not write are removed.

The PDF is built with `latexmk -pdf -interaction=nonstopmode -halt-on-error -outdir=build`
in the paper directory (TeX Live packages: DEBIAN_PACKAGES). References: He et al. 2015
(arXiv:1512.03385) for the protocol and Table 6 (resnet_repro.reference); the statistics are
those of studies.analyze (Holm 1979, Schuirmann 1987, Welch 1947, Wilcoxon 1945, Efron 1987).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import ablations
from ablations import Study
from resnet_repro import config as C
from resnet_repro import reference as R
from studies import stats as S

DEBIAN_PACKAGES = (
    "latexmk",
    "texlive-latex-base",
    "texlive-latex-recommended",
    "texlive-fonts-recommended",
)
LATEXMK = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-outdir=build"]
GENERATED = "generated"
# Defaults of studies.analyze, used where an analysis has no meta.json.
DEFAULT_ALPHA, DEFAULT_POWER, DEFAULT_MARGIN = 0.05, 0.8, 0.3
FIGURES = ("forest", "edf", "fig6_curves")
# A study with more comparisons per depth than this gets one sentence per significant (or
# untestable) comparison and one sentence for all the others.
MAX_SENTENCES = 6
METRIC_LABEL = {"final": "final test error", "best": "best test error over evaluations"}
TEST_WORDS = {
    "paired_t": "paired t-test",
    "welch_t": "Welch t-test",
    "one_sample_t": "one-sample t-test",
    "welch_t_summary": "Welch t-test from the paper's summary statistics",
    "wilcoxon": "Wilcoxon signed-rank test",
    "mann_whitney": "Mann-Whitney test",
    "tost": "TOST",
}


class LatexMissingError(RuntimeError):
    """latexmk or pdflatex is not installed."""


class LatexBuildError(RuntimeError):
    """latexmk failed; the message holds the relevant lines of the LaTeX log."""


# ------------------------------------------------------------------------ formatting


def tex_escape(text: Any) -> str:
    """`text` as LaTeX text: the ten special characters and a few Unicode signs escaped."""
    s = str(text)
    out = []
    for ch in s:
        out.append(_ESCAPES.get(ch, ch))
    s = "".join(out)
    return s.replace("-\\textgreater{}", "$\\to$")


_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "≈": r"$\approx$",
    "→": r"$\to$",
    "−": "-",
}


def tt(text: Any) -> str:
    """Typewriter text (names of variants, fields, studies), escaped."""
    return rf"\texttt{{{tex_escape(text)}}}"


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x: Any, digits: int = 2) -> str:
    """A number as printed everywhere in the paper: fixed `digits` decimals, "--" if NaN."""
    return f"{float(x):.{digits}f}" if _finite(x) else "--"


def signed(x: Any, digits: int = 2) -> str:
    return f"{float(x):+.{digits}f}" if _finite(x) else "--"


def pval(p: Any) -> str:
    """A p-value: three decimals, "<0.001" below (LaTeX: `$<$0.001`)."""
    if not _finite(p):
        return "--"
    return "$<$0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def integer(x: Any) -> str:
    if _finite(x):
        return str(int(round(float(x))))
    return r"$\infty$" if str(x) in ("inf", "Infinity") or x == math.inf else "--"


def ci(low: Any, high: Any, digits: int = 2) -> str:
    if not (_finite(low) and _finite(high)):
        return "--"
    return f"[{float(low):.{digits}f}, {float(high):.{digits}f}]"


# ---------------------------------------------------------------------------- macros

_ONES = (
    "Zero One Two Three Four Five Six Seven Eight Nine Ten Eleven Twelve Thirteen Fourteen "
    "Fifteen Sixteen Seventeen Eighteen Nineteen"
).split()
_TENS = ["", "", "Twenty", "Thirty", "Forty", "Fifty", "Sixty", "Seventy", "Eighty", "Ninety"]


def number_words(n: int) -> str:
    """n >= 0 in CamelCase English words: 20 -> Twenty, 110 -> OneHundredTen."""
    if n < 0:
        raise ValueError(f"number_words({n}): allowed values are >= 0")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (_ONES[n % 10] if n % 10 else "")
    for size, word in (
        (10**9, "Billion"),
        (10**6, "Million"),
        (1000, "Thousand"),
        (100, "Hundred"),
    ):
        if n >= size:
            rest = n % size
            return number_words(n // size) + word + (number_words(rest) if rest else "")
    raise AssertionError  # unreachable


def macro_name(*parts: Any) -> str:
    """A LaTeX macro name of letters only from `parts`: words capitalised, digits spelled out
    (a run with a leading zero digit by digit), "." between digits as "Point":
    ("crop_ablation", "pad_black", "D", 20, "Mean") -> "CropAblationPadBlackDTwentyMean",
    "m0.001" -> "MZeroPointZeroZeroOne"."""
    words = []
    for part in parts:
        for tok in re.findall(r"[A-Za-z]+|\d+|\.", str(part)):
            if tok == ".":
                words.append("Point")
            elif tok.isdigit():
                if len(tok) > 1 and tok[0] == "0":
                    words.append("".join(_ONES[int(d)] for d in tok))
                else:
                    words.append(number_words(int(tok)))
            else:
                words.append(tok[0].upper() + tok[1:])
    name = "".join(words)
    if not name.isalpha():
        raise ValueError(f"cannot make a letters-only macro name from {parts!r}")
    return name


class Macros:
    """The macros of numbers.tex, in definition order; a name defined twice is an error."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.comments: dict[str, str] = {}

    def add(self, parts: Sequence[Any], value: str, comment: str = "") -> str:
        """Define the macro named from `parts` as `value` (LaTeX text); returns its use
        (`\\Name{}`, safe before a space or a letter)."""
        name = macro_name(*parts)
        if name in self.values:
            raise ValueError(f"macro \\{name} defined twice (from {parts!r})")
        self.values[name] = value
        self.comments[name] = comment
        return f"\\{name}{{}}"

    def use(self, parts: Sequence[Any]) -> str:
        name = macro_name(*parts)
        if name not in self.values:
            raise KeyError(f"macro \\{name} is not defined")
        return f"\\{name}{{}}"

    def tex(self) -> str:
        lines = ["% generated by studies.paper: every number of the paper, one macro each", ""]
        for name, value in self.values.items():
            if self.comments[name]:
                lines.append(f"% {self.comments[name]}")
            lines.append(f"\\newcommand{{\\{name}}}{{{value}}}")
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- analysis I/O


@dataclass
class StudyResults:
    """A study's analysis outputs as read from `<out>/<study>/analysis/`."""

    study: Study
    directory: Path
    summary: pd.DataFrame
    tests: pd.DataFrame
    runs: pd.DataFrame
    selection_bias: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    effects: pd.DataFrame | None = None  # factorial studies only
    ranking: pd.DataFrame | None = None

    @property
    def alpha(self) -> float:
        return float(self.meta.get("alpha", DEFAULT_ALPHA))

    @property
    def power(self) -> float:
        return float(self.meta.get("power", DEFAULT_POWER))

    @property
    def margin(self) -> float:
        return float(self.meta.get("margin", DEFAULT_MARGIN))

    @property
    def metric_label(self) -> str:
        return METRIC_LABEL.get(str(self.meta.get("metric", "final")), "final test error")

    @property
    def included(self) -> pd.DataFrame:
        inc = self.runs.get("included")
        if inc is None:
            return self.runs[self.runs["status"] == "finished"]
        return self.runs[inc.astype(str).str.lower() == "true"]

    def figure(self, name: str) -> Path | None:
        path = self.directory / f"{name}.pdf"
        return path if path.is_file() else None


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else pd.DataFrame()


def load_results(study: Study, directory: str | Path) -> StudyResults | None:
    """The analysis under `directory` (None when it has no summary.csv or no rows)."""
    directory = Path(directory)
    summary = _read_csv(directory / "summary.csv")
    if summary.empty:
        return None
    meta_path = directory / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    res = StudyResults(
        study=study,
        directory=directory,
        summary=summary,
        tests=_read_csv(directory / "tests.csv"),
        runs=_read_csv(directory / "runs.csv"),
        selection_bias=_read_csv(directory / "selection_bias.csv"),
        meta=meta,
    )
    if study.factors:
        res.effects = _read_csv(directory / "factorial_effects.csv")
        res.ranking = _read_csv(directory / "factorial_ranking.csv")
    return res


def has_store(study_name: str, out: str | Path) -> bool:
    d = Path(out) / study_name
    return (d / "study.db").is_file() or (d / "analysis" / "summary.csv").is_file()


def discover(out: str | Path) -> list[str]:
    """Catalog studies with a store (or an analysis) under `out`, in catalog order."""
    return [name for name in ordered_studies() if has_store(name, out)]


def ordered_studies() -> list[str]:
    """Catalog order for the paper: paper_baseline first, factorial studies last."""
    studies = ablations.all_studies()
    names = sorted(studies, key=lambda n: (n != "paper_baseline", bool(studies[n].factors), n))
    return names


def _store_mtime(study_dir: Path) -> float:
    times = [p.stat().st_mtime for p in study_dir.glob("study.db*") if p.is_file()]
    return max(times, default=-math.inf)


def ensure_analysis(
    study_name: str,
    out: str | Path,
    *,
    storage: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path | None:
    """The study's analysis directory, running studies.analyze where it is missing, older
    than the study's SQLite store, or always with a `storage` URL (a remote store's age is
    unknown) or `force`. None when the study has no runs to analyse."""
    study_dir = Path(out) / study_name
    directory = study_dir / "analysis"
    summary = directory / "summary.csv"
    stale = not summary.is_file() or force or storage is not None
    if not stale and _store_mtime(study_dir) > summary.stat().st_mtime:
        stale = True
    if stale and (storage is not None or (study_dir / "study.db").is_file()):
        from studies import analyze as A  # noqa: PLC0415 - heavy (optuna, statsmodels)

        try:
            result = A.analyze(study_name, out, storage=storage)
        except A.EmptyStudyError as e:
            log(f"{study_name}: no results ({e})")
        else:
            log(f"{study_name}: analysed {result.counts['included']} runs -> {result.directory}")
    return directory if summary.is_file() else None


# --------------------------------------------------------------------------- writing


class Writer:
    """Atomic writes under the generated directory; remembers what it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[Path] = set()

    def write(self, relpath: str, data: str | bytes) -> Path:
        path = self.root / relpath
        write_atomic(path, data)
        self.written.add(path.resolve())
        return path

    def copy(self, src: Path, relpath: str) -> Path:
        return self.write(relpath, src.read_bytes())

    def remove_stale(self) -> list[Path]:
        """Delete files under root that this run did not write (and emptied directories)."""
        removed = []
        for path in sorted(self.root.rglob("*"), reverse=True):
            if path.is_file() and path.resolve() not in self.written:
                path.unlink()
                removed.append(path)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        return removed


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename,
    so a reader (or an interrupted run) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- tables


def latex_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    align: str,
    caption: str,
    label: str,
    long: bool = False,
    size: str = r"\footnotesize",
) -> str:
    """A booktabs table of already-escaped cells: a float scaled down to the text width when
    wider, or a longtable (`long`) that breaks across pages."""
    head = " & ".join(columns) + r" \\"
    body = [" & ".join(r) + r" \\" for r in rows]
    if long:
        return "\n".join(
            [
                "\\begingroup" + size,
                r"\setlength{\tabcolsep}{3pt}",
                rf"\begin{{longtable}}{{{align}}}",
                rf"\caption{{{caption}}}\label{{{label}}}\\",
                r"\toprule",
                head,
                r"\midrule",
                r"\endfirsthead",
                r"\toprule",
                head,
                r"\midrule",
                r"\endhead",
                r"\bottomrule",
                r"\endfoot",
                *body,
                r"\end{longtable}",
                r"\endgroup",
                "",
            ]
        )
    return "\n".join(
        [
            r"\begin{table}[htbp]",
            r"\centering" + size,
            r"\setlength{\tabcolsep}{3pt}",
            rf"\caption{{{caption}}}\label{{{label}}}",
            r"\fitwidth{%",
            rf"\begin{{tabular}}{{{align}}}",
            r"\toprule",
            head,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}}",
            r"\end{table}",
            "",
        ]
    )


def label(*parts: Any) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9]+", "-", str(p)).strip("-") for p in parts)


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
            f"$\\pm{res.margin:g}$ points."
        )
    return latex_table(
        cols, rows, align=align, caption=caption, label=label("tab", res.study.name, "summary")
    )


def _tost_word(r: dict[str, Any]) -> str:
    if not _finite(r.get("tost_p")):
        return "--"
    return "equivalent" if _is_true(r.get("equivalent")) else "not shown"


def _is_true(x: Any) -> bool:
    return str(x).strip().lower() in ("true", "1", "1.0")


def _n_text(summary: pd.DataFrame) -> str:
    n = summary["n"].astype(float)
    lo, hi = int(n.min()), int(n.max())
    return f"$n = {lo}$" if lo == hi else f"$n = {lo}$--${hi}$ per row"


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


def _str(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)


# --------------------------------------------------------------------------- findings


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


# ------------------------------------------------------------------------- sections


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
    }
    for k, v in proto.items():
        m.add(("Proto", k), v, f"RunConfig default {k}")
    m.add(("Num", "Fields"), str(len(dataclasses.fields(C.RunConfig))), "RunConfig fields")


def define_global_numbers(results: dict[str, StudyResults], m: Macros) -> None:
    """Statistical settings and the counts over every study in the build."""
    first = next(iter(results.values()), None)
    alpha = first.alpha if first else DEFAULT_ALPHA
    power = first.power if first else DEFAULT_POWER
    margin = first.margin if first else DEFAULT_MARGIN
    m.add(("Stat", "Alpha"), f"{alpha:g}", "significance level (analysis meta.json)")
    m.add(("Stat", "Power"), f"{power:g}", "target power")
    m.add(("Stat", "Margin"), f"{margin:g}", "TOST equivalence margin, points")
    boots = {int(r.meta.get("n_boot", 0)) for r in results.values() if r.meta.get("n_boot")}
    m.add(("Stat", "Boot"), ", ".join(map(str, sorted(boots))) or "--", "bootstrap resamples")
    m.add(("Num", "Studies"), str(len(ablations.all_studies())), "studies in the catalog")
    m.add(("Num", "Studies", "With", "Results"), str(len(results)), "studies with results")
    n_runs = sum(len(r.included) for r in results.values())
    m.add(("Num", "Runs", "Total"), str(n_runs), "analysed runs over every study")


# --------------------------------------------------------------------- other sections


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
        col = f"seeds_needed_{res.margin:g}"
        base = res.summary[res.summary["variant"] == res.study.baseline]
        if col in base:
            for r in base.to_dict("records"):
                if _finite(r[col]):
                    power_rows.append((res, r, col))
    if power_rows:
        res, r, col = power_rows[0]
        key = (res.study.name, "D", int(r["depth"]), "Seeds", "For", "Margin")
        m.add(key, integer(r[col]), f"{res.study.name}: {col} of the baseline")
        paras[-1] += (
            f" With the baseline spread of {tt(res.study.name)} at depth {int(r['depth'])}, "
            f"about {m.use(key)} seeds per arm would detect a difference of "
            f"{res.margin:g} points with power {res.power:g}."
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
    bias = [
        (name, r.selection_bias)
        for name, r in results.items()
        if len(r.selection_bias) and "scope" in r.selection_bias
    ]
    rows = [(n, b[b["scope"] == "all"].iloc[0]) for n, b in bias if (b["scope"] == "all").any()]
    rows = [(n, r) for n, r in rows if _finite(r["mean"])]
    if rows:
        n_total = sum(int(r["n"]) for _, r in rows)
        mean = sum(float(r["mean"]) * int(r["n"]) for _, r in rows) / n_total
        m.add(("Selection", "Bias", "Mean"), num(mean), "final minus best test error, points")
        m.add(("Selection", "Bias", "N"), str(n_total), "runs behind it")
        paras.append(
            "\\emph{Selection.} The reproduction reports the best test error over all epochs, "
            "a choice made on the test set. Over the "
            f"{m.use(('Selection', 'Bias', 'N'))} finished runs here, the final error exceeds "
            f"the best one by {m.use(('Selection', 'Bias', 'Mean'))} points on average "
            "(per-study intervals in selection\\_bias.csv); the analyses here use the final error."
        )
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


# --------------------------------------------------------------------------- generate


@dataclass
class Generated:
    """What `generate` wrote."""

    directory: Path
    files: list[Path]
    results: dict[str, StudyResults]
    findings: dict[str, list[Finding]]
    removed: list[Path]


def generate(
    studies: Iterable[str] | None = None,
    *,
    out: str | Path = "runs",
    paper_dir: str | Path = "paper",
    storage: str | None = None,
    reanalyze: bool = False,
    log: Callable[[str], None] = print,
) -> Generated:
    """Rewrite `<paper_dir>/generated/` from the analyses of `studies` (default: every study
    with a store under `out`), analysing first where the analysis is missing or stale."""
    out = Path(out)
    catalog = ablations.all_studies()
    if studies:
        names = list(dict.fromkeys(studies))
        for n in names:
            ablations.get(n)  # KeyError with close matches for a typo
    elif storage is not None:
        names = ordered_studies()
    else:
        names = discover(out)
    # Studies named on the command line are the build; without names every catalog study is
    # considered, and one without a store says it has no results (not "not included").
    selected = set(names) if studies else set(catalog)
    results: dict[str, StudyResults] = {}
    for name in ordered_studies():
        if name not in names:
            continue
        directory = ensure_analysis(name, out, storage=storage, force=reanalyze, log=log)
        if directory is not None and (res := load_results(catalog[name], directory)):
            results[name] = res

    root = Path(paper_dir) / GENERATED
    w = Writer(root)
    m = Macros()
    define_reference_numbers(m)
    define_global_numbers(results, m)
    findings: dict[str, list[Finding]] = {}
    sections = [
        "% generated by studies.paper: one subsection per catalog study",
        r"\label{sec:studies}",
    ]
    for name in ordered_studies():
        study = catalog[name]
        res = results.get(name)
        rel = f"{GENERATED}/{name}"
        if res is not None:
            define_study_numbers(res, m)
            text, findings[name] = study_findings(res, m)
            w.write(f"{name}/findings.tex", text)
            w.write(f"{name}/summary.tex", summary_table(res))
            w.write(f"{name}/tests.tex", tests_table(res))
            for fig in FIGURES:
                if (src := res.figure(fig)) is not None:
                    w.copy(src, f"{name}/{src.name}")
        sections.append(study_section(study, res, selected=name in selected, out=str(out), rel=rel))
    w.write("studies.tex", "\n".join(sections) + "\n")
    w.write("gap.tex", gap_section(results, m))
    w.write("intro.tex", intro_table())
    w.write("protocol.tex", protocol_table())
    w.write("budgets.tex", budgets_table())
    w.write("catalog.tex", catalog_table(results, selected))
    w.write("threats.tex", threats_text(results, m))
    w.write("conclusion.tex", conclusion_text(results, findings, m))
    w.write("appendix.tex", appendix_text(results))
    # numbers.tex last: the sections above define macros as they use them.
    w.write("numbers.tex", m.tex())
    removed = w.remove_stale()
    return Generated(root, sorted(w.written), results, findings, removed)


# ------------------------------------------------------------------------------ build


def latex_available() -> bool:
    return shutil.which("latexmk") is not None and shutil.which("pdflatex") is not None


def missing_latex_message() -> str:
    return (
        "latexmk/pdflatex not found: install the Debian packages "
        f"{' '.join(DEBIAN_PACKAGES)} (apt-get install -y {' '.join(DEBIAN_PACKAGES)}); "
        "the generated sources are written, so `latexmk -pdf main.tex` in the paper directory "
        "builds the PDF once they are installed"
    )


def build(paper_dir: str | Path = "paper", *, timeout: float = 600) -> Path:
    """Build `<paper_dir>/build/main.pdf` with latexmk; LatexMissingError without TeX,
    LatexBuildError (holding the relevant log lines) on a LaTeX error."""
    paper_dir = Path(paper_dir)
    if not latex_available():
        raise LatexMissingError(missing_latex_message())
    try:
        proc = subprocess.run(
            [*LATEXMK, "main.tex"],
            cwd=paper_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LatexBuildError(f"latexmk timed out after {timeout:g} s") from e
    pdf = paper_dir / "build" / "main.pdf"
    if proc.returncode != 0 or not pdf.is_file():
        excerpt = log_excerpt(paper_dir / "build" / "main.log")
        if not excerpt:
            excerpt = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise LatexBuildError(
            f"latexmk failed (exit {proc.returncode}) in {paper_dir}; see "
            f"{paper_dir / 'build' / 'main.log'}:\n{excerpt}"
        )
    return pdf


def log_excerpt(log_path: Path, *, context: int = 6, limit: int = 60) -> str:
    """The error lines of a LaTeX log ("! ..." with the lines after it, up to the "l.N"
    line that names the source line) and undefined references."""
    if not log_path.is_file():
        return ""
    lines = log_path.read_text(errors="replace").splitlines()
    keep: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("!") or re.match(r"^\S+:\d+: ", line):
            block = [line]
            for nxt in lines[i + 1 : i + 1 + context]:
                block.append(nxt)
                if re.match(r"^l\.\d+", nxt):
                    break
            keep += block
        elif "Undefined control sequence" in line or "LaTeX Error" in line:
            keep.append(line)
        elif (
            line.startswith("LaTeX Warning: Reference") or "File `" in line and "not found" in line
        ):
            keep.append(line)
    return "\n".join(dict.fromkeys(keep[:limit]))


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m studies.paper",
        description="Regenerate paper/generated/ from the studies' analyses and build the PDF.",
    )
    p.add_argument(
        "studies", nargs="*", metavar="STUDY", help="studies (default: all with a store)"
    )
    p.add_argument("--out", default="runs", help="output directory of studies.run (default runs)")
    p.add_argument("--paper-dir", default="paper", help="directory of main.tex (default paper)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite)")
    p.add_argument("--reanalyze", action="store_true", help="rerun studies.analyze always")
    p.add_argument("--no-build", action="store_true", help="write the sources only")
    args = p.parse_args(argv)
    paper_dir = Path(args.paper_dir)
    if not (paper_dir / "main.tex").is_file():
        print(f"error: {paper_dir / 'main.tex'} not found (--paper-dir)", file=sys.stderr)
        return 2
    try:
        gen = generate(
            args.studies,
            out=args.out,
            paper_dir=paper_dir,
            storage=args.storage,
            reanalyze=args.reanalyze,
        )
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    with_results = ", ".join(gen.results) or "none"
    print(f"wrote {len(gen.files)} files to {gen.directory} (studies with results: {with_results})")
    if args.no_build:
        return 0
    try:
        pdf = build(paper_dir)
    except LatexMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except LatexBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"built {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
