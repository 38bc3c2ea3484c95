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

This module is the command line, `generate` (which writes every file) and `build`; the parts
live in studies.latex (escaping, number formats, macros, tables, atomic writes),
studies.paper_results (reading the analysis, running it where stale), studies.findings (the
finding sentences), studies.paper_tables, studies.paper_gap and studies.paper_sections (the
generated tables and sections). Their public names are importable from here too.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import ablations
from studies.findings import (
    MAX_SENTENCES,
    Finding,
    define_study_numbers,
    setup_caveat,
    study_findings,
    vs_baseline_sentence,
    vs_paper_sentence,
)
from studies.latex import (
    Macros,
    Writer,
    ci,
    integer,
    label,
    latex_table,
    macro_name,
    num,
    number_words,
    pval,
    signed,
    tex_escape,
    tt,
    write_atomic,
)
from studies.latex import _finite as _finite
from studies.latex import _str as _str
from studies.paper_gap import gap_section
from studies.paper_results import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    DEFAULT_POWER,
    METRIC_LABEL,
    StudyResults,
    discover,
    ensure_analysis,
    has_store,
    load_results,
    ordered_studies,
)
from studies.paper_results import _read_csv as _read_csv
from studies.paper_sections import (
    GENERATED,
    appendix_text,
    conclusion_text,
    define_global_numbers,
    define_reference_numbers,
    figure_block,
    pdf_size,
    study_section,
    threats_text,
)
from studies.paper_tables import _tost_word as _tost_word
from studies.paper_tables import (
    budgets_table,
    catalog_table,
    intro_table,
    protocol_table,
    summary_table,
    tests_table,
)

__all__ = [
    "DEBIAN_PACKAGES",
    "DEFAULT_ALPHA",
    "DEFAULT_MARGIN",
    "DEFAULT_POWER",
    "FIGURES",
    "GENERATED",
    "LATEXMK",
    "MAX_SENTENCES",
    "METRIC_LABEL",
    "Finding",
    "Generated",
    "LatexBuildError",
    "LatexMissingError",
    "Macros",
    "StudyResults",
    "Writer",
    "appendix_text",
    "budgets_table",
    "build",
    "catalog_table",
    "ci",
    "conclusion_text",
    "define_global_numbers",
    "define_reference_numbers",
    "define_study_numbers",
    "discover",
    "ensure_analysis",
    "figure_block",
    "gap_section",
    "generate",
    "has_store",
    "integer",
    "intro_table",
    "label",
    "latex_available",
    "latex_table",
    "load_results",
    "log_excerpt",
    "macro_name",
    "main",
    "missing_latex_message",
    "num",
    "number_words",
    "ordered_studies",
    "pdf_size",
    "protocol_table",
    "pval",
    "setup_caveat",
    "signed",
    "study_findings",
    "study_section",
    "summary_table",
    "tests_table",
    "tex_escape",
    "threats_text",
    "tt",
    "vs_baseline_sentence",
    "vs_paper_sentence",
    "write_atomic",
]

DEBIAN_PACKAGES = (
    "latexmk",
    "texlive-latex-base",
    "texlive-latex-recommended",
    "texlive-fonts-recommended",
)
LATEXMK = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-outdir=build"]
FIGURES = ("forest", "edf", "fig6_curves")


class LatexMissingError(RuntimeError):
    """latexmk or pdflatex is not installed."""


class LatexBuildError(RuntimeError):
    """latexmk failed; the message holds the relevant lines of the LaTeX log."""


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
