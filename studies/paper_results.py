"""A study's analysis outputs as the paper reads them: `StudyResults` (the CSVs and meta.json
under `<out>/<study>/analysis/`, the results contract of DESIGN.md), `load_results`, the
studies with a store under an output directory in the paper's catalog order (`discover`,
`ordered_studies`), and `ensure_analysis`, which runs studies.analyze where the analysis is
missing or older than the study's store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import ablations
from ablations import Study

# Defaults of studies.analyze, used where an analysis has no meta.json.
DEFAULT_ALPHA, DEFAULT_POWER, DEFAULT_MARGIN = 0.05, 0.8, 0.3
METRIC_LABEL = {"final": "final test error", "best": "best test error over evaluations"}


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
