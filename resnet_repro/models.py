"""CIFAR ResNets and plain nets of He et al. 2015, section 4.2, built from a RunConfig.

Network (arXiv:1512.03385, sec. 4.2): a 3x3 conv stem with 16 filters, three stages of n
blocks (two 3x3 convs each) on 32/16/8 maps with 16/32/64 filters, subsampling by
stride-2 convs, global average pooling and a 10-way linear layer: 6n+2 weighted layers.
BN follows every conv; the second ReLU comes after the addition.

Variants (RunConfig fields):
- arch "plain": the same stack without shortcuts (equal parameters to option A).
- shortcut "A": identity; where the width doubles, stride-2 subsampling and zero channels
  added evenly on both sides (the layout of common public CIFAR checkpoints);
  "B": 1x1 conv + BN projection where the shape changes; "C": projection on every block.
- stem_pool: 3x3 stride-2 max-pool after the stem.
- init: He init with fan_out (Caffe's MSRA filler) or fan_in, or PyTorch's default.
- bn_momentum, bn_eval ("batch": no running statistics), bn_split (ghost BN statistics
  per part of the batch, as per-GPU BN on two GPUs).

Module names follow the public layout (conv1, bn1, layer1..layer3, linear) so such state
dicts load directly. Models are also registered with timm as `cifar_resnet{depth}` and
`cifar_plain{depth}`.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_repro.config import PAPER_DEPTHS, RunConfig, field_names


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per part of the batch.

    With `splits` = 2 a batch of 128 is normalised as two batches of 64, as BN does on
    each of two GPUs without synchronisation. The running averages are updated once per
    step with the mean of the parts' statistics.
    """

    def __init__(self, num_features: int, splits: int = 1, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.splits = splits

    def forward(self, x: Tensor) -> Tensor:
        if self.splits == 1 or not self.training:
            return super().forward(x)
        if x.shape[0] % self.splits:
            raise ValueError(f"batch of {x.shape[0]} does not split into {self.splits} parts")
        n = x.shape[0] // self.splits
        # (splits*n, C, H, W) -> (n, splits*C, H, W): one batch_norm call, per-part stats.
        xs = x.reshape(self.splits, n, *x.shape[1:]).transpose(0, 1).reshape(n, -1, *x.shape[2:])
        w = self.weight.repeat(self.splits) if self.weight is not None else None
        b = self.bias.repeat(self.splits) if self.bias is not None else None
        y = F.batch_norm(xs, None, None, w, b, True, 0.0, self.eps)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                xf = xs.float().transpose(0, 1).reshape(self.splits, self.num_features, -1)
                mean = xf.mean(dim=2).mean(dim=0)
                var = xf.var(dim=2, unbiased=True).mean(dim=0)
                self.num_batches_tracked.add_(1)
                # momentum None: cumulative average, as nn.BatchNorm2d ("precise" BN)
                m = self.momentum
                if m is None:
                    m = 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var, alpha=m)
        return y.reshape(n, self.splits, *x.shape[1:]).transpose(0, 1).reshape(x.shape)


def _bn(cfg: RunConfig, channels: int) -> GhostBatchNorm2d:
    return GhostBatchNorm2d(
        channels,
        splits=cfg.bn_split,
        momentum=cfg.bn_momentum,
        track_running_stats=cfg.bn_eval != "batch",
    )


