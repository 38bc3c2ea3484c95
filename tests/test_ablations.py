"""The study catalog: registration checks, every study's shape, the factorial design."""

import itertools

import numpy as np
import pytest

import ablations
from ablations import Study, register
from ablations.gap_factorial import FACTORS, design
from resnet_repro.config import PAPER_DEPTHS, RunConfig

REQUIRED = {
    "paper_baseline", "crop_ablation", "bn_eval_ablation", "bn_momentum_ablation",
    "stem_pool_ablation", "shortcut_ablation", "warmup_ablation", "normalization_ablation",
    "init_ablation", "weight_decay_ablation", "ghost_bn_ablation", "split_ablation",
    "precision_ablation", "optimizer_ablation", "gap_factorial",
}  # fmt: skip


def _study(name="test_only", **changes):
    spec = dict(
        name=name,
        question="q?",
        hypothesis="h",
        source="s",
        variants={"base": {}, "other": {"crop": "pad_black"}},
        baseline="base",
    )
    return Study(**{**spec, **changes})


@pytest.fixture
def registry(monkeypatch):
    """A scratch copy of the catalog, so test studies do not stay registered."""
    ablations.all_studies()
    monkeypatch.setattr(ablations, "_REGISTRY", dict(ablations._REGISTRY))
    return ablations._REGISTRY


def test_catalog_holds_every_required_study():
    studies = ablations.all_studies()
    assert REQUIRED <= set(studies)
    for s in studies.values():
        assert s.question.endswith("?") and s.hypothesis and s.source
        assert next(iter(s.variants)) == s.baseline
        assert len(s.variants) >= 2 and s.depths


def test_register_rejects_duplicates_unknown_fields_and_bad_values(registry):
    register(_study())
    with pytest.raises(ValueError, match="duplicate study name 'test_only'"):
        register(_study())
    with pytest.raises(ValueError, match=r"unknown fields \['crop_size'\]"):
        register(_study("t2", variants={"base": {}, "x": {"crop_size": 3}}))
    with pytest.raises(ValueError, match="crop='gray'.*allowed values"):
        register(_study("t3", variants={"base": {}, "x": {"crop": "gray"}}))
    with pytest.raises(ValueError, match="list the baseline 'base' first"):
        register(_study("t4", variants={"other": {}, "base": {}}))
    with pytest.raises(ValueError, match="baseline 'nope' is not among"):
        register(_study("t5", baseline="nope"))
    assert "t2" not in registry and "t3" not in registry


def test_paper_baseline_covers_table_6_and_warms_up_resnet110():
    s = ablations.get("paper_baseline")
    assert {c.config.arch for c in s.cells([0])} == {"resnet", "plain"}
    assert set(s.depths) == {20, 32, 44, 56, 110} <= set(PAPER_DEPTHS)
    for variant in s.variants:
        assert s.config(variant, 110).warmup == "paper"
        assert s.config(variant, 56).warmup == "none"
    assert s.config(s.baseline, 20) == RunConfig(depth=20)  # the paper's protocol


def test_gap_factorial_is_a_resolution_v_half_fraction_holding_the_paper_run():
    runs = design()
    assert len({tuple(r.values()) for r in runs}) == 16
    x = np.array([[2 * r[k] - 1 for k in "ABCDE"] for r in runs])  # +-1 coding
    columns = [np.ones(16)] + [x[:, i] for i in range(5)]
    columns += [x[:, i] * x[:, j] for i, j in itertools.combinations(range(5), 2)]
    m = np.stack(columns, axis=1)  # intercept, 5 main effects, 10 two-way interactions
    assert np.array_equal(m.T @ m, 16 * np.eye(16))  # all estimable, none aliased
    assert (x.prod(axis=1) == -1).all()  # defining relation I = -ABCDE
    study = ablations.get("gap_factorial")
    assert study.config("paper", 20) == RunConfig(depth=20)
    for run in runs:
        name = "".join(k.lower() for k, v in run.items() if v) or "paper"
        cfg = study.config(name, 20)
        for k, (field, paper, repro) in FACTORS.items():
            assert getattr(cfg, field) == (repro if run[k] else paper)
