"""Packed seeds: K seeds trained at once equal K lone runs of `train.train`.

The "loop" layout (CPU default) runs each seed's own network, so it is compared with
`train.train` exactly. The "grouped" layout (CUDA default) uses grouped kernels whose fp32
rounding differs from dense ones by ~1e-7, which SGD at lr 0.1 amplifies to ~1e-2 within
ten steps (so does running `train.train` with 1 thread instead of 2); it is therefore
compared in float64, where no such noise exists, over the same batches and schedule.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import resnet_repro.train as train_module
from resnet_repro.config import RunConfig
from resnet_repro.data import Dataset, load_dataset, normalization_stats
from resnet_repro.models import build_model, count_parameters
from resnet_repro.packed import (
    PackedNet,
    make_packed_optimizer,
    pack_inputs,
    pack_models,
    packed_losses,
    train_packed,
    unpack_state_dicts,
)
from resnet_repro.train import BatchStream, Callback, learning_rate, make_optimizer, train

CFG = RunConfig(
    depth=8,
    dataset="synthetic",
    subset=512,
    batch_size=32,
    iterations=50,
    milestones=(30,),
    eval_every=25,
    eval_batch_size=512,
)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def data():
    # 256 training and 128 test images keep each run to about a second.
    d = load_dataset("synthetic", subset=512)
    return Dataset(
        "synthetic",
        d.train_x[:256],
        d.train_y[:256],
        d.test_x[:128],
        d.test_y[:128],
        None,
        None,
        d.classes,
    )


class Events(Callback):
    def __init__(self):
        self.calls = []

    def on_start(self, cfg, seed, start_iteration):
        self.calls.append(("start", seed))

    def on_eval(self, iteration, record):
        self.calls.append(("eval", iteration))

    def on_end(self, result):
        self.calls.append(("end", result.seed))


def _same_result(alone, packed):
    a, b = alone.to_dict(), packed.to_dict()
    a.pop("wall_seconds"), b.pop("wall_seconds")
    assert a.keys() == b.keys()
    for key in a:
        if key == "curves":
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                assert b[key][name] == pytest.approx(a[key][name], rel=1e-5, nan_ok=True), name
        elif isinstance(a[key], float) and math.isnan(a[key]):
            assert math.isnan(b[key]), key
        else:
            assert b[key] == a[key], key


def test_packed_training_equals_training_each_seed_alone(data, tmp_path):
    variants = [CFG.replace(bn_eval="precise", eval_shuffle=True)]
    alone, alone_states = [], []
    for s in SEEDS:
        ck = tmp_path / f"s{s}.pt"
        alone.append(train(CFG, s, data=data, eval_variants=variants, checkpoint_path=ck))
        alone_states.append(train_module.load_checkpoint(ck)["model"])
    events = [Events() for _ in SEEDS]
    nets = []
    packed = train_packed(
        CFG,
        SEEDS,
        data=data,
        eval_variants=variants,
        callbacks_per_seed=[[e] for e in events],
        models_out=nets,
    )
    assert [r.seed for r in packed] == list(SEEDS)
    for a, b in zip(alone, packed):
        assert len(b.curves["train_loss"]) == 2 and len(b.evals) == 1
        _same_result(a, b)
    packed_states = unpack_state_dicts(PackedNet(nets, "loop"))
    for sa, sb in zip(alone_states, packed_states):
        assert sa.keys() == sb.keys()
        for name in sa:  # weights and BN running statistics
            torch.testing.assert_close(sb[name], sa[name], rtol=1e-5, atol=1e-6, msg=name)
    for s, e in zip(SEEDS, events):
        assert e.calls == [("start", s), ("eval", 25), ("eval", 50), ("end", s)]


def test_paper_warmup_ends_per_seed_as_alone(data, monkeypatch):
    # A 5-iteration window (instead of 50) so warm-up ends within a short run.
    monkeypatch.setattr(train_module, "WARMUP_WINDOW", 5)
    cfg = CFG.replace(warmup="paper", batch_size=16, iterations=30, milestones=(), eval_every=30)
    seeds = (3, 4)
    alone = [train(cfg, s, data=data) for s in seeds]
    packed = train_packed(cfg, seeds, data=data)
    assert all(r.warmup_end is not None for r in alone)
    for a, b in zip(alone, packed):
        _same_result(a, b)


def test_diverged_seed_stops_as_alone(data):
    cfg = CFG.replace(lr=1e6, batch_size=8, eval_every=50)
    alone = train(cfg, 0, data=data)
    (packed,) = train_packed(cfg, [0], data=data)
    assert alone.status == packed.status == "diverged"
    _same_result(alone, packed)


def _lone_and_packed(cfg, seeds, dtype=torch.float64, layout="grouped"):
    lone = [build_model(cfg, seed=s).to(dtype) for s in seeds]
    packed = pack_models([build_model(cfg, seed=s) for s in seeds], layout).to(dtype)
    return lone, packed


@pytest.mark.parametrize(
    "overrides, steps",
    [
        ({}, 10),
        ({"shortcut": "B"}, 3),
        ({"shortcut": "C", "stem_pool": True}, 3),
        ({"arch": "plain"}, 3),
        ({"bn_split": 2}, 3),
        ({"decay_bn": False, "nesterov": True}, 3),
    ],
    ids=["A", "B", "C-stem_pool", "plain", "bn_split2", "decay_bn-nesterov"],
)
def test_grouped_layout_trains_like_lone_networks_in_float64(data, overrides, steps):
    cfg = CFG.replace(batch_size=8, **overrides)
    seeds = (0, 1)
    mean, std = normalization_stats(data.train_x, cfg.normalize)
    streams = [BatchStream(data.train_x, data.train_y, cfg, s, mean, std) for s in seeds]
    lone, packed = _lone_and_packed(cfg, seeds)
    lone_opts = [make_optimizer(m, cfg) for m in lone]
    opt = make_packed_optimizer(packed, cfg)
    for it in range(steps):
        lrs = [learning_rate(cfg, it, False), learning_rate(cfg, it, True)]  # per-seed lr
        for group in opt.param_groups:
            group["lr"] = lrs[group["seed_index"]]
        batches = [st.batch(it) for st in streams]
        logits = packed(pack_inputs([x.double() for x, _ in batches]))
        losses = packed_losses(logits, torch.stack([y for _, y in batches]))
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
        for k, (m, o) in enumerate(zip(lone, lone_opts)):
            for group in o.param_groups:
                group["lr"] = lrs[k]
            loss = F.cross_entropy(m(batches[k][0].double()), batches[k][1])
            o.zero_grad()
            loss.backward()
            o.step()
            assert losses[k].item() == pytest.approx(loss.item(), rel=1e-10)
    for m, sd in zip(lone, unpack_state_dicts(packed)):
        for name, v in m.state_dict().items():
            torch.testing.assert_close(sd[name], v, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("layout", ["grouped", "loop"])
def test_pack_unpack_round_trip_is_exact(layout):
    cfg = RunConfig(depth=8, shortcut="B")
    nets = [build_model(cfg, seed=s) for s in (0, 1, 2)]
    with torch.no_grad():  # distinct running statistics per seed
        for k, m in enumerate(nets):
            for name, b in m.named_buffers():
                if "running" in name:
                    b.add_(torch.rand(b.shape, generator=torch.Generator().manual_seed(k)))
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in nets]
    packed = pack_models(nets, layout)
    assert count_parameters(packed) == 3 * count_parameters(nets[0])
    for sd, ref in zip(unpack_state_dicts(packed), before):
        assert sd.keys() == ref.keys()
        assert all(torch.equal(sd[k], ref[k]) for k in ref)
    # Loading a state dict into a seed's network reaches the packed buffers, and moving
    # the packed network keeps the two linked.
    fresh = build_model(cfg, seed=7).state_dict()
    packed.nets[1].load_state_dict(fresh)
    packed = packed.to(torch.float64)
    sds = unpack_state_dicts(packed)
    assert all(torch.equal(sds[1][k], fresh[k].to(sds[1][k].dtype)) for k in fresh)
    assert all(torch.equal(sds[2][k], before[2][k].to(sds[2][k].dtype)) for k in fresh)
    if layout == "grouped":
        bn = packed.layer1[0].bn1
        assert torch.equal(bn.running_mean[16:32], packed.nets[1].layer1[0].bn1.running_mean)
        assert bn.running_mean.data_ptr() == packed.nets[0].layer1[0].bn1.running_mean.data_ptr()


def test_grouped_forward_matches_across_formats_and_bf16():
    cfg = RunConfig(depth=8)
    seeds = (0, 1)
    lone, packed = _lone_and_packed(cfg, seeds, torch.float32)
    x = [torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in seeds]
    packed.eval(), [m.eval() for m in lone]
    ref = torch.stack([m(xi) for m, xi in zip(lone, x)])  # (K, B, classes)
    out = packed(pack_inputs(x))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    packed = packed.to(memory_format=torch.channels_last)
    out_cl = packed(pack_inputs(x).contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = packed(pack_inputs(x)).float()
    torch.testing.assert_close(out_bf16, ref, rtol=0.1, atol=0.1)


def test_invalid_packs_are_refused():
    with pytest.raises(ValueError, match="one RunConfig"):
        pack_models([build_model(RunConfig(depth=8)), build_model(RunConfig(depth=14))])
    with pytest.raises(ValueError, match="layout"):
        pack_models([build_model(RunConfig(depth=8))], "diagonal")
    with pytest.raises(ValueError, match="without repeats"):
        train_packed(CFG, [1, 1])


class _Kill(Callback):
    def __init__(self, at):
        self.at = at

    def on_step(self, iteration, lr):
        if iteration == self.at:
            raise KeyboardInterrupt


def _exactly(a, b):
    """Equal results, bit for bit, but for the wall time and where the run resumed."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("wall_seconds"), d.pop("resumed_from")
    assert da == db


