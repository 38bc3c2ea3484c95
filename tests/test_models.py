"""Models: golden parameter counts, timm entry points, and what each switch changes."""

import pytest
import timm
import torch

from resnet_repro.config import PAPER_DEPTHS, RunConfig
from resnet_repro.models import (
    TIMM_NAMES,
    GhostBatchNorm2d,
    ShortcutA,
    batch_statistics,
    build_model,
    count_parameters,
    recompute_bn_statistics,
)

# REFERENCE.md: exact option-A counts (Table 6 rounds them to 0.27M ... 19.4M).
GOLDEN = {20: 269722, 32: 464154, 44: 658586, 56: 853018, 110: 1727962, 1202: 19421274}


@pytest.mark.parametrize("arch", ["resnet", "plain"])
@pytest.mark.parametrize("depth", PAPER_DEPTHS)
def test_golden_parameter_counts(arch, depth):
    assert count_parameters(build_model(RunConfig(arch=arch, depth=depth))) == GOLDEN[depth]


def test_layer_count_is_6n_plus_2():
    for depth in (8, 20, 56):
        m = build_model(RunConfig(depth=depth))
        convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
        linears = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
        assert len(convs) + len(linears) == depth


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_entry_points(name):
    m = timm.create_model(name)
    depth = int(name.rstrip("0123456789") and name[len(name.rstrip("0123456789")) :])
    assert count_parameters(m) == GOLDEN[depth]
    assert m.cfg.arch == ("plain" if "plain" in name else "resnet")
    if depth < 1202:  # the 1202-layer forward pass is slow on CPU
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_timm_passes_switches_and_rejects_unknown_ones():
    m = timm.create_model("cifar_resnet56", shortcut="B")
    assert m.cfg.shortcut == "B" and count_parameters(m) > GOLDEN[56]
    with pytest.raises(ValueError, match="unknown fields"):
        timm.create_model("cifar_resnet20", widen=2)
    assert timm.create_model("cifar_plain20", num_classes=100).linear.out_features == 100


def test_shortcut_b_and_c_add_projections():
    a = count_parameters(build_model(RunConfig(shortcut="A")))
    b = count_parameters(build_model(RunConfig(shortcut="B")))
    c = count_parameters(build_model(RunConfig(shortcut="C")))
    # B: two 1x1 projections (16->32, 32->64) with BN; C: one on each of the 9 blocks.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert c > b
    blocks_with_proj = sum(
        isinstance(x, torch.nn.Sequential) and len(x) == 2
        for x in build_model(RunConfig(shortcut="C")).modules()
    )
    assert blocks_with_proj == 9


def test_option_a_pads_zero_channels_evenly_on_both_sides():
    x = torch.arange(16.0).view(1, 16, 1, 1).expand(1, 16, 4, 4).contiguous()
    y = ShortcutA(16, 32, 2)(x)
    assert y.shape == (1, 32, 2, 2)
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()
    assert torch.equal(y[0, 8:24, 0, 0], torch.arange(16.0))


def test_plain_has_no_shortcut_and_differs_in_function():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    r = build_model(RunConfig(), seed=1).eval()
    p = build_model(RunConfig(arch="plain"), seed=1).eval()
    p.load_state_dict(r.state_dict())  # same weights: only the additions differ
    assert not torch.allclose(r(x), p(x))


def test_stem_pool_halves_the_maps():
    seen = {}
    for pool in (False, True):
        m = build_model(RunConfig(stem_pool=pool))
        m.layer1.register_forward_hook(lambda mod, i, o, pool=pool: seen.__setitem__(pool, o.shape))
        m(torch.randn(2, 3, 32, 32))
    assert seen[False][-1] == 32 and seen[True][-1] == 16


def test_init_modes_differ_as_documented():
    fan_out = build_model(RunConfig(init="kaiming_fan_out"), seed=0)
    fan_in = build_model(RunConfig(init="kaiming_fan_in"), seed=0)
    default = build_model(RunConfig(init="torch_default"), seed=0)
    w_out, w_in = fan_out.layer1[0].conv1.weight, fan_in.layer1[0].conv1.weight
    # 16->16 3x3: fan_in == fan_out == 144, so compare the stem: fan_in 27, fan_out 144.
    assert fan_out.conv1.weight.std().item() == pytest.approx((2 / 144) ** 0.5, rel=0.15)
    assert fan_in.conv1.weight.std().item() == pytest.approx((2 / 27) ** 0.5, rel=0.15)
    assert w_out.shape == w_in.shape
    # PyTorch default: kaiming_uniform(a=sqrt(5)) -> std = 1/sqrt(3*fan_in)
    assert default.conv1.weight.std().item() == pytest.approx((1 / (3 * 27)) ** 0.5, rel=0.15)


