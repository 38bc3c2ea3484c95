"""Analyse a study: `python -m studies.analyze crop_ablation [--metric final|best]`.

Reads every cell of the study from its Optuna store (studies.store) and writes, under
`<out>/<study>/analysis/` (`analysis/best/` for `--metric best`, so the two never overwrite
each other), the results contract of DESIGN.md plus what the paper needs:

- runs.csv: one row per finished run (failed and diverged cells too, with their status):
  study, variant, depth, seed, run_id, status, every RunConfig field, final_test_error,
  best_test_error, best_iteration, final_train_error, wall_seconds, device, torch_version,
  git_sha, then extras (metric, analysed_error, ...). Errors in percent.
- curves.csv: one row per (run, evaluation): iteration, lr, train/test error and loss.
- summary.csv: one row per (variant, depth): variant, depth, then n, mean, std, ci95_low,
  ci95_high, paper_error, p_vs_paper, diff_vs_baseline, p_vs_baseline, p_vs_baseline_holm,
  seeds_needed; then extras: boot_low/boot_high (BCa bootstrap of the mean), sem, min, max,
  median, n_excluded (= n_failed + n_diverged), paper_std, paper_n, diff_vs_paper,
  test_vs_paper, tost_test, tost_p, equivalent, seeds_needed_vs_paper, test_vs_baseline,
  paired, n_pairs, ci_diff_low/ci_diff_high (95% interval of diff_vs_baseline),
  rank_p_vs_baseline, d (effect vs the baseline) and effect_name, seeds_needed_0.3,
  seeds_needed_<margin> (only when --margin is not 0.3), arch, metric, study, note.
- tests.csv (TEST_COLUMNS): every comparison: vs the paper (one-sample t; Welch from the
  paper's summary statistics where it gives mean +- std over n runs, i.e. ResNet-110),
  equivalence with the paper (TOST within +- margin, test "tost_one_sample" against the
  paper's number taken as exact, or "tost_welch_summary": two one-sided Welch tests from the
  paper's mean +- std where it gives one, i.e. ResNet-110; statistic = the smaller one-sided
  t, interval = the 90% one of the same form whose inclusion in the margins TOST tests), vs
  the baseline (paired t and Wilcoxon on matching seeds, Welch and Mann-Whitney where seeds
  do not match), with
  estimate (a difference in points), interval, statistic, p, Holm-adjusted p and effect size
  (d_z paired, Hedges' g unpaired, Cohen's d vs the paper); rows that cannot be computed
  (n < 2) are kept with computable = False and the reason in `note`.
- selection_bias.csv: final minus best test error (what reporting the best epoch buys),
  over all runs ("all") and per cell, averaged per seed first: n = seeds, n_runs = runs.
- factorial studies (Study.factors): factorial_effects.csv (with p_holm: Holm within each
  depth over the main effects, and over the interactions), anova.csv (Type II),
  factorial_mixed.csv (random seed intercept), factorial_ranking.csv (share of the predicted
  gap: each main effect over their sum, the model's predicted all-reproduction-levels minus
  paper-protocol difference; see stats.factorial_analysis).
- summary/tests (and factorial) tables as LaTeX (booktabs) and Markdown; figures
  fig6_curves, edf, forest as PDF and PNG (studies.plots); meta.json (settings, counts).

Only runs with status "finished" and a finite error enter the statistics; failed (the
trial crashed and was not retried) and diverged runs are listed in runs.csv and counted
(n_excluded). Degenerate cells (n = 1, zero variance, no baseline) give NaN (blank) where a
number is not computable and say why in `note`; nothing raises on them.

Which p goes where. p_vs_paper: Welch from summary statistics where the paper gives a std and
n >= 2 (it counts the paper's own seed noise; ResNet-110: 6.61 +- 0.16, n = 5), else the
one-sample t-test against the paper's number treated as exact; tost_p (and tost_test) of the
same form. p_vs_baseline: the paired
t-test when >= 2 seeds match, else Welch. p_vs_baseline_holm: Holm (1979) over all the
study's vs-baseline t-tests (every variant at every depth). In tests.csv, `p_holm` is Holm
within each `family` (comparison and kind of test) of the study.

Power (alpha 0.05, power 0.8, two-sided): seeds_needed = seeds (pairs) to detect the
observed difference from the baseline, with the sd of the paired differences (or the
within-arm sd, unpaired); `seeds_needed_0.3` = the same for a fixed difference of 0.3
points, whatever --margin (for the baseline row: two independent arms with its own sd,
pairing ignored); `seeds_needed_<margin>`, only when --margin is not 0.3, = the same for a
difference of `margin` points; seeds_needed_vs_paper = runs to detect the observed
difference from the paper.

References: He et al. 2015, arXiv:1512.03385 (Table 6, Figure 6); Holm 1979; Schuirmann
1987 (TOST); Welch 1947; Wilcoxon 1945; Cohen 1988 (d_z, power); Hedges 1981 (g); Box,
Hunter & Hunter 2005 (fractional factorials); Bouthillier et al. 2021 (seeds as samples).
Every statistic comes from studies.stats.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState
from scipy import stats as sps
from statsmodels.stats.meta_analysis import effectsize_smd

import ablations
from ablations import Study
from resnet_repro.config import field_names
from resnet_repro.reference import Published, paper_error
from studies import plots, store
from studies import stats as S

NAN = float("nan")
ALPHA = 0.05  # two-sided significance level of every test and power calculation
POWER = 0.8
# The fixed difference (points) of the power column `seeds_needed_0.3` (issue 4: "a
# 0.3-point difference"), whatever the TOST margin.
POWER_DIFF = 0.3
POWER_COL = f"seeds_needed_{POWER_DIFF:g}"
METRICS = {"final": "final_test_error", "best": "best_test_error"}
METRIC_LABEL = {"final": "final test error", "best": "best test error over evaluations"}

# The results contract (DESIGN.md): summary.csv starts with variant, depth and these.
SUMMARY_COLUMNS = (
    "n mean std ci95_low ci95_high paper_error p_vs_paper diff_vs_baseline p_vs_baseline "
    "p_vs_baseline_holm seeds_needed"
).split()
RESULT_COLUMNS = (
    "final_test_error best_test_error best_iteration final_train_error wall_seconds device "
    "torch_version git_sha"
).split()
RUN_EXTRAS = (
    "metric analysed_error included budget train_id trained_by iterations_done device_name "
    "cuda_version git_dirty deterministic trial_number error_message"
).split()
TEST_COLUMNS = (
    "study variant depth comparison reference test family n n_reference estimate ci_low "
    "ci_high ci_level statistic df p p_holm effect effect_name computable metric note"
).split()
# tests.csv `test` -> kind of test within a comparison (the Holm family).
TEST_KIND = {
    "one_sample_t": "t",
    "welch_t_summary": "welch",
    "tost_one_sample": "tost",
    "tost_welch_summary": "tost",
    "paired_t": "t",
    "welch_t": "t",
    "wilcoxon": "rank",
    "mann_whitney": "rank",
}


class EmptyStudyError(LookupError):
    """The study is in the catalog but its store holds no runs to analyse."""


@dataclass
class Analysis:
    """What `analyze` computed and wrote. DataFrames as in the CSV files of the same names."""

    study: str
    metric: str  # "final" or "best"
    margin: float  # TOST equivalence margin, points (also a power target when not 0.3)
    directory: Path
    runs: pd.DataFrame
    curves: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame
    selection_bias: pd.DataFrame
    factorial: dict[int, dict[str, Any]] = field(default_factory=dict)  # depth -> result
    figures: dict[str, list[Path]] = field(default_factory=dict)  # name -> pdf, png
    tables: dict[str, Path] = field(default_factory=dict)  # file name -> path
    counts: dict[str, int] = field(default_factory=dict)
    verdict: str = ""


# --------------------------------------------------------------------------- collecting


def open_study(study_name: str, out: str | Path, storage: str | None) -> optuna.Study:
    """The study's Optuna study; EmptyStudyError when there is none (never creates one)."""
    hint = f"run `python -m studies.run {study_name}` first"
    if storage is None:
        path = Path(out) / study_name / "study.db"
        if not path.is_file():
            raise EmptyStudyError(f"study {study_name!r} has no store at {path}: {hint}")
        storage = f"sqlite:///{path.resolve()}"
    rdb = store.open_storage(storage, heartbeat=False)
    try:
        return store.load(rdb, study_name)
    except KeyError:
        raise EmptyStudyError(
            f"study {study_name!r} is not in the storage {store.redact(storage)}: {hint}"
        ) from None


