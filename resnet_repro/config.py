"""RunConfig: one frozen dataclass holding every switch of a CIFAR ResNet run.

Defaults are the protocol of He et al. 2015, "Deep Residual Learning for Image
Recognition" (arXiv:1512.03385), section 4.2. Each field's comment names the paper's
value and who uses the alternatives. Variants are made with `dataclasses.replace`;
`config_hash` and `run_id` identify a run. Execution settings that do not change what a
number means (device, compile, workers, data dir, logging) are not fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

ARCHS = ("resnet", "plain")
SHORTCUTS = ("A", "B", "C")
INITS = ("kaiming_fan_out", "kaiming_fan_in", "torch_default")
BN_EVALS = ("running", "batch", "precise")
BN_SPLITS = (1, 2)
CROPS = ("pad_zero", "pad_black", "pad_reflect", "resized", "none")
NORMALIZES = ("pixel_mean", "channel_std", "imagenet", "none")
TRAIN_SIZES = (50000, 45000)
WARMUPS = ("none", "paper", "fixed")
PRECISIONS = ("fp32", "tf32", "bf16")
DATASETS = ("cifar10", "fashion_mnist", "synthetic")
PAPER_DEPTHS = (20, 32, 44, 56, 110, 1202)

# Fields that change only how a trained network is evaluated: variants that differ only in
# these share one training run (see `train_hash`).
EVAL_FIELDS = ("bn_eval", "eval_batch_size", "eval_shuffle")


@dataclass(frozen=True)
class RunConfig:
    """Every switch of one training run. Defaults: He et al. 2015, section 4.2."""

    # --- network -----------------------------------------------------------------------
    # "resnet": the paper's residual nets; "plain": the same stack without shortcuts (Fig. 6).
    arch: str = "resnet"
    # 6n+2 weighted layers; the paper uses 20/32/44/56/110/1202 (Table 6).
    depth: int = 20
    # "A": identity, stride-2 subsampling plus zero channels added evenly on both sides
    # (paper's CIFAR choice; the layout common public checkpoints expect). "B": 1x1
    # projection where the shape changes (paper's ImageNet option B); "C": projection on
    # every block (ImageNet option C).
    shortcut: str = "A"
    # Paper: no pooling after the 3x3 stem. True adds a 3x3/2 max-pool, as ImageNet ResNets
    # and some re-implementations do (one suspected cause of the reproduction gap).
    stem_pool: bool = False
    # Paper: He init ("Delving deep into rectifiers"); Caffe's MSRA filler uses fan_out.
    # "kaiming_fan_in" is what most PyTorch reproductions call; "torch_default" is
    # PyTorch's kaiming_uniform(a=sqrt(5)) with no re-initialisation.
    init: str = "kaiming_fan_out"

    # --- batch normalisation -------------------------------------------------------------
    # Running-average momentum in the PyTorch convention (new = (1-m)*old + m*batch).
    # PyTorch's default 0.1; Caffe's moving_average_fraction 0.999 corresponds to 0.001.
    bn_momentum: float = 0.1
    # "running": eval with the moving averages (PyTorch default). "batch": no running stats;
    # each test batch is normalised with its own statistics. "precise": population
    # statistics recomputed over training batches after training (the authors' ImageNet
    # notes; Caffe's BN averaged over a large batch).
    bn_eval: str = "running"
    # 1: statistics over the whole batch of 128. 2: per half batch, as on the paper's two
    # GPUs with per-GPU BN (not stated in the paper).
    bn_split: int = 1

    # --- data and augmentation -------------------------------------------------------------
    # "pad_zero": pad the normalised input with 0, i.e. with the mean (Caffe-style after
    # mean subtraction). "pad_black": pad raw pixels with 0 before normalising
    # (torchvision RandomCrop(32, padding=4), most PyTorch reproductions). "pad_reflect":
    # reflection padding. "resized": random resized crop. "none": no crop.
    crop: str = "pad_zero"
    # Paper: 4 pixels on each side (following Deeply-Supervised Nets).
    crop_pad: int = 4
    # Paper: random horizontal flip with probability 0.5.
    flip: bool = True
    # Paper: per-pixel mean subtracted, no std division ("pixel_mean"). "channel_std":
    # per-channel mean/std; "imagenet": ImageNet mean/std (a widely used reproduction);
    # "none": pixels scaled to [0, 1] only.
    normalize: str = "pixel_mean"
    # Paper: 50k train (the 45k/5k split chose the 64k stop). 45000 holds out the last 5k.
    train_size: int = 50000
    # 0: the whole split. N > 0: the first N training images and the first
    # max(N // 4, 128) test images; only the smoke budget uses it.
    subset: int = 0
    # "cifar10": the paper. "fashion_mnist": real data for CPU-sized runs. "synthetic":
    # deterministic CIFAR-shaped data for tests and demos.
    dataset: str = "cifar10"

    # --- optimisation ----------------------------------------------------------------------
    batch_size: int = 128  # Paper: 128 on two GPUs.
    lr: float = 0.1  # Paper: 0.1, divided by 10 at the milestones.
    momentum: float = 0.9  # Paper: 0.9.
    nesterov: bool = False  # Paper: plain momentum; one Torch reproduction used Nesterov.
    weight_decay: float = 1e-4  # Paper: 1e-4.
    # Paper/Caffe: decay on every parameter. False: no decay on BN parameters and biases.
    decay_bn: bool = True
    iterations: int = 64000  # Paper: stop at 64k iterations (~164 epochs on 50k).
    milestones: tuple[int, ...] = (32000, 48000)  # Paper: lr / 10 at 32k and 48k.
    # "none": base lr from the start. "paper": lr 0.01 until the running training error is
    # below 80%, then the base lr (paper's ResNet-110). "fixed": 0.01 for warmup_iters.
    warmup: str = "none"
    warmup_iters: int = 400  # Paper: "about 400 iterations" for ResNet-110.
    # "fp32": exact. "tf32": TF32 matmuls/convs on Ampere+. "bf16": autocast to bfloat16.
    precision: str = "fp32"

    # --- evaluation (eval-only fields: see EVAL_FIELDS) -----------------------------------
    # Test images per evaluation batch; matters when bn_eval="batch".
    eval_batch_size: int = 128
    # False: test images in their stored order. True: shuffled once per run (seeded by the
    # run's seed); matters when bn_eval="batch" (class-sorted batches bias batch statistics).
    eval_shuffle: bool = False
    # Evaluate every this many iterations (391 = one epoch of 50k at batch 128).
    eval_every: int = 391

    def __post_init__(self) -> None:
        ms = self.milestones
        if not isinstance(ms, (tuple, list)) or not all(
            isinstance(m, int) and not isinstance(m, bool) for m in ms
        ):
            raise ValueError(
                f"milestones={ms!r}: allowed values are a tuple of increasing integer "
                "iterations, e.g. (32000, 48000)"
            )
        object.__setattr__(self, "milestones", tuple(ms))
        for name in ("bn_momentum", "lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{name}={value!r}: allowed values are finite numbers")
        _choice("arch", self.arch, ARCHS)
        _choice("shortcut", self.shortcut, SHORTCUTS)
        _choice("init", self.init, INITS)
        _choice("bn_eval", self.bn_eval, BN_EVALS)
        _choice("bn_split", self.bn_split, BN_SPLITS)
        _choice("crop", self.crop, CROPS)
        _choice("normalize", self.normalize, NORMALIZES)
        _choice("train_size", self.train_size, TRAIN_SIZES)
        _choice("warmup", self.warmup, WARMUPS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("dataset", self.dataset, DATASETS)
        for name in ("stem_pool", "flip", "nesterov", "decay_bn", "eval_shuffle"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: allowed values are True, False")
        if not isinstance(self.depth, int) or self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(
                f"depth={self.depth!r}: allowed values are 6n+2 >= 8 "
                f"(the paper uses {', '.join(map(str, PAPER_DEPTHS))})"
            )
        if not 0.0 < self.bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum={self.bn_momentum!r}: allowed values are in (0, 1]")
        _positive_int("crop_pad", self.crop_pad, allow_zero=True)
        _positive_int("subset", self.subset, allow_zero=True)
        _positive_int("batch_size", self.batch_size)
        _positive_int("iterations", self.iterations)
        _positive_int("warmup_iters", self.warmup_iters, allow_zero=True)
        _positive_int("eval_batch_size", self.eval_batch_size)
        _positive_int("eval_every", self.eval_every)
        if self.bn_split > 1 and self.batch_size % self.bn_split:
            raise ValueError(
                f"batch_size={self.batch_size} with bn_split={self.bn_split}: "
                "allowed batch sizes are multiples of bn_split"
            )
        for name in ("lr", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: allowed values are >= 0")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum={self.momentum!r}: allowed values are in [0, 1)")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0: allowed momentum is in (0, 1)")
        if list(self.milestones) != sorted(self.milestones) or any(
            not 0 < m < self.iterations for m in self.milestones
        ):
            raise ValueError(
                f"milestones={self.milestones!r}: allowed values are increasing iterations "
                f"strictly between 0 and iterations={self.iterations}"
            )

    # --- identity ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-compatible values (milestones as a list)."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }

    @property
    def config_hash(self) -> str:
        """sha1 of the sorted-JSON field values: stable across processes and machines."""
        return _sha1(self.to_dict())

    @property
    def train_hash(self) -> str:
        """Hash of the fields that shape training: equal for variants that differ only in
        how the trained network is evaluated (EVAL_FIELDS)."""
        return _sha1({k: v for k, v in self.to_dict().items() if k not in EVAL_FIELDS})

    def run_id(self, seed: int) -> str:
        return f"{self.config_hash[:10]}-s{seed}"

    def train_id(self, seed: int) -> str:
        return f"{self.train_hash[:10]}-s{seed}"

    def replace(self, **overrides: Any) -> RunConfig:
        """`dataclasses.replace` that names unknown fields and the allowed ones."""
        unknown = sorted(set(overrides) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown fields {unknown}: allowed are {field_names()}")
        return dataclasses.replace(self, **overrides)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of `to_dict`; unknown keys raise ValueError."""
    return RunConfig().replace(**d)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `field=value` (as given to `--set`) into a typed pair; errors name the field."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected field=value with field one of {field_names()}")
    name, raw = (s.strip() for s in text.split("=", 1))
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    if name not in fields:
        raise ValueError(f"unknown field {name!r}: allowed are {field_names()}")
    default = getattr(RunConfig(), name)
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            value: Any = raw.lower() in ("true", "1")
        elif isinstance(default, int):
            value = int(raw)
        elif isinstance(default, float):
            value = float(raw)
        elif isinstance(default, tuple):
            value = tuple(int(x) for x in raw.strip("()[]").split(",") if x.strip())
        else:
            value = raw
    except ValueError:
        raise ValueError(
            f"--set {name}={raw!r}: expected a value of type {type(default).__name__}"
        ) from None
    return name, value


