"""RunConfig: defaults are the paper's, validation names bad values, hashes are stable."""

import dataclasses

import pytest

from resnet_repro.config import (
    BUDGETS,
    EVAL_FIELDS,
    RunConfig,
    apply_budget,
    field_names,
    from_dict,
    parse_override,
)

DESIGN_DEFAULTS = {
    "arch": "resnet",
    "depth": 20,
    "shortcut": "A",
    "stem_pool": False,
    "init": "kaiming_fan_out",
    "bn_momentum": 0.1,
    "bn_eval": "running",
    "bn_split": 1,
    "crop": "pad_zero",
    "crop_pad": 4,
    "flip": True,
    "normalize": "pixel_mean",
    "train_size": 50000,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 1e-4,
    "decay_bn": True,
    "iterations": 64000,
    "milestones": (32000, 48000),
    "warmup": "none",
    "warmup_iters": 400,
    "precision": "fp32",
    "dataset": "cifar10",
}


def test_defaults_are_the_papers_protocol():
    cfg = RunConfig()
    for name, value in DESIGN_DEFAULTS.items():
        assert getattr(cfg, name) == value, name


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().depth = 32


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("arch", "vgg", "'resnet', 'plain'"),
        ("shortcut", "D", "'A', 'B', 'C'"),
        ("crop", "pad_gray", "'pad_zero', 'pad_black', 'pad_reflect', 'resized', 'none'"),
        ("bn_eval", "ema", "'running', 'batch', 'precise'"),
        ("init", "xavier", "'kaiming_fan_out'"),
        ("normalize", "zca", "'pixel_mean', 'channel_std', 'imagenet', 'none'"),
        ("train_size", 40000, "50000, 45000"),
        ("warmup", "linear", "'none', 'paper', 'fixed'"),
        ("precision", "fp16", "'fp32', 'tf32', 'bf16'"),
        ("dataset", "mnist", "'cifar10', 'fashion_mnist', 'synthetic'"),
        ("bn_split", 4, "1, 2"),
        ("depth", 21, "6n+2 >= 8"),
        ("depth", 2, "6n+2 >= 8"),
        ("bn_momentum", 0.0, "(0, 1]"),
        ("bn_momentum", 1.5, "(0, 1]"),
        ("crop_pad", -1, ">= 0"),
        ("lr", "0.1", "finite numbers"),
        ("lr", float("nan"), "finite numbers"),
        ("bn_momentum", "x", "finite numbers"),
        ("bn_momentum", True, "finite numbers"),
        ("weight_decay", None, "finite numbers"),
        ("momentum", float("inf"), "finite numbers"),
        ("milestones", 5, "integer iterations"),
        ("milestones", (1.5, 2.7), "integer iterations"),
    ],
)
def test_invalid_values_name_value_and_allowed(field, value, allowed):
    with pytest.raises(ValueError) as e:
        RunConfig(**{field: value})
    assert f"{field}={value!r}" in str(e.value)
    assert allowed in str(e.value)


def test_milestones_must_lie_inside_the_run():
    with pytest.raises(ValueError, match="milestones"):
        RunConfig(iterations=100, milestones=(50, 200))
    with pytest.raises(ValueError, match="milestones"):
        RunConfig(milestones=(48000, 32000))


def test_replace_rejects_unknown_fields_by_name():
    with pytest.raises(ValueError, match=r"unknown fields \['lr_decay'\].*allowed are"):
        RunConfig().replace(lr_decay=0.1)
    with pytest.raises(ValueError, match="unknown fields"):
        from_dict({"depht": 20})


def test_hash_is_stable_and_sensitive():
    a, b = RunConfig(), RunConfig()
    assert a.config_hash == b.config_hash
    # Golden: the paper default's hash must not change by accident (it names stored runs).
    assert a.config_hash == "22b7191a816cd78e33ec8d59ba957c3b0b3679c4"
    assert a.run_id(3) == f"{a.config_hash[:10]}-s3"
    for name in field_names():
        default = getattr(a, name)
        other = {
            bool: lambda v: not v,
            int: lambda v, name=name: v + 6 if name == "depth" else v * 2 if v else 1,
            float: lambda v: v / 2,
        }.get(type(default))
        if other is None:
            continue
        try:
            changed = a.replace(**{name: other(default)})
        except ValueError:
            continue
        assert changed.config_hash != a.config_hash, name


def test_train_hash_ignores_only_eval_fields():
    base = RunConfig()
    for v in (base.replace(bn_eval="batch"), base.replace(eval_batch_size=500)):
        assert v.train_hash == base.train_hash
        assert v.config_hash != base.config_hash
    assert base.replace(crop="pad_black").train_hash != base.train_hash
    assert set(EVAL_FIELDS) <= set(field_names())


def test_round_trip_through_dict():
    cfg = RunConfig(depth=56, shortcut="B", milestones=(10, 20), iterations=30)
    assert from_dict(cfg.to_dict()) == cfg


def test_budgets_scale_iterations_and_milestones_together():
    paper = apply_budget(RunConfig(), "paper")
    assert (paper.iterations, paper.milestones) == (64000, (32000, 48000))
    short = apply_budget(RunConfig(), "short")
    assert (short.iterations, short.milestones) == (16000, (8000, 12000))
    smoke = apply_budget(RunConfig(), "smoke")
    assert smoke.iterations == BUDGETS["smoke"]["iterations"] < 1000
    assert [m / smoke.iterations for m in smoke.milestones] == pytest.approx([0.5, 0.75], abs=0.01)
    assert smoke.subset > 0
    assert smoke.lr / smoke.batch_size == pytest.approx(0.1 / 128)  # linear scaling rule
    with pytest.raises(ValueError, match="budget='huge'.*'paper', 'short', 'smoke'"):
        apply_budget(RunConfig(), "huge")
    # A config whose run already has the smoke length still gets the smoke batch's lr,
    # and applying a budget twice changes nothing more.
    same_length = apply_budget(RunConfig(iterations=150, milestones=(75,)), "smoke")
    assert same_length.lr == pytest.approx(0.1 * 32 / 128) and same_length.milestones == (75,)
    assert apply_budget(smoke, "smoke") == smoke


def test_parse_override_types_and_errors():
    assert parse_override("depth=56") == ("depth", 56)
    assert parse_override("stem_pool=true") == ("stem_pool", True)
    assert parse_override("lr=0.05") == ("lr", 0.05)
    assert parse_override("milestones=10,20") == ("milestones", (10, 20))
    assert parse_override("crop=pad_black") == ("crop", "pad_black")
    with pytest.raises(ValueError, match="unknown field 'dpeth'"):
        parse_override("dpeth=20")
    with pytest.raises(ValueError, match="depth='abc'"):
        parse_override("depth=abc")
    with pytest.raises(ValueError, match="field=value"):
        parse_override("depth")
