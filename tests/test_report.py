"""Tests for studies.report: the W&B report object built offline (panels, titles, grouping,
the run set's filter) and the self-contained report.html (base64 PNG figures, the summary
table, no external resources), from a hand-made analysis in the results contract's format."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.reports.v2.interface as wri
from wandb_workspaces import expr

import ablations
from studies import paper as P
from studies import report as R

STUDY = "crop_ablation"
VARIANTS = ["pad_zero", "pad_black"]
DEPTHS = [20, 56]
SEEDS = [0, 1, 2]


@pytest.fixture(autouse=True)
def no_wandb_api(monkeypatch):
    """Building a report must never reach W&B: fail loudly if it tries."""

    def refuse():
        raise AssertionError("the W&B API was called while building a report offline")

    monkeypatch.setattr(wri, "_get_api", refuse)


def fake_analysis(out: Path) -> Path:
    """runs.csv, curves.csv, summary.csv and a forest.png as studies.analyze writes them."""
    d = out / STUDY / "analysis"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    runs, curves = [], []
    for depth in DEPTHS:
        for i, v in enumerate(VARIANTS):
            for s in SEEDS:
                final = 9.0 - depth / 50 + 0.4 * i + rng.normal(0, 0.1)
                runs.append(
                    dict(
                        study=STUDY,
                        variant=v,
                        depth=depth,
                        seed=s,
                        run_id=f"{v[:4]}{depth}-s{s}",
                        status="finished",
                        crop=v,
                        dataset="cifar10",
                        iterations=64000,
                        final_test_error=final,
                        best_test_error=final - 0.1,
                        wall_seconds=100.0,
                        analysed_error=final,
                        included=True,
                        budget="paper",
                    )
                )
                for it, err in ((100, 60.0), (200, 30.0), (300, final)):
                    curves.append(
                        dict(
                            variant=v,
                            arch="resnet",
                            depth=depth,
                            seed=s,
                            status="finished",
                            iteration=it,
                            test_error=err + rng.normal(0, 1),
                            train_error=err - 2,
                        )
                    )
    pd.DataFrame(runs).to_csv(d / "runs.csv", index=False)
    pd.DataFrame(curves).to_csv(d / "curves.csv", index=False)
    rows = []
    for depth in DEPTHS:
        for v in VARIANTS:
            base = v == VARIANTS[0]
            rows.append(
                dict(
                    variant=v,
                    depth=depth,
                    n=3,
                    mean=8.5 + 0.4 * (not base) + depth / 1000,
                    std=0.1,
                    ci95_low=8.2,
                    ci95_high=8.8,
                    paper_error={20: 8.75, 56: 6.97}[depth],
                    p_vs_paper=0.2,
                    diff_vs_baseline=np.nan if base else 0.4,
                    p_vs_baseline=np.nan if base else 0.004,
                    p_vs_baseline_holm=np.nan if base else 0.008,
                    seeds_needed=np.nan if base else 3,
                    tost_p=0.3,
                    equivalent=False,
                    ci_diff_low=np.nan if base else 0.2,
                    ci_diff_high=np.nan if base else 0.6,
                    note="",
                )
            )
    pd.DataFrame(rows).to_csv(d / "summary.csv", index=False)
    fig = R.bar_figure(pd.DataFrame(runs), VARIANTS, STUDY, "final test error")
    fig.savefig(d / "forest.png")
    return d


def test_build_report_panels():
    study = ablations.get(STUDY)
    report = R.build_report(STUDY, project="resnet-repro", entity="someone", depths=DEPTHS)
    assert isinstance(report, wr.Report)
    assert study.question in report.title and report.project == "resnet-repro"
    texts = [b.text for b in report.blocks if isinstance(b, wr.P)]
    assert any(study.question in t for t in texts)
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == len(DEPTHS)
    for depth, grid in zip(DEPTHS, grids):
        (runset,) = grid.runsets
        assert runset.entity == "someone" and runset.groupby == ["JobType"]
        assert runset.filters == f"Group = '{STUDY}' and Config('depth') = {depth}"
        parsed = expr.expr_to_filters(runset.filters)  # a filter W&B can evaluate
        assert [f.value for f in parsed.filters] == [STUDY, depth]
        kinds = [type(p) for p in grid.panels]
        assert kinds == [wr.LinePlot, wr.LinePlot, wr.BarPlot, wr.RunComparer]
        test_curve, train_curve, bar, _ = grid.panels
        assert test_curve.y == ["test_error"] and train_curve.y == ["train_error"]
        for panel in (test_curve, train_curve, bar):
            assert panel.groupby == "JobType"  # the W&B job type is the variant
            assert panel.groupby_aggfunc == "mean" and panel.groupby_rangefunc == "minmax"
            assert f"depth {depth}" in panel.title
        assert "test error" in test_curve.title and "final test error" in bar.title
        assert [m.name for m in bar.metrics] == ["final_test_error"]


def test_build_report_budget_filter_and_summary():
    report = R.build_report(
        STUDY, entity="e", depths=[20], budget="smoke", summary_markdown="| a |\n|---|\n| 1 |\n"
    )
    grid = next(b for b in report.blocks if isinstance(b, wr.PanelGrid))
    assert grid.runsets[0].filters.endswith("Config('budget') = 'smoke'")
    assert any(isinstance(b, wr.MarkdownBlock) and "| a |" in b.text for b in report.blocks)


def test_report_html_is_self_contained(tmp_path):
    d = fake_analysis(tmp_path)
    res = P.load_results(ablations.get(STUDY), d)
    path = R.write_html(res, tmp_path / STUDY / "report.html")
    page = path.read_text()
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 3  # curves, bar plot, the analysis' forest.png
    for uri in uris:
        assert base64.b64decode(uri)[:8] == b"\x89PNG\r\n\x1a\n"
    # No external resources: no URL, script, stylesheet link or font anywhere.
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert re.findall(r'src="([^"]{0,22})', page) == ["data:image/png;base64,"] * 3
    # The summary table with the paper's formats.
    summary = pd.read_csv(d / "summary.csv")
    assert "<table>" in page and "mean ± sd" in page
    for r in summary.itertuples():
        assert f"{r.mean:.2f} ± {r.std:.2f}" in page
    assert page.count("significant after Holm correction") == len(DEPTHS)
    assert "pad_black" in page and "run comparer" in page.lower()


def test_cli_offline_writes_html(tmp_path, capsys):
    fake_analysis(tmp_path)
    assert R.main([STUDY, "--out", str(tmp_path), "--offline"]) == 0
    assert (tmp_path / STUDY / "report.html").is_file()
    assert "not saved (--offline)" in capsys.readouterr().out
    assert R.main(["stem_pool_ablation", "--out", str(tmp_path)]) == 1  # no results
    assert R.main(["no_such_study", "--out", str(tmp_path)]) == 2


def test_cli_online_saves_the_report(tmp_path, monkeypatch, capsys):
    fake_analysis(tmp_path)
    saved = []
    monkeypatch.setattr(R, "has_api_key", lambda: True)
    monkeypatch.setattr(R, "save_report", lambda r: saved.append(r) or "https://example/report")
    assert R.main([STUDY, "--out", str(tmp_path), "--entity", "someone"]) == 0
    (report,) = saved
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == len(DEPTHS)  # the depths that have results
    assert grids[0].runsets[0].filters.endswith("Config('budget') = 'paper'")
    assert "saved W&B report" in capsys.readouterr().out
