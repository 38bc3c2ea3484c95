"""Tests for studies.analyze: known answers for every statistic it writes, computed here through
scipy/statsmodels on fixed data stored in a hand-made Optuna store (no training), the
degenerate cases (n = 1, zero variance, no baseline, failed/diverged runs, empty or unknown
studies), a 16-run half-fraction factorial through the full path, and one real tiny study
trained with studies.run and analysed end to end."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from optuna.trial import TrialState
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.meta_analysis import effectsize_smd
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import ttost_ind

import ablations
from resnet_repro.config import field_names
from studies import analyze as A

# Typed-in test errors (percent) of five seeds: paper_baseline's ResNets near Table 6, plain
# nets worse; plain-110 far worse, as in Figure 6.
SEEDS = [0, 1, 2, 3, 4]
DATA = {
    ("resnet", 20): [8.81, 8.62, 8.95, 8.70, 8.88],
    ("plain", 20): [9.40, 9.02, 9.51, 9.18, 9.33],
    ("resnet", 110): [6.70, 6.52, 6.91, 6.64, 6.80],
    ("plain", 110): [12.0, 11.5, 12.8, 11.9, 12.3],
}
# best = final - this (per seed): what reporting the best evaluation buys.
BIAS = [0.10, 0.25, 0.00, 0.31, 0.12]


def _paper_110_runs() -> np.ndarray:
    """Five values with exactly Table 6's ResNet-110 mean 6.61 and sample sd 0.16."""
    z = np.arange(5) - 2.0
    return 6.61 + 0.16 * z / z.std(ddof=1)


# --------------------------------------------------------------------------- fake store


def _result(final: float, best: float, status: str = "finished") -> dict[str, Any]:
    its = [50, 100, 150]
    test = [final + 3.0, best, final]
    return {
        "status": status,
        "curves": {
            "iteration": its,
            "lr": [0.1, 0.01, 0.001],
            "train_error": [final + 5.0, final - 1.0, final - 2.0],
            "train_loss": [2.0, 1.0, 0.5],
            "test_error": test,
            "test_loss": [2.1, 1.1, 0.6],
        },
        "final_test_error": final if status == "finished" else math.nan,
        "best_test_error": best if status == "finished" else math.nan,
        "best_iteration": 100,
        "final_train_error": final - 2.0,
        "wall_seconds": 1.5,
        "iterations_done": 150,
        "device": "cpu",
        "device_name": "cpu",
        "torch_version": "2.x",
        "cuda_version": "",
        "git_sha": "abc123",
        "git_dirty": False,
        "deterministic": True,
        "error": "non-finite training loss by iteration 7" if status == "diverged" else None,
    }


_TEMPLATE: list[Path] = []  # an empty store with Optuna's schema, made once per session


def _empty_db(path: Path) -> None:
    # Creating the schema takes ~1.5 s (alembic); a copy of an empty store takes none.
    if not _TEMPLATE:
        template = Path(tempfile.mkdtemp()) / "empty.db"
        optuna.storages.RDBStorage(f"sqlite:///{template}").engine.dispose()
        _TEMPLATE.append(template)
    shutil.copy(_TEMPLATE[0], path)


def make_store(out: Path, study_name: str, cells: list[dict[str, Any]]) -> None:
    """Write an Optuna SQLite store as studies.run would leave it.

    cells: dicts with variant, depth, seed and either final (and optionally best, status) for a
    COMPLETE trial, or state=TrialState.FAIL / WAITING for a crashed or queued cell.
    """
    study = ablations.get(study_name)
    path = out / study_name / "study.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    _empty_db(path)
    st = optuna.create_study(
        study_name=study_name, storage=f"sqlite:///{path}", direction="minimize"
    )
    for c in cells:
        cfg = study.config(c["variant"], c["depth"], budget="smoke", dataset="synthetic")
        key = f"{c['variant']}|{c['depth']}|{c['seed']}"
        attrs = dict(
            cell=key,
            variant=c["variant"],
            depth=c["depth"],
            seed=c["seed"],
            budget="smoke",
            run_id=cfg.run_id(c["seed"]),
            train_id=cfg.train_id(c["seed"]),
            config=json.dumps(cfg.to_dict(), sort_keys=True),
        )
        state = c.get("state", TrialState.COMPLETE)
        if state == TrialState.WAITING:
            st.enqueue_trial({"cell": key}, user_attrs=attrs)
            continue
        value = None
        if state == TrialState.COMPLETE:
            status = c.get("status", "finished")
            final = c["final"]
            res = _result(final, c.get("best", final), status)
            attrs["result"] = json.dumps(res)
            value = math.inf if status == "diverged" else final
        else:
            attrs["error"] = "RuntimeError: worker crashed"
        st.add_trial(optuna.trial.create_trial(state=state, value=value, user_attrs=attrs))


