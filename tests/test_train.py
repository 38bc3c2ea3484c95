"""Training loop: determinism, exact resume, schedule, warm-up, divergence, BN modes."""

import math
from pathlib import Path

import pytest
import torch
from conftest import require_or_skip

from resnet_repro.config import RunConfig, field_names
from resnet_repro.data import FASHION_MNIST_SYSTEM_DIR, load_for_config, normalization_stats
from resnet_repro.models import STRUCTURE_FIELDS, build_model, structure_key
from resnet_repro.train import (
    WARMUP_LR,
    BatchStream,
    Callback,
    ExecOptions,
    learning_rate,
    load_checkpoint,
    make_optimizer,
    train,
)

TINY = RunConfig(
    dataset="synthetic",
    depth=8,
    batch_size=32,
    subset=512,
    iterations=30,
    milestones=(20, 25),
    eval_every=10,
)


@pytest.fixture(scope="module")
def data():
    return load_for_config(TINY)


def test_same_seed_same_curves_and_other_seed_differs(data):
    a = train(TINY, 0, data=data)
    b = train(TINY, 0, data=data)
    c = train(TINY, 1, data=data)
    assert a.status == "finished" and a.iterations_done == 30
    assert a.curves == b.curves
    assert a.curves["train_loss"] != c.curves["train_loss"]
    assert a.curves["iteration"] == [10, 20, 30]
    assert a.final_test_error == a.curves["test_error"][-1]
    assert a.best_test_error == min(a.curves["test_error"])
    assert a.run_id == TINY.run_id(0)


def test_killed_and_resumed_run_equals_uninterrupted(data, tmp_path):
    whole = train(TINY, 3, data=data)
    ckpt = tmp_path / "run.pt"
    cfg = TINY
    part = _train_until_killed(cfg, 3, data, ckpt, kill_at=17, every=5)
    assert part == 15  # the last checkpoint before the kill
    resumed = train(cfg, 3, data=data, checkpoint_path=ckpt, checkpoint_every=5)
    assert resumed.resumed_from == 15
    assert resumed.curves == whole.curves  # exactly, on CPU
    assert resumed.final_test_error == whole.final_test_error
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries
    ck = load_checkpoint(ckpt)  # weights_only=True
    assert ck["state"]["iteration"] == 30


class _Kill(Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, iteration: int, lr: float) -> None:
        if iteration == self.at:
            raise KeyboardInterrupt


def _train_until_killed(cfg, seed, data, ckpt: Path, kill_at: int, every: int) -> int:
    with pytest.raises(KeyboardInterrupt):
        train(
            cfg,
            seed,
            data=data,
            checkpoint_path=ckpt,
            checkpoint_every=every,
            callbacks=[_Kill(kill_at)],
        )
    return load_checkpoint(ckpt)["state"]["iteration"]


def test_checkpoint_of_another_run_is_refused(data, tmp_path):
    ckpt = tmp_path / "c.pt"
    train(TINY.replace(iterations=10, milestones=(5,)), 0, data=data, checkpoint_path=ckpt)
    with pytest.raises(ValueError, match="belongs to training"):
        train(TINY.replace(iterations=10, milestones=(5,)), 1, data=data, checkpoint_path=ckpt)


def test_learning_rate_schedule_per_iteration():
    cfg = RunConfig()
    assert learning_rate(cfg, 0, False) == 0.1
    assert learning_rate(cfg, 31999, False) == 0.1
    assert learning_rate(cfg, 32000, False) == pytest.approx(0.01)
    assert learning_rate(cfg, 48000, False) == pytest.approx(0.001)
    assert learning_rate(cfg, 10, True) == WARMUP_LR
    fixed = cfg.replace(warmup="fixed")
    assert learning_rate(fixed, 399, False) == WARMUP_LR
    assert learning_rate(fixed, 400, False) == 0.1


def test_paper_warmup_switches_once_training_error_drops(data):
    cfg = TINY.replace(warmup="paper", iterations=120, milestones=(100,), eval_every=10)
    r = train(cfg, 0, data=data)
    assert r.warmup_end is not None and 50 <= r.warmup_end < 120
    lrs = dict(zip(r.curves["iteration"], r.curves["lr"]))
    assert lrs[10] == WARMUP_LR
    # an evaluation records the lr of the step just taken; the milestone is at 100
    assert lrs[100] == 0.1 and lrs[110] == pytest.approx(0.01)
    after = [lr for it, lr in lrs.items() if r.warmup_end < it <= 100]
    assert after and all(lr == 0.1 for lr in after)


