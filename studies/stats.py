"""Statistics for the ablation studies: pure functions on arrays of test errors (percent).

Every input array is 1-D, shape (n,): one value per run (seed). NaNs are dropped and counted
(`n_nan`). Degenerate input never raises: n = 0 or 1, zero variance and all-NaN arrays give NaN
for what cannot be computed and say why in a `note` string ("" when there is nothing to say).
Misuse (arrays of different lengths where pairs are required, a non-positive margin, a
three-level factor) raises ValueError. Every stochastic function takes `seed` (an int for
`np.random.default_rng`). Tests come from scipy and statsmodels; this module chooses the test,
handles the degenerate cases and names the results.

Sign conventions: `diff` is always "variant minus baseline" or "runs minus paper", in points of
test error, so a positive diff means the variant (or the reproduction) is worse.

References
----------
- Student (1908); Welch, B. L. (1947). The generalization of "Student's" problem when several
  different population variances are involved. Biometrika 34:28-35.
- Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bulletin 1:80-83.
- Mann, H. B. & Whitney, D. R. (1947). On a test of whether one of two random variables is
  stochastically larger than the other. Ann. Math. Statist. 18:50-60.
- Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scand. J. Statist.
  6:65-70.
- Hedges, L. V. (1981). Distribution theory for Glass's estimator of effect size and related
  estimators. J. Educ. Statist. 6:107-128 (bias-corrected g, J = 1 - 3 / (4 N - 9)).
- Cohen, J. (1988). Statistical Power Analysis for the Behavioral Sciences, 2nd ed. (d, d_z,
  power of t-tests).
- Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the power
  approach for assessing the equivalence of average bioavailability. J. Pharmacokinet.
  Biopharm. 15:657-680 (TOST).
- Efron, B. (1987). Better bootstrap confidence intervals. JASA 82:171-185 (BCa).
- Box, G. E. P., Hunter, J. S. & Hunter, W. G. (2005). Statistics for Experimenters, 2nd ed.,
  ch. 5-6 (2^(k-p) fractional factorials; with -1/+1 coding an effect is 2 x its coefficient).
- Bouthillier, X. et al. (2021). Accounting for variance in machine learning benchmarks. MLSys;
  Agarwal, R. et al. (2021). Deep RL at the edge of the statistical precipice. NeurIPS
  (rliable: seeds as samples, intervals over point estimates).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.meta_analysis import effectsize_smd
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import DescrStatsW

CONFIDENCE = 0.95  # level of every interval unless a caller asks for another
NAN = float("nan")

# Differences smaller than this (in points, relative to max(1, |values|)) are float noise:
# errors on a 10k test set are multiples of 0.01 points, and 7.2 - 7.1 != 8.2 - 8.1 in binary.
TIE_TOL = 1e-9
# Rank tests see values rounded to this many decimals so that float noise does not break ties.
RANK_DECIMALS = 9

ZERO_DIFF_NOTE = "all differences are zero: p = 1 and effect 0 by convention"
CONST_DIFF_NOTE = (
    "zero variance with a non-zero difference: t is infinite, p = 0 is its limit and the effect "
    "is infinite; read the rank test and n instead"
)


# ----------------------------------------------------------------------------------- helpers


def _clean(x: Any) -> tuple[np.ndarray, int]:
    """Array-like -> (finite-or-inf values, shape (n,); number of NaNs dropped)."""
    a = np.asarray(x, dtype=float).ravel()
    keep = ~np.isnan(a)
    return a[keep], int((~keep).sum())


def _nans(names: str) -> dict[str, float]:
    """ "a b c" -> {"a": nan, "b": nan, "c": nan}: the not-yet-computed fields of a result."""
    return dict.fromkeys(names.split(), NAN)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _tol(*arrays: np.ndarray) -> float:
    scale = max([1.0] + [float(np.max(np.abs(a))) for a in arrays if a.size])
    return TIE_TOL * scale


def _is_constant(a: np.ndarray, tol: float = 0.0) -> bool:
    return a.size > 0 and float(np.ptp(a)) <= tol


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the warnings scipy emits on the degenerate cases this module handles itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        yield


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _bootstrap_ci(
    samples: tuple[np.ndarray, ...],
    statistic: Callable[..., Any],
    *,
    seed: int,
    n_boot: int,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, str, str]:
    """BCa bootstrap interval of `statistic` over independent `samples` (each shape (n_i,)).

    Returns (low, high, method, note). BCa needs n >= 3 and a non-degenerate jackknife (it is
    NaN for zero variance); otherwise the percentile interval is used; NaN below n = 2;
    method "constant" (low = high = the statistic) when every sample has zero variance.
    """
    if n_boot <= 0:
        return NAN, NAN, "", ""
    n_min = min(s.size for s in samples)
    if n_min < 2:
        return NAN, NAN, "", "bootstrap needs n >= 2"
    if all(_is_constant(s, _tol(s)) for s in samples):
        # Every resample is the same data: the interval is the point (BCa is 0/0 here, and
        # float noise in the mean can make scipy return a spurious "BCa" interval).
        point = float(statistic(*(s[:1] for s in samples), axis=-1))
        return point, point, "constant", "zero variance: the bootstrap interval is the point"
    methods = ["BCa", "percentile"] if n_min >= 3 else ["percentile"]
    for method in methods:
        try:
            with _quiet():
                res = stats.bootstrap(
                    samples,
                    statistic,
                    n_resamples=n_boot,
                    method=method,
                    confidence_level=confidence,
                    rng=np.random.default_rng(seed),
                )
        except (ValueError, FloatingPointError):
            continue
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            why = "BCa needs n >= 3" if n_min < 3 else "BCa not computable"
            note = "" if method == "BCa" else f"bootstrap: {method} interval ({why})"
            return low, high, method, note
    return NAN, NAN, "", "bootstrap interval not computable"


# ------------------------------------------------------------------------------- describe


def describe(
    x: Any, *, seed: int = 0, n_boot: int = 2000, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Summary of one cell's runs.

    x: shape (n,), test errors of n runs (NaNs dropped and counted).
    Returns n, n_nan, mean, std (ddof=1), sem, ci95_low/ci95_high (t interval of the mean),
    boot_low/boot_high (BCa bootstrap of the mean; percentile for n = 2 or when BCa fails;
    the mean itself for zero variance), boot_method ("BCa", "percentile", "constant", ""),
    min, max, median, note.
    """
    a, n_nan = _clean(x)
    n = a.size
    out: dict[str, Any] = dict(
        n=n,
        n_nan=n_nan,
        **_nans("mean std sem ci95_low ci95_high boot_low boot_high"),
        boot_method="",
        **_nans("min max median"),
        note="",
    )
    notes = [f"{n_nan} NaN value(s) dropped" if n_nan else ""]
    if n == 0:
        out["note"] = _join(*notes, "no values")
        return out
    constant = _is_constant(a)
    mean = float(a[0]) if constant else float(np.mean(a))
    out.update(mean=mean, min=float(np.min(a)), max=float(np.max(a)), median=float(np.median(a)))
    if n == 1:
        out["note"] = _join(*notes, "n = 1: std, sem and intervals not computable")
        return out
    if constant:
        out.update(std=0.0, sem=0.0, ci95_low=mean, ci95_high=mean)
        notes.append("zero variance: the t interval has zero width")
    else:
        sem = float(stats.sem(a))
        low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
        out.update(
            std=float(np.std(a, ddof=1)), sem=sem, ci95_low=float(low), ci95_high=float(high)
        )
    low, high, method, note = _bootstrap_ci((a,), np.mean, seed=seed, n_boot=n_boot)
    out.update(boot_low=low, boot_high=high, boot_method=method)
    out["note"] = _join(*notes, note)
    return out