def _cells(data: dict[tuple[str, int], list[float]], seeds=SEEDS, bias=BIAS) -> list[dict]:
    return [
        dict(variant=v, depth=d, seed=s, final=x, best=round(x - b, 6))
        for (v, d), xs in data.items()
        for s, x, b in zip(seeds, xs, bias)
    ]


@pytest.fixture(scope="module")
def baseline_analysis(tmp_path_factory) -> A.Analysis:
    out = tmp_path_factory.mktemp("paper_baseline")
    make_store(out, "paper_baseline", _cells(DATA))
    return A.analyze("paper_baseline", out, figures=False, n_boot=200)


def _seeds(es: float, paired: bool = True) -> int:
    """Smallest n >= 2 whose two-sided t-test reaches power 0.8 at alpha 0.05: the search
    also covers effects so large that statsmodels' root finder fails."""
    analysis, key = (TTestPower(), "nobs") if paired else (TTestIndPower(), "nobs1")
    n = 2
    # statsmodels' noncentral t gives NaN power for huge effects at n = 2 (d_z ~ 6.4, where
    # the power is about one half): NaN does not reach the target.
    while not analysis.power(effect_size=es, alpha=0.05, **{key: n}) >= 0.8:
        n += 1
    return n


def _row(summary: pd.DataFrame, variant: str, depth: int) -> pd.Series:
    rows = summary[(summary["variant"] == variant) & (summary["depth"] == depth)]
    assert len(rows) == 1
    return rows.iloc[0]


def _test(tests: pd.DataFrame, variant: str, depth: int, test: str) -> pd.Series:
    rows = tests[(tests["variant"] == variant) & (tests["depth"] == depth)]
    rows = rows[rows["test"] == test]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# ----------------------------------------------------------------------------- contract


def test_runs_csv_contract(baseline_analysis):
    runs = pd.read_csv(baseline_analysis.directory / "runs.csv")
    first = ["study", "variant", "depth", "seed", "run_id", "status"]
    assert list(runs.columns[:6]) == first
    for col in [*field_names(), *A.RESULT_COLUMNS]:
        assert col in runs.columns, col
    assert len(runs) == 20 and (runs["status"] == "finished").all()
    r = runs[(runs["variant"] == "plain") & (runs["depth"] == 20) & (runs["seed"] == 2)].iloc[0]
    assert r["final_test_error"] == 9.51 and r["best_test_error"] == pytest.approx(9.51)
    assert r["arch"] == "plain" and r["milestones"] == "75,112"
    assert (runs["metric"] == "final").all()


def test_summary_csv_contract(baseline_analysis):
    summary = pd.read_csv(baseline_analysis.directory / "summary.csv")
    assert list(summary.columns[:13]) == ["variant", "depth", *A.SUMMARY_COLUMNS]
    assert len(summary) == 4  # one row per (variant, depth)
    for extra in ("boot_low", "boot_high", "tost_p", "equivalent", "n_excluded", "metric"):
        assert extra in summary.columns
    assert "seeds_needed_0.3" in summary.columns and "d" in summary.columns
    # Plain nets have no Table 6 number: blank in the file.
    assert summary.loc[summary["variant"] == "plain", "paper_error"].isna().all()


def test_summary_known_answers(baseline_analysis):
    summary = pd.read_csv(baseline_analysis.directory / "summary.csv")
    x = np.array(DATA[("resnet", 20)])
    r = _row(summary, "resnet", 20)
    assert r["n"] == 5
    assert r["mean"] == pytest.approx(x.mean())
    assert r["std"] == pytest.approx(x.std(ddof=1))
    low, high = stats.t.interval(0.95, 4, loc=x.mean(), scale=stats.sem(x))
    assert (r["ci95_low"], r["ci95_high"]) == pytest.approx((low, high))
    # BCa bootstrap of the mean, seeded by analyze's seed (0) with its n_boot (200).
    boot = stats.bootstrap(
        (x,), np.mean, method="BCa", n_resamples=200, rng=np.random.default_rng(0)
    ).confidence_interval
    assert (r["boot_low"], r["boot_high"]) == pytest.approx((boot.low, boot.high))
    assert r["paper_error"] == 8.75
    assert r["p_vs_paper"] == pytest.approx(stats.ttest_1samp(x, 8.75).pvalue)
    # TOST within +-0.3: two one-sided one-sample t-tests, p = the larger.
    p_low = stats.ttest_1samp(x, 8.45, alternative="greater").pvalue
    p_upp = stats.ttest_1samp(x, 9.05, alternative="less").pvalue
    assert r["tost_p"] == pytest.approx(max(p_low, p_upp))
    assert r["equivalent"] == (max(p_low, p_upp) < 0.05)
    # Power to tell the paper from the runs: one-sample t, d = diff / sd.
    es = abs(x.mean() - 8.75) / x.std(ddof=1)
    want = max(2, math.ceil(TTestPower().solve_power(effect_size=es, alpha=0.05, power=0.8)))
    assert r["seeds_needed_vs_paper"] == want == _seeds(es)
    # The baseline's row: seeds per arm to detect 0.3 points, independent arms.
    es = 0.3 / x.std(ddof=1)
    n = TTestIndPower().solve_power(effect_size=es, alpha=0.05, power=0.8)
    assert r["seeds_needed_0.3"] == max(2, math.ceil(n))
    assert np.isnan(r["diff_vs_baseline"]) and np.isnan(r["p_vs_baseline"])