# Budgets scale iterations and milestones together (and eval_every and warmup_iters with
# them, so each keeps its fraction of the run).
BUDGETS: dict[str, dict[str, Any]] = {
    "paper": {"scale": 1.0},  # 64k iterations, lr drops at 32k and 48k.
    "short": {"scale": 0.25},  # 16k iterations, drops at 8k and 12k.
    # A CPU-sized run (~15 s for ResNet-20 on 2 cores): 150 iterations of batch 32 on the
    # first 2,048 training images, tested on 512 (max(N // 4, 128)), evaluated every 50
    # iterations. The lr scales with the batch (linear scaling rule, Goyal et al. 2017):
    # 0.1 at 128 -> 0.025 at 32; at 0.1 most smoke runs of ResNet-20 barely learn.
    "smoke": {"iterations": 150, "batch_size": 32, "subset": 2048, "eval_every": 50},
}


def apply_budget(cfg: RunConfig, budget: str) -> RunConfig:
    """Scale `cfg` (written for the paper budget) to `budget`: iterations, milestones,
    eval_every and warmup_iters keep their fractions of the run; where the budget sets
    another batch size, the lr keeps its ratio to the batch size."""
    _choice("budget", budget, tuple(BUDGETS))
    spec = dict(BUDGETS[budget])
    scale = spec.pop("scale", None)
    iterations = max(1, round(cfg.iterations * scale)) if scale else spec.pop("iterations")
    f = iterations / cfg.iterations
    extra: dict[str, Any] = {
        "eval_every": max(1, round(cfg.eval_every * f)),
        "warmup_iters": max(1, round(cfg.warmup_iters * f)) if cfg.warmup_iters else 0,
        **spec,
    }
    if "batch_size" in spec:  # linear scaling rule: keep lr / batch size
        extra["lr"] = cfg.lr * spec["batch_size"] / cfg.batch_size
    milestones = tuple(sorted({min(iterations - 1, max(1, round(m * f))) for m in cfg.milestones}))
    if iterations < 2:
        milestones = ()
    return cfg.replace(iterations=iterations, milestones=milestones, **extra)


def _sha1(d: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed or type(value) is not type(allowed[0]):
        raise ValueError(
            f"{name}={value!r}: allowed values are {', '.join(repr(a) for a in allowed)}"
        )


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r}: allowed values are integers >= {low}")