def test_nan_loss_stops_with_diverged_status(data):
    r = train(TINY.replace(lr=1e30, iterations=40, milestones=(30,)), 0, data=data)
    assert r.status == "diverged"
    assert "non-finite" in r.error
    assert math.isnan(r.final_test_error)
    assert r.iterations_done < 40


def test_decay_bn_false_exempts_bn_and_biases():
    model = build_model(RunConfig(depth=8))
    groups = make_optimizer(model, RunConfig(decay_bn=False)).param_groups
    assert groups[0]["weight_decay"] == 1e-4 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in groups[0]["params"])
    assert all(p.ndim == 1 for p in groups[1]["params"])
    assert len(make_optimizer(model, RunConfig()).param_groups) == 1


def test_eval_variants_share_training_and_differ_only_in_evaluation(data):
    base = TINY
    batch = TINY.replace(bn_eval="batch")
    precise = TINY.replace(bn_eval="precise")
    alone = train(base, 0, data=data)
    shared = train(base, 0, data=data, eval_variants=[batch, precise])
    assert shared.curves == alone.curves  # extra evaluations change nothing in training
    assert set(shared.evals) == {batch.config_hash, precise.config_hash}
    b = shared.evals[batch.config_hash]
    assert len(b["test_error"]) == 3 and b["test_error"] != alone.curves["test_error"]
    # the batch-mode variant trained alone reports the same numbers
    assert train(batch, 0, data=data).curves["test_error"] == b["test_error"]
    with pytest.raises(ValueError, match="training fields"):
        train(base, 0, data=data, eval_variants=[TINY.replace(crop="none")])


def test_stream_batches_straddle_epochs_and_depend_only_on_seed_and_epoch(data):
    cfg = TINY.replace(batch_size=96)  # 512 images: batch 5 spans epochs 0 and 1
    mean, std = torch.zeros(1, 1, 1), torch.ones(1, 1, 1)
    s1 = BatchStream(data.train_x, data.train_y, cfg, 7, mean, std)
    s2 = BatchStream(data.train_x, data.train_y, cfg, 7, mean, std)
    x5, y5 = s1.batch(5)
    assert x5.shape[0] == 96
    assert torch.equal(s2.batch(5)[0], x5)  # a fresh stream (as after resume) agrees
    counts = torch.bincount(torch.cat([s1.batch(k)[1] for k in range(16)]), minlength=10)
    assert counts.sum() == 16 * 96


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_stream_reuses_the_memory_of_dropped_epochs_without_changing_them(data, fmt):
    mean, std = normalization_stats(data.train_x, "pixel_mean")
    stream = BatchStream(data.train_x, data.train_y, TINY, 3, mean, std, fmt)
    first = stream.epoch(0)[0]
    assert first.is_contiguous(memory_format=fmt)
    ptr = first.data_ptr()
    stream.epoch(1)  # epochs 0 and 1 are kept
    assert stream.epoch(0)[0].data_ptr() == ptr
    third = stream.epoch(2)[0]  # drops epoch 0 and reuses its memory
    assert third.data_ptr() == ptr and third.is_contiguous(memory_format=fmt)
    for e in (2, 1, 5):  # equal to what a fresh stream builds, in any order of requests
        fresh = BatchStream(data.train_x, data.train_y, TINY, 3, mean, std)
        assert torch.equal(stream.epoch(e)[0], fresh.epoch(e)[0]), e
        assert torch.equal(stream.epoch(e)[1], fresh.epoch(e)[1]), e


def test_bf16_precision_runs_on_cpu(data):
    r = train(TINY.replace(precision="bf16", iterations=10, milestones=(5,)), 0, data=data)
    assert r.status == "finished" and math.isfinite(r.final_test_error)


def test_smoke_training_on_synthetic_learns():
    cfg = RunConfig(
        dataset="synthetic",
        depth=8,
        batch_size=32,
        subset=2048,
        iterations=150,
        milestones=(100,),
        eval_every=50,
    )
    r = train(cfg, 0)
    assert r.final_test_error < 50.0  # chance is 90%


def test_smoke_training_on_fashion_mnist_learns():
    require_or_skip(
        FASHION_MNIST_SYSTEM_DIR.exists(),
        "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
    )
    cfg = RunConfig(
        dataset="fashion_mnist",
        depth=8,
        batch_size=32,
        subset=2048,
        iterations=150,
        milestones=(100,),
        eval_every=50,
    )
    r = train(cfg, 0)
    assert r.final_test_error < 40.0  # chance is 90%