def _config_value(v: Any) -> Any:
    # milestones: the `--set milestones=...` spelling, so a CSV cell is one scalar.
    return ",".join(str(x) for x in v) if isinstance(v, list | tuple) else v


def collect_runs(
    study: Study, optuna_study: optuna.Study, metric: str = "final"
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """(runs, curves, counts) from the store.

    runs: one row per cell with a result (finished or diverged) or whose trials all failed
    (status "failed", no retry pending); cells still waiting or running are only counted.
    curves: one row per (run, evaluation) of the runs with curves.
    counts: runs, finished, diverged, failed, pending, included.
    """
    col = METRICS[metric]
    by_cell: dict[str, list[FrozenTrial]] = {}
    for t in store.trials(optuna_study):
        if key := store.cell_key(t):
            by_cell.setdefault(key, []).append(t)
    done = store.finished(optuna_study)
    fields = [f for f in field_names() if f != "depth"]
    rows, curve_frames = [], []
    pending = 0
    for key, ts in by_cell.items():
        states = {t.state for t in ts}
        if key in done:
            trial = done[key]
            result = store.result_of(trial)
            status = str(result.get("status", "finished"))
        elif states & {TrialState.WAITING, TrialState.RUNNING}:
            pending += 1
            continue
        elif TrialState.FAIL in states:
            trial = max((t for t in ts if t.state == TrialState.FAIL), key=lambda t: t.number)
            result, status = {}, "failed"
        else:  # only pruned duplicates
            continue
        attrs = trial.user_attrs
        config = json.loads(attrs.get("config", "{}"))
        row: dict[str, Any] = dict(
            study=study.name,
            variant=attrs.get("variant"),
            depth=int(attrs.get("depth", config.get("depth", -1))),
            seed=int(attrs.get("seed", -1)),
            run_id=attrs.get("run_id", result.get("run_id", "")),
            status=status,
        )
        row.update({f: _config_value(config.get(f)) for f in fields})
        for c in RESULT_COLUMNS:
            row[c] = result.get(c, NAN if c not in ("device", "torch_version", "git_sha") else "")
        value = float(result.get(col, NAN)) if status == "finished" else NAN
        row.update(
            metric=metric,
            analysed_error=value,
            included=bool(status == "finished" and math.isfinite(value)),
            budget=attrs.get("budget", ""),
            train_id=attrs.get("train_id", ""),
            trained_by=result.get("trained_by", ""),
            iterations_done=result.get("iterations_done", NAN),
            device_name=result.get("device_name", ""),
            cuda_version=result.get("cuda_version", ""),
            git_dirty=result.get("git_dirty", ""),
            deterministic=result.get("deterministic", ""),
            trial_number=trial.number,
            error_message=result.get("error") or attrs.get("error") or "",
        )
        rows.append(row)
        curve_frames.append(_curve_frame(row, result.get("curves") or {}))
    columns = ["study", "variant", "depth", "seed", "run_id", "status", *fields]
    columns += RESULT_COLUMNS + RUN_EXTRAS
    runs = pd.DataFrame(rows, columns=columns)
    order = {v: i for i, v in enumerate(study.variants)}
    runs = runs.assign(_o=runs["variant"].map(order).fillna(len(order)))
    runs = runs.sort_values(["depth", "_o", "variant", "seed"], kind="stable").drop(columns="_o")
    runs = runs.reset_index(drop=True)
    frames = [f for f in curve_frames if not f.empty]
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLS)
    counts = dict(
        runs=len(runs),
        finished=int((runs["status"] == "finished").sum()),
        diverged=int((runs["status"] == "diverged").sum()),
        failed=int((runs["status"] == "failed").sum()),
        pending=pending,
        included=int(runs["included"].sum()),
    )
    return runs, curves, counts


CURVE_KEYS = ["iteration", "lr", "train_error", "train_loss", "test_error", "test_loss"]
CURVE_COLS = ["study", "variant", "arch", "depth", "seed", "run_id", "status", *CURVE_KEYS]


