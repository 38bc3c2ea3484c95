"""Tune the optimiser on the validation split: `python -m studies.tune --depth 20 --trials 50`.

Were the paper's hyperparameters tuned for its networks, or would others do better? He et
al. 2015 (arXiv:1512.03385, sec. 4.2) chose their 64k stop on a 45k/5k split of the
training set; this searches lr, weight decay, momentum and the lr-drop positions the same
way. An Optuna TPE search (Bergstra et al. 2011, "Algorithms for Hyper-Parameter
Optimization"; optuna.samplers.TPESampler) over SPACE for one depth, trained on 45k images
(train_size=45000) and scored by the final error on the 5k held out: the validation error.
The test set is never used: `validation_data` builds a dataset whose evaluation split IS
the validation split and that holds no test images at all.

A MedianPruner stops a trial whose validation error at an evaluation is worse than the
median of earlier trials at the same iteration; not in the first half of a run, where a
high learning rate looks worse than it ends. The paper's configuration (lr 0.1, weight
decay 1e-4, momentum 0.9, drops at 0.5 and 0.75 of the run) is enqueued as the first trial
and the report says where it ranks. Every trial trains with the same seed, so trials are
paired comparisons.

Writes <out>/tune-d<depth>/best.txt, the best configuration as `--set` lines for the
budget tuned (`python -m studies.run STUDY --budget B $(cat best.txt)`), and best.json
with the ranking and every trial. Several processes may run the same command against one
`--storage`: `--trials` counts the finished (complete or pruned) trials of all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from resnet_repro.config import BUDGETS, DATASETS, RunConfig, apply_budget, parse_override
from resnet_repro.data import Dataset, load_for_config
from resnet_repro.train import Callback, ExecOptions, train
from studies import store

# name -> (low, high, log scale). Milestones are fractions: the first drop of the run, the
# second of what remains after the first (so the two stay ordered).
SPACE: dict[str, tuple[float, float, bool]] = {
    "lr": (0.01, 1.0, True),
    "weight_decay": (1e-5, 1e-3, True),
    "momentum": (0.8, 0.99, False),
    "milestone1": (0.3, 0.8, False),
    "milestone2_of_rest": (0.2, 0.8, False),
}
# The paper (sec. 4.2): lr 0.1, wd 1e-4, momentum 0.9, drops at 32k and 48k of 64k.
PAPER = {
    "lr": 0.1,
    "weight_decay": 1e-4,
    "momentum": 0.9,
    "milestone1": 0.5,
    "milestone2_of_rest": 0.5,
}
TUNED_FIELDS = ("lr", "weight_decay", "momentum", "milestones")
DIVERGED = 100.0  # objective of a diverged run: every validation image counted wrong
PAPER_ATTR = "paper"  # user attribute marking the paper's trial


def milestone_fractions(params: dict[str, float]) -> tuple[float, float]:
    """(first, second) lr-drop positions as fractions of the run."""
    first = params["milestone1"]
    return first, first + (1.0 - first) * params["milestone2_of_rest"]


def milestones_at(fractions: tuple[float, ...], iterations: int) -> tuple[int, ...]:
    """Fractions of a run of `iterations` as valid RunConfig milestones (increasing,
    strictly inside the run; coinciding drops merge on very short runs)."""
    if iterations < 2:
        return ()
    return tuple(sorted({min(iterations - 1, max(1, round(f * iterations))) for f in fractions}))


def trial_config(base: RunConfig, params: dict[str, float]) -> RunConfig:
    """The base config with a trial's hyperparameters."""
    return base.replace(
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        momentum=params["momentum"],
        milestones=milestones_at(milestone_fractions(params), base.iterations),
    )


def base_config(
    depth: int, budget: str, dataset: str | None, overrides: dict[str, Any]
) -> RunConfig:
    """The paper's config at `depth` on the 45k/5k split, scaled to `budget`, with
    overrides of untuned fields (`--set`). A changed iteration count keeps the paper's
    milestone fractions until a trial sets its own."""
    tuned = sorted(set(overrides) & set(TUNED_FIELDS))
    if tuned:
        raise ValueError(f"--set {', '.join(tuned)}: tuned by the search; allowed are other fields")
    if overrides.get("train_size", 45000) != 45000:
        raise ValueError(
            "--set train_size: the search needs the validation split: allowed is 45000"
        )
    cfg = RunConfig(depth=depth, train_size=45000, **({"dataset": dataset} if dataset else {}))
    cfg = apply_budget(cfg, budget)
    if "iterations" in overrides:
        paper = milestone_fractions(PAPER)
        overrides = dict(overrides, milestones=milestones_at(paper, overrides["iterations"]))
    return cfg.replace(**overrides)


