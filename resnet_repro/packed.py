"""Packed seeds: K runs of one RunConfig trained side by side in one process.

A small CIFAR ResNet at batch 128 leaves a GPU mostly idle, so K seeds of one config are
trained as ONE network whose layers hold the K copies side by side, the idea of
Packed-Ensembles (Laurent et al. 2023, "Packed-Ensembles for Efficient Uncertainty
Estimation", arXiv:2210.09184) and of torch.func model ensembling (`stack_module_state` +
`vmap`, which lowers convolutions to the same grouped convolutions):

- activations are (B, K*C, H, W): group k of the channels belongs to seed k;
- every conv is `Conv2d(K*Cin, K*Cout, groups=K)` whose weight is the concatenation of the
  K seeds' weights, so no seed sees another's activations;
- every BN normalises K*C channels, i.e. each seed's channels with that seed's own batch
  statistics, and updates that seed's running statistics (ghost BN per part as well);
- option-A shortcuts zero-pad each group separately ((B, K, C, H, W) view);
- the classifier is a batched matmul (K, B, 64) @ (K, 64, classes);
- the loss is the sum over seeds of each seed's mean cross-entropy, so every seed's
  gradient is exactly the gradient of its own loss.

The parameters stay in K ordinary `CifarResNet`s (`PackedNet.nets`), which own them; the
packed forward concatenates them per layer (a few hundred kB per step). The BN running
statistics live in packed buffers and each network's BN buffers are views of its slice,
so `nets[k]` is at every moment the normal network of seed k: it is evaluated with
`train.evaluate`, saved with `state_dict`, and its optimiser state is what a lone run
would hold. One SGD optimiser with per-seed parameter groups (momentum and weight decay
are elementwise) equals K optimisers, and a per-seed learning rate serves the paper's
warm-up, whose end each seed decides for itself.

Layouts: "grouped" (above; for devices that one small network underfills, i.e. CUDA)
and "loop" (each seed's own network on its own batch, one after the other, forward and
backward, then one optimiser step: bitwise what a lone run computes, with a lone run's
activation memory). On CPUs "loop" is the fast one: oneDNN runs grouped convolutions with
16-channel groups about 1.5-2x slower per image than dense ones (ResNet-20, 2 cores),
and forwarding all K seeds before any backward costs ~10% more in memory traffic.
`train_packed` picks "grouped" on CUDA and "loop" elsewhere unless told otherwise.
Grouped kernels round differently from dense ones (~1e-7 in fp32), so a grouped run
equals the lone runs as closely as two lone runs with different thread counts do (SGD
amplifies such differences to ~1e-3 in the loss within 50 steps); in float64 it matches
them to ~1e-15 (tests/test_packed.py).

Data stays on the device as uint8 and each seed has its own `train.BatchStream`
(device-resident, whole-epoch augmentation, as cifar10-airbench by Keller Jordan), so
seed s sees the batches, augmentation and learning rates of `train.train(cfg, s)`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import resnet_repro.train as train_module
from resnet_repro.config import RunConfig
from resnet_repro.data import Dataset, load_for_config, normalization_stats
from resnet_repro.models import BasicBlock, CifarResNet, ShortcutA, build_model, structure_key
from resnet_repro.train import (
    DIVERGENCE_CHECK,
    BatchStream,
    Callback,
    Evaluator,
    ExecOptions,
    TrainResult,
    autocast,
    checkpoint_state,
    eval_specs,
    learning_rate,
    make_optimizer,
    new_state,
    param_groups,
    precision_flags,
    prepare_model,
    resume_from,
    save_checkpoint,
    summarise,
    warmup_step,
)

LAYOUTS = ("grouped", "loop")


# ---------------------------------------------------------------------------------------
# packed layers: hold references to the K seeds' modules (unregistered), own no parameters


class _PackedConv(nn.Module):
    """K convolutions as one grouped convolution: (B, K*Cin, H, W) -> (B, K*Cout, H', W')."""

    def __init__(self, convs: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        self._convs = list(convs)  # a plain list: the seeds' networks own these
        c = convs[0]
        self.stride, self.padding, self.k = c.stride, c.padding, len(convs)

    def forward(self, x: Tensor) -> Tensor:
        w = torch.cat([c.weight for c in self._convs])  # (K*Cout, Cin, kh, kw)
        b = None
        if self._convs[0].bias is not None:
            b = torch.cat([c.bias for c in self._convs])
        return F.conv2d(x, w, b, self.stride, self.padding, 1, self.k)


class _PackedBatchNorm(nn.Module):
    """K BatchNorm2d (or GhostBatchNorm2d) of C channels as one BN of K*C channels.

    The running statistics are packed buffers; each seed's BN keeps views of its slice,
    so both always agree. Training-mode arithmetic is that of `nn.BatchNorm2d.forward`
    and `models.GhostBatchNorm2d.forward`, per channel.
    """

    def __init__(self, bns: Sequence[nn.BatchNorm2d]) -> None:
        super().__init__()
        self._bns = list(bns)
        bn = bns[0]
        self.k, self.c = len(bns), bn.num_features
        self.eps, self.momentum = bn.eps, bn.momentum
        self.splits = getattr(bn, "splits", 1)
        self.track = bn.track_running_stats and bn.running_mean is not None
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, None, persistent=False)
        self.link()

    def link(self) -> None:
        """(Re)build the packed buffers from the seeds' buffers and make those views."""
        if not self.track:
            return
        self.running_mean = torch.cat([bn.running_mean for bn in self._bns])
        self.running_var = torch.cat([bn.running_var for bn in self._bns])
        self.num_batches_tracked = torch.stack([bn.num_batches_tracked for bn in self._bns])
        c = self.c
        for k, bn in enumerate(self._bns):
            bn.running_mean = self.running_mean[k * c : (k + 1) * c]
            bn.running_var = self.running_var[k * c : (k + 1) * c]
            bn.num_batches_tracked = self.num_batches_tracked[k]

    def forward(self, x: Tensor) -> Tensor:
        w = torch.cat([bn.weight for bn in self._bns])
        b = torch.cat([bn.bias for bn in self._bns])
        if not self.training:
            if not self.track:
                return F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)
            return F.batch_norm(x, self.running_mean, self.running_var, w, b, False, 0.0, self.eps)
        if self.splits > 1:
            return self._ghost(x, w, b)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked[0])
        rm, rv = (self.running_mean, self.running_var) if self.track else (None, None)
        return F.batch_norm(x, rm, rv, w, b, True, factor, self.eps)

    def _ghost(self, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """`GhostBatchNorm2d.forward` on K*C channels: statistics per part of the batch."""
        s = self.splits
        if x.shape[0] % s:
            raise ValueError(f"batch of {x.shape[0]} does not split into {s} parts")
        n, kc = x.shape[0] // s, self.k * self.c
        xs = x.reshape(s, n, *x.shape[1:]).transpose(0, 1).reshape(n, -1, *x.shape[2:])
        y = F.batch_norm(xs, None, None, w.repeat(s), b.repeat(s), True, 0.0, self.eps)
        if self.track:
            with torch.no_grad():
                xf = xs.float().transpose(0, 1).reshape(s, kc, -1)
                mean = xf.mean(dim=2).mean(dim=0)
                var = xf.var(dim=2, unbiased=True).mean(dim=0)
                self.num_batches_tracked.add_(1)
                m = self.momentum  # None: cumulative average, as GhostBatchNorm2d
                if m is None:
                    m = 1.0 / float(self.num_batches_tracked[0])
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var, alpha=m)
        return y.reshape(n, s, *x.shape[1:]).transpose(0, 1).reshape(x.shape)