def test_seeded_build_is_reproducible_and_leaves_global_rng():
    state = torch.get_rng_state()
    a, b = build_model(RunConfig(), seed=5), build_model(RunConfig(), seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c = build_model(RunConfig(), seed=6)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_bn_momentum_reaches_every_bn():
    m = build_model(RunConfig(bn_momentum=0.01))
    assert {bn.momentum for bn in m.modules() if isinstance(bn, torch.nn.BatchNorm2d)} == {0.01}


def _batch_dependence(model):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    other = torch.randn(8, 3, 32, 32) * 3 + 1
    model.eval()
    with torch.no_grad():
        a = model(torch.cat([x[:1], x[1:]]))[0]
        b = model(torch.cat([x[:1], other[1:]]))[0]
    return not torch.allclose(a, b, atol=1e-5)


def test_bn_eval_batch_makes_output_depend_on_the_batch():
    assert _batch_dependence(build_model(RunConfig(bn_eval="batch"), seed=0))
    assert not _batch_dependence(build_model(RunConfig(bn_eval="running"), seed=0))
    m = build_model(RunConfig(), seed=0)
    with batch_statistics(m):
        assert _batch_dependence(m)
    assert not _batch_dependence(m)  # restored afterwards
    bn = m.bn1
    assert bn.running_mean is not None and bn.num_batches_tracked.item() == 0


@pytest.mark.parametrize("bn_split", [1, 2])
def test_precise_statistics_equal_population_statistics(bn_split):
    m = build_model(RunConfig(depth=8, bn_split=bn_split), seed=0)
    torch.manual_seed(1)
    batches = [torch.randn(16, 3, 32, 32) * 2 + 0.5 for _ in range(4)]
    seen = recompute_bn_statistics(m, iter(batches))
    assert seen == 64
    # The stem BN's input is conv1(x): its population mean is the mean over all batches.
    with torch.no_grad():
        feats = torch.cat([m.conv1(b) for b in batches])
    assert torch.allclose(m.bn1.running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    assert m.bn1.momentum == 0.1  # restored


def test_ghost_bn_normalises_each_half_separately():
    torch.manual_seed(0)
    bn = GhostBatchNorm2d(3, splits=2, momentum=1.0).train()
    x = torch.cat([torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2) * 5 + 10])
    y = bn(x)
    for half in (y[:4], y[4:]):
        assert torch.allclose(half.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    whole = torch.nn.BatchNorm2d(3).train()(x)
    assert not torch.allclose(y, whole, atol=1e-3)
    # momentum 1: running stats are the mean of the two halves' statistics
    halves = x.view(2, 4, 3, 2, 2)
    expect_mean = halves.mean((1, 3, 4)).mean(0)
    assert torch.allclose(bn.running_mean, expect_mean, atol=1e-5)
    assert bn.num_batches_tracked.item() == 1
    # eval: the running statistics, like any BN
    bn.eval()
    assert torch.allclose(
        bn(x[:2]),
        torch.nn.functional.batch_norm(
            x[:2], bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
        ),
        atol=1e-6,
    )


def test_bn_split_model_trains_with_per_half_statistics():
    m1 = build_model(RunConfig(depth=8), seed=0).train()
    m2 = build_model(RunConfig(depth=8, bn_split=2), seed=0).train()
    x = torch.randn(8, 3, 32, 32)
    assert not torch.allclose(m1(x), m2(x), atol=1e-4)
    assert all(bn.splits == 2 for bn in m2.modules() if isinstance(bn, GhostBatchNorm2d))


def test_timm_entry_points_register_when_timm_is_imported_later():
    import subprocess
    import sys

    code = (
        "import sys, resnet_repro.models\n"
        "assert 'timm' not in sys.modules  # workers never pay for importing timm\n"
        "import timm\n"
        "m = timm.create_model('cifar_plain32', bn_momentum=0.01)\n"
        "print(m.cfg.arch, m.cfg.depth, m.cfg.bn_momentum)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["plain", "32", "0.01"]


def test_forward_macs_match_the_reference_figures():
    from resnet_repro.models import forward_macs
    from resnet_repro.reference import FORWARD_MACS

    for depth, macs in FORWARD_MACS.items():
        assert forward_macs(RunConfig(depth=depth)) == pytest.approx(macs, rel=2e-3)