def validation_data(cfg: RunConfig, data_dir: str | None = None) -> Dataset:
    """The training split and, in the place of the test split, the validation split: every
    evaluation `train` makes is a validation evaluation, and no test image is present."""
    ds = load_for_config(cfg, data_dir)
    if ds.val_x is None or ds.val_y is None:
        raise ValueError(f"train_size={cfg.train_size}: no validation split; allowed is 45000")
    return Dataset(
        f"{ds.name}-validation",
        ds.train_x,
        ds.train_y,
        ds.val_x,
        ds.val_y,
        None,
        None,
        ds.classes,
    )


class ReportToTrial(Callback):
    """Reports each evaluation's error (on the validation split: see `validation_data`) to
    the trial, and raises optuna.TrialPruned out of `train` when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_eval(self, iteration: int, record: dict[str, float]) -> None:
        error = record["test_error"]  # the validation split stands in for the test split
        self.trial.report(error, iteration)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"validation error {error:.2f}% at iteration {iteration}")


class Objective:
    """Train one trial's config on `data` (train + validation only); return the final
    validation error in percent."""

    def __init__(self, base: RunConfig, data: Dataset, seed: int, exec_options: ExecOptions):
        self.base, self.data, self.seed, self.exec = base, data, seed, exec_options

    def __call__(self, trial: optuna.Trial) -> float:
        params = {
            name: trial.suggest_float(name, low, high, log=log)
            for name, (low, high, log) in SPACE.items()
        }
        cfg = trial_config(self.base, params)
        trial.set_user_attr("milestones", list(cfg.milestones))
        trial.set_user_attr("milestone_fractions", list(milestone_fractions(params)))
        res = train(
            cfg, self.seed, data=self.data, exec_options=self.exec, callbacks=[ReportToTrial(trial)]
        )
        trial.set_user_attr("status", res.status)
        trial.set_user_attr("val_error_curve", res.curves["test_error"])
        trial.set_user_attr("wall_seconds", res.wall_seconds)
        if res.status == "diverged":
            return DIVERGED
        return float(res.final_test_error)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m studies.tune",
        description="TPE search of lr, weight decay, momentum and lr drops on the 45k/5k split.",
    )
    p.add_argument("--depth", type=int, default=20, help="network depth, 6n+2 (default 20)")
    p.add_argument("--trials", type=int, required=True, help="finished trials in all")
    p.add_argument("--budget", default="short", choices=list(BUDGETS), help="default short")
    p.add_argument("--dataset", default=None, choices=list(DATASETS), help="default cifar10")
    p.add_argument("--out", default="runs", help="output directory (default: runs/)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial and TPE's")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override an untuned RunConfig field (repeatable)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--data-dir", default=None, help="where datasets are (or go)")
    return p.parse_args(argv)


def open_study(url: str, name: str, seed: int, base: RunConfig) -> optuna.Study:
    storage = store.open_storage(url)
    probe = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    # A process joining a running search samples with another seed than the first.
    n = len(probe.get_trials(deepcopy=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed + n, multivariate=True, constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=base.iterations // 2)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    study.set_user_attr("base_config", json.dumps(base.to_dict(), sort_keys=True))
    study.set_user_attr("objective", "final validation error (%), 45k/5k split")
    if not any(t.user_attrs.get(PAPER_ATTR) for t in study.get_trials(deepcopy=False)):
        study.enqueue_trial(PAPER, user_attrs={PAPER_ATTR: True}, skip_if_exists=True)
    return study


def finished_count(study: optuna.Study) -> int:
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def print_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    p = trial.params
    text = ", ".join(f"{k} {p[k]:.3g}" for k in ("lr", "weight_decay", "momentum") if k in p)
    if trial.state == TrialState.COMPLETE:
        outcome = f"validation error {trial.value:.2f}%"
    elif trial.state == TrialState.PRUNED:
        step = trial.last_step
        outcome = f"pruned at iteration {step}" if step is not None else "pruned"
    else:
        outcome = trial.state.name.lower()
    paper = " (paper)" if trial.user_attrs.get(PAPER_ATTR) else ""
    print(f"trial {trial.number}{paper}: {outcome}; {text}", flush=True)


def summarize(study: optuna.Study, base: RunConfig) -> dict[str, Any]:
    """Best trial, the paper's rank among complete trials, and every trial."""
    trials = study.get_trials(deepcopy=False)
    complete = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number)
    )
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}

    def row(t: FrozenTrial) -> dict[str, Any]:
        fractions = milestone_fractions(t.params) if set(PAPER) <= set(t.params) else None
        return {
            "number": t.number,
            "state": t.state.name,
            "validation_error": t.value,
            "paper": bool(t.user_attrs.get(PAPER_ATTR)),
            "params": t.params,
            "milestone_fractions": list(fractions) if fractions else None,
            "milestones": t.user_attrs.get("milestones"),
            "last_step": t.last_step,
        }

    out: dict[str, Any] = {
        "study": study.study_name,
        "objective": "final validation error (%); the test split is never used",
        "base_config": base.to_dict(),
        "counts": counts,
        "trials": [row(t) for t in trials],
        "best": None,
        "paper": None,
    }
    if complete:
        best = complete[0]
        cfg = trial_config(base, best.params)
        fractions = milestone_fractions(best.params)
        out["best"] = {
            **row(best),
            "set": set_lines(cfg),
            "milestones_by_budget": {
                b: list(milestones_at(fractions, apply_budget(RunConfig(), b).iterations))
                for b in BUDGETS
            },
        }
    paper = next((t for t in trials if t.user_attrs.get(PAPER_ATTR)), None)
    for t in trials:  # a re-queued copy of the paper's trial may be the one that finished
        if t.user_attrs.get(PAPER_ATTR) and t.state == TrialState.COMPLETE:
            paper = t
    if paper is not None:
        rank = None
        if paper.state == TrialState.COMPLETE:
            rank = 1 + sum(t.value < paper.value for t in complete)
        out["paper"] = {**row(paper), "rank": rank, "of": len(complete)}
    return out