class _PackedShortcutA(nn.Module):
    """Option A per group: stride-2 subsampling and zero channels on both sides of each
    seed's channels: (B, K*Cin, H, W) -> (B, K*Cout, H/s, W/s)."""

    def __init__(self, sc: ShortcutA, k: int) -> None:
        super().__init__()
        self.stride, self.pad, self.extra, self.k = sc.stride, sc.pad, sc.extra, k

    def forward(self, x: Tensor) -> Tensor:
        # Keep the input's memory format (channels_last on CUDA) for the residual addition.
        fmt = torch.channels_last if x.stride(1) == 1 < x.shape[1] else torch.contiguous_format
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        b, kc, h, w = x.shape
        x5 = x.reshape(b, self.k, kc // self.k, h, w)
        out = F.pad(x5, (0, 0, 0, 0, self.pad, self.extra)).reshape(b, -1, h, w)
        return out.contiguous(memory_format=fmt)


class _PackedBlock(nn.Module):
    def __init__(self, blocks: Sequence[BasicBlock]) -> None:
        super().__init__()
        k = len(blocks)
        self.conv1 = _PackedConv([b.conv1 for b in blocks])
        self.bn1 = _PackedBatchNorm([b.bn1 for b in blocks])
        self.conv2 = _PackedConv([b.conv2 for b in blocks])
        self.bn2 = _PackedBatchNorm([b.bn2 for b in blocks])
        self.residual = blocks[0].residual
        sc = blocks[0].shortcut
        self.shortcut: nn.Module = nn.Identity()
        if isinstance(sc, ShortcutA):
            self.shortcut = _PackedShortcutA(sc, k)
        elif isinstance(sc, nn.Sequential):  # projection: 1x1 conv + BN
            self.shortcut = nn.Sequential(
                _PackedConv([b.shortcut[0] for b in blocks]),
                _PackedBatchNorm([b.shortcut[1] for b in blocks]),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class PackedNet(nn.Module):
    """K `CifarResNet`s of one config as one network: input (B, K*3, H, W), group k of the
    channels being seed k's batch; output logits (K, B, classes).

    `nets[k]` owns seed k's parameters and (through views) its BN running statistics; see
    the module docstring. layout "grouped": grouped convolutions; "loop": each network on
    its own slice of the input (bitwise a lone network's forward).
    """

    def __init__(self, models: Sequence[CifarResNet], layout: str = "grouped") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}: allowed values are {LAYOUTS}")
        if not models:
            raise ValueError("pack_models needs at least one network")
        cfgs = {m.cfg for m in models}
        if len(cfgs) != 1 or not all(isinstance(m, CifarResNet) for m in models):
            raise ValueError("only CifarResNets of one RunConfig can be packed")
        self.nets = nn.ModuleList(models)
        self.cfg: RunConfig = models[0].cfg
        self.k, self.layout = len(models), layout
        if layout == "loop":
            return
        self.conv1 = _PackedConv([m.conv1 for m in models])
        self.bn1 = _PackedBatchNorm([m.bn1 for m in models])
        self.pool = models[0].pool  # parameter-free: Identity or MaxPool2d
        for i in (1, 2, 3):
            stages = [getattr(m, f"layer{i}") for m in models]
            blocks = [_PackedBlock(list(bs)) for bs in zip(*stages)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))

    def forward(self, x: Tensor) -> Tensor:
        if self.layout == "loop":
            c = x.shape[1] // self.k
            fmt = (
                torch.channels_last
                if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
                else torch.contiguous_format
            )
            return torch.stack(
                [
                    net(x[:, k * c : (k + 1) * c].contiguous(memory_format=fmt))
                    for k, net in enumerate(self.nets)
                ]
            )
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        out = self.layer3(self.layer2(self.layer1(out)))
        feats = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, K*64)
        feats = feats.reshape(feats.shape[0], self.k, -1).transpose(0, 1)  # (K, B, 64)
        w = torch.stack([n.linear.weight for n in self.nets])  # (K, classes, 64)
        b = torch.stack([n.linear.bias for n in self.nets])  # (K, classes)
        return torch.baddbmm(b.unsqueeze(1), feats, w.transpose(1, 2))  # (K, B, classes)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> PackedNet:
        # .to()/.cuda()/.float() move the seeds' buffers one by one, which breaks the views
        # into the packed buffers: rebuild those from the moved buffers.
        super()._apply(fn, recurse)
        for m in self.modules():
            if isinstance(m, _PackedBatchNorm):
                m.link()
        return self


