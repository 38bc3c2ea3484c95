"""studies.tune: the search space, the validation-only data, pruning out of `train`, and a
smoke search that writes the best configuration without ever touching the test split."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

from resnet_repro.config import RunConfig
from resnet_repro.data import Dataset, load_for_config
from resnet_repro.train import train
from studies import tune

TINY = ["--set", "iterations=12", "--set", "eval_every=6", "--set", "subset=256"]
TINY += ["--set", "batch_size=16", "--set", "eval_batch_size=256"]


class _NoTestSplit:
    """A loaded dataset whose test split raises on any access."""

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds
        self.touched = False

    def __getattr__(self, name: str):
        return getattr(self._ds, name)

    def _refuse(self) -> torch.Tensor:
        self.touched = True
        raise AssertionError("the tuner touched the test split")

    test_x = property(_refuse)
    test_y = property(_refuse)


def test_paper_configuration_maps_to_the_paper_milestones():
    base = tune.base_config(20, "paper", None, {})
    cfg = tune.trial_config(base, tune.PAPER)
    assert (cfg.lr, cfg.weight_decay, cfg.momentum) == (0.1, 1e-4, 0.9)
    assert cfg.milestones == (32000, 48000)
    assert cfg.train_size == 45000 and base.train_size == 45000
    assert tune.milestones_at((0.5, 0.5), 3) == (2,)  # coinciding drops merge
    for name, value in tune.PAPER.items():
        low, high, _ = tune.SPACE[name]
        assert low <= value <= high


def test_tuned_fields_and_the_full_training_set_are_refused():
    with pytest.raises(ValueError, match="tuned by the search"):
        tune.base_config(8, "smoke", "synthetic", {"lr": 0.2})
    with pytest.raises(ValueError, match="validation split"):
        tune.base_config(8, "smoke", "synthetic", {"train_size": 50000})
    assert tune.main(["--trials", "1", "--set", "momentum=0.5"]) == 2


def test_validation_data_holds_no_test_split():
    cfg = tune.base_config(8, "smoke", "synthetic", {"subset": 256})
    full = load_for_config(cfg)
    ds = tune.validation_data(cfg)
    assert torch.equal(ds.test_x, full.val_x) and torch.equal(ds.test_y, full.val_y)
    assert torch.equal(ds.train_x, full.train_x) and ds.val_x is None
    assert not torch.equal(ds.test_x, full.test_x)


def test_pruning_propagates_out_of_train():
    class AlwaysPrune:
        steps: list[int] = []

        def report(self, value: float, step: int) -> None:
            self.steps.append(step)

        def should_prune(self) -> bool:
            return True

    cfg = RunConfig(
        dataset="synthetic",
        depth=8,
        batch_size=16,
        subset=256,
        iterations=10,
        milestones=(5, 8),
        eval_every=2,
        train_size=45000,
    )
    trial = AlwaysPrune()
    with pytest.raises(optuna.TrialPruned, match="iteration 2"):
        train(cfg, 0, data=tune.validation_data(cfg), callbacks=[tune.ReportToTrial(trial)])
    assert trial.steps == [2]


def test_smoke_search_writes_best_and_never_touches_the_test_split(tmp_path, monkeypatch):
    loaded: list[_NoTestSplit] = []

    def poisoned(cfg, data_dir=None, download=True):
        loaded.append(_NoTestSplit(load_for_config(cfg, data_dir, download)))
        return loaded[-1]

    monkeypatch.setattr(tune, "load_for_config", poisoned)
    argv = ["--depth", "8", "--trials", "4", "--budget", "smoke", "--dataset", "synthetic"]
    argv += ["--out", str(tmp_path), "--threads", "1", "--device", "cpu", *TINY]
    assert tune.main(argv) == 0
    assert loaded and not any(d.touched for d in loaded)

    out = tmp_path / "tune-d8"
    lines = (out / "best.txt").read_text().splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "--set lr",
        "--set weight_decay",
        "--set momentum",
        "--set milestones",
    ]
    summary = json.loads((out / "best.json").read_text())
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 4
    assert summary["trials"][0]["paper"] and summary["trials"][0]["params"] == tune.PAPER
    assert 1 <= summary["paper"]["rank"] <= summary["paper"]["of"]
    best = summary["best"]
    assert best["validation_error"] == min(
        t["validation_error"] for t in summary["trials"] if t["state"] == "COMPLETE"
    )
    assert best["set"] == lines
    # The lines are valid `--set` arguments for the tuned config.
    from resnet_repro.config import parse_override

    values = dict(parse_override(line.split(" ", 1)[1]) for line in lines)
    assert values["lr"] == best["params"]["lr"]
    assert list(values["milestones"]) == best["milestones"]

    # Rerunning with the same --trials trains nothing more.
    assert tune.main(argv) == 0
    again = json.loads((out / "best.json").read_text())
    assert len(again["trials"]) == len(summary["trials"])