def set_lines(cfg: RunConfig) -> list[str]:
    """The tuned fields of `cfg` as `--set` arguments (exact float values)."""
    return [
        f"--set lr={cfg.lr!r}",
        f"--set weight_decay={cfg.weight_decay!r}",
        f"--set momentum={cfg.momentum!r}",
        f"--set milestones={','.join(map(str, cfg.milestones))}",
    ]


def describe(summary: dict[str, Any], base: RunConfig) -> str:
    c = summary["counts"]
    lines = [
        f"{summary['study']}: {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed "
        f"trials; objective: final validation error ({base.iterations} iterations, "
        f"{base.dataset}, held-out split; the test split is never used)"
    ]
    best, paper = summary["best"], summary["paper"]
    if best:
        f1, f2 = best["milestone_fractions"]
        p = best["params"]
        lines.append(
            f"best: trial {best['number']}, {best['validation_error']:.2f}%: lr {p['lr']:.3g}, "
            f"weight decay {p['weight_decay']:.3g}, momentum {p['momentum']:.3g}, lr drops at "
            f"{f1:.2f} and {f2:.2f} of the run"
        )
    if paper:
        if paper["rank"] is not None:
            lines.append(
                f"paper (lr 0.1, wd 1e-4, momentum 0.9, drops at 0.50/0.75): "
                f"{paper['validation_error']:.2f}%, rank {paper['rank']} of {paper['of']} "
                "complete trials"
            )
        else:
            lines.append(f"paper configuration: {paper['state'].lower()}, not ranked")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = dict(parse_override(text) for text in args.set)
        base = base_config(args.depth, args.budget, args.dataset, overrides)
        if args.trials < 1:
            raise ValueError(f"--trials {args.trials}: allowed values are integers >= 1")
        from studies.worker import resolve_device

        exec_options = ExecOptions(device=resolve_device(args.device), num_threads=args.threads)
        data = validation_data(base, args.data_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) / f"tune-d{args.depth}"
    url = args.storage or store.default_storage(args.out, out.name)
    name = f"tune-d{args.depth}-{base.config_hash[:8]}"
    try:
        study = open_study(url, name, args.seed, base)
    except RuntimeError as e:  # cannot open the storage (message redacted)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{name}: {finished_count(study)}/{args.trials} trials finished "
        f"(storage {store.redact(url)}); depth {args.depth}, budget {args.budget}, "
        f"{len(data.train_x)} training and {len(data.test_x)} validation images",
        flush=True,
    )
    remaining = args.trials - finished_count(study)
    if remaining > 0:
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        study.optimize(
            Objective(base, data, args.seed, exec_options),
            n_trials=remaining,
            callbacks=[optuna.study.MaxTrialsCallback(args.trials, states=states), print_trial],
            gc_after_trial=False,
        )
    summary = summarize(study, base)
    print(describe(summary, base), flush=True)
    if summary["best"] is None:
        print("error: no trial completed", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "best.txt").write_text("\n".join(summary["best"]["set"]) + "\n")
    (out / "best.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out / 'best.txt'} and {out / 'best.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