def _curve_frame(row: dict[str, Any], curves: dict[str, list[float]]) -> pd.DataFrame:
    its = curves.get("iteration") or []
    if not its:
        return pd.DataFrame(columns=CURVE_COLS)
    # A diverged run may stop mid-way: keep only the curves as long as its iterations.
    data = {k: curves[k] for k in CURVE_KEYS if len(curves.get(k) or []) == len(its)}
    frame = pd.DataFrame(data).reindex(columns=CURVE_KEYS)
    for k in ("study", "variant", "arch", "depth", "seed", "run_id", "status"):
        frame[k] = row[k]
    return frame[CURVE_COLS]


# --------------------------------------------------------------------------- statistics


def _paper(study: Study, variant: str, depth: int, arch: str) -> Published | None:
    try:
        return study.paper_number(variant, depth)
    except ValueError:  # a variant no longer in the catalog: go by the run's arch
        return paper_error(arch, depth)


def _variants(study: Study, runs: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(runs["variant"]))
    return [v for v in study.variants if v in present] + sorted(
        v for v in present if v not in study.variants
    )


def _paired_diffs(v: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Per matching seed, variant minus baseline error (duplicates averaged), shape (k,)."""
    mv = v.groupby("seed")["analysed_error"].mean()
    mb = b.groupby("seed")["analysed_error"].mean()
    common = mv.index.intersection(mb.index)
    return (mv.loc[common] - mb.loc[common]).to_numpy(dtype=float)


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if x.size >= 2 else NAN


def _welch_summary(
    x: np.ndarray, paper: Published, welch_df: float
) -> tuple[float, float, float, str]:
    """Welch interval of (mean - paper) and Hedges' g from the paper's summary statistics."""
    n, pn = x.size, int(paper.n or 0)
    if n < 2 or pn < 2 or not np.isfinite(welch_df):
        return NAN, NAN, NAN, "Welch needs n >= 2 on both sides"
    mean, sd = float(np.mean(x)), _sd(x)
    se = math.sqrt(sd**2 / n + float(paper.std) ** 2 / pn)
    t = float(sps.t.ppf(1 - ALPHA / 2, welch_df))
    diff = mean - paper.error
    g = float(effectsize_smd(mean, sd, n, paper.error, paper.std, pn)[0])
    return diff - t * se, diff + t * se, g, ""


def _test_row(**kw: Any) -> dict[str, Any]:
    row = dict.fromkeys(TEST_COLUMNS, NAN)
    row.update(kw)
    row["family"] = f"{row['comparison']}:{TEST_KIND[row['test']]}"
    row["computable"] = bool(np.isfinite(row["p"]))
    if not row["computable"] and "not computable" not in str(row.get("note", "")):
        row["note"] = _notes("not computable", row.get("note", ""))
    return row


def _notes(*notes: str) -> str:
    return "; ".join(dict.fromkeys(n for n in notes if n))


# Extras of summary.csv after SUMMARY_COLUMNS (then seeds_needed_0.3, seeds_needed_<margin>
# when the margin is not 0.3, arch, metric, study, note); NaN or "" until computed.
SUMMARY_EXTRAS = (
    "boot_low boot_high sem min max median n_excluded n_failed n_diverged paper_std paper_n "
    "diff_vs_paper test_vs_paper tost_test tost_p equivalent seeds_needed_vs_paper "
    "test_vs_baseline paired n_pairs ci_diff_low ci_diff_high rank_p_vs_baseline d effect_name"
).split()


def power_columns(margin: float) -> list[str]:
    """The summary's power-target columns: seeds_needed_0.3 always, then
    seeds_needed_<margin> when the TOST margin is another difference."""
    cols = [POWER_COL]
    if f"seeds_needed_{margin:g}" != POWER_COL:
        cols.append(f"seeds_needed_{margin:g}")
    return cols


def summarise(
    study: Study,
    runs: pd.DataFrame,
    *,
    metric: str = "final",
    margin: float = 0.3,
    seed: int = 0,
    n_boot: int = 2000,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, tests): one summary row per (variant, depth) in `runs`, and every test.

    runs: as from `collect_runs`; only rows with `included` enter the statistics.
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0 points, got {margin!r}")
    rows: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    variants = _variants(study, runs)
    for depth in sorted(runs["depth"].unique()):
        at = runs[runs["depth"] == depth]
        base = at[(at["variant"] == study.baseline) & at["included"]]
        for variant in [v for v in variants if v in set(at["variant"])]:
            cell = at[at["variant"] == variant]
            row, cell_tests = _summarise_cell(
                study, variant, int(depth), cell, base, metric, margin, seed, n_boot
            )
            rows.append(row)
            tests += cell_tests
    tests_df = pd.DataFrame(tests, columns=TEST_COLUMNS)
    if not tests_df.empty:
        # statsmodels' Holm runs gc.collect() on every call, which takes ~0.3 s with torch and
        # optuna loaded; frozen objects are skipped by the collector.
        gc.freeze()
        try:
            for _, idx in tests_df.groupby("family").groups.items():
                p = tests_df.loc[idx, "p"].to_numpy(dtype=float)
                tests_df.loc[idx, "p_holm"] = S.holm(p)
        finally:
            gc.unfreeze()
    first = ["variant", "depth", *SUMMARY_COLUMNS]
    summary = pd.DataFrame(rows) if rows else pd.DataFrame(columns=first)
    # Holm over the study's vs-baseline t-tests: the same family as in tests.csv.
    t_rows = tests_df[tests_df["family"] == "vs_baseline:t"]
    holm_by = {(r.variant, r.depth): r.p_holm for r in t_rows.itertuples()}
    summary["p_vs_baseline_holm"] = [
        holm_by.get((v, d), NAN) for v, d in zip(summary["variant"], summary["depth"])
    ]
    return summary[first + [c for c in summary.columns if c not in first]], tests_df


def _summarise_cell(
    study: Study,
    variant: str,
    depth: int,
    cell: pd.DataFrame,
    base: pd.DataFrame,
    metric: str,
    margin: float,
    seed: int,
    n_boot: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary row of one (variant, depth) and its tests; `cell` holds all its runs,
    `base` the baseline's included runs at this depth."""
    inc = cell[cell["included"]]
    x = inc["analysed_error"].to_numpy(dtype=float)
    arch = str(cell["arch"].iloc[0])
    desc = S.describe(x, seed=seed, n_boot=n_boot)
    targets = {col: float(col.removeprefix("seeds_needed_")) for col in power_columns(margin)}
    row: dict[str, Any] = dict(variant=variant, depth=depth)
    row.update(dict.fromkeys([*SUMMARY_COLUMNS, *SUMMARY_EXTRAS, *targets], NAN))
    row.update({k: desc[k] for k in ("n", "mean", "std", "ci95_low", "ci95_high", "sem")})
    row.update({k: desc[k] for k in ("boot_low", "boot_high", "min", "max", "median")})
    row.update(test_vs_paper="", tost_test="", test_vs_baseline="", effect_name="")
    row.update(
        n_excluded=int(len(cell) - len(inc)),
        n_failed=int((cell["status"] == "failed").sum()),
        n_diverged=int((cell["status"] == "diverged").sum()),
    )
    notes = [desc["note"]]
    if row["n_excluded"]:
        notes.append(
            f"{row['n_excluded']} run(s) excluded "
            f"({row['n_failed']} failed, {row['n_diverged']} diverged)"
        )
    common = dict(study=study.name, variant=variant, depth=depth, metric=metric)
    tests: list[dict[str, Any]] = []
    paper = _paper(study, variant, depth, arch)
    if paper is not None:
        fields, paper_tests, note = _vs_paper(x, paper, margin, common)
        row.update(fields)
        tests += paper_tests
        notes.append(note)
    if variant == study.baseline:
        # Seeds per arm for a future variant to show 0.3 (or `margin`) points against this
        # baseline, ignoring the gain from pairing (its sd of differences is unknown yet).
        for col, diff in targets.items():
            row[col] = S.seeds_needed(diff, desc["std"], paired=False, alpha=ALPHA, power=POWER)
    else:
        fields, base_tests, note = _vs_baseline(inc, base, study.baseline, targets, seed, n_boot)
        row.update(fields)
        tests += [dict(t, **common) for t in base_tests]
        notes.append(note)
    row.update(arch=arch, metric=metric, study=study.name, note=_notes(*notes))
    return row, tests


def _vs_paper(
    x: np.ndarray, paper: Published, margin: float, common: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """(summary fields, test rows, note) of runs x against the paper's number."""
    with_stats = paper.std is not None and (paper.n or 0) >= 2
    r = S.one_sample_vs_paper(
        x,
        paper.error,
        paper_std=paper.std if with_stats else None,
        paper_n=paper.n if with_stats else None,
    )
    # Where the paper gives mean +- std over n >= 2 runs (ResNet-110), the TOST counts that
    # spread too (Welch form), as p_vs_paper does; elsewhere the paper's run is taken as exact.
    tost = S.tost_vs_paper(
        x,
        paper.error,
        margin,
        paper_std=paper.std if with_stats else None,
        paper_n=paper.n if with_stats else None,
        alpha=ALPHA,
    )
    ref = dict(
        common, reference="paper", n=r["n"], n_reference=paper.n or NAN, ci_level=S.CONFIDENCE
    )
    tests = [
        _test_row(
            **ref,
            comparison="vs_paper",
            test="one_sample_t",
            estimate=r["diff"],
            ci_low=r["ci_low"],
            ci_high=r["ci_high"],
            statistic=r["statistic"],
            df=r["df"],
            p=r["p"],
            effect=r["effect"],
            effect_name=r["effect_name"],
            note=_notes(r["note"], f"paper {paper.error} treated as exact"),
        )
    ]
    p_used, test_used = r["p"], "one_sample_t"
    effect, effect_name = r["effect"], r["effect_name"]
    if with_stats:
        low, high, g, why = _welch_summary(x, paper, r["welch_df"])
        effect, effect_name = g, "hedges_g"
        tests.append(
            _test_row(
                **ref,
                comparison="vs_paper",
                test="welch_t_summary",
                estimate=r["diff"],
                ci_low=low,
                ci_high=high,
                statistic=r["welch_statistic"],
                df=r["welch_df"],
                p=r["welch_p"],
                effect=g,
                effect_name="hedges_g",
                note=_notes(why, f"paper {paper.error} +- {paper.std}, n = {paper.n}"),
            )
        )
        p_used, test_used = r["welch_p"], "welch_t_summary"
    computable = bool(np.isfinite(tost["p"]))
    verdict = "equivalent" if tost["equivalent"] else "equivalence not shown"
    form = (
        "two one-sided Welch t-tests from the paper's mean +- sd"
        if tost["test"] == "tost_welch_summary"
        else f"two one-sided one-sample t-tests, paper {paper.error} treated as exact"
    )
    tests.append(
        _test_row(
            **dict(ref, ci_level=tost["ci_level"]),
            comparison="equivalence_paper",
            test=tost["test"],
            estimate=tost["diff"],
            # The (1 - 2 alpha) interval of the same form: TOST rejects iff it lies in +-margin.
            ci_low=tost["ci_low"],
            ci_high=tost["ci_high"],
            # The binding one of the two one-sided tests.
            statistic=min(tost["t_low"], -tost["t_upp"]) if computable else NAN,
            df=tost["df"],
            p=tost["p"],
            effect=effect,
            effect_name=effect_name,
            note=_notes(tost["note"], f"{form}; margin +-{margin:g} points; {verdict}"),
        )
    )
    fields = dict(
        paper_error=paper.error,
        p_vs_paper=p_used,
        paper_std=paper.std if paper.std is not None else NAN,
        paper_n=paper.n if paper.n is not None else NAN,
        diff_vs_paper=r["diff"],
        test_vs_paper=test_used,
        tost_test=tost["test"],
        tost_p=tost["p"],
        equivalent=bool(tost["equivalent"]) if computable else NAN,
        seeds_needed_vs_paper=S.seeds_needed(
            r["diff"], _sd(x), paired=True, alpha=ALPHA, power=POWER
        ),
    )
    return fields, tests, r["note"]


def _vs_baseline(
    inc: pd.DataFrame,
    base: pd.DataFrame,
    baseline: str,
    targets: dict[str, float],
    seed: int,
    n_boot: int,
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """(summary fields, test rows, note) of a variant's included runs against the baseline's:
    paired on matching seeds when >= 2 match (stats.compare_to_baseline), else unpaired.
    targets: power column -> fixed difference (points) it is computed for."""
    x = inc["analysed_error"].to_numpy(dtype=float)
    b = base["analysed_error"].to_numpy(dtype=float)
    cmp = S.compare_to_baseline(
        x,
        b,
        seeds_v=inc["seed"].to_numpy(dtype=int),
        seeds_b=base["seed"].to_numpy(dtype=int),
        seed=seed,
        n_boot=n_boot,
    )
    note = cmp["note"]
    if b.size == 0:
        note = _notes(f"baseline {baseline!r} has no finished runs at this depth", note)
    paired = bool(cmp["paired"])
    if paired:
        sd = _sd(_paired_diffs(inc, base))
    else:
        # Two independent arms: the pooled within-arm sd (TTestIndPower's effect d).
        sd = math.sqrt((_sd(x) ** 2 + _sd(b) ** 2) / 2) if min(x.size, b.size) >= 2 else NAN
    effect_name = cmp["effect_name"] or ("d_z" if paired else "hedges_g")
    rank_p, rank_stat, rank_note = cmp["rank_p"], cmp["rank_statistic"], ""
    if not paired and min(cmp["n_v"], cmp["n_b"]) < 2:
        # Mann-Whitney on 1 run against k gives p >= 2 / (k + 1) by construction (p = 1 for
        # 1 vs 1): report it as not computable, like the t-test.
        rank_p, rank_stat = NAN, NAN
        rank_note = "Mann-Whitney not computable with n < 2 in an arm"
    ref = dict(
        comparison="vs_baseline",
        reference=baseline,
        n=cmp["n_pairs"] if paired else cmp["n_v"],
        n_reference=cmp["n_b"],
        estimate=cmp["diff"],
        ci_level=S.CONFIDENCE,
        effect=cmp["effect"],
        effect_name=effect_name,
    )
    tests = [
        _test_row(
            **ref,
            test=cmp["test"] or ("paired_t" if paired else "welch_t"),
            ci_low=cmp["ci_low"],
            ci_high=cmp["ci_high"],
            statistic=cmp["statistic"],
            df=cmp["df"],
            p=cmp["p"],
            note=note,
        ),
        _test_row(
            **ref,
            test=cmp["rank_test"] or ("wilcoxon" if paired else "mann_whitney"),
            # Rank tests have no interval of their own: the BCa bootstrap of the mean diff.
            ci_low=cmp["boot_low"],
            ci_high=cmp["boot_high"],
            statistic=rank_stat,
            p=rank_p,
            note=_notes(note, rank_note, "interval: bootstrap of the mean difference"),
        ),
    ]
    fields = {
        "diff_vs_baseline": cmp["diff"],
        "p_vs_baseline": cmp["p"],
        "seeds_needed": S.seeds_needed(cmp["diff"], sd, paired=paired, alpha=ALPHA, power=POWER),
        "test_vs_baseline": cmp["test"],
        "paired": paired,
        "n_pairs": cmp["n_pairs"],
        "ci_diff_low": cmp["ci_low"],
        "ci_diff_high": cmp["ci_high"],
        "rank_p_vs_baseline": rank_p,
        "d": cmp["effect"],
        "effect_name": effect_name,
    }
    for col, diff in targets.items():
        fields[col] = S.seeds_needed(diff, sd, paired=paired, alpha=ALPHA, power=POWER)
    return fields, tests, note


def selection_bias_table(runs: pd.DataFrame, *, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Final minus best test error (points) over all finished runs, then per (variant, depth).

    Every row is averaged per seed first (stats.selection_bias with seeds), and its mean and
    intervals are over seeds: n = seeds, n_runs = the runs behind them. For "all" this
    matters: the variants and depths of a study share each seed's initialisation and data
    order (eval-only variants even share one training), so its runs are not independent.
    Columns: scope ("all" or "cell"), variant, depth, n (seeds), n_runs, n_nan, unit, mean,
    std, ci95_low, ci95_high, boot_low, boot_high, note.
    """
    done = runs[runs["status"] == "finished"]
    rows = []
    groups: list[tuple[str, Any, Any, pd.DataFrame]] = [("all", "", NAN, done)]
    for (depth, variant), g in done.groupby(["depth", "variant"], sort=False):
        groups.append(("cell", variant, depth, g))
    for scope, variant, depth, g in groups:
        r = S.selection_bias(
            g["best_test_error"].to_numpy(dtype=float),
            g["final_test_error"].to_numpy(dtype=float),
            seeds=g["seed"].to_numpy(),
            seed=seed,
            n_boot=n_boot,
        )
        rows.append(dict(scope=scope, variant=variant, depth=depth, **r))
    cols = ["scope", "variant", "depth", "n", "n_runs", "n_nan", "unit", "mean", "std"]
    cols += ["ci95_low", "ci95_high"]
    out = pd.DataFrame(rows, columns=[*cols, "boot_low", "boot_high", "note"])
    out["depth"] = out["depth"].astype("Int64")  # blank, not NaN-as-float, for "all"
    return out


def factorial_by_depth(study: Study, runs: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """stats.factorial_analysis per depth on the analysed error, the factor columns being
    the runs' RunConfig field values, each coded from the paper's level (study.factors)."""
    out: dict[int, dict[str, Any]] = {}
    if not study.factors:
        return out
    factors = list(study.factors)
    refs = {f: levels[0] for f, levels in study.factors.items()}
    # Diverged runs go in with a NaN response, which the analysis drops and counts.
    usable = runs[runs["status"].isin(["finished", "diverged"])]
    for depth in sorted(usable["depth"].unique()):
        df = usable[usable["depth"] == depth]
        try:
            out[int(depth)] = S.factorial_analysis(
                df, "analysed_error", factors, seed_col="seed", reference_levels=refs
            )
        except ValueError as e:
            out[int(depth)] = dict(
                effects=pd.DataFrame(),
                anova=pd.DataFrame(),
                ranking=pd.DataFrame(),
                mixed=None,
                n=len(df),
                note=f"factorial analysis not computable: {e}",
            )
    return out


SHARE_NOTE = (
    "share = effect / predicted_gap; predicted_gap = sum of the main effects = the model's "
    "predicted error of every factor at its reproduction level minus the paper's protocol "
    "(two-way interactions cancel between these opposite corners); p_holm: Holm over the "
    "main effects at this depth"
)


def factorial_frames(
    study: Study, results: dict[int, dict[str, Any]], metric: str
) -> dict[str, pd.DataFrame]:
    """The factorial CSVs as DataFrames: effects, anova, mixed, ranking (depth column first).

    factorial_ranking: rank, factor, effect, share, p, p_holm (stats.factorial_analysis), then
    ci_low, ci_high, paper_level, reproduction_level, predicted_gap (+ its interval), note."""
    eff, anova, mixed, rank = [], [], [], []
    for depth, r in results.items():
        note = r.get("note", "")
        e = r["effects"].copy() if len(r["effects"]) else pd.DataFrame(columns=["term"])
        e.insert(0, "depth", depth)
        eff.append(e.assign(n=r.get("n", NAN), df_resid=r.get("df_resid", NAN), note=note))
        if len(r["anova"]):
            a = r["anova"].rename_axis("term").reset_index()
            a.insert(0, "depth", depth)
            anova.append(a)
        m = r.get("mixed")
        if m is not None and len(m["effects"]):
            me = m["effects"].copy()
            me.insert(0, "depth", depth)
            mixed.append(
                me.assign(
                    seed_var=m["seed_var"],
                    resid_var=m["resid_var"],
                    converged=m["converged"],
                    note=m["note"],
                )
            )
        else:
            why = m["note"] if m is not None else "mixed model not fitted: " + note
            mixed.append(pd.DataFrame([dict(depth=depth, term="", note=why)]))
        if len(r["ranking"]):
            k = r["ranking"].copy()
            k.insert(0, "depth", depth)
            ci = r["effects"].set_index("term")
            k["ci_low"] = k["factor"].map(ci["ci_low"])
            k["ci_high"] = k["factor"].map(ci["ci_high"])
            k["paper_level"] = k["factor"].map(lambda f: study.factors[f][0])
            k["reproduction_level"] = k["factor"].map(lambda f: study.factors[f][1])
            gap = r.get("predicted_gap") or {}
            k["predicted_gap"] = gap.get("effect", NAN)
            k["predicted_gap_ci_low"] = gap.get("ci_low", NAN)
            k["predicted_gap_ci_high"] = gap.get("ci_high", NAN)
            k["note"] = SHARE_NOTE
            rank.append(k)

    def cat(frames: list[pd.DataFrame], cols: list[str]) -> pd.DataFrame:
        frames = [f for f in frames if not f.empty]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
        df["metric"] = metric
        return df

    return dict(
        factorial_effects=cat(eff, ["depth", "term", "kind", "effect", "ci_low", "ci_high"]),
        anova=cat(anova, ["depth", "term", "sum_sq", "df", "F", "PR(>F)"]),
        factorial_mixed=cat(mixed, ["depth", "term", "effect", "ci_low", "ci_high", "p"]),
        factorial_ranking=cat(
            rank, ["depth", "rank", "factor", "effect", "share", "p", "p_holm", "predicted_gap"]
        ),
    )


# ------------------------------------------------------------------------------- tables


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "--"
    if isinstance(x, bool | np.bool_):
        return "yes" if x else "no"
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, float | np.floating):
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.{digits}f}"
    return str(x)


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "--"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _fmt_int(x: float) -> str:
    if not np.isfinite(x):
        return "inf" if x == math.inf else "--"
    return str(int(x))


def _fmt_ci(low: float, high: float, digits: int = 2) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "--"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _signed(x: float) -> str:
    return f"{x:+.2f}" if np.isfinite(x) else "--"


def _latex_escape(s: str) -> str:
    if s in ("inf", "-inf"):
        return s.replace("inf", r"$\infty$")
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&")):
        s = s.replace(a, b)
    for a, b in (("#", r"\#"), ("<", r"$<$"), ("±", r"$\pm$"), ("->", r"$\to$")):
        s = s.replace(a, b)
    return s


def to_latex(df: pd.DataFrame, *, caption: str, label: str, comment: str) -> str:
    """A booktabs table of the (already formatted) string cells of `df`."""
    align = "".join("l" if df[c].map(_is_text).any() else "r" for c in df.columns)
    head = " & ".join(_latex_escape(str(c)) for c in df.columns) + r" \\"
    body = [" & ".join(_latex_escape(str(v)) for v in r) + r" \\" for r in df.to_numpy()]
    return "\n".join(
        [
            f"% {comment}",
            "% generated by studies.analyze; needs \\usepackage{booktabs}",
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{_latex_escape(caption)}}}",
            rf"\label{{{label}}}",
            rf"\begin{{tabular}}{{{align}}}",
            r"\toprule",
            head,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    )


def _is_text(v: Any) -> bool:
    s = str(v).replace("--", "")
    return bool(s) and not s.lstrip("+-<[").replace(".", "", 1)[:1].isdigit()


def to_markdown(df: pd.DataFrame, *, caption: str, comment: str) -> str:
    """A pipe table of the (already formatted) string cells of `df`, caption above."""

    def cells(r: Sequence[Any]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |"

    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    lines = [f"<!-- {comment} -->", "", f"**{caption}**", "", cells(list(df.columns)), sep]
    lines += [cells(r) for r in df.to_numpy()]
    return "\n".join(lines) + "\n"


def summary_display(summary: pd.DataFrame, margin: float) -> pd.DataFrame:
    rows = []
    for r in summary.to_dict("records"):
        rows.append(
            {
                "variant": r["variant"],
                "depth": _fmt(r["depth"]),
                "n": _fmt(r["n"]),
                "mean ± sd": f"{_fmt(r['mean'])} ± {_fmt(r['std'])}",
                "95% CI": _fmt_ci(r["ci95_low"], r["ci95_high"]),
                "paper": _fmt(r["paper_error"]),
                "p (paper)": _fmt_p(r["p_vs_paper"]),
                f"TOST ±{margin:g}": _tost_word(r),
                "diff vs baseline": _signed(r["diff_vs_baseline"]),
                "p (Holm)": _fmt_p(r["p_vs_baseline_holm"]),
                "seeds needed": _fmt_int(r["seeds_needed"]),
                f"seeds for {POWER_DIFF:g}": _fmt_int(r.get(POWER_COL, NAN)),
                "excluded": _fmt(r.get("n_excluded", 0)),
            }
        )
    return pd.DataFrame(rows)


def _tost_word(r: dict[str, Any]) -> str:
    if not np.isfinite(r.get("tost_p", NAN)):
        return "--"
    return "equivalent" if r["tost_p"] < ALPHA else "not shown"


def tests_display(tests: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in tests.to_dict("records"):
        rows.append(
            {
                "variant": r["variant"],
                "depth": _fmt(r["depth"]),
                "comparison": f"{r['comparison']} ({r['reference']})",
                "test": r["test"],
                "n": _fmt(r["n"]),
                "estimate": _signed(r["estimate"]),
                "CI": _fmt_ci(r["ci_low"], r["ci_high"]) + f" {r['ci_level']:.0%}",
                "statistic": _fmt(r["statistic"]),
                "p": _fmt_p(r["p"]),
                "p (Holm)": _fmt_p(r["p_holm"]),
                "effect": f"{_fmt(r['effect'])} {r['effect_name']}".strip(),
            }
        )
    return pd.DataFrame(rows)


def effects_display(effects: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "depth": _fmt(r["depth"]),
                "term": r["term"],
                "kind": r.get("kind", ""),
                "effect (points)": _signed(r.get("effect", NAN)),
                "95% CI": _fmt_ci(r.get("ci_low", NAN), r.get("ci_high", NAN)),
                "p": _fmt_p(r.get("p", NAN)),
                "p (Holm)": _fmt_p(r.get("p_holm", NAN)),
            }
            for r in effects.to_dict("records")
            if r.get("term")
        ]
    )


def ranking_display(ranking: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "depth": _fmt(r["depth"]),
                "rank": _fmt(r["rank"]),
                "factor": r["factor"],
                "paper -> reproduction": f"{r['paper_level']} -> {r['reproduction_level']}",
                "effect (points)": _signed(r["effect"]),
                "95% CI": _fmt_ci(r["ci_low"], r["ci_high"]),
                "p (Holm)": _fmt_p(r.get("p_holm", NAN)),
                "share of predicted gap": _fmt_share(r["share"]),
                "predicted gap": _signed(r.get("predicted_gap", NAN)),
            }
            for r in ranking.to_dict("records")
        ]
    )


def _fmt_share(x: float) -> str:
    return f"{x:.0%}" if np.isfinite(x) else "--"


def write_table(
    directory: Path, name: str, display: pd.DataFrame, *, caption: str, comment: str, study: str
) -> list[Path]:
    tex, md = directory / f"{name}.tex", directory / f"{name}.md"
    label = f"tab:{study.replace('_', '-')}-{name.replace('_', '-')}"
    if display.empty:
        display = pd.DataFrame({"note": ["no rows"]})
    tex.write_text(to_latex(display, caption=caption, label=label, comment=comment))
    md.write_text(to_markdown(display, caption=caption, comment=comment))
    return [tex, md]


# ------------------------------------------------------------------------------ verdict


def verdict(
    study: Study,
    summary: pd.DataFrame,
    bias: pd.DataFrame,
    counts: dict[str, int],
    metric: str,
    margin: float,
    factorial: dict[int, dict[str, Any]],
) -> str:
    """The terminal summary: one line per (variant, depth), then selection bias."""
    lines = [
        f"{study.name}: {study.question}",
        f"metric: {METRIC_LABEL[metric]} (%); {counts['included']} runs analysed, "
        f"{counts['runs'] - counts['included']} excluded "
        f"({counts['failed']} failed, {counts['diverged']} diverged)"
        + (f", {counts['pending']} cells still pending" if counts["pending"] else ""),
        f"baseline: {study.baseline}; vs paper: p (TOST within ±{margin:g} points); "
        f"vs baseline: diff (Holm p, alpha {ALPHA})",
        "",
    ]
    header = f"{'variant':<16} {'depth':>5} {'n':>3} {'mean ± std':>15}  "
    header += f"{'paper':>6} {'p':>7} {'TOST':<11} {'diff':>6} {'Holm p':>7}  verdict"
    lines.append(header)
    for r in summary.to_dict("records"):
        ms = f"{_fmt(r['mean'])} ± {_fmt(r['std'])}"
        if r["variant"] == study.baseline:
            vs_base = f"{'':>6} {'':>7}  baseline"
        else:
            p = r["p_vs_baseline_holm"]
            word = "not computable"
            if np.isfinite(p):
                word = "significant" if p < ALPHA else "not significant"
            vs_base = f"{_signed(r['diff_vs_baseline']):>6} {_fmt_p(p):>7}  {word}"
        excl = f" ({r['n_excluded']} excluded)" if r.get("n_excluded") else ""
        lines.append(
            f"{r['variant']:<16} {r['depth']:>5} {r['n']:>3} {ms:>15}  "
            f"{_fmt(r['paper_error']):>6} {_fmt_p(r['p_vs_paper']):>7} "
            f"{_tost_word(r):<11} {vs_base}{excl}"
        )
    if len(bias):
        b = bias.iloc[0]
        lines.append("")
        runs_text = f" ({b['n_runs']} runs averaged per seed)" if "n_runs" in b else ""
        lines.append(
            f"selection bias (final - best test error): mean {_fmt(b['mean'])} points, "
            f"95% CI {_fmt_ci(b['ci95_low'], b['ci95_high'])}, n = {b['n']} seeds{runs_text}"
        )
    for depth, r in factorial.items():
        ranking = r.get("ranking")
        if ranking is None or not len(ranking):
            lines.append(f"factorial, depth {depth}: {r.get('note', 'not computable')}")
            continue
        parts = [
            f"{k.factor} {k.effect:+.2f}" + (f" ({k.share:.0%})" if np.isfinite(k.share) else "")
            for k in ranking.itertuples()
        ]
        gap = (r.get("predicted_gap") or {}).get("effect", NAN)
        lines.append(
            f"factorial, depth {depth}, causes by effect (share of the predicted gap "
            f"{_signed(gap)} points = sum of main effects, all reproduction levels minus the "
            "paper's protocol): " + ", ".join(parts)
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ analyze


def analyze(
    study_name: str,
    out: str | Path = "runs",
    *,
    storage: str | None = None,
    metric: str = "final",
    margin: float = 0.3,
    seed: int = 0,
    figures: bool = True,
    n_boot: int = 2000,
) -> Analysis:
    """Analyse a study's runs and write every output (module docstring) under
    `<out>/<study>/analysis/` (`analysis/best/` for metric "best").

    Raises KeyError (with close matches) for a study not in the catalog, EmptyStudyError when
    its store holds no runs, ValueError for a bad metric or margin. `figures=False` skips the
    figures (they take most of the time); `seed` seeds every bootstrap.
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: allowed values are {list(METRICS)}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0 points, got {margin!r}")
    study = ablations.get(study_name)
    optuna_study = open_study(study_name, out, storage)
    runs, curves, counts = collect_runs(study, optuna_study, metric)
    if runs.empty:
        more = f" ({counts['pending']} cells pending)" if counts["pending"] else ""
        raise EmptyStudyError(f"study {study_name!r} has no finished or failed runs yet{more}")
    directory = Path(out) / study_name / "analysis"
    if metric != "final":
        directory = directory / metric
    directory.mkdir(parents=True, exist_ok=True)

    summary, tests = summarise(study, runs, metric=metric, margin=margin, seed=seed, n_boot=n_boot)
    bias = selection_bias_table(runs, seed=seed, n_boot=n_boot)
    fact = factorial_by_depth(study, runs)
    bias["metric"] = "final-best"  # whatever the analysed metric, the bias is final - best
    label = METRIC_LABEL[metric]
    comment = f"study {study_name}; metric: {label} (%); margin {margin:g} points"
    written: dict[str, Path] = {}
    csvs = dict(runs=runs, curves=curves, summary=summary, tests=tests, selection_bias=bias)
    if study.factors:
        csvs.update(factorial_frames(study, fact, metric))
    for name, df in csvs.items():
        written[f"{name}.csv"] = directory / f"{name}.csv"
        df.to_csv(written[f"{name}.csv"], index=False)

    for name, (display, caption) in _tables(study, csvs, label, margin).items():
        for path in write_table(
            directory, name, display, caption=caption, comment=comment, study=study_name
        ):
            written[path.name] = path
    figs = _figures(study, runs, curves, summary, directory, label) if figures else {}
    text = verdict(study, summary, bias, counts, metric, margin, fact)
    meta = dict(
        study=study_name,
        question=study.question,
        baseline=study.baseline,
        metric=metric,
        metric_column=METRICS[metric],
        margin=margin,
        alpha=ALPHA,
        power=POWER,
        confidence=S.CONFIDENCE,
        seed=seed,
        n_boot=n_boot,
        storage=store.redact(storage) if storage else str(Path(out) / study_name / "study.db"),
        counts=counts,
        versions=dict(pandas=pd.__version__, numpy=np.__version__, optuna=optuna.__version__),
    )
    written["meta.json"] = directory / "meta.json"
    written["meta.json"].write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return Analysis(
        study=study_name,
        metric=metric,
        margin=margin,
        directory=directory,
        runs=runs,
        curves=curves,
        summary=summary,
        tests=tests,
        selection_bias=bias,
        factorial=fact,
        figures=figs,
        tables=written,
        counts=counts,
        verdict=text,
    )


def _tables(
    study: Study, csvs: dict[str, pd.DataFrame], label: str, margin: float
) -> dict[str, tuple[pd.DataFrame, str]]:
    """name -> (display table, caption) of the LaTeX/Markdown tables."""
    summary = csvs["summary"]
    tables = {
        "summary": (
            summary_display(summary, margin),
            f"{study.name}: {label} (%), mean over seeds ({_n_text(summary)}); baseline "
            f"{study.baseline}; p vs paper; diff vs baseline with Holm-adjusted p; seeds "
            f"needed (per arm) for power {POWER} at alpha {ALPHA} to detect the observed "
            f"difference and a {POWER_DIFF:g}-point difference.",
        ),
        "tests": (tests_display(csvs["tests"]), f"{study.name}: every test on the {label} (%)."),
    }
    if "factorial_effects" in csvs:
        tables["factorial_effects"] = (
            effects_display(csvs["factorial_effects"]),
            f"{study.name}: main effects and two-way interactions on the {label} (points), "
            "moving each factor from the paper's level to the reproduction's; p (Holm): Holm "
            "within each depth, over the main effects and separately over the interactions.",
        )
        tables["factorial_ranking"] = (
            ranking_display(csvs["factorial_ranking"]),
            f"{study.name}: suspected causes ranked by main effect on the {label}. Predicted "
            "gap: the sum of the main effects, i.e. the model's predicted error with every "
            "factor at its reproduction level minus the paper's protocol (two-way interactions "
            "cancel between these opposite corners); share: effect / predicted gap (negative "
            "for a factor that narrows it); p (Holm): Holm over the main effects at each depth.",
        )
    return tables


def _figures(
    study: Study,
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    summary: pd.DataFrame,
    directory: Path,
    label: str,
) -> dict[str, list[Path]]:
    """Figure 6, the EDFs and the forest plot (studies.plots) of the included runs."""
    paper = {}  # depth -> Table 6's ResNet error, drawn as reference lines
    for d in sorted(runs["depth"].unique()):
        if (p := paper_error("resnet", int(d))) is not None:
            paper[int(d)] = p.error
    values = runs[runs["included"]][["variant", "depth", "analysed_error"]]
    comps = summary[summary["variant"] != study.baseline].rename(
        columns={
            "diff_vs_baseline": "diff",
            "ci_diff_low": "ci_low",
            "ci_diff_high": "ci_high",
            "p_vs_baseline_holm": "p_holm",
        }
    )
    return plots.plot_all(
        directory,
        curves=curves[curves["status"] == "finished"],  # a diverged curve ends in NaN
        values=values.rename(columns={"analysed_error": "error"}),
        comparisons=comps,
        order=_variants(study, runs),
        baseline=study.baseline,
        paper=paper,
        metric_label=f"{label} (%)",
        title=study.name,
    )


def _n_text(summary: pd.DataFrame) -> str:
    n = summary["n"].astype(int) if len(summary) else pd.Series([0])
    return f"n = {n.min()}" if n.min() == n.max() else f"n = {n.min()}-{n.max()} per row"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m studies.analyze",
        description="Statistics, tables and figures of a study's runs.",
    )
    p.add_argument("study", help="study name (python -m studies.run --list)")
    p.add_argument("--out", default="runs", help="output directory of studies.run (default runs)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite)")
    p.add_argument("--metric", default="final", choices=list(METRICS))
    p.add_argument("--margin", type=float, default=0.3, help="TOST margin, points (default 0.3)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    args = p.parse_args(argv)
    if not args.margin > 0:
        p.error(f"--margin {args.margin}: allowed values are > 0")
    try:
        result = analyze(
            args.study,
            args.out,
            storage=args.storage,
            metric=args.metric,
            margin=args.margin,
            seed=args.seed,
            figures=not args.no_figures,
        )
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except EmptyStudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(result.verdict)
    n_files = len(result.tables) + sum(len(v) for v in result.figures.values())
    print(f"\nwrote {n_files} files to {result.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