def pack_models(models: Sequence[CifarResNet], layout: str = "grouped") -> PackedNet:
    """Pack K networks of one config (e.g. `build_model(cfg, seed=s)` for each seed, so the
    initialisation equals that of lone runs). The networks are used, not copied: their BN
    buffers become views of the packed buffers and they keep owning their parameters.
    Move them to their device and memory format before or after packing, as one wishes."""
    return PackedNet(models, layout)


def unpack_state_dicts(packed: PackedNet) -> list[dict[str, Tensor]]:
    """Each seed's normal-network state dict (weights and BN running statistics), as
    independent tensors (cloned: the live BN buffers are views of packed storage)."""
    return [{k: v.detach().clone() for k, v in net.state_dict().items()} for net in packed.nets]


def packed_param_groups(packed: PackedNet, cfg: RunConfig) -> list[dict[str, Any]]:
    """`train.param_groups` of each seed's network, tagged with "seed_index"; one SGD over
    them equals K lone optimisers (momentum and weight decay act elementwise)."""
    return [
        {**g, "seed_index": k} for k, net in enumerate(packed.nets) for g in param_groups(net, cfg)
    ]


def make_packed_optimizer(packed: PackedNet, cfg: RunConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        packed_param_groups(packed, cfg), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov
    )