def test_packed_checkpoints_resume_exactly_and_interchange_with_lone_runs(data, tmp_path):
    whole = {s: train(CFG, s, data=data) for s in (0, 1, 2, 3)}
    paths = {s: tmp_path / f"s{s}.pt" for s in (0, 1, 2, 3)}
    with pytest.raises(KeyboardInterrupt):  # a packed run killed at iteration 37
        train_packed(
            CFG,
            [0, 1],
            data=data,
            checkpoint_paths=[paths[0], paths[1]],
            checkpoint_every=10,
            callbacks_per_seed=[[_Kill(37)], []],
        )
    ck = train_module.load_checkpoint(paths[0])
    assert ck["state"]["iteration"] == 30
    assert train_module.load_checkpoint(paths[1])["state"]["iteration"] == 30
    # The optimiser state is a lone run's: momentum for every parameter, lone group layout.
    lone_opt = make_optimizer(build_model(CFG, seed=0), CFG).state_dict()
    assert [g["params"] for g in ck["optimizer"]["param_groups"]] == [
        g["params"] for g in lone_opt["param_groups"]
    ]
    assert len(ck["optimizer"]["state"]) == len(lone_opt["param_groups"][0]["params"])
    # Seed 0's packed checkpoint resumes in a lone run.
    lone = train(CFG, 0, data=data, checkpoint_path=paths[0], checkpoint_every=10)
    assert lone.resumed_from == 30
    _exactly(lone, whole[0])
    # A lone run killed at iteration 17 leaves its checkpoint at 15.
    with pytest.raises(KeyboardInterrupt):
        train(
            CFG, 3, data=data, checkpoint_path=paths[3], checkpoint_every=5, callbacks=[_Kill(17)]
        )
    # One pack resumes seed 1 (packed checkpoint, 30) and seed 3 (lone checkpoint, 15) and
    # starts seed 2: the seeds behind catch up alone, then all step together.
    events = [Events() for _ in range(3)]
    results = train_packed(
        CFG,
        [1, 2, 3],
        data=data,
        checkpoint_paths=[paths[1], paths[2], paths[3]],
        checkpoint_every=10,
        callbacks_per_seed=[[e] for e in events],
    )
    assert [r.resumed_from for r in results] == [30, 0, 15]
    for r in results:
        _exactly(r, whole[r.seed])
    assert events[0].calls == [("start", 1), ("eval", 50), ("end", 1)]
    assert events[1].calls == [("start", 2), ("eval", 25), ("eval", 50), ("end", 2)]
    # Every checkpoint is now final; a finished seed's result comes back untrained.
    again = train_packed(CFG, [1, 2], data=data, checkpoint_paths=[paths[1], paths[2]])
    assert [r.resumed_from for r in again] == [50, 50]
    for r in again:
        _exactly(r, whole[r.seed])
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries


def test_grouped_packed_run_resumes_exactly(data, tmp_path):
    cfg = CFG.replace(iterations=20, milestones=(12,), eval_every=10)
    whole = train_packed(cfg, SEEDS, data=data, layout="grouped")
    paths = [tmp_path / f"s{s}.pt" for s in SEEDS]
    with pytest.raises(KeyboardInterrupt):
        train_packed(
            cfg,
            SEEDS,
            data=data,
            layout="grouped",
            checkpoint_paths=paths,
            checkpoint_every=5,
            callbacks_per_seed=[[], [_Kill(13)]],
        )
    resumed = train_packed(cfg, SEEDS, data=data, layout="grouped", checkpoint_paths=paths)
    assert [r.resumed_from for r in resumed] == [10, 10]
    for a, b in zip(whole, resumed):
        _exactly(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouped_layout_on_cuda_trains_like_lone_runs(data):
    from resnet_repro.train import ExecOptions

    cfg = CFG.replace(iterations=10, milestones=(6,), eval_every=5)
    ex = ExecOptions(device="cuda", deterministic=True)
    packed = train_packed(cfg, SEEDS, data=data, exec_options=ex)  # grouped: CUDA's default
    for seed, got in zip(SEEDS, packed):
        lone = train(cfg, seed, data=data, exec_options=ex)
        # Grouped kernels round differently from dense ones; SGD amplifies it (see above).
        assert got.curves["train_loss"] == pytest.approx(lone.curves["train_loss"], rel=0.05)
        assert got.status == lone.status == "finished"
