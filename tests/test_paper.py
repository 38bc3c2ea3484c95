"""Tests for studies.paper: macro names and escaping (known answers), generation from a real
tiny study (stem_pool_ablation, depth 8, synthetic data, 2 seeds, 10 iterations), the
finding sentences following changed results, re-analysis of stale analyses, the PDF (its
text holds the generated numbers) and the errors without LaTeX or on a LaTeX error."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require_or_skip
from scipy import stats
from statsmodels.stats.multitest import multipletests

import ablations
from studies import paper as P
from studies import paper_sections as PS
from studies.paper_gap import gap_section
from studies.paper_results import StudyResults

REPO = Path(__file__).resolve().parents[1]
STUDY = "stem_pool_ablation"
SMOKE = ["--seeds", "2", "--depths", "8", "--budget", "smoke", "--dataset", "synthetic"]
SMOKE += ["--wandb", "disabled", "--threads", "1"]
SMOKE += ["--set", "iterations=10", "--set", "milestones=5,8", "--set", "eval_every=5"]
HAVE_LATEX = P.latex_available()
LATEX_REASON = f"latexmk/pdflatex not installed (apt-get install {' '.join(P.DEBIAN_PACKAGES)})"


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory) -> Path:
    """A real tiny study trained with studies.run (shared by the tests of this module)."""
    from studies import run

    out = tmp_path_factory.mktemp("paper_runs")
    assert run.main([STUDY, *SMOKE, "--out", str(out)]) == 0
    return out


def _paper_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("main.tex", "refs.bib"):
        shutil.copy(REPO / "paper" / name, root / name)
    return root


@pytest.fixture(scope="module")
def generated(smoke_out, tmp_path_factory) -> P.Generated:
    paper_dir = _paper_dir(tmp_path_factory.mktemp("paper"))
    return P.generate([STUDY], out=smoke_out, paper_dir=paper_dir, log=_quiet)


# ------------------------------------------------------------------------ known answers


@pytest.mark.parametrize(
    "parts, name",
    [
        (("crop_ablation", "pad_black", "D", 20, "Mean"), "CropAblationPadBlackDTwentyMean"),
        (("bn_momentum_ablation", "m0.001"), "BnMomentumAblationMZeroPointZeroZeroOne"),
        (("split_ablation", "train45k", "D", 110), "SplitAblationTrainFortyFiveKDOneHundredTen"),
        (("x", 1202), "XOneThousandTwoHundredTwo"),
    ],
)
def test_macro_name(parts, name):
    assert P.macro_name(*parts) == name


def test_macro_names_of_the_catalog_are_letters_only_and_unique():
    m = P.Macros()
    for study in ablations.all_studies().values():
        for variant in study.variants:
            for depth in (*study.depths, 8):
                m.add((study.name, variant, "D", depth, "Mean"), "1.00")
    assert all(name.isalpha() for name in m.values)
    with pytest.raises(ValueError, match="defined twice"):
        m.add(("crop_ablation", "pad_zero", "D", 20, "Mean"), "2.00")


def test_number_words_and_formats():
    assert [P.number_words(n) for n in (0, 8, 20, 56, 110)] == [
        "Zero",
        "Eight",
        "Twenty",
        "FiftySix",
        "OneHundredTen",
    ]
    assert (P.num(8.7549), P.signed(-0.5), P.pval(0.0004), P.pval(0.04321)) == (
        "8.75",
        "-0.50",
        "$<$0.001",
        "0.043",
    )
    assert P.num(float("nan")) == "--" and P.ci(1, float("nan")) == "--"


def test_tex_escape():
    assert P.tex_escape("pad_black") == r"pad\_black"
    assert P.tex_escape("5% & $x #1 {a} ~^\\") == (
        r"5\% \& \$x \#1 \{a\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )
    assert P.tex_escape("a -> b ± c") == r"a $\to$ b $\pm$ c"


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "d" / "f.tex"
    P.write_atomic(target, "one")
    P.write_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.tex"]


# --------------------------------------------------------------------------- generation


def test_generated_sources(generated, smoke_out):
    root = generated.directory
    for rel in ("numbers.tex", "studies.tex", "gap.tex", "intro.tex", "protocol.tex"):
        assert (root / rel).stat().st_size > 0, rel
    for rel in ("summary.tex", "tests.tex", "findings.tex", "forest.pdf", "edf.pdf"):
        assert (root / STUDY / rel).stat().st_size > 0, rel
    numbers = (root / "numbers.tex").read_text()
    names = re.findall(r"\\newcommand\{\\([^}]*)\}", numbers)
    assert names and all(n.isalpha() for n in names)
    summary = pd.read_csv(smoke_out / STUDY / "analysis" / "summary.csv")
    for r in summary.itertuples():
        key = P.macro_name(STUDY, r.variant, "D", r.depth)
        assert f"\\newcommand{{\\{key}Mean}}{{{r.mean:.2f}}}" in numbers
        assert f"\\newcommand{{\\{key}N}}{{{r.n}}}" in numbers
    studies = (root / "studies.tex").read_text()
    assert studies.count(r"\subsection{") == len(ablations.all_studies())
    assert rf"\input{{generated/{STUDY}/summary.tex}}" in studies
    # Other studies: one generated line each; variant names escaped.
    assert "Not included in this build" in studies and r"no\_pool" in studies
    assert "No results yet" in (root / "gap.tex").read_text()
    findings = (root / STUDY / "findings.tex").read_text()
    assert "after Holm correction" in findings and "seed pairs" in findings


def test_pdf_holds_the_generated_numbers(generated, smoke_out):
    require_or_skip(HAVE_LATEX, LATEX_REASON)
    require_or_skip(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils) missing")
    paper_dir = generated.directory.parent
    pdf = P.build(paper_dir)
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    summary = pd.read_csv(smoke_out / STUDY / "analysis" / "summary.csv")
    for r in summary.itertuples():
        assert f"{r.mean:.2f}" in text, r.variant
    pool = summary[summary["variant"] == "pool"].iloc[0]
    assert f"{pool['diff_vs_baseline']:+.2f}" in text
    assert re.search(r"n = 2\b", text)
    # "stem_pool_ablation": underscores extract as spaces with OT1 fonts (no lmodern).
    assert re.search(r"stem.pool.ablation", text) and "Holm" in text
    log = (paper_dir / "build" / "main.log").read_text(errors="replace")
    assert "Undefined control sequence" not in log and "Citation" not in log


def _rewrite(out: Path, **changes) -> None:
    """Set columns of the rows of summary.csv (variant -> {column: value})."""
    path = out / STUDY / "analysis" / "summary.csv"
    s = pd.read_csv(path)
    for variant, cols in changes.items():
        for col, value in cols.items():
            s[col] = s[col].astype(object)
            s.loc[s["variant"] == variant, col] = value
    s.to_csv(path, index=False)


def test_findings_follow_the_results(smoke_out, generated, tmp_path):
    # `generated` analysed the smoke study (its analysis directory is copied below).
    out = tmp_path / "runs"
    shutil.copytree(smoke_out / STUDY / "analysis", out / STUDY / "analysis")
    paper_dir = _paper_dir(tmp_path / "paper")
    stale = paper_dir / "generated" / "old_study" / "summary.tex"
    P.write_atomic(stale, "from an earlier build")

    def findings() -> tuple[str, str]:
        gen = P.generate([STUDY], out=out, paper_dir=paper_dir, log=_quiet)
        root = gen.directory
        return (root / STUDY / "findings.tex").read_text(), (root / "numbers.tex").read_text()

    def pdf_text() -> str:
        """The rebuilt PDF's text, whitespace and hyphenation undone."""
        require_or_skip(HAVE_LATEX, LATEX_REASON)
        require_or_skip(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils) missing")
        pdf = P.build(paper_dir)
        raw = subprocess.run(
            ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        return re.sub(r"\s+", " ", re.sub(r"-\n", "", raw))

    _rewrite(out, pool=dict(diff_vs_baseline=3.5, p_vs_baseline_holm=0.0004))
    text, numbers = findings()
    assert not stale.exists()  # files of an earlier build are removed
    assert "the difference is significant after Holm correction" in text
    assert "raises the final test error" in text
    assert r"\newcommand{\StemPoolAblationPoolDEightDiff}{+3.50}" in numbers
    assert "the one comparison with the baseline" in text
    built = pdf_text()
    assert "the difference is significant after Holm correction" in built and "+3.50" in built

    _rewrite(out, pool=dict(diff_vs_baseline=-0.4, p_vs_baseline_holm=0.62))
    text, numbers = findings()
    assert "the difference is not significant after Holm correction" in text
    assert "raises" not in text and "the one comparison" in text
    assert r"\newcommand{\StemPoolAblationPoolDEightPHolm}{0.620}" in numbers
    rebuilt = pdf_text()  # the rebuilt PDF states the new finding, not the old one
    assert "the difference is not significant after Holm correction" in rebuilt
    assert "the difference is significant after Holm correction" not in rebuilt
    assert "+3.50" not in rebuilt and "0.620" in rebuilt

    # The baseline against the paper: TOST decides the equivalence sentence.
    paper = dict(paper_error=8.75, p_vs_paper=0.8, diff_vs_paper=0.1, test_vs_paper="one_sample_t")
    _rewrite(out, no_pool=dict(paper, tost_p=0.01, equivalent=True))
    text, _ = findings()
    assert "it is equivalent to the paper within $\\pm0.3$ points" in text
    assert "does not differ significantly" in text
    _rewrite(out, no_pool=dict(paper, tost_p=0.4, equivalent=False, p_vs_paper=0.001))
    text, _ = findings()
    assert "equivalence with the paper within $\\pm0.3$ points is not shown" in text
    assert "differs significantly from zero" in text
    assert "Welch tests" not in text
    # Where the paper gives mean +- sd (ResNet-110) the TOST is Welch's, and the text says so.
    welch = dict(paper, tost_p=0.01, equivalent=True, tost_test="tost_welch_summary")
    _rewrite(out, no_pool=welch)
    text, _ = findings()
    assert "two one-sided Welch tests from the paper's mean $\\pm$ sd" in text
    table = (paper_dir / "generated" / STUDY / "summary.tex").read_text()
    assert "two one-sided Welch tests from the paper's mean $\\pm$ sd where it gives" in table


# Names, not results: the paper's own labels and the preamble's settings.
NAMES = [r"CIFAR-10", r"Table~6", r"Section~4\.2", r"ResNet-\d+", r"\$6n\+2\$", r"4\.2"]


def test_no_number_in_main_tex_is_typed_by_hand():
    """Every number of the write-up comes from paper/generated/ (macros and inputs)."""
    tex = (REPO / "paper" / "main.tex").read_text()
    body = tex[tex.index(r"\begin{document}") :]
    body = re.sub(r"(?<!\\)%.*", "", body)  # comments
    body = re.sub(r"\\(cite\w*|label|ref|input|bibliography\w*)\{[^}]*\}", "", body)
    body = re.sub(r"\\[A-Za-z]+", "", body)  # macro names (letters only, see above)
    for name in NAMES:
        body = re.sub(name, "", body)
    assert re.findall(r".{0,30}\d.{0,30}", body) == []


def test_stale_analysis_is_rerun(tmp_path, monkeypatch):
    from studies import analyze as A

    calls = []

    def fake_analyze(name, out, **kw):
        calls.append(name)
        d = Path(out) / name / "analysis"
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.csv").write_text("variant,depth,n\n")
        return type("R", (), {"counts": {"included": 0}, "directory": d})()

    monkeypatch.setattr(A, "analyze", fake_analyze)
    study_dir = tmp_path / STUDY
    study_dir.mkdir()
    db = study_dir / "study.db"
    db.write_bytes(b"")
    assert P.ensure_analysis(STUDY, tmp_path, log=_quiet) is not None  # missing: analysed
    assert calls == [STUDY]
    now = time.time()
    os.utime(study_dir / "analysis" / "summary.csv", (now, now))
    os.utime(db, (now - 100, now - 100))
    P.ensure_analysis(STUDY, tmp_path, log=_quiet)  # up to date: not analysed
    assert calls == [STUDY]
    os.utime(db, (now + 100, now + 100))
    P.ensure_analysis(STUDY, tmp_path, log=_quiet)  # the store changed: analysed again
    assert calls == [STUDY, STUDY]


def test_cli_without_latex_names_the_packages(smoke_out, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(P.shutil, "which", lambda name: None)
    paper_dir = _paper_dir(tmp_path / "paper")
    out = str(smoke_out)
    assert P.main([STUDY, "--out", out, "--paper-dir", str(paper_dir)]) == 3
    err = capsys.readouterr().err
    for pkg in P.DEBIAN_PACKAGES:
        assert pkg in err
    assert (paper_dir / "generated" / "numbers.tex").is_file()  # sources still written
    assert P.main(["no_such_study", "--out", out, "--paper-dir", str(paper_dir)]) == 2


def test_latex_error_shows_the_log_lines(tmp_path):
    require_or_skip(HAVE_LATEX, LATEX_REASON)
    (tmp_path / "main.tex").write_text(
        "\\documentclass{article}\n\\begin{document}\nfine\n\\NoSuchMacro\n\\end{document}\n"
    )
    with pytest.raises(P.LatexBuildError) as e:
        P.build(tmp_path)
    assert "Undefined control sequence" in str(e.value)
    assert "l.4" in str(e.value)


# ------------------------------------------------------------- gap, power and selection prose

# gap_factorial's main effects (points, paper -> reproduction level): they sum to 1.02.
# With noise seed 10, stem_pool's raw p is below 0.05 and its Holm-adjusted p above it.
GAP_EFFECTS = {"crop": 0.9, "bn_eval": 0.4, "shortcut": 0.0, "stem_pool": 0.04, "normalize": -0.32}


def _results(study_name: str, summary: pd.DataFrame, **kw) -> StudyResults:
    empty = pd.DataFrame()
    fields = dict(tests=empty, runs=empty, selection_bias=empty, meta={"alpha": 0.05})
    fields.update(kw)
    return StudyResults(ablations.get(study_name), Path("."), summary, **fields)


@pytest.fixture(scope="module")
def gap_results() -> StudyResults:
    """gap_factorial at depth 20 from a synthetic 16-run half fraction x 3 seeds, analysed by
    studies.analyze's factorial code (no training)."""
    from ablations.gap_factorial import VARIANTS
    from studies import analyze as A

    study = ablations.get("gap_factorial")
    rng = np.random.default_rng(10)
    rows = []
    for seed, (name, overrides) in itertools.product(range(3), VARIANTS.items()):
        x = {f: 1.0 if overrides[f] == study.factors[f][1] else -1.0 for f in GAP_EFFECTS}
        y = 9.0 + sum(e / 2 * x[f] for f, e in GAP_EFFECTS.items()) + rng.normal(0, 0.08)
        rows.append(dict(seed=seed, depth=20, variant=name, status="finished", y=y, **overrides))
    runs = pd.DataFrame(rows).assign(analysed_error=lambda d: d["y"])
    fact = A.factorial_by_depth(study, runs)
    frames = A.factorial_frames(study, fact, "final")
    summary = pd.DataFrame({"variant": ["paper"], "depth": [20], "n": [3]})
    return _results(
        "gap_factorial",
        summary,
        effects=frames["factorial_effects"],
        ranking=frames["factorial_ranking"],
    )


def test_gap_prose_uses_holm_and_the_predicted_gap(gap_results):
    m = P.Macros()
    PS.define_reference_numbers(m)
    text = gap_section({"gap_factorial": gap_results}, m)
    ranking = gap_results.ranking.set_index("factor")
    total = sum(GAP_EFFECTS.values())
    # The predicted gap is the sum of the main effects; shares are of it and sum to 1.
    assert ranking["predicted_gap"].iloc[0] == pytest.approx(ranking["effect"].sum())
    assert ranking["predicted_gap"].iloc[0] == pytest.approx(total, abs=0.1)
    assert ranking["share"].sum() == pytest.approx(1.0)
    assert ranking.loc["normalize", "share"] < 0
    gap_macro = P.macro_name("gap_factorial", "D", 20, "PredictedGap")
    assert m.values[gap_macro] == P.signed(ranking["effect"].sum())
    assert f"The main effects sum to \\{gap_macro}{{}} points" in text
    assert "interactions cancel between these opposite corners" in text
    assert "Each share in the table is a main effect over this sum." in text
    # "Significant" after Holm over the depth's main effects, not on the raw p.
    want = multipletests(ranking["p"], method="holm")[1]
    assert ranking["p_holm"].to_numpy() == pytest.approx(want)
    for f, r in ranking.iterrows():
        key = P.macro_name("gap_factorial", "Factor", f, "D", 20, "PHolm")
        assert m.values[key] == P.pval(r["p_holm"])
    stem = ranking.loc["stem_pool"]
    assert stem["p"] < 0.05 <= stem["p_holm"]  # the case where the two verdicts differ
    verdicts = re.findall(
        r"\\texttt\{([a-z_\\]+)\}[^;]*?, (significant after Holm|not significant)\)", text
    )
    by_factor = {f.replace("\\_", "_"): v for f, v in verdicts}
    assert by_factor["crop"] == "significant after Holm"
    assert by_factor["stem_pool"] == "not significant"
    assert "Holm-adjusted" in text and "within their depth" in text
    assert "sum of the main effects" in text  # the table's caption defines the share


def test_gap_prose_holm_for_analyses_without_p_holm(gap_results):
    # An analysis written before p_holm existed: the prose adjusts the main effects itself.
    old = gap_results.ranking.drop(columns=["p_holm"])
    res = _results(
        "gap_factorial",
        gap_results.summary,
        effects=gap_results.effects.drop(columns=["p_holm"]),
        ranking=old,
    )
    m = P.Macros()
    PS.define_reference_numbers(m)
    gap_section({"gap_factorial": res}, m)
    want = multipletests(old["p"], method="holm")[1]
    for f, p in zip(old["factor"], want):
        assert m.values[P.macro_name("gap_factorial", "Factor", f, "D", 20, "PHolm")] == P.pval(p)


def test_power_sentence_uses_the_fixed_0_3_column_whatever_the_margin():
    summary = pd.DataFrame(
        {
            "variant": ["no_pool"],
            "depth": [20],
            "n": [5],
            "seeds_needed_0.3": [7.0],
            "seeds_needed_0.5": [3.0],
        }
    )
    runs = pd.DataFrame(
        {"status": ["finished"], "seed": [0], "best_test_error": [7.0], "final_test_error": [7.1]}
    )
    res = _results("stem_pool_ablation", summary, runs=runs, meta={"margin": 0.5, "power": 0.8})
    m = P.Macros()
    text = PS.threats_text({"stem_pool_ablation": res}, m)
    key = P.macro_name("stem_pool_ablation", "D", 20, "Seeds", "For", "Fixed", "Diff")
    assert m.values[key] == "7"
    assert "a difference of 0.3 points with power 0.8" in text


def test_selection_paragraph_counts_seeds_not_runs():
    # Two studies' runs share seeds 0-2: the bias is averaged per seed first, n = 3 seeds.
    rows = []
    bias = {0: [0.1, 0.3, 0.2, 0.2], 1: [0.0, 0.1, 0.05, 0.05], 2: [0.4, 0.2, 0.3, 0.5]}
    for seed, bs in bias.items():
        for b in bs:
            rows.append(
                dict(status="finished", seed=seed, final_test_error=7.5, best_test_error=7.5 - b)
            )
    rows.append(dict(status="failed", seed=3, final_test_error=np.nan, best_test_error=np.nan))
    runs = pd.DataFrame(rows)
    m = P.Macros()
    text = PS.selection_text(runs, m)
    means = np.array([np.mean(bias[s]) for s in range(3)])
    low, high = stats.t.interval(0.95, 2, loc=means.mean(), scale=stats.sem(means))
    v = m.values
    assert v["SelectionBiasN"] == "3" and v["SelectionBiasNRuns"] == "12"
    assert v["SelectionBiasMean"] == P.num(means.mean())
    assert (v["SelectionBiasLow"], v["SelectionBiasHigh"]) == (P.num(low), P.num(high))
    assert "averaged per seed first" in text and "seeds" in text
    assert PS.selection_text(runs.iloc[:0], P.Macros()) == ""