def test_compiled_once_per_process_and_reinitialised_for_each_seed(data, monkeypatch):
    import resnet_repro.train as train_module

    compiled = []

    def counting_compile(model, mode=None):  # dynamo with no code generation: quick
        compiled.append(mode)
        return torch.compile(model, backend="aot_eager", mode=None)

    monkeypatch.setattr(train_module, "_COMPILED", {})
    monkeypatch.setattr(train_module, "compile_fn", counting_compile)
    ex = ExecOptions(compile="reduce-overhead")
    cfg = TINY.replace(iterations=10, milestones=(5,), eval_every=5)
    runs = [
        (cfg, 0),
        (cfg, 1),  # a new seed: same compiled network, its own initialisation
        (cfg.replace(crop="pad_black", lr=0.05, init="kaiming_fan_in"), 2),  # same structure
        (cfg.replace(shortcut="B"), 0),  # another structure: compiled anew
        (cfg, 3),
    ]
    for c, seed in runs:
        got = train(c, seed, data=data, exec_options=ex)
        eager = train(c, seed, data=data)
        assert got.curves.keys() == eager.curves.keys()
        for name, values in eager.curves.items():
            assert got.curves[name] == pytest.approx(values, rel=1e-4, abs=1e-4), name
    assert compiled == ["reduce-overhead", "reduce-overhead"]


@pytest.mark.parametrize("field", field_names())
def test_structure_key_names_every_field_that_shapes_the_network(field):
    """Networks of configs with equal `structure_key` must be interchangeable: same
    modules, same forward given the same weights. Changing any other field keeps the key."""
    alternatives = {
        "arch": "plain", "depth": 14, "shortcut": "B", "stem_pool": True,
        "init": "kaiming_fan_in", "bn_momentum": 0.01, "bn_eval": "batch", "bn_split": 2,
        "crop": "pad_black", "crop_pad": 2, "flip": False, "normalize": "channel_std",
        "train_size": 45000, "subset": 64, "dataset": "synthetic", "batch_size": 64,
        "lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 0.0,
        "decay_bn": False, "iterations": 70000, "milestones": (30000,), "warmup": "fixed",
        "warmup_iters": 10, "precision": "bf16", "eval_batch_size": 64,
        "eval_shuffle": True, "eval_every": 10,
    }  # fmt: skip
    base = RunConfig(depth=8)
    other = base.replace(**{field: alternatives[field]})
    if field in STRUCTURE_FIELDS:
        assert structure_key(other) != structure_key(base)
        return
    assert structure_key(other) == structure_key(base)
    a, b = build_model(base, seed=0), build_model(other, seed=1)
    b.load_state_dict(a.state_dict())
    assert repr(a) == repr(b)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b.train()(x), a.train()(x), rtol=0, atol=0)


SWITCHES = {
    "nesterov": True,
    "momentum": 0.5,
    "flip": False,
    "crop_pad": 2,
    "crop": "pad_black",
    "normalize": "channel_std",
    "precision": "bf16",
    "init": "kaiming_fan_in",
    "bn_split": 2,
    "bn_momentum": 0.5,
    "stem_pool": True,
    "shortcut": "B",
    "arch": "plain",
    "lr": 0.05,
    "weight_decay": 0.0,
    "decay_bn": False,
    "warmup": "fixed",
}


@pytest.mark.parametrize("field, value", SWITCHES.items(), ids=list(SWITCHES))
def test_every_training_switch_changes_the_run(data, field, value):
    cfg = TINY.replace(iterations=6, milestones=(4,), eval_every=3)
    base = _short_run(cfg, data)
    changed = _short_run(cfg.replace(**{field: value}), data)
    assert changed != base, field


_SHORT_RUNS: dict = {}


def _short_run(cfg, data):
    """The curves (lr, training and test error and loss) of seed 0; cached per config."""
    if cfg not in _SHORT_RUNS:
        _SHORT_RUNS[cfg] = train(cfg, 0, data=data).curves
    return _SHORT_RUNS[cfg]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_runs_on_cuda_match_eager_ones(data, mode):
    cfg = TINY.replace(iterations=10, milestones=(6,), eval_every=5)
    for seed in (0, 1):  # the second seed reuses the compiled network (and CUDA graphs)
        got = train(cfg, seed, data=data, exec_options=ExecOptions(device="cuda", compile=mode))
        eager = train(cfg, seed, data=data, exec_options=ExecOptions(device="cuda"))
        assert got.curves["train_loss"] == pytest.approx(eager.curves["train_loss"], rel=0.05)