def pack_inputs(xs: Sequence[Tensor]) -> Tensor:
    """K batches (B, 3, H, W) -> (B, K*3, H, W), the packed network's input."""
    return torch.cat(list(xs), dim=1)


def packed_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Per-seed mean cross-entropy (K,) of logits (K, B, classes) against y (K, B); each
    exactly `F.cross_entropy(logits[k], y[k])` as a lone run computes it."""
    return torch.stack([F.cross_entropy(logits[k], y[k]) for k in range(logits.shape[0])])


# ---------------------------------------------------------------------------------------
# per-seed optimiser state: what a lone run's optimiser would hold


def seed_optimizer(opt: torch.optim.SGD, net: nn.Module, k: int, cfg: RunConfig) -> torch.optim.SGD:
    """A lone `make_optimizer(net, cfg)` holding seed k's part of the packed `opt` (the
    same momentum tensors, not copies): its `state_dict()` is what a lone run saves."""
    lone = make_optimizer(net, cfg)
    groups = [g for g in opt.param_groups if g["seed_index"] == k]
    for lone_group, group in zip(lone.param_groups, groups):
        lone_group["lr"] = group["lr"]
    for p in net.parameters():
        if p in opt.state:
            lone.state[p] = opt.state[p]
    return lone


def load_seed_optimizer(
    opt: torch.optim.SGD, net: nn.Module, cfg: RunConfig, state_dict: dict[str, Any]
) -> None:
    """Load a lone optimiser's state dict (e.g. from `train.train`'s checkpoint) into the
    packed `opt` for the parameters of `net`."""
    lone = make_optimizer(net, cfg)
    lone.load_state_dict(state_dict)
    for p in net.parameters():
        if p in lone.state:
            opt.state[p] = lone.state[p]


# ---------------------------------------------------------------------------------------
# networks: compiled once per process, as train.prepare_model does for lone runs

_COMPILED_PACKS: dict[tuple[Any, ...], tuple[list[CifarResNet], PackedNet, nn.Module]] = {}


def prepare_pack(
    cfg: RunConfig,
    seeds: Sequence[int],
    num_classes: int,
    dev: torch.device,
    fmt: torch.memory_format,
    compile_mode: str,
    layout: str,
) -> tuple[PackedNet, nn.Module, list[nn.Module]]:
    """(packed network, its module to train through, each seed's module to train alone
    through). Seed k's network is `build_model(cfg, seed=seeds[k])`. "loop": each slot's
    network comes from `train.prepare_model` (compiled once per process per slot);
    "grouped": the packed network is compiled once per process per structure and K."""
    if layout == "loop":
        pairs = [
            prepare_model(cfg, num_classes, s, dev, fmt, compile_mode, slot=k)
            for k, s in enumerate(seeds)
        ]
        packed = pack_models([p[0] for p in pairs], "loop")
        return packed, packed, [p[1] for p in pairs]
    fresh = [build_model(cfg.replace(bn_eval="running"), num_classes, seed=s) for s in seeds]
    if compile_mode == "off":
        packed = pack_models([f.to(dev, memory_format=fmt) for f in fresh], "grouped")
        return packed, packed, list(packed.nets)
    key = (structure_key(fresh[0].cfg, num_classes), len(seeds), str(dev), str(fmt), compile_mode)
    if key not in _COMPILED_PACKS:
        packed = pack_models([f.to(dev, memory_format=fmt) for f in fresh], "grouped")
        mode = None if compile_mode == "default" else compile_mode
        _COMPILED_PACKS[key] = (
            list(packed.nets),
            packed,
            train_module.compile_fn(packed, mode=mode),
        )
    nets, packed, compiled = _COMPILED_PACKS[key]
    for net, f in zip(nets, fresh):
        net.load_state_dict(f.state_dict())  # in place: the packed buffers' views stay
        net.cfg = f.cfg
    packed.cfg = fresh[0].cfg
    return packed, compiled, list(nets)


# ---------------------------------------------------------------------------------------
# training


def train_packed(
    cfg: RunConfig,
    seeds: Sequence[int],
    *,
    data: Dataset | None = None,
    data_dir: str | os.PathLike | None = None,
    exec_options: ExecOptions | None = None,
    callbacks_per_seed: Sequence[Sequence[Callback]] | None = None,
    eval_variants: Sequence[RunConfig] = (),
    layout: str | None = None,
    models_out: list[nn.Module] | None = None,
    checkpoint_paths: Sequence[str | os.PathLike | None] | None = None,
    checkpoint_every: int = 1000,
) -> list[TrainResult]:
    """Train `cfg` once per seed, all seeds at once; result k is what `train.train(cfg,
    seeds[k], ...)` returns: same data order, augmentation, initialisation, learning rates
    (each seed ends the paper warm-up by itself), evaluation records and summary.

    callbacks_per_seed: one sequence of callbacks per seed (hooks as in `train.train`).
    layout: "grouped" or "loop" (see the module docstring); None: grouped on CUDA, loop
    elsewhere. A seed that diverges stops (status "diverged") while the others go on.
    checkpoint_paths: one path (or None) per seed. Seed k resumes from its checkpoint and
    writes it every `checkpoint_every` iterations in `train.train`'s format, so a packed
    run resumes a lone one and the other way round. Seeds resumed at different iterations
    catch up one by one (each alone) before they step together.
    wall_seconds: each seed's share of the time of the steps it took part in.
    models_out: if given, receives the K trained networks (seed k's lone-network form;
    in the grouped layout their BN buffers are views of packed storage:
    `unpack_state_dicts` copies them out).
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r}: need at least one seed, without repeats")
    kk = len(seeds)
    cbs = [list(c) for c in callbacks_per_seed] if callbacks_per_seed else [[] for _ in seeds]
    paths = list(checkpoint_paths) if checkpoint_paths is not None else [None] * kk
    for name, given in (("callbacks_per_seed", cbs), ("checkpoint_paths", paths)):
        if len(given) != kk:
            raise ValueError(f"{name} has {len(given)} entries for {kk} seeds")
    ex = exec_options or ExecOptions()
    dev, fmt = ex.setup()
    layout = layout or ("grouped" if dev.type == "cuda" else "loop")
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: allowed values are {LAYOUTS}")
    specs = eval_specs(cfg, eval_variants)
    data = data or load_for_config(cfg, data_dir)
    mean, std = normalization_stats(data.train_x, cfg.normalize)
    train_x, train_y = data.train_x.to(dev), data.train_y.to(dev)
    test = (data.test_x.to(dev), data.test_y.to(dev))
    streams = [BatchStream(train_x, train_y, cfg, s, mean, std, fmt) for s in seeds]
    evaluators = [Evaluator(cfg, s, specs, (train_x, train_y), test, mean, std, fmt) for s in seeds]
    packed, step_packed, step_nets = prepare_pack(
        cfg, seeds, data.num_classes, dev, fmt, ex.compile, layout
    )
    nets = list(packed.nets)
    opt = make_packed_optimizer(packed, cfg)
    states = []
    for k, s in enumerate(seeds):
        state = new_state(cfg)
        if (ck := resume_from(paths[k], cfg, s, dev)) is not None:
            nets[k].load_state_dict(ck["model"])
            load_seed_optimizer(opt, nets[k], cfg, ck["optimizer"])
            state = ck["state"]
        states.append(state)
    resumed = [st["iteration"] for st in states]
    its = list(resumed)
    for k, s in enumerate(seeds):
        for cb in cbs[k]:
            cb.on_start(cfg, s, resumed[k])
    results: list[TrainResult | None] = [None] * kk

    def finish(k: int, status: str, error: str | None) -> None:
        states[k]["iteration"] = its[k]
        wall = states[k]["wall"]
        results[k] = summarise(cfg, seeds[k], states[k], specs, status, error, wall, resumed[k])
        for cb in cbs[k]:
            cb.on_end(results[k])

    # Summed on the device per seed, flushed at each seed's own iterations (as train.train).
    pending = [st.get("pending", [0.0, 0.0]) for st in states]
    loss_acc = torch.tensor([p[0] for p in pending], device=dev)
    wrong_acc = torch.tensor([p[1] for p in pending], device=dev)
    lrs = [cfg.lr] * kk
    active = [k for k in range(kk) if its[k] < cfg.iterations]
    for k in set(range(kk)) - set(active):  # resumed from the checkpoint of a finished run
        finish(k, "finished", None)
    packed.train()
    last = time.perf_counter()
    with precision_flags(cfg):
        while active:
            low = min(its[k] for k in active)
            stepping = [k for k in active if its[k] == low]  # seeds behind catch up first
            for k in stepping:
                lrs[k] = learning_rate(cfg, its[k], states[k]["warming"])
            for group in opt.param_groups:
                group["lr"] = lrs[group["seed_index"]]
            batches = {k: streams[k].batch(its[k]) for k in stepping}
            opt.zero_grad(set_to_none=True)
            losses = torch.zeros(kk, device=dev)
            wrong = torch.zeros(kk, dtype=torch.int64, device=dev)
            if layout == "grouped" and len(stepping) == len(active):
                # Every seed of the pack in one forward; a diverged seed rides along with
                # a zero batch and no gradient: its weights stay as they were (its BN
                # running statistics do not, which only models_out would show).
                x0, y0 = batches[stepping[0]]
                xs = [batches[k][0] if k in batches else torch.zeros_like(x0) for k in range(kk)]
                yb = torch.stack([batches[k][1] if k in batches else y0 for k in range(kk)])
                with autocast(cfg, dev):
                    logits = step_packed(pack_inputs(xs).contiguous(memory_format=fmt))
                all_losses = packed_losses(logits.float(), yb)  # (K,)
                (all_losses if len(active) == kk else all_losses[active]).sum().backward()
                for k in set(range(kk)) - set(active):
                    for p in nets[k].parameters():
                        p.grad = None
                with torch.no_grad():
                    losses[active] = all_losses.detach()[active]
                    wrong[active] = (logits.argmax(2) != yb).sum(1)[active]
            else:  # one seed after the other: a lone run's kernels and activation memory
                for k in stepping:
                    xb, yb_k = batches[k]
                    with autocast(cfg, dev):
                        logits_k = step_nets[k](xb)
                    loss_k = F.cross_entropy(logits_k.float(), yb_k)
                    loss_k.backward()
                    with torch.no_grad():
                        losses[k] = loss_k.detach()
                        wrong[k] = (logits_k.argmax(1) != yb_k).sum()
            opt.step()
            with torch.no_grad():
                loss_acc += losses
                wrong_acc += wrong
            flush, evaluating = [], []
            for k in stepping:
                its[k] += 1
                st = states[k]
                st["acc"][2] += 1
                if st["warming"]:
                    warmup_step(st, 100.0 * wrong[k].item() / cfg.batch_size, its[k])
                for cb in cbs[k]:
                    cb.on_step(its[k], lrs[k])
                if its[k] % cfg.eval_every == 0 or its[k] == cfg.iterations:
                    evaluating.append(k)
                if its[k] % DIVERGENCE_CHECK == 0 or k in evaluating:
                    flush.append(k)
            if flush:
                host_loss, host_wrong = loss_acc.tolist(), wrong_acc.tolist()
                for k in flush:
                    st = states[k]
                    st["acc"][0] += host_loss[k]
                    st["acc"][1] += host_wrong[k] / cfg.batch_size
                    loss_acc[k] = 0.0
                    wrong_acc[k] = 0.0
                    if not math.isfinite(st["acc"][0]):
                        active.remove(k)
                        stepping.remove(k)
                        finish(k, "diverged", f"non-finite training loss by iteration {its[k]}")
            for k in stepping:
                if k in evaluating:
                    rec = evaluators[k](nets[k], states[k], its[k], lrs[k])
                    for cb in cbs[k]:
                        cb.on_eval(its[k], rec)
                states[k]["iteration"] = its[k]
            now = time.perf_counter()
            for k in stepping:
                states[k]["wall"] += (now - last) / len(stepping)
            last = now
            for k in stepping:
                done = its[k] == cfg.iterations
                if paths[k] and (its[k] % checkpoint_every == 0 or done):
                    st = states[k]
                    st["pending"] = [loss_acc[k].item(), wrong_acc[k].item()]
                    model_state = {n: t.detach().clone() for n, t in nets[k].state_dict().items()}
                    optimizer = seed_optimizer(opt, nets[k], k, cfg).state_dict()
                    ck = checkpoint_state(cfg, seeds[k], model_state, optimizer, st)
                    save_checkpoint(paths[k], ck)
                if done:
                    active.remove(k)
                    finish(k, "finished", None)
    if models_out is not None:
        models_out.extend(nets)
    return [r for r in results if r is not None]