class ShortcutA(nn.Module):
    """Option A: stride-2 subsampling and zero channels, half on each side."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = (planes - in_planes) // 2
        self.extra = planes - in_planes - self.pad

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.extra))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; ReLU after the first and after the (optional) addition."""

    def __init__(self, cfg: RunConfig, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(cfg, planes)
        self.residual = cfg.arch == "resnet"
        changes = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = nn.Identity()
        if self.residual and (cfg.shortcut == "C" or (cfg.shortcut == "B" and changes)):
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), _bn(cfg, planes)
            )
        elif self.residual and changes:
            self.shortcut = ShortcutA(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """ResNet / plain net for 32x32 inputs, 6n+2 layers. See the module docstring."""

    def __init__(self, cfg: RunConfig, num_classes: int = 10) -> None:
        super().__init__()
        self.cfg = cfg
        n = (cfg.depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = _bn(cfg, 16)
        self.pool = nn.MaxPool2d(3, 2, 1) if cfg.stem_pool else nn.Identity()
        widths = (16, 32, 64)
        in_planes = 16
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cfg, in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        init_weights(self, cfg.init)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def init_weights(model: nn.Module, mode: str) -> None:
    """He init (fan_out: Caffe's MSRA filler; fan_in: PyTorch reproductions) for conv and
    linear weights, zero linear bias, BN weight 1 and bias 0; "torch_default" keeps
    PyTorch's own initialisation."""
    if mode == "torch_default":
        return
    fan = "fan_out" if mode == "kaiming_fan_out" else "fan_in"
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode=fan, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(cfg: RunConfig, num_classes: int = 10, seed: int | None = None) -> CifarResNet:
    """The network `cfg` describes; with `seed`, its initialisation is fixed by that seed
    alone (the global RNG is left as it was)."""
    if seed is None:
        return CifarResNet(cfg, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CifarResNet(cfg, num_classes)


# RunConfig fields that shape the network's modules; the others set its initial weights
# (init) or do not touch it at all.
STRUCTURE_FIELDS = ("arch", "depth", "shortcut", "stem_pool", "bn_momentum", "bn_eval", "bn_split")


def structure_key(cfg: RunConfig, num_classes: int = 10) -> tuple:
    """Equal for configs whose networks have the same modules, buffers and forward."""
    return (*(getattr(cfg, f) for f in STRUCTURE_FIELDS), num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def batchnorms(model: nn.Module) -> Iterator[nn.BatchNorm2d]:
    return (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every BN normalises with the statistics of the batch it is given
    and updates nothing (the "batch" evaluation mode on a model that has running stats)."""
    saved = []
    for bn in batchnorms(model):
        saved.append((bn, bn.running_mean, bn.running_var))
        bn.running_mean, bn.running_var = None, None
    try:
        yield model
    finally:
        for bn, mean, var in saved:
            bn.running_mean, bn.running_var = mean, var


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, batches: Iterator[Tensor]) -> int:
    """Replace every BN's running statistics with population statistics over `batches`
    (cumulative average, the "precise" evaluation mode). Returns the images seen."""
    bns = list(batchnorms(model))
    saved = [(bn.momentum, bn.training) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: equal weight per batch
    was_training = model.training
    model.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += x.shape[0]
    finally:
        for bn, (momentum, _) in zip(bns, saved):
            bn.momentum = momentum
        model.train(was_training)
    return seen


def forward_macs(cfg: RunConfig, image_size: int = 32) -> int:
    """Multiply-accumulates of one forward pass of one image through convs and the linear
    layer (40.6M for ResNet-20; REFERENCE.md). A training step costs about 3x this."""
    model = build_model(cfg.replace(bn_eval="running"))
    total = 0

    def hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    for h in handles:
        h.remove()
    return total


# ---------------------------------------------------------------------------------------
# timm registration: timm.create_model("cifar_resnet56", shortcut="B").
_TIMM_IGNORED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _timm_entry(arch: str, depth: int):
    def entry(pretrained: bool = False, **kwargs) -> CifarResNet:
        if pretrained:
            raise ValueError(f"cifar_{arch}{depth}: no pretrained weights are published here")
        for k in _TIMM_IGNORED:
            kwargs.pop(k, None)
        num_classes = kwargs.pop("num_classes", 10)
        unknown = sorted(set(kwargs) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown fields {unknown}: allowed are {field_names()}")
        return build_model(RunConfig(arch=arch, depth=depth, **kwargs), num_classes)

    entry.__name__ = f"cifar_{arch}{depth}"
    entry.__qualname__ = entry.__name__
    entry.__doc__ = f"{arch} with {depth} layers (He et al. 2015, sec. 4.2); kwargs: RunConfig."
    entry.__module__ = __name__
    return entry


TIMM_MODELS: dict[str, tuple[str, int]] = {
    f"cifar_{arch}{depth}": (arch, depth) for arch in ("resnet", "plain") for depth in PAPER_DEPTHS
}
TIMM_NAMES: list[str] = list(TIMM_MODELS)


def register_timm_models() -> None:
    """Register every `cifar_{resnet,plain}{depth}` entry point with timm (idempotent)."""
    from timm.models import register_model
    from timm.models._registry import _model_entrypoints

    for name, (arch, depth) in TIMM_MODELS.items():
        if name in _model_entrypoints:
            continue  # registered already (timm replaces silently: never twice)
        globals()[name] = register_model(_timm_entry(arch, depth))


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    """Importing timm costs seconds (it imports torchvision.models); workers never need
    it. So the entry points are registered the moment anything imports timm."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib protocol
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module) -> None:  # noqa: ANN001
            exec_module(module)
            register_timm_models()

        spec.loader.exec_module = exec_and_register  # type: ignore[method-assign]
        return spec


if "timm" in sys.modules:
    register_timm_models()
elif not any(isinstance(f, _RegisterWhenTimmLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenTimmLoads())