# ------------------------------------------------------------------------- versus the paper


def one_sample_vs_paper(
    x: Any,
    paper_mean: float,
    *,
    paper_std: float | None = None,
    paper_n: int | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Are the runs' errors different from the paper's number?

    x: shape (n,), test errors. One-sample t-test against `paper_mean` (treated as exact).
    When the paper gives mean +- std over paper_n runs (ResNet-110: 6.61 +- 0.16, n = 5), also
    Welch's test from summary statistics, which counts the paper's own seed noise.
    Returns n, n_nan, mean, paper_mean, diff (mean - paper), statistic, p, df, ci_low/ci_high
    (t interval of diff), effect (Cohen's d vs the paper: diff / sd), effect_name,
    welch_statistic, welch_p, welch_df, note.
    """
    a, n_nan = _clean(x)
    n = a.size
    out: dict[str, Any] = dict(
        n=n,
        n_nan=n_nan,
        mean=NAN,
        paper_mean=float(paper_mean),
        **_nans("diff statistic p df ci_low ci_high effect"),
        effect_name="cohen_d_vs_paper",
        **_nans("welch_statistic welch_p welch_df"),
        note="",
    )
    notes = [f"{n_nan} NaN value(s) dropped" if n_nan else ""]
    if n == 0:
        out["note"] = _join(*notes, "no values")
        return out
    constant = _is_constant(a)
    mean = float(a[0]) if constant else float(np.mean(a))
    diff = mean - float(paper_mean)
    out.update(mean=mean, diff=diff)
    if n < 2:
        notes.append("n = 1: t-test not computable")
    elif constant:
        out.update(df=float(n - 1), ci_low=diff, ci_high=diff)
        if abs(diff) <= _tol(a):
            out.update(diff=0.0, statistic=0.0, p=1.0, effect=0.0, ci_low=0.0, ci_high=0.0)
            notes.append("zero variance and equal to the paper: p = 1, effect 0 by convention")
        else:
            inf = math.copysign(math.inf, diff)
            out.update(statistic=inf, p=0.0, effect=inf)
            notes.append(CONST_DIFF_NOTE)
    else:
        res = stats.ttest_1samp(a, paper_mean)
        ci = res.confidence_interval(confidence)
        out.update(
            statistic=float(res.statistic),
            p=float(res.pvalue),
            df=float(res.df),
            ci_low=float(ci.low) - paper_mean,
            ci_high=float(ci.high) - paper_mean,
            effect=diff / float(np.std(a, ddof=1)),
        )
    if paper_std is not None and paper_n is not None:
        if n < 2 or paper_n < 2:
            notes.append("Welch test needs n >= 2 on both sides")
        else:
            sd = 0.0 if constant else float(np.std(a, ddof=1))
            with _quiet():
                res = stats.ttest_ind_from_stats(
                    mean, sd, n, paper_mean, paper_std, paper_n, equal_var=False
                )
            df = welch_df(sd, n, paper_std, paper_n)
            out.update(welch_statistic=float(res.statistic), welch_p=float(res.pvalue), welch_df=df)
    out["note"] = _join(*notes)
    return out


def welch_df(sd1: float, n1: int, sd2: float, n2: int) -> float:
    """Welch-Satterthwaite degrees of freedom of a difference of two means from summary
    statistics (sd ddof 1, n runs per arm); scipy's ttest_ind_from_stats does not return it.
    NaN when an arm has n < 2 or both variances are zero."""
    if n1 < 2 or n2 < 2:
        return NAN
    v1, v2 = sd1**2 / n1, sd2**2 / n2
    denom = v1**2 / (n1 - 1) + v2**2 / (n2 - 1)
    return float((v1 + v2) ** 2 / denom) if denom > 0 else NAN


def tost_vs_paper(
    x: Any,
    paper_mean: float,
    margin: float,
    *,
    paper_std: float | None = None,
    paper_n: int | None = None,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Is the runs' mean equivalent to the paper's within +- margin points? (TOST)

    x: shape (n,), test errors. Two one-sided tests (Schuirmann 1987) of H0: diff <= -margin or
    diff >= +margin, diff = mean(x) - paper mean; p = the larger of the two one-sided p.

    Two forms, named in `test`:
    - "tost_one_sample" (the paper's number treated as exact, as for Table 6's single runs):
      two one-sided one-sample t-tests against paper_mean -+ margin (statsmodels
      DescrStatsW.ttost_mean), df = n - 1.
    - "tost_welch_summary", when the paper gives paper_std and paper_n (ResNet-110: 6.61 +-
      0.16 over 5 runs): two one-sided Welch t-tests from summary statistics
      (scipy ttest_ind_from_stats with the paper's mean shifted by -+ margin), Welch-
      Satterthwaite df, so the paper's own seed noise is counted as in one_sample_vs_paper's
      Welch test. It equals statsmodels ttost_ind(x, paper_runs, -margin, margin,
      usevar="unequal") on any paper sample with that mean, sd and n.
    Rejecting at alpha is the same as the (1 - 2 alpha) interval (ci_low, ci_high) of diff, of
    the same form, lying inside (-margin, +margin).

    Returns n, n_nan, mean, diff, margin, low, upp (paper_mean -+ margin), test, p (max of the
    two one-sided p), p_low, p_upp, t_low, t_upp, df, se (of diff), ci_low, ci_high, ci_level,
    alpha, equivalent (p < alpha), note.
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0 points, got {margin!r}")
    welch = paper_std is not None and paper_n is not None
    pstd = float(paper_std) if paper_std is not None else NAN
    pn = int(paper_n) if paper_n is not None else 0
    if welch and not pstd >= 0:
        raise ValueError(f"paper_std must be >= 0, got {paper_std!r}")
    a, n_nan = _clean(x)
    n = a.size
    low, upp = float(paper_mean) - margin, float(paper_mean) + margin
    out: dict[str, Any] = dict(
        n=n,
        n_nan=n_nan,
        **_nans("mean diff"),
        margin=float(margin),
        low=low,
        upp=upp,
        test="tost_welch_summary" if welch else "tost_one_sample",
        **_nans("p p_low p_upp t_low t_upp df se ci_low ci_high"),
        ci_level=1 - 2 * alpha,
        alpha=alpha,
        equivalent=False,
        note="",
    )
    notes = [f"{n_nan} NaN value(s) dropped" if n_nan else ""]
    constant = _is_constant(a)
    if n:
        mean = float(a[0]) if constant else float(np.mean(a))
        out.update(mean=mean, diff=mean - float(paper_mean))
    if n < 2 or (welch and pn < 2):
        sides = " and paper_n >= 2" if welch else ""
        out["note"] = _join(*notes, f"n = {n}: TOST not computable (needs n >= 2{sides})")
        return out
    sd = 0.0 if constant else float(np.std(a, ddof=1))
    if welch:
        se = math.sqrt(sd**2 / n + pstd**2 / pn)
        if not se > 0:
            out["note"] = _join(*notes, "zero variance in both arms: Welch TOST not computable")
            return out
        with _quiet():
            lo = stats.ttest_ind_from_stats(
                mean, sd, n, low, pstd, pn, equal_var=False, alternative="greater"
            )
            up = stats.ttest_ind_from_stats(
                mean, sd, n, upp, pstd, pn, equal_var=False, alternative="less"
            )
        t1, p1, t2, p2 = lo.statistic, lo.pvalue, up.statistic, up.pvalue
        df = welch_df(sd, n, pstd, pn)
        notes.append(
            f"Welch TOST from the paper's mean +- sd ({paper_mean:g} +- {pstd:g}, n = {pn})"
        )
    else:
        with _quiet():
            _, (t1, p1, df), (t2, p2, _) = DescrStatsW(a).ttost_mean(low, upp)
        se = float(stats.sem(a)) if not constant else 0.0
        if constant:
            notes.append("zero variance: one-sided t statistics are infinite, p is their limit")
    p = float(np.max([p1, p2]))  # NaN if either side is NaN
    diff = out["diff"]
    half = float(stats.t.ppf(1 - alpha, df)) * se if se > 0 else 0.0
    out.update(
        p=p,
        p_low=float(p1),
        p_upp=float(p2),
        t_low=float(t1),
        t_upp=float(t2),
        df=float(df),
        se=se,
        ci_low=diff - half,
        ci_high=diff + half,
        equivalent=bool(np.isfinite(p) and p < alpha),
    )
    out["note"] = _join(*notes)
    return out


# ------------------------------------------------------------------------ versus a baseline


def _by_seed(values: Any, seeds: Any, arm: str) -> tuple[np.ndarray, np.ndarray, int, str]:
    """(values, seeds) -> (unique seeds, shape (k,); mean value per seed; NaNs dropped; note)."""
    v = np.asarray(values, dtype=float).ravel()
    s = np.asarray(seeds).ravel()
    if v.size != s.size:
        raise ValueError(f"{arm}: {v.size} values but {s.size} seeds")
    keep = ~np.isnan(v)
    v, s, n_nan = v[keep], s[keep], int((~keep).sum())
    uniq, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    note = ""
    if (counts > 1).any():
        # A re-run cell (e.g. a worker killed after finishing) is the same measurement twice.
        note = f"{arm}: duplicate seeds {uniq[counts > 1].tolist()} averaged"
    means = np.bincount(inverse, weights=v, minlength=uniq.size) / counts
    return uniq, means, n_nan, note


def _paired(
    v: np.ndarray, b: np.ndarray, *, seed: int, n_boot: int, confidence: float
) -> dict[str, Any]:
    d = v - b
    n = d.size
    out: dict[str, Any] = dict(
        test="paired_t",
        rank_test="wilcoxon",
        effect_name="d_z",
        paired=True,
        n_pairs=n,
        n_v=n,
        n_b=n,
        diff=float(np.mean(d)) if n else NAN,
    )
    notes: list[str] = []
    if n < 2:
        out["note"] = f"{n} pair(s): paired tests not computable"
        return out
    tol = _tol(v, b)
    if float(np.max(np.abs(d))) <= tol:
        out.update(diff=0.0, statistic=0.0, p=1.0, effect=0.0, ci_low=0.0, ci_high=0.0)
        out.update(rank_statistic=0.0, rank_p=1.0, boot_low=0.0, boot_high=0.0)
        out["note"] = ZERO_DIFF_NOTE
        return out
    if _is_constant(d, tol):
        diff = float(np.median(d))
        inf = math.copysign(math.inf, diff)
        out.update(diff=diff, statistic=inf, p=0.0, effect=inf, ci_low=diff, ci_high=diff)
        notes.append(CONST_DIFF_NOTE)
    else:
        res = stats.ttest_rel(v, b)
        ci = res.confidence_interval(confidence)
        out.update(
            statistic=float(res.statistic),
            p=float(res.pvalue),
            ci_low=float(ci.low),
            ci_high=float(ci.high),
            effect=float(np.mean(d) / np.std(d, ddof=1)),
        )
    try:
        # zero_method="wilcox" drops zero differences (Wilcoxon 1945).
        with _quiet():
            rank = stats.wilcoxon(np.round(d, RANK_DECIMALS))
        out.update(rank_statistic=float(rank.statistic), rank_p=float(rank.pvalue))
    except ValueError as e:
        notes.append(f"wilcoxon not computable: {e}")
    low, high, _, note = _bootstrap_ci(
        (d,), np.mean, seed=seed, n_boot=n_boot, confidence=confidence
    )
    out.update(boot_low=low, boot_high=high)
    out["note"] = _join(*notes, note)
    return out


def _unpaired(
    v: np.ndarray, b: np.ndarray, *, seed: int, n_boot: int, confidence: float
) -> dict[str, Any]:
    n_v, n_b = v.size, b.size
    out: dict[str, Any] = dict(
        test="welch_t",
        rank_test="mann_whitney",
        effect_name="hedges_g",
        paired=False,
        n_pairs=0,
        n_v=n_v,
        n_b=n_b,
        diff=float(np.mean(v) - np.mean(b)) if n_v and n_b else NAN,
    )
    notes: list[str] = []
    if n_v == 0 or n_b == 0:
        out["note"] = f"n_v = {n_v}, n_b = {n_b}: nothing to compare"
        return out
    tol = _tol(v, b)
    if n_v < 2 or n_b < 2:
        notes.append(f"n_v = {n_v}, n_b = {n_b}: Welch test needs n >= 2 per arm")
    elif _is_constant(v) and _is_constant(b):
        diff = float(v[0] - b[0])
        if abs(diff) <= tol:
            out.update(diff=0.0, statistic=0.0, p=1.0, effect=0.0, ci_low=0.0, ci_high=0.0)
            notes.append("both arms constant and equal: p = 1 and effect 0 by convention")
        else:
            inf = math.copysign(math.inf, diff)
            out.update(diff=diff, statistic=inf, p=0.0, effect=inf, ci_low=diff, ci_high=diff)
            notes.append(CONST_DIFF_NOTE)
    else:
        res = stats.ttest_ind(v, b, equal_var=False)
        ci = res.confidence_interval(confidence)
        g, _ = effectsize_smd(
            np.mean(v), np.std(v, ddof=1), n_v, np.mean(b), np.std(b, ddof=1), n_b
        )
        out.update(
            statistic=float(res.statistic),
            p=float(res.pvalue),
            df=float(res.df),
            ci_low=float(ci.low),
            ci_high=float(ci.high),
            effect=float(g),
        )
    with _quiet():
        rank = stats.mannwhitneyu(
            np.round(v, RANK_DECIMALS), np.round(b, RANK_DECIMALS), alternative="two-sided"
        )
    out.update(rank_statistic=float(rank.statistic), rank_p=float(rank.pvalue))
    low, high, _, note = _bootstrap_ci(
        (v, b), _mean_diff, seed=seed, n_boot=n_boot, confidence=confidence
    )
    out.update(boot_low=low, boot_high=high)
    out["note"] = _join(*notes, note)
    return out


def compare_to_baseline(
    variant: Any,
    baseline: Any,
    *,
    paired: bool | None = None,
    seeds_v: Any = None,
    seeds_b: Any = None,
    seed: int = 0,
    n_boot: int = 2000,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Does the variant change the error relative to the baseline?

    variant: shape (n_v,), baseline: shape (n_b,), test errors; seeds_v / seeds_b: shapes
    (n_v,) / (n_b,), the training seed of each run. Seed s fixes initialisation, data order and
    augmentation in both arms, so runs with the same seed are pairs.

    Pairing: with seeds, pairs are matching seeds (duplicates averaged, unmatched runs dropped
    and counted); paired=None pairs when >= 2 seeds match. Without seeds, paired=None means
    unpaired and paired=True pairs by position (equal lengths required).

    Paired: t-test on the differences (ttest_rel), Wilcoxon signed-rank (zero differences
    dropped; with n pairs its smallest two-sided p is 2 / 2^n, 0.0625 for 5 seeds),
    d_z = mean(d) / sd(d), t interval of the mean difference.
    Unpaired: Welch t-test, Mann-Whitney U, Hedges' g (bias-corrected, pooled sd), Welch
    interval. boot_low/boot_high: BCa bootstrap of the mean difference (n_boot = 0 skips it;
    `seed` seeds it).

    Degenerate cases, decided here: all differences zero (or both arms constant and equal) ->
    statistic 0, p = 1, effect 0, CI [0, 0]. All differences equal and non-zero (or both arms
    constant and different) -> statistic +-inf, p = 0 (the t-test's limit), effect +-inf, CI
    [diff, diff], with a note; the rank test is computed as usual and is the one to read.
    Fewer than 2 pairs (or fewer than 2 runs in an arm) -> NaN and a note.

    Returns test, statistic, p, df, rank_test, rank_statistic, rank_p, diff (variant - baseline),
    ci_low, ci_high, boot_low, boot_high, effect, effect_name, paired, n_pairs, n_v, n_b, n_nan,
    n_unmatched, note.
    """
    notes: list[str] = []
    n_unmatched = 0
    if (seeds_v is None) != (seeds_b is None):
        raise ValueError("give seeds for both arms (seeds_v and seeds_b) or for neither")
    if seeds_v is not None:
        sv, vv, nan_v, note_v = _by_seed(variant, seeds_v, "variant")
        sb, bb, nan_b, note_b = _by_seed(baseline, seeds_b, "baseline")
        notes += [note_v, note_b]
        common, iv, ib = np.intersect1d(sv, sb, return_indices=True)
        if paired is None:
            paired = common.size >= 2
            if not paired:
                notes.append(f"{common.size} matching seed(s): arms compared unpaired")
        if paired:
            n_unmatched = sv.size + sb.size - 2 * common.size
            v, b = vv[iv], bb[ib]
            if n_unmatched:
                notes.append(f"{n_unmatched} run(s) without a matching seed dropped")
        else:
            v, b = vv, bb
        n_nan = nan_v + nan_b
    else:
        v_all = np.asarray(variant, dtype=float).ravel()
        b_all = np.asarray(baseline, dtype=float).ravel()
        if paired:
            if v_all.size != b_all.size:
                raise ValueError(
                    f"paired=True without seeds pairs by position: lengths {v_all.size} and "
                    f"{b_all.size} differ"
                )
            keep = ~(np.isnan(v_all) | np.isnan(b_all))
            v, b = v_all[keep], b_all[keep]
            n_nan = int((~keep).sum())
        else:
            paired = False
            (v, nan_v), (b, nan_b) = _clean(v_all), _clean(b_all)
            n_nan = nan_v + nan_b
    if n_nan:
        notes.append(f"{n_nan} NaN value(s) dropped" + (" with their pairs" if paired else ""))
    core = _paired if paired else _unpaired
    out: dict[str, Any] = dict(
        test="",
        **_nans("statistic p df"),
        rank_test="",
        **_nans("rank_statistic rank_p diff ci_low ci_high boot_low boot_high effect"),
        effect_name="",
        paired=bool(paired),
        n_pairs=0,
        n_v=0,
        n_b=0,
        n_nan=n_nan,
        n_unmatched=n_unmatched,
    )
    res = core(v, b, seed=seed, n_boot=n_boot, confidence=confidence)
    notes.append(res.pop("note", ""))
    out.update(res)
    if paired and out["n_pairs"] >= 2 and np.isnan(out["df"]):
        out["df"] = float(out["n_pairs"] - 1)
    out["note"] = _join(*notes)
    return out


# ------------------------------------------------------------------- multiplicity and power


def holm(pvalues: Any) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values; NaN entries stay NaN and are not counted.

    pvalues: shape (m,) (any shape is kept). statsmodels' default is Holm-Sidak, hence the
    explicit method="holm".
    """
    p = np.asarray(pvalues, dtype=float)
    flat = p.ravel()
    out = np.full(flat.shape, NAN)
    mask = ~np.isnan(flat)
    if ((flat[mask] < 0) | (flat[mask] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    if mask.any():
        out[mask] = multipletests(flat[mask], method="holm")[1]
    return out.reshape(p.shape)


def seeds_needed(
    diff: float, sd: float, *, paired: bool = True, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Seeds per arm for a two-sided t-test to detect `diff` points with the given power.

    paired=True: one-sample/paired t-test (TTestPower), sd is the sd of the per-seed
    differences, effect d_z = diff / sd. paired=False: two independent arms (TTestIndPower),
    sd is the within-arm sd, effect d = diff / sd. Returns ceil(nobs) as a float, at least 2
    (a t-test needs 2 runs); inf when diff == 0; NaN when diff or sd is NaN or sd < 0;
    2.0 when sd == 0 and diff != 0.
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha!r}, {power!r}")
    if not (np.isfinite(diff) and np.isfinite(sd)) or sd < 0:
        return NAN
    if diff == 0:
        return math.inf
    if sd == 0:
        return 2.0
    es = abs(diff) / sd
    analysis = TTestPower() if paired else TTestIndPower()
    key = "nobs" if paired else "nobs1"

    def reaches(n: float) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = analysis.power(effect_size=es, alpha=alpha, **{key: n})
        return bool(got >= power)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nobs = float(analysis.solve_power(effect_size=es, alpha=alpha, power=power))
        except (ValueError, RuntimeError):
            nobs = NAN
    if np.isfinite(nobs):
        n = max(2, math.ceil(nobs))
        # For large effects the root finder can stop off the root (paired d_z = 6.34: it
        # returns 2.0, where 2 seeds give power 0.52): keep its answer only if the power
        # curve agrees that n is the smallest integer reaching the power.
        if reaches(n) and (n == 2 or not reaches(n - 1)):
            return float(n)

    # The root finder failed (very large or very small effects): search the power curve.
    lo, hi = 1, 2
    while not reaches(hi):
        lo, hi = hi, hi * 2
        if hi > 2**40:
            return math.inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return float(max(2, hi))


# --------------------------------------------------------------------- best-epoch reporting


def selection_bias(
    best: Any, final: Any, *, seeds: Any = None, seed: int = 0, n_boot: int = 2000
) -> dict[str, Any]:
    """What reporting the best test error over training buys, in points.

    best, final: shape (n_runs,), per run the best test error over all evaluations and the
    error at the end of training (pairs with a NaN dropped and counted). The bias is
    final - best, >= 0 when best is a minimum over evaluations that include the final one.
    seeds: shape (n_runs,), the training seed of each run, or None when every run is its own
    unit. Runs that share a seed are not independent (the variants and depths of a study share
    initialisation and data order per seed; eval-only variants even share one training), so
    with seeds the bias is first averaged over each seed's runs and the mean, sd and intervals
    are over seeds: n = the number of seeds, n_runs = the runs behind them.
    Returns n, n_runs, n_nan, unit ("seed" or "run"), mean, std, ci95_low/ci95_high (t over
    the n units), boot_low/boot_high (BCa over the units; `seed` seeds it), note.
    """
    b = np.asarray(best, dtype=float).ravel()
    f = np.asarray(final, dtype=float).ravel()
    if b.size != f.size:
        raise ValueError(f"best and final must have equal lengths, got {b.size} and {f.size}")
    keep = ~(np.isnan(b) | np.isnan(f))
    n_nan = int((~keep).sum())
    d = f[keep] - b[keep]
    notes = [f"{n_nan} run(s) with a NaN dropped" if n_nan else ""]
    if d.size and float(np.min(d)) < -_tol(b, f):
        notes.append("some final < best: best should be the minimum over all evaluations")
    unit = "run"
    units = d
    if seeds is not None:
        s = np.asarray(seeds).ravel()
        if s.size != b.size:
            raise ValueError(f"{b.size} runs but {s.size} seeds")
        s = s[keep]
        # One value per seed (groupby sorts the seeds, so the bootstrap sees a fixed order).
        units = pd.Series(d).groupby(s).mean().to_numpy(dtype=float) if d.size else d
        unit = "seed"
        notes.append(
            f"n = {units.size} seeds: the {d.size} runs are averaged per seed first (runs "
            "sharing a seed are not independent)"
        )
    desc = describe(units, seed=seed, n_boot=n_boot)
    notes.append(desc["note"])
    keys = ("mean", "std", "ci95_low", "ci95_high", "boot_low", "boot_high")
    return dict(
        n=int(units.size),
        n_runs=int(d.size),
        n_nan=n_nan,
        unit=unit,
        **{k: desc[k] for k in keys},
        note=_join(*notes),
    )


# ------------------------------------------------------------------- factorial experiments


def factorial_analysis(
    df: pd.DataFrame,
    response: str,
    factors: Sequence[str],
    *,
    seed_col: str = "seed",
    reference_levels: Mapping[str, Any] | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Main effects and two-way interactions of a two-level (fractional) factorial.

    df: one row per run, shape (n_runs, ...), with column `response` (test error, points), one
    column per factor with exactly two levels, and `seed_col`. Each factor is effect-coded:
    the paper's level (`reference_levels[factor]`; without it, the level that sorts first
    as a string) -> -1, the other level -> +1. OLS on main effects + all two-way interactions;
    with -1/+1 coding an effect in points is 2 x its coefficient: "moving from the paper's
    level to the other level changes the error by `effect` points" (for an interaction A:B,
    the change in A's effect when B moves off the paper's level, i.e. the usual factorial
    interaction effect). In a 2^(5-1) resolution-V half fraction main effects are aliased only
    with four-factor and two-way with three-factor interactions, so all 15 are estimable; with
    one seed the 16-run model is saturated (df_resid = 0) and effects come without intervals.

    Returns
      n, n_nan, n_seeds, df_resid, factors, reference_levels, other_levels (factor -> level);
      effects: DataFrame term, kind ("main"/"interaction"), effect, se, ci_low, ci_high, p,
        p_holm (Holm 1979 within the kind: over the main effects, and separately over the
        two-way interactions, of this fit);
      anova: Type II ANOVA table (anova_lm typ=2), index = terms;
      predicted_gap: dict(effect, ci_low, ci_high, p): the model's predicted difference
        between the all-high corner (every factor at its non-paper level, i.e. every
        suspected reproduction choice) and the all-low corner (the paper's protocol). With
        -1/+1 coding that is 2 x (sum of main coefficients) = the sum of the main effects:
        each two-way term x_i x_j is +1 at both opposite corners and cancels (the corners
        need not be runs of the fraction). Its interval is OLS's for that linear contrast;
      ranking: main effects sorted by effect (largest first) with rank and share =
        effect / predicted_gap["effect"], the share of that predicted difference each cause
        accounts for (shares sum to 1; a negative share is a factor whose reproduction level
        narrows the gap; NaN when the predicted difference is zero), plus p and p_holm;
      mixed: dict(effects, seed_var, resid_var, converged, note) from a mixed model with a
        random intercept per seed, or None with one seed;
      ols: the statsmodels OLS results; note.
    """
    missing = [c for c in [response, *factors] if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the data; have {list(df.columns)}")
    refs = dict(reference_levels or {})
    unknown = sorted(set(refs) - set(factors))
    if unknown:
        raise ValueError(f"reference_levels names unknown factors {unknown}; factors: {factors}")
    notes: list[str] = []
    y = pd.to_numeric(df[response], errors="coerce").astype(float)
    n_nan = int(y.isna().sum())
    if n_nan:
        notes.append(f"{n_nan} run(s) with a NaN response dropped")
    rows = df.loc[y.notna()]
    data = pd.DataFrame({"y": y[y.notna()].to_numpy()})
    if seed_col in rows.columns:
        data["seed"] = rows[seed_col].to_numpy()
    else:
        data["seed"] = 0
        notes.append(f"no column {seed_col!r}: all runs treated as one seed")
    names: dict[str, str] = {}  # formula-safe name -> factor
    ref_out: dict[str, Any] = {}
    other_out: dict[str, Any] = {}
    for i, f in enumerate(factors):
        col = rows[f]
        levels = list(pd.unique(col.dropna()))
        if len(levels) > 2:
            raise ValueError(f"factor {f!r} has {len(levels)} levels {levels}; allowed: 2")
        if col.isna().any():
            raise ValueError(f"factor {f!r} has missing levels")
        if len(levels) < 2:
            notes.append(f"factor {f!r} has one level {levels}: dropped")
            continue
        if f in refs:
            if refs[f] not in levels:
                raise ValueError(f"reference level {refs[f]!r} of {f!r} not in {levels}")
            ref = refs[f]
        else:
            ref = sorted(levels, key=str)[0]
        other = levels[1] if levels[0] == ref else levels[0]
        names[f"x{i}"] = f
        ref_out[f], other_out[f] = ref, other
        data[f"x{i}"] = np.where(col.to_numpy() == other, 1.0, -1.0)
    n_seeds = int(data["seed"].nunique())
    out: dict[str, Any] = dict(
        n=len(data),
        n_nan=n_nan,
        n_seeds=n_seeds,
        df_resid=NAN,
        factors=list(names.values()),
        reference_levels=ref_out,
        other_levels=other_out,
        effects=pd.DataFrame(
            columns=["term", "kind", "effect", "se", "ci_low", "ci_high", "p", "p_holm"]
        ),
        anova=pd.DataFrame(),
        predicted_gap=_nans("effect ci_low ci_high p"),
        ranking=pd.DataFrame(columns=["rank", "factor", "effect", "share", "p", "p_holm"]),
        mixed=None,
        ols=None,
        note="",
    )
    if not names or len(data) == 0:
        out["note"] = _join(*notes, "no two-level factors or no runs: nothing to fit")
        return out

    def readable(term: str) -> str:
        return ":".join(names[t] for t in term.split(":"))

    xs = list(names)
    formula = "y ~ " + (f"({' + '.join(xs)})**2" if len(xs) > 1 else xs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ols = smf.ols(formula, data=data).fit()
    out["ols"] = ols
    k = ols.model.exog.shape[1]
    rank = int(np.linalg.matrix_rank(ols.model.exog))
    if rank < k:
        notes.append(
            f"design matrix has rank {rank} < {k} terms: some effects are aliased and their "
            "estimates are not separately identifiable"
        )
    df_resid = float(len(data) - rank)
    out["df_resid"] = df_resid
    terms = [t for t in ols.params.index if t != "Intercept"]
    if df_resid > 0:
        with _quiet():
            ci = ols.conf_int(alpha=1 - confidence)
        se, pv = ols.bse, ols.pvalues
    else:
        ci = pd.DataFrame(NAN, index=ols.params.index, columns=[0, 1])
        se = pv = pd.Series(NAN, index=ols.params.index)
        notes.append(
            "saturated model (df_resid = 0, e.g. one seed of a 16-run design): effects without "
            "standard errors, intervals or p-values"
        )
    effects = pd.DataFrame(
        {
            "term": [readable(t) for t in terms],
            "kind": ["interaction" if ":" in t else "main" for t in terms],
            "effect": [2 * float(ols.params[t]) for t in terms],
            "se": [2 * float(se[t]) for t in terms],
            "ci_low": [2 * float(ci.loc[t, 0]) for t in terms],
            "ci_high": [2 * float(ci.loc[t, 1]) for t in terms],
            "p": [float(pv[t]) for t in terms],
        }
    )
    effects["p_holm"] = NAN
    for _, idx in effects.groupby("kind").groups.items():
        effects.loc[idx, "p_holm"] = holm(effects.loc[idx, "p"].to_numpy(dtype=float))
    out["effects"] = effects
    # All-high minus all-low corner: the contrast 2 x (sum of the main coefficients).
    contrast = np.array([2.0 if t in names else 0.0 for t in ols.params.index])
    gap = float(contrast @ ols.params.to_numpy())
    out["predicted_gap"] = dict(effect=gap, **_nans("ci_low ci_high p"))
    if df_resid > 0:
        with _quiet():
            tt = ols.t_test(contrast.reshape(1, -1))
            low, high = np.asarray(tt.conf_int(alpha=1 - confidence)).ravel()
        out["predicted_gap"].update(ci_low=float(low), ci_high=float(high), p=float(tt.pvalue))
    if df_resid <= 0:
        notes.append("Type II ANOVA needs df_resid > 0: skipped")
    else:
        try:
            with _quiet():
                table = anova_lm(ols, typ=2)
            out["anova"] = table.rename(index=lambda t: t if t == "Residual" else readable(t))
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError) as e:
            notes.append(f"ANOVA not computable: {type(e).__name__}: {e}")

    main = effects[effects["kind"] == "main"]
    ranking = main[["term", "effect", "p", "p_holm"]].rename(columns={"term": "factor"})
    ranking = ranking.sort_values("effect", ascending=False, kind="stable").reset_index(drop=True)
    # Share of the predicted all-high minus all-low difference (docstring); undefined at 0.
    zero_gap = abs(gap) <= _tol(ranking["effect"].to_numpy())
    ranking.insert(2, "share", NAN if zero_gap else ranking["effect"] / gap)
    if zero_gap:
        notes.append("the main effects sum to zero: shares of the gap not defined")
    ranking.insert(0, "rank", np.arange(1, len(ranking) + 1))
    out["ranking"] = ranking

    if n_seeds < 2:
        notes.append("one seed: mixed model with a random seed effect skipped")
    else:
        out["mixed"] = _mixed(formula, data, readable, confidence)
    out["note"] = _join(*notes)
    return out


def _mixed(
    formula: str, data: pd.DataFrame, readable: Callable[[str], str], confidence: float
) -> dict[str, Any]:
    """Mixed model, random intercept per seed; warnings and failures go into its note."""
    result: dict[str, Any] = dict(
        effects=pd.DataFrame(), seed_var=NAN, resid_var=NAN, converged=False, note=""
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = smf.mixedlm(formula, data, groups=data["seed"]).fit(reml=True)
        except (ValueError, np.linalg.LinAlgError) as e:
            result["note"] = f"mixed model failed: {type(e).__name__}: {e}"
            return result
        terms = [t for t in fit.fe_params.index if t != "Intercept"]
        ci = fit.conf_int(alpha=1 - confidence)
        result.update(
            effects=pd.DataFrame(
                {
                    "term": [readable(t) for t in terms],
                    "effect": [2 * float(fit.fe_params[t]) for t in terms],
                    "ci_low": [2 * float(ci.loc[t, 0]) for t in terms],
                    "ci_high": [2 * float(ci.loc[t, 1]) for t in terms],
                    "p": [float(fit.pvalues[t]) for t in terms],
                }
            ),
            seed_var=float(fit.cov_re.iloc[0, 0]),
            resid_var=float(fit.scale),
            converged=bool(fit.converged),
        )
    messages = sorted({f"{w.category.__name__}: {str(w.message).strip()}" for w in caught})
    result["note"] = "; ".join(messages)
    return result


# ------------------------------------------------------------------------------ calibration


def aa_false_positive_rate(
    n_studies: int = 1000,
    n_seeds: int = 5,
    *,
    seed: int = 0,
    paired: bool = True,
    alpha: float = 0.05,
    which: str = "p",
    mean: float = 7.0,
    sd_seed: float = 0.15,
    sd_noise: float = 0.15,
) -> float:
    """Rate of p < alpha over simulated A/A studies (two arms with the same distribution).

    paired=True: each study draws a per-seed effect (sd_seed, shared by both arms, as a
    training seed shares initialisation and data order) plus independent noise (sd_noise) per
    arm, and compares the arms with compare_to_baseline on matching seeds (paired t-test).
    paired=False: the arms are independent draws with sd sqrt(sd_seed^2 + sd_noise^2) (Welch).
    which: "p" (the t-test) or "rank_p" (Wilcoxon / Mann-Whitney). Studies whose p is NaN are
    left out of the rate. A calibrated test gives about alpha. With 5 seeds the two-sided
    Wilcoxon test cannot go below p = 2 / 2^5 = 0.0625, so its rate is 0 there.
    """
    if which not in ("p", "rank_p"):
        raise ValueError(f"which must be 'p' or 'rank_p', got {which!r}")
    rng = np.random.default_rng(seed)
    seeds = np.arange(n_seeds)
    if paired:
        shared = rng.normal(0.0, sd_seed, size=(n_studies, 1, n_seeds))
        arms = mean + shared + rng.normal(0.0, sd_noise, size=(n_studies, 2, n_seeds))
    else:
        arms = rng.normal(mean, math.hypot(sd_seed, sd_noise), size=(n_studies, 2, n_seeds))
    ps = np.array(
        [
            compare_to_baseline(
                v,
                b,
                paired=paired,
                seeds_v=seeds if paired else None,
                seeds_b=seeds if paired else None,
                n_boot=0,
            )[which]
            for v, b in arms
        ]
    )
    ps = ps[~np.isnan(ps)]
    return float(np.mean(ps < alpha)) if ps.size else NAN


def aa_false_positive_rates(
    n_studies: int = 1000, n_seeds: int = 5, *, seed: int = 0, alpha: float = 0.05
) -> dict[str, float]:
    """Both A/A rates: {"paired_t": ..., "welch_t": ...} (see aa_false_positive_rate)."""
    return {
        "paired_t": aa_false_positive_rate(n_studies, n_seeds, seed=seed, alpha=alpha),
        "welch_t": aa_false_positive_rate(n_studies, n_seeds, seed=seed, alpha=alpha, paired=False),
    }
