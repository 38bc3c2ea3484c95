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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_repro.config import RunConfig
from resnet_repro.data import Dataset, load_for_config, normalization_stats
from resnet_repro.models import BasicBlock, CifarResNet, ShortcutA, build_model
from resnet_repro.train import (
    DIVERGENCE_CHECK,
    PRECISE_BN_BATCHES,
    BatchStream,
    Callback,
    ExecOptions,
    TrainResult,
    _empty_curves,
    _epoch_seed,
    _summarise,
    _warmup_step,
    autocast,
    evaluate,
    learning_rate,
    param_groups,
    precision_flags,
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
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var, alpha=m)
                self.num_batches_tracked.add_(1)
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
) -> list[TrainResult]:
    """Train `cfg` once per seed, all seeds at once; result k is what `train.train(cfg,
    seeds[k], ...)` returns: same data order, augmentation, initialisation, learning rates
    (each seed ends the paper warm-up by itself), evaluation records and summary.

    callbacks_per_seed: one sequence of callbacks per seed (hooks as in `train.train`).
    layout: "grouped" or "loop" (see the module docstring); None: grouped on CUDA, loop
    elsewhere. A seed that diverges stops (status "diverged") while the others go on.
    wall_seconds of each result is its share of the packed run: elapsed time / K.
    models_out: if given, receives the K trained networks (seed k's lone-network form;
    their BN buffers are views of packed storage: `unpack_state_dicts` copies them out).
    No checkpoints: a packed run that is killed starts again from scratch.
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r}: need at least one seed, without repeats")
    kk = len(seeds)
    cbs = [list(c) for c in callbacks_per_seed] if callbacks_per_seed else [[] for _ in seeds]
    if len(cbs) != kk:
        raise ValueError(f"callbacks_per_seed has {len(cbs)} entries for {kk} seeds")
    ex = exec_options or ExecOptions()
    if ex.num_threads:
        torch.set_num_threads(ex.num_threads)
    dev = torch.device(ex.device)
    if dev.type == "cuda" and ex.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    fmt = (
        torch.channels_last
        if (ex.channels_last or (ex.channels_last is None and dev.type == "cuda"))
        else torch.contiguous_format
    )
    for v in eval_variants:
        if v.train_hash != cfg.train_hash:
            raise ValueError(
                f"eval variant {v.config_hash[:10]} differs from the run in training fields"
            )
    data = data or load_for_config(cfg, data_dir)
    mean, std = normalization_stats(data.train_x, cfg.normalize)
    train_x, train_y = data.train_x.to(dev), data.train_y.to(dev)
    test_x, test_y = data.test_x.to(dev), data.test_y.to(dev)
    streams = [BatchStream(train_x, train_y, cfg, s, mean, std, fmt) for s in seeds]

    # As train.train: the networks keep running statistics whatever bn_eval says.
    nets = [
        build_model(cfg.replace(bn_eval="running"), data.num_classes, seed=s).to(
            dev, memory_format=fmt
        )
        for s in seeds
    ]
    packed = pack_models(nets, layout or ("grouped" if dev.type == "cuda" else "loop"))
    opt = make_packed_optimizer(packed, cfg)
    compile_ = (
        (lambda m: torch.compile(m, mode=None if ex.compile == "default" else ex.compile))
        if ex.compile != "off"
        else (lambda m: m)
    )
    step_model = compile_(packed) if packed.layout == "grouped" else packed
    step_nets = [compile_(net) for net in nets] if packed.layout == "loop" else nets
    specs = [cfg, *[v for v in eval_variants if v.config_hash != cfg.config_hash]]
    states = [
        {
            "iteration": 0,
            "curves": _empty_curves(),
            "warming": cfg.warmup == "paper",
            "warmup_end": None,
            "window": [],
            "acc": [0.0, 0.0, 0],
            "wall": 0.0,
        }
        for _ in seeds
    ]
    results: list[TrainResult | None] = [None] * kk
    active = list(range(kk))
    for k, s in enumerate(seeds):
        for cb in cbs[k]:
            cb.on_start(cfg, s, 0)

    def finish(k: int, status: str, error: str | None) -> None:
        states[k]["iteration"] = it
        wall = (time.perf_counter() - t0) / kk
        results[k] = _summarise(cfg, seeds[k], states[k], specs, status, error, wall, 0)
        for cb in cbs[k]:
            cb.on_end(results[k])

    def precise_batches(k: int) -> Iterator[Tensor]:
        # As train.train: a stream of its own, PRECISE_BN_BATCHES batches at most one epoch.
        pstream = BatchStream(
            train_x, train_y, cfg, _epoch_seed(seeds[k], 0, "precise"), mean, std, fmt
        )
        n = min(PRECISE_BN_BATCHES, max(1, pstream.n // cfg.batch_size))
        return (pstream.batch(i)[0] for i in range(n))

    def run_eval(k: int, it: int, lr: float) -> None:
        # train.train's run_eval on seed k's network (nets[k] is the lone network).
        state = states[k]
        acc = state["acc"]
        rec = {
            "iteration": it,
            "lr": lr,
            "train_error": 100.0 * acc[1] / acc[2] if acc[2] else math.nan,
            "train_loss": acc[0] / acc[2] if acc[2] else math.nan,
        }
        state["acc"] = [0.0, 0.0, 0]
        for spec in specs:
            order = None
            if spec.eval_shuffle:
                g = torch.Generator().manual_seed(_epoch_seed(seeds[k], 0, "eval_order"))
                order = torch.randperm(test_x.shape[0], generator=g)
            err, loss = evaluate(
                nets[k],
                test_x,
                test_y,
                mean=mean,
                std=std,
                bn_eval=spec.bn_eval,
                batch_size=spec.eval_batch_size,
                order=order,
                precise_batches=lambda: precise_batches(k),
                cfg=cfg,
                memory_format=fmt,
            )
            key = "" if spec is cfg else f"{spec.config_hash}:"
            rec[f"{key}test_error"], rec[f"{key}test_loss"] = err, loss
        for name, v in rec.items():
            state["curves"].setdefault(name, []).append(v)
        for cb in cbs[k]:
            cb.on_eval(it, rec)

    t0 = time.perf_counter()
    it = 0
    lrs = [cfg.lr] * kk
    loss_acc = torch.zeros(kk, device=dev)  # per seed, summed on the device
    wrong_acc = torch.zeros(kk, device=dev)
    packed.train()
    with precision_flags(cfg):
        while it < cfg.iterations and active:
            lrs = [learning_rate(cfg, it, st["warming"]) for st in states]
            for group in opt.param_groups:
                group["lr"] = lrs[group["seed_index"]]
            batches = [st.batch(it) for st in streams]
            yb = torch.stack([b[1] for b in batches])  # (K, B)
            opt.zero_grad(set_to_none=True)
            if packed.layout == "grouped":
                xb = pack_inputs([b[0] for b in batches]).contiguous(memory_format=fmt)
                with autocast(cfg, dev):
                    logits = step_model(xb)  # (K, B, classes)
                losses = packed_losses(logits.float(), yb)  # (K,)
                (losses if len(active) == kk else losses[active]).sum().backward()
                for k in set(range(kk)) - set(active):  # a diverged seed stays as it was
                    for p in nets[k].parameters():
                        p.grad = None
                with torch.no_grad():
                    wrong = (logits.argmax(2) != yb).sum(1)  # (K,)
            else:  # one seed after the other: a lone run's activation memory, its kernels
                losses = torch.zeros(kk, device=dev)
                wrong = torch.zeros(kk, dtype=torch.int64, device=dev)
                for k in active:
                    with autocast(cfg, dev):
                        logits_k = step_nets[k](batches[k][0])
                    loss_k = F.cross_entropy(logits_k.float(), yb[k])
                    loss_k.backward()
                    with torch.no_grad():
                        losses[k] = loss_k.detach()
                        wrong[k] = (logits_k.argmax(1) != yb[k]).sum()
            opt.step()
            it += 1
            with torch.no_grad():
                loss_acc += losses.detach()
                wrong_acc += wrong
            for k in active:
                st = states[k]
                st["acc"][2] += 1
                if st["warming"]:
                    _warmup_step(st, 100.0 * wrong[k].item() / cfg.batch_size, it)
                for cb in cbs[k]:
                    cb.on_step(it, lrs[k])
            evaluating = it % cfg.eval_every == 0 or it == cfg.iterations
            if it % DIVERGENCE_CHECK == 0 or evaluating:
                host_loss, host_wrong = loss_acc.tolist(), wrong_acc.tolist()
                loss_acc.zero_()
                wrong_acc.zero_()
                for k in list(active):
                    st = states[k]
                    st["acc"][0] += host_loss[k]
                    st["acc"][1] += host_wrong[k] / cfg.batch_size
                    if not math.isfinite(st["acc"][0]):
                        active.remove(k)
                        finish(k, "diverged", f"non-finite training loss by iteration {it}")
            if evaluating:
                for k in active:
                    run_eval(k, it, lrs[k])
            for k in active:
                states[k]["iteration"] = it
    for k in active:
        finish(k, "finished", None)
    if models_out is not None:
        models_out.extend(nets)
    return [r for r in results if r is not None]