def test_resnet110_uses_welch_against_paper_mean_and_std(baseline_analysis):
    x = np.array(DATA[("resnet", 110)])
    r = _row(baseline_analysis.summary, "resnet", 110)
    ref = stats.ttest_ind_from_stats(x.mean(), x.std(ddof=1), 5, 6.61, 0.16, 5, equal_var=False)
    assert r["paper_error"] == 6.61
    assert r["p_vs_paper"] == pytest.approx(ref.pvalue)
    assert r["test_vs_paper"] == "welch_t_summary"
    w = _test(baseline_analysis.tests, "resnet", 110, "welch_t_summary")
    assert w["statistic"] == pytest.approx(ref.statistic)
    # df and interval from scipy: its raw Welch test on a paper arm with the same mean, sd, n,
    # and the t quantile at that df times the standard error diff / t of the summary test.
    raw = stats.ttest_ind(x, _paper_110_runs(), equal_var=False)
    ci = raw.confidence_interval(0.95)
    assert w["df"] == pytest.approx(raw.df)
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((ci.low, ci.high))
    half = stats.t.ppf(0.975, raw.df) * (x.mean() - 6.61) / ref.statistic
    assert w["ci_high"] - w["ci_low"] == pytest.approx(2 * half)
    g, _ = effectsize_smd(x.mean(), x.std(ddof=1), 5, 6.61, 0.16, 5)
    assert w["effect"] == pytest.approx(g) and w["effect_name"] == "hedges_g"
    # The one-sample test is reported too.
    one = _test(baseline_analysis.tests, "resnet", 110, "one_sample_t")
    assert one["p"] == pytest.approx(stats.ttest_1samp(x, 6.61).pvalue)


def test_resnet110_tost_is_welch_against_paper_mean_and_std(baseline_analysis):
    x = np.array(DATA[("resnet", 110)])
    want, (_, p1, df1), (_, p2, _) = ttost_ind(x, _paper_110_runs(), -0.3, 0.3, usevar="unequal")
    r = _row(baseline_analysis.summary, "resnet", 110)
    assert r["tost_test"] == "tost_welch_summary"
    assert r["tost_p"] == pytest.approx(want)
    assert r["equivalent"] == (want < 0.05)
    t = _test(baseline_analysis.tests, "resnet", 110, "tost_welch_summary")
    assert t["p"] == pytest.approx(want) and t["df"] == pytest.approx(df1)
    assert t["comparison"] == "equivalence_paper" and "Welch" in t["note"]
    ci = stats.ttest_ind(x, _paper_110_runs(), equal_var=False).confidence_interval(0.90)
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert t["ci_level"] == pytest.approx(0.90) and t["effect_name"] == "hedges_g"
    # Depths whose paper number is a single run keep the one-sample form.
    assert _row(baseline_analysis.summary, "resnet", 20)["tost_test"] == "tost_one_sample"
    one = _test(baseline_analysis.tests, "resnet", 20, "tost_one_sample")
    assert "treated as exact" in one["note"]


def test_vs_baseline_known_answers_and_holm(baseline_analysis):
    summary = pd.read_csv(baseline_analysis.directory / "summary.csv")
    tests = pd.read_csv(baseline_analysis.directory / "tests.csv")
    ps = {}
    for depth in (20, 110):
        v, b = np.array(DATA[("plain", depth)]), np.array(DATA[("resnet", depth)])
        d = v - b
        r = _row(summary, "plain", depth)
        ref = stats.ttest_rel(v, b)
        ps[depth] = ref.pvalue
        assert r["diff_vs_baseline"] == pytest.approx(d.mean())
        assert r["p_vs_baseline"] == pytest.approx(ref.pvalue)
        assert r["d"] == pytest.approx(d.mean() / d.std(ddof=1)) and r["effect_name"] == "d_z"
        assert r["seeds_needed"] == _seeds(abs(d.mean()) / d.std(ddof=1))
        assert r["seeds_needed_0.3"] == _seeds(0.3 / d.std(ddof=1))
        t = _test(tests, "plain", depth, "paired_t")
        ci = ref.confidence_interval()
        assert (t["ci_low"], t["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert t["statistic"] == pytest.approx(ref.statistic) and t["df"] == 4
        w = _test(tests, "plain", depth, "wilcoxon")
        assert w["p"] == pytest.approx(stats.wilcoxon(d).pvalue)
    holm = multipletests([ps[20], ps[110]], method="holm")[1]
    for depth, want in zip((20, 110), holm):
        assert _row(summary, "plain", depth)["p_vs_baseline_holm"] == pytest.approx(want)
        assert _test(tests, "plain", depth, "paired_t")["p_holm"] == pytest.approx(want)


def test_tests_csv_has_every_comparison(baseline_analysis):
    tests = baseline_analysis.tests
    assert list(tests.columns) == A.TEST_COLUMNS
    # ResNets: one-sample t + TOST (+ Welch and the Welch TOST at 110); plain: paired t +
    # Wilcoxon.
    assert set(tests[tests["variant"] == "resnet"]["test"]) == {
        "one_sample_t",
        "welch_t_summary",
        "tost_one_sample",
        "tost_welch_summary",
    }
    # Both TOST forms are one Holm family.
    tost_rows = tests[tests["comparison"] == "equivalence_paper"]
    assert set(tost_rows["family"]) == {"equivalence_paper:tost"}
    want = multipletests(tost_rows["p"], method="holm")[1]
    assert tost_rows["p_holm"].to_numpy() == pytest.approx(want)
    assert set(tests[tests["variant"] == "plain"]["test"]) == {"paired_t", "wilcoxon"}
    assert tests["computable"].all() and (tests["metric"] == "final").all()
    tost = _test(tests, "resnet", 20, "tost_one_sample")
    x = np.array(DATA[("resnet", 20)])
    low, high = stats.t.interval(0.90, 4, loc=x.mean(), scale=stats.sem(x))
    assert (tost["ci_low"], tost["ci_high"]) == pytest.approx((low - 8.75, high - 8.75))


def test_selection_bias(baseline_analysis):
    bias = pd.read_csv(baseline_analysis.directory / "selection_bias.csv")
    overall = bias[bias["scope"] == "all"].iloc[0]
    # Every cell has the same bias per seed, so the per-seed means are BIAS: n = 5 seeds.
    d = np.array(BIAS)
    assert overall["n"] == 5 and overall["n_runs"] == 20 and overall["unit"] == "seed"
    assert overall["mean"] == pytest.approx(d.mean())
    low, high = stats.t.interval(0.95, 4, loc=d.mean(), scale=stats.sem(d))
    assert (overall["ci95_low"], overall["ci95_high"]) == pytest.approx((low, high))
    assert len(bias) == 1 + 4
    assert "selection bias" in baseline_analysis.verdict
    assert "n = 5 seeds (20 runs averaged per seed)" in baseline_analysis.verdict


def test_selection_bias_pools_per_seed():
    # A constructed runs table: two variants x two depths share seeds 0-2 (so their runs are
    # not independent), seed 3 appears once, a diverged run is left out.
    rows = []
    bias = {
        ("a", 20): [0.10, 0.30, 0.00],
        ("b", 20): [0.20, 0.10, 0.05],
        ("a", 56): [0.40, 0.20, 0.30],
        ("b", 56): [0.00, 0.25, 0.15, 0.50],
    }
    for (variant, depth), bs in bias.items():
        for seed, b in enumerate(bs):
            final = 7.0 + 0.1 * seed
            rows.append(
                dict(
                    variant=variant,
                    depth=depth,
                    seed=seed,
                    status="finished",
                    final_test_error=final,
                    best_test_error=final - b,
                )
            )
    rows.append(
        dict(
            variant="a",
            depth=20,
            seed=3,
            status="diverged",
            final_test_error=math.nan,
            best_test_error=math.nan,
        )
    )
    runs = pd.DataFrame(rows)
    table = A.selection_bias_table(runs, seed=0, n_boot=300)
    overall = table[table["scope"] == "all"].iloc[0]
    per_seed = {s: [] for s in range(4)}
    for bs in bias.values():
        for s, b in enumerate(bs):
            per_seed[s].append(b)
    means = np.array([np.mean(per_seed[s]) for s in range(4)])
    assert overall["n"] == 4 and overall["n_runs"] == 13 and overall["unit"] == "seed"
    assert overall["mean"] == pytest.approx(means.mean())
    low, high = stats.t.interval(0.95, 3, loc=means.mean(), scale=stats.sem(means))
    assert (overall["ci95_low"], overall["ci95_high"]) == pytest.approx((low, high))
    boot = stats.bootstrap(
        (means,), np.mean, method="BCa", n_resamples=300, rng=np.random.default_rng(0)
    ).confidence_interval
    assert (overall["boot_low"], overall["boot_high"]) == pytest.approx((boot.low, boot.high))
    assert "n = 4 seeds" in overall["note"]
    # A cell: one run per seed, so its n is its runs.
    cell = table[(table["variant"] == "b") & (table["depth"] == 56)].iloc[0]
    b = np.array(bias[("b", 56)])
    assert cell["n"] == 4 and cell["mean"] == pytest.approx(b.mean())
    assert cell["ci95_low"] == pytest.approx(
        stats.t.interval(0.95, 3, loc=b.mean(), scale=stats.sem(b))[0]
    )


def test_tables_and_verdict(baseline_analysis):
    d = baseline_analysis.directory
    for name in ("summary", "tests"):
        tex = (d / f"{name}.tex").read_text()
        for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
            assert tex.count(rule) == 1
        assert "metric: final test error" in tex
        md = (d / f"{name}.md").read_text()
        assert "metric: final test error" in md and "|---|" in md
    tex = (d / "summary.tex").read_text()
    assert r"plain & 20 & 5 &" in tex and "$\\pm$" in tex
    v = baseline_analysis.verdict
    assert "metric: final test error" in v
    assert "plain" in v and "significant" in v and "baseline" in v
    meta = json.loads((d / "meta.json").read_text())
    assert meta["metric"] == "final" and meta["counts"]["included"] == 20


# --------------------------------------------------------------------------- other arms


def test_identical_arms_give_p1_and_zero_effect(tmp_path):
    same = [7.1, 7.3, 7.0, 7.2]
    make_store(
        tmp_path,
        "crop_ablation",
        _cells({("pad_zero", 20): same, ("pad_black", 20): same}, seeds=[0, 1, 2, 3]),
    )
    a = A.analyze("crop_ablation", tmp_path, figures=False, n_boot=100)
    r = _row(a.summary, "pad_black", 20)
    assert r["diff_vs_baseline"] == 0.0 and r["p_vs_baseline"] == 1.0 and r["d"] == 0.0
    assert r["p_vs_baseline_holm"] == 1.0 and r["seeds_needed"] == math.inf
    w = _test(a.tests, "pad_black", 20, "wilcoxon")
    assert w["p"] == 1.0


def test_unmatched_seeds_compare_unpaired(tmp_path):
    v, b = [7.6, 7.9, 7.7], [7.1, 7.3, 7.0]
    cells = _cells({("pool", 20): v}, seeds=[0, 1, 2]) + _cells(
        {("no_pool", 20): b}, seeds=[3, 4, 5]
    )
    # A store named by URL (as for PostgreSQL) need not live under the output directory.
    make_store(tmp_path / "db", "stem_pool_ablation", cells)
    url = f"sqlite:///{tmp_path / 'db' / 'stem_pool_ablation' / 'study.db'}"
    a = A.analyze("stem_pool_ablation", tmp_path / "res", storage=url, figures=False, n_boot=100)
    assert a.directory == tmp_path / "res" / "stem_pool_ablation" / "analysis"
    r = _row(a.summary, "pool", 20)
    va, ba = np.array(v), np.array(b)
    ref = stats.ttest_ind(va, ba, equal_var=False)
    assert r["test_vs_baseline"] == "welch_t" and not r["paired"]
    assert r["p_vs_baseline"] == pytest.approx(ref.pvalue)
    # Hedges' g: statsmodels' bias-corrected standardised mean difference.
    g, _ = effectsize_smd(va.mean(), va.std(ddof=1), 3, ba.mean(), ba.std(ddof=1), 3)
    assert r["d"] == pytest.approx(g) and r["effect_name"] == "hedges_g"
    pooled = math.sqrt((va.var(ddof=1) + ba.var(ddof=1)) / 2)
    es = abs(va.mean() - ba.mean()) / pooled
    n = TTestIndPower().solve_power(effect_size=es, alpha=0.05, power=0.8)
    assert r["seeds_needed"] == max(2, math.ceil(n))
    mw = _test(a.tests, "pool", 20, "mann_whitney")
    assert mw["p"] == pytest.approx(stats.mannwhitneyu(va, ba).pvalue)


# ----------------------------------------------------------------------- degenerate input


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_n1_reports_tests_not_computable(tmp_path):
    make_store(
        tmp_path,
        "paper_baseline",
        _cells({("resnet", 20): [8.8], ("plain", 20): [9.4]}, seeds=[0], bias=[0.1]),
    )
    a = A.analyze("paper_baseline", tmp_path, figures=False, n_boot=100)
    r = _row(a.summary, "resnet", 20)
    assert r["n"] == 1 and r["mean"] == 8.8
    assert all(np.isnan(r[c]) for c in ("std", "ci95_low", "ci95_high", "p_vs_paper"))
    assert "n = 1" in r["note"]
    p = _row(a.summary, "plain", 20)
    assert p["diff_vs_baseline"] == pytest.approx(0.6)
    assert np.isnan(p["p_vs_baseline"]) and np.isnan(p["p_vs_baseline_holm"])
    assert len(a.tests) == 4 and not a.tests["computable"].any()
    assert a.tests["note"].str.contains("not computable").all()
    assert "not computable" in a.verdict


def test_zero_variance(tmp_path):
    make_store(
        tmp_path,
        "paper_baseline",
        _cells({("resnet", 20): [8.75] * 3, ("plain", 20): [9.25] * 3}, seeds=[0, 1, 2]),
    )
    a = A.analyze("paper_baseline", tmp_path, figures=False, n_boot=100)
    r = _row(a.summary, "resnet", 20)
    assert r["std"] == 0.0 and r["ci95_low"] == r["ci95_high"] == 8.75
    assert r["p_vs_paper"] == 1.0
    p = _row(a.summary, "plain", 20)
    assert p["diff_vs_baseline"] == pytest.approx(0.5) and p["p_vs_baseline"] == 0.0
    assert "zero variance" in p["note"]
    assert p["seeds_needed"] == 2


def test_missing_baseline(tmp_path):
    make_store(tmp_path, "stem_pool_ablation", _cells({("pool", 20): [7.6, 7.9, 7.7]}))
    a = A.analyze("stem_pool_ablation", tmp_path, figures=False, n_boot=100)
    assert list(a.summary["variant"]) == ["pool"]
    r = a.summary.iloc[0]
    assert np.isnan(r["diff_vs_baseline"]) and np.isnan(r["p_vs_baseline"])
    assert "baseline 'no_pool' has no finished runs" in r["note"]
    assert not _test(a.tests, "pool", 20, "welch_t")["computable"]


def test_failed_diverged_and_pending_are_excluded_and_counted(tmp_path):
    cells = _cells({("no_pool", 20): [7.1, 7.3, 7.0], ("pool", 20): [7.6, 7.9, 7.7]})
    cells += [
        dict(variant="pool", depth=20, seed=3, final=math.nan, status="diverged"),
        dict(variant="pool", depth=20, seed=4, state=TrialState.FAIL),
        dict(variant="no_pool", depth=20, seed=3, final=7.2),
        dict(variant="no_pool", depth=20, seed=4, state=TrialState.WAITING),
    ]
    make_store(tmp_path, "stem_pool_ablation", cells)
    a = A.analyze("stem_pool_ablation", tmp_path, figures=True, n_boot=100)
    assert set(a.curves["status"]) == {"finished", "diverged"}  # failed runs have none
    runs = pd.read_csv(a.directory / "runs.csv")
    assert len(runs) == 9  # the waiting cell is not a run yet
    status = runs.set_index(["variant", "seed"])["status"]
    assert status[("pool", 3)] == "diverged" and status[("pool", 4)] == "failed"
    assert "crashed" in runs.set_index(["variant", "seed"]).loc[("pool", 4), "error_message"]
    r = _row(a.summary, "pool", 20)
    assert r["n"] == 3 and r["n_excluded"] == 2
    assert r["n_failed"] == 1 and r["n_diverged"] == 1
    assert r["mean"] == pytest.approx(np.mean([7.6, 7.9, 7.7]))
    # Pairs on seeds 0-2 only: seed 3 of the baseline has no partner.
    assert r["n_pairs"] == 3
    assert a.counts == dict(runs=9, finished=7, diverged=1, failed=1, pending=1, included=7)
    assert "2 excluded (1 failed, 1 diverged)" in a.verdict and "1 cells still pending" in a.verdict


def test_empty_and_unknown_studies(tmp_path, capsys):
    with pytest.raises(A.EmptyStudyError, match="python -m studies.run"):
        A.analyze("crop_ablation", tmp_path)
    assert not (tmp_path / "crop_ablation" / "study.db").exists()  # nothing created
    assert A.main(["crop_ablation", "--out", str(tmp_path)]) == 1
    assert "no store" in capsys.readouterr().err
    # A store whose only cell is still queued.
    make_store(
        tmp_path,
        "crop_ablation",
        [dict(variant="pad_zero", depth=20, seed=0, state=TrialState.WAITING)],
    )
    with pytest.raises(A.EmptyStudyError, match="1 cells pending"):
        A.analyze("crop_ablation", tmp_path)
    assert A.main(["crop_ablaton", "--out", str(tmp_path)]) == 2
    assert "did you mean crop_ablation" in capsys.readouterr().err
    with pytest.raises(KeyError):
        A.analyze("no_such_study", tmp_path)
    with pytest.raises(ValueError, match="metric"):
        A.analyze("crop_ablation", tmp_path, metric="median")


def test_metric_best(tmp_path):
    make_store(tmp_path, "paper_baseline", _cells({k: DATA[k] for k in list(DATA)[:2]}))
    a = A.analyze("paper_baseline", tmp_path, metric="best", figures=False, n_boot=100)
    assert a.directory == tmp_path / "paper_baseline" / "analysis" / "best"
    best = np.array(DATA[("resnet", 20)]) - np.array(BIAS)
    r = _row(a.summary, "resnet", 20)
    assert r["mean"] == pytest.approx(best.mean()) and r["metric"] == "best"
    assert r["p_vs_paper"] == pytest.approx(stats.ttest_1samp(best, 8.75).pvalue)
    runs = pd.read_csv(a.directory / "runs.csv")
    assert (runs["metric"] == "best").all()
    assert np.allclose(runs["analysed_error"], runs["best_test_error"])
    assert "metric: best test error" in (a.directory / "summary.tex").read_text()
    assert "metric: best test error" in a.verdict


def test_margin_keeps_the_fixed_0_3_power_column(tmp_path):
    make_store(tmp_path, "paper_baseline", _cells({k: DATA[k] for k in list(DATA)[:2]}))
    a = A.analyze("paper_baseline", tmp_path, margin=0.5, figures=False, n_boot=100)
    summary = pd.read_csv(a.directory / "summary.csv")
    assert {"seeds_needed", "seeds_needed_0.3", "seeds_needed_0.5"} <= set(summary.columns)
    x = np.array(DATA[("resnet", 20)])
    base = _row(summary, "resnet", 20)
    # The baseline: seeds per arm for 0.3 points whatever the margin (independent arms).
    n03 = TTestIndPower().solve_power(effect_size=0.3 / x.std(ddof=1), alpha=0.05, power=0.8)
    n05 = TTestIndPower().solve_power(effect_size=0.5 / x.std(ddof=1), alpha=0.05, power=0.8)
    assert base["seeds_needed_0.3"] == max(2, math.ceil(n03))
    assert base["seeds_needed_0.5"] == max(2, math.ceil(n05))
    d = np.array(DATA[("plain", 20)]) - x
    plain = _row(summary, "plain", 20)
    assert plain["seeds_needed_0.3"] == _seeds(0.3 / d.std(ddof=1))
    assert plain["seeds_needed_0.5"] == _seeds(0.5 / d.std(ddof=1))
    assert plain["seeds_needed"] == _seeds(abs(d.mean()) / d.std(ddof=1))
    # The margin is the TOST's: +-0.5 around Table 6's 8.75.
    p_low = stats.ttest_1samp(x, 8.25, alternative="greater").pvalue
    p_upp = stats.ttest_1samp(x, 9.25, alternative="less").pvalue
    assert base["tost_p"] == pytest.approx(max(p_low, p_upp))
    assert "seeds for 0.3" in (a.directory / "summary.md").read_text()
    # With the default margin the two power targets are one column.
    assert A.power_columns(0.3) == ["seeds_needed_0.3"]
    assert A.power_columns(0.5) == ["seeds_needed_0.3", "seeds_needed_0.5"]


# ------------------------------------------------------------------------------ factorial

EFFECTS = {"crop": 1.0, "bn_eval": 0.6, "shortcut": 0.0, "stem_pool": 0.3, "normalize": -0.2}
INTERACTION = ("crop", "bn_eval", 0.4)  # the change in crop's effect when bn_eval moves
SEED_SHIFT = {0: 0.05, 1: -0.05, 2: 0.11}


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")
def test_factorial_half_fraction_through_analyze(tmp_path):
    from ablations.gap_factorial import VARIANTS

    study = ablations.get("gap_factorial")
    cells = []
    for name, overrides in VARIANTS.items():
        coded = {f: (1.0 if overrides[f] == study.factors[f][1] else -1.0) for f in EFFECTS}
        y = 8.0 + sum(EFFECTS[f] / 2 * coded[f] for f in EFFECTS)
        y += INTERACTION[2] / 2 * coded[INTERACTION[0]] * coded[INTERACTION[1]]
        for seed, shift in SEED_SHIFT.items():
            cells.append(dict(variant=name, depth=20, seed=seed, final=y + shift))
    assert len(VARIANTS) == 16
    make_store(tmp_path, "gap_factorial", cells)
    a = A.analyze("gap_factorial", tmp_path, figures=False, n_boot=50)
    d = a.directory
    for name in ("factorial_effects", "anova", "factorial_mixed", "factorial_ranking"):
        assert (d / f"{name}.csv").stat().st_size > 0
    for name in ("factorial_effects", "factorial_ranking"):
        assert r"\toprule" in (d / f"{name}.tex").read_text()
        assert (d / f"{name}.md").exists()
    eff = pd.read_csv(d / "factorial_effects.csv").set_index("term")
    assert len(eff) == 15  # 5 main effects + 10 two-way interactions
    # Seed shifts are orthogonal to every effect: the estimates are exact.
    for f, e in EFFECTS.items():
        assert eff.loc[f, "effect"] == pytest.approx(e, abs=1e-9)
    assert eff.loc["crop:bn_eval", "effect"] == pytest.approx(0.4, abs=1e-9)
    assert eff.loc["crop:shortcut", "effect"] == pytest.approx(0.0, abs=1e-9)
    # Intervals as an independent OLS on -1/+1 columns (effect = 2 x coefficient).
    runs = a.runs
    x = pd.DataFrame({"y": runs["analysed_error"]})
    for f in EFFECTS:
        x[f] = np.where(runs[f] == study.factors[f][1], 1.0, -1.0)
    formula = "y ~ (" + " + ".join(EFFECTS) + ")**2"
    fit = smf.ols(formula, data=x).fit()
    assert eff.loc["crop", "se"] == pytest.approx(2 * fit.bse["crop"])
    assert eff.loc["crop", "ci_low"] == pytest.approx(2 * fit.conf_int().loc["crop", 0])
    # Holm within the depth: over the 5 main effects, and over the 10 interactions.
    for kind in ("main", "interaction"):
        part = eff[eff["kind"] == kind]
        assert part["p_holm"].to_numpy() == pytest.approx(
            multipletests(part["p"], method="holm")[1]
        )
    ranking = pd.read_csv(d / "factorial_ranking.csv")
    assert list(ranking["factor"]) == ["crop", "bn_eval", "stem_pool", "shortcut", "normalize"]
    # Share of the predicted gap: the sum of the main effects, 1 + 0.6 + 0 + 0.3 - 0.2 = 1.7,
    # which is the model's all-reproduction minus all-paper prediction.
    corners = pd.DataFrame([dict.fromkeys(EFFECTS, 1.0), dict.fromkeys(EFFECTS, -1.0)])
    high, low = fit.predict(corners)
    assert high - low == pytest.approx(1.7)
    assert ranking["predicted_gap"].to_numpy() == pytest.approx([1.7] * 5)
    assert ranking["share"].to_numpy() == pytest.approx(
        [1.0 / 1.7, 0.6 / 1.7, 0.3 / 1.7, 0.0, -0.2 / 1.7], abs=1e-9
    )
    assert ranking["share"].iloc[-1] < 0 and "sum of the main effects" in ranking["note"].iloc[0]
    assert ranking["p_holm"].to_numpy() == pytest.approx(
        eff.loc[list(ranking["factor"]), "p_holm"].to_numpy()
    )
    assert ranking["paper_level"].iloc[0] == "pad_zero"
    assert "predicted gap" in (d / "factorial_ranking.md").read_text()
    # Type II ANOVA against statsmodels' own on the same data frame.
    anova = pd.read_csv(d / "anova.csv").set_index("term")
    want = anova_lm(fit, typ=2)
    assert sorted(anova.index) == sorted(want.index)
    for col in ("sum_sq", "df", "F"):
        assert anova[col].to_dict() == pytest.approx(want[col].to_dict(), nan_ok=True), col
    # The mixed model (random intercept per seed) against statsmodels' own on the same frame.
    x["seed"] = runs["seed"].to_numpy()
    mfit = smf.mixedlm(formula, x, groups=x["seed"]).fit(reml=True)
    mixed = pd.read_csv(d / "factorial_mixed.csv").set_index("term")
    for term in EFFECTS:
        assert mixed.loc[term, "effect"] == pytest.approx(2 * mfit.fe_params[term], abs=1e-9)
        assert mixed.loc[term, "ci_low"] == pytest.approx(2 * mfit.conf_int().loc[term, 0])
    assert mixed["seed_var"].iloc[0] == pytest.approx(float(mfit.cov_re.iloc[0, 0]))
    assert mixed["resid_var"].iloc[0] == pytest.approx(mfit.scale, abs=1e-12)
    assert mixed.loc["crop", "effect"] == pytest.approx(1.0, abs=1e-6)
    assert "causes by effect" in a.verdict and "crop +1.00" in a.verdict
    assert "predicted gap +1.70 points = sum of main effects" in a.verdict
    # Every variant is also compared with the paper's corner.
    assert len(a.summary) == 16 and a.summary["p_vs_baseline_holm"].notna().sum() == 15


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_end_to_end_tiny_real_study(tmp_path, capsys):
    from studies import run

    out = str(tmp_path)
    argv = ["stem_pool_ablation", "--seeds", "2", "--depths", "8", "--budget", "smoke"]
    argv += ["--dataset", "synthetic", "--out", out, "--wandb", "disabled", "--threads", "1"]
    argv += ["--set", "iterations=10", "--set", "milestones=5,8", "--set", "eval_every=5"]
    assert run.main(argv) == 0
    assert A.main(["stem_pool_ablation", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "metric: final test error" in printed and "selection bias" in printed
    d = tmp_path / "stem_pool_ablation" / "analysis"
    names = ["runs.csv", "summary.csv", "tests.csv", "selection_bias.csv", "curves.csv"]
    names += ["summary.tex", "summary.md", "tests.tex", "tests.md"]
    for name in names:
        assert (d / name).stat().st_size > 0, name
    for fig in ("fig6_curves", "edf", "forest"):
        assert (d / f"{fig}.pdf").read_bytes()[:4] == b"%PDF"
        assert (d / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = pd.read_csv(d / "summary.csv")
    assert sorted(zip(summary["variant"], summary["depth"])) == [("no_pool", 8), ("pool", 8)]
    assert (summary["n"] == 2).all()
    runs = pd.read_csv(d / "runs.csv")
    assert len(runs) == 4 and set(runs["seed"]) == {0, 1}
    assert runs["final_test_error"].between(0, 100).all()
    curves = pd.read_csv(d / "curves.csv")
    assert set(curves["iteration"]) == {5, 10}
