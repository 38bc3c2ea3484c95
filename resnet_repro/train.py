"""Training and evaluation of one run: `train(cfg, seed, ...) -> TrainResult`.

Protocol (He et al. 2015, sec. 4.2): SGD with momentum 0.9 and weight decay 1e-4 at batch
128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k; ResNet-110 warms up at
lr 0.01 until the training error is below 80%. The schedule is per iteration, as in Caffe.

Data flows as a stream, as Caffe's data layer does: the training set is permuted afresh
each epoch and batch k holds stream positions [k*B, (k+1)*B), so every batch has B images
and a batch may straddle two epochs. Each epoch is augmented at once on the device
(`augment.augment`); its permutation and augmentation depend only on (seed, epoch), so a
run resumed at any iteration sees exactly the batches of a run never interrupted.

Seed s fixes initialisation, data order and augmentation: variants trained with the same
seed are paired. Every evaluation records the test error of the configured BN mode (and
of any eval-only variants passed as `eval_variants`), and the training error and loss
averaged over the iterations since the previous evaluation (Figure 6's dashed curves).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_repro.augment import augment, normalize
from resnet_repro.config import RunConfig, from_dict
from resnet_repro.data import Dataset, load_for_config, normalization_stats
from resnet_repro.models import (
    batch_statistics,
    build_model,
    recompute_bn_statistics,
    structure_key,
)

WARMUP_LR = 0.01  # Paper: ResNet-110 starts at 0.01.
LR_DROP = 0.1  # Paper: the lr is divided by 10 at each milestone.
WARMUP_ERROR = 80.0  # Paper: until the training error is below 80%.
WARMUP_WINDOW = 50  # iterations averaged for the "running training error" (not stated)
PRECISE_BN_BATCHES = 100  # training batches for "precise" BN statistics (12,800 images)
DIVERGENCE_CHECK = 25  # iterations between host-side checks for a non-finite loss
# torch.compile modes; "reduce-overhead" adds CUDA graphs (every training batch has the
# same shape: the stream never yields a short batch).
COMPILE_MODES = ("off", "default", "max-autotune", "reduce-overhead")


@dataclass
class ExecOptions:
    """How a run executes; nothing here changes what its numbers mean (not hashed)."""

    device: str = "cpu"
    channels_last: bool | None = None  # None: on for CUDA, off on CPU
    compile: str = "off"  # "off", "default", "max-autotune", "reduce-overhead"
    deterministic: bool = False  # torch.use_deterministic_algorithms on CUDA
    num_threads: int | None = None  # CPU threads for this process

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile={self.compile!r}: allowed values are {COMPILE_MODES}")

    def memory_format(self, dev: torch.device) -> torch.memory_format:
        on = self.channels_last if self.channels_last is not None else dev.type == "cuda"
        return torch.channels_last if on else torch.contiguous_format

    def setup(self) -> tuple[torch.device, torch.memory_format]:
        """Apply the process-wide settings (threads, deterministic kernels); returns the
        device and the memory format of activations."""
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        dev = torch.device(self.device)
        if dev.type == "cuda" and self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        return dev, self.memory_format(dev)


class Callback:
    """Hooks into `train`; override what you need. Every method is optional."""

    def on_start(self, cfg: RunConfig, seed: int, start_iteration: int) -> None: ...

    def on_step(self, iteration: int, lr: float) -> None: ...

    def on_eval(self, iteration: int, record: dict[str, float]) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...


@dataclass
class TrainResult:
    """Curves and summary of one run; errors in percent. `evals` holds, per eval-only
    variant (config_hash), its test-error curve and summary."""

    run_id: str
    seed: int
    config: dict[str, Any]
    status: str  # "finished" or "diverged"
    curves: dict[str, list[float]]  # iteration, lr, train_error, train_loss, test_error, ...
    final_test_error: float
    best_test_error: float
    best_iteration: int
    final_train_error: float
    wall_seconds: float
    iterations_done: int
    resumed_from: int = 0
    warmup_end: int | None = None
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------
# data stream


def _epoch_seed(seed: int, epoch: int, salt: str = "data") -> int:
    digest = hashlib.sha1(f"{salt}:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class BatchStream:
    """Batch k of a run as (x float (B, 3, 32, 32) normalised, y int64 (B,)) on `device`.

    Epoch e is a permutation of the training set, augmented at once; both depend only on
    (seed, e). The two most recent epochs are kept, and an epoch's memory is reused for a
    later one (on a CPU, fresh memory of that size is faulted in page by page): a batch is
    valid while its epoch is one of the two most recent, i.e. for at least an epoch.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        cfg: RunConfig,
        seed: int,
        mean: Tensor,
        std: Tensor,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.x, self.y, self.cfg, self.seed = x, y, cfg, seed
        self.mean, self.std = mean.to(x.device), std.to(x.device)
        self.n, self.b = x.shape[0], cfg.batch_size
        self.memory_format = memory_format
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}
        self._permuted: Tensor | None = None  # uint8 scratch: the epoch's images in order
        if self.n < self.b:
            raise ValueError(f"batch_size={self.b} exceeds the {self.n} training images")

    def epoch(self, e: int) -> tuple[Tensor, Tensor]:
        if e not in self._cache:
            g = torch.Generator().manual_seed(_epoch_seed(self.seed, e))
            perm = torch.randperm(self.n, generator=g).to(self.x.device)
            dropped = [self._cache.pop(k)[0] for k in list(self._cache) if k != e - 1]
            out = dropped[0] if dropped else None
            if out is None:
                out = torch.empty(self.x.shape, device=self.x.device).contiguous(
                    memory_format=self.memory_format
                )
            if self._permuted is None:
                self._permuted = torch.empty_like(self.x)
            xa = augment(
                torch.index_select(self.x, 0, perm, out=self._permuted),
                crop=self.cfg.crop,
                pad=self.cfg.crop_pad,
                flip=self.cfg.flip,
                mean=self.mean,
                std=self.std,
                generator=g,
                out=out,
            )
            self._cache[e] = (xa, self.y[perm])
        return self._cache[e]

    def batch(self, k: int) -> tuple[Tensor, Tensor]:
        start = k * self.b
        e, i = divmod(start, self.n)
        xe, ye = self.epoch(e)
        if i + self.b <= self.n:
            return xe[i : i + self.b], ye[i : i + self.b]
        xn, yn = self.epoch(e + 1)
        rest = i + self.b - self.n
        return torch.cat([xe[i:], xn[:rest]]), torch.cat([ye[i:], yn[:rest]])


# ---------------------------------------------------------------------------------------
# optimisation


def param_groups(model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
    """One group with weight decay on everything (paper, Caffe), or, with decay_bn=False,
    no decay on BN parameters and biases (1-d tensors)."""
    if cfg.decay_bn:
        return [{"params": list(model.parameters()), "weight_decay": cfg.weight_decay}]
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov
    )


def learning_rate(cfg: RunConfig, iteration: int, warming: bool) -> float:
    """lr for the step that starts at `iteration` (0-based): base lr divided by 10 at each
    milestone passed; WARMUP_LR while warming up ("paper") or before warmup_iters
    ("fixed")."""
    if warming or (cfg.warmup == "fixed" and iteration < cfg.warmup_iters):
        return WARMUP_LR
    return cfg.lr * LR_DROP ** sum(iteration >= m for m in cfg.milestones)


def autocast(cfg: RunConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def precision_flags(cfg: RunConfig) -> Iterator[None]:
    """TF32 for matmuls and convolutions only within the run with precision="tf32"."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = cfg.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# ---------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    mean: Tensor,
    std: Tensor,
    bn_eval: str = "running",
    batch_size: int = 128,
    order: Tensor | None = None,
    precise_batches: Callable[[], Iterator[Tensor]] | None = None,
    cfg: RunConfig | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[float, float]:
    """Test error (%) and mean loss of `model` on uint8 images x (N, 3, 32, 32), labels y
    (N,), in batches of `batch_size` taken in `order` (a permutation; default: stored
    order). bn_eval "running" uses the running statistics, "batch" each test batch's own,
    "precise" statistics recomputed over `precise_batches()` (on a copy of the model)."""
    if bn_eval == "precise":
        if precise_batches is None:
            raise ValueError('bn_eval="precise" needs training batches (precise_batches)')
        model = copy.deepcopy(model)
        recompute_bn_statistics(model, precise_batches())
    was_training = model.training
    model.eval()
    ctx = batch_statistics(model) if bn_eval == "batch" else contextlib.nullcontext()
    dev = next(model.parameters()).device
    errors, loss_sum = 0, 0.0
    idx = order if order is not None else torch.arange(x.shape[0])
    try:
        with ctx:
            for i in range(0, x.shape[0], batch_size):
                sel = idx[i : i + batch_size]
                xb = normalize(x[sel.to(x.device)].to(dev), mean, std)
                xb = xb.contiguous(memory_format=memory_format)
                yb = y[sel.to(y.device)].to(dev)
                with autocast(cfg or RunConfig(), dev):
                    logits = model(xb).float()
                loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
                errors += (logits.argmax(1) != yb).sum().item()
    finally:
        model.train(was_training)
    n = x.shape[0]
    return 100.0 * errors / n, loss_sum / n


# ---------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def checkpoint_state(
    cfg: RunConfig,
    seed: int,
    model: dict[str, Tensor],
    optimizer: dict[str, Any],
    state: dict[str, Any],
) -> dict[str, Any]:
    """What a checkpoint holds: the run's identity, the network's state dict, the
    optimiser's (a lone `make_optimizer` one, also from packed runs) and the loop's state."""
    return {
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash,
        "train_hash": cfg.train_hash,
        "seed": seed,
        "model": model,
        "optimizer": optimizer,
        "state": state,
    }


def resume_from(
    path: str | os.PathLike | None, cfg: RunConfig, seed: int, dev: torch.device
) -> dict[str, Any] | None:
    """The checkpoint at `path` if there is one; refuses another run's."""
    if not path or not Path(path).exists():
        return None
    ck = load_checkpoint(path, map_location=dev)
    if ck["train_hash"] != cfg.train_hash or ck["seed"] != seed:
        raise ValueError(
            f"checkpoint {path} belongs to training {ck['train_hash'][:10]}"
            f"-s{ck['seed']}, not {cfg.train_id(seed)}"
        )
    return ck


def new_state(cfg: RunConfig) -> dict[str, Any]:
    """The loop's state at iteration 0 (what a checkpoint saves besides the weights)."""
    return {
        "iteration": 0,
        "curves": _empty_curves(),
        "warming": cfg.warmup == "paper",
        "warmup_end": None,
        "window": [],  # recent batch errors, for the paper warm-up
        "acc": [0.0, 0.0, 0],  # loss sum, error-fraction sum, iterations since last eval
        "wall": 0.0,
    }


# ---------------------------------------------------------------------------------------
# compiled networks: once per process

# (network structure, device, memory format, mode, slot) -> (network, compiled network).
_COMPILED: dict[tuple[Any, ...], tuple[nn.Module, nn.Module]] = {}
compile_fn: Callable[..., nn.Module] = torch.compile  # tests count calls through this


def prepare_model(
    cfg: RunConfig,
    num_classes: int,
    seed: int,
    dev: torch.device,
    fmt: torch.memory_format,
    compile_mode: str = "off",
    slot: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """(network, the module to train through) for `cfg` initialised by `seed`.

    With compile_mode "off" both are a new network. Otherwise the network is compiled
    once per process for each structure (`models.structure_key`; `slot` tells apart
    networks that must coexist, e.g. the seeds of a pack): later runs copy their fresh
    initialisation into that network, so neither a new seed nor a variant that changes
    only data or optimisation recompiles, and CUDA graphs keep their static addresses.
    Training does not depend on bn_eval: the network keeps running statistics so every
    evaluation mode can be applied to it and to its checkpoint."""
    fresh = build_model(cfg.replace(bn_eval="running"), num_classes, seed=seed)
    if compile_mode == "off":
        model = fresh.to(dev, memory_format=fmt)
        return model, model
    key = (structure_key(fresh.cfg, num_classes), str(dev), str(fmt), compile_mode, slot)
    if key not in _COMPILED:
        model = fresh.to(dev, memory_format=fmt)
        mode = None if compile_mode == "default" else compile_mode
        _COMPILED[key] = (model, compile_fn(model, mode=mode))
        return _COMPILED[key]
    model, compiled = _COMPILED[key]
    model.load_state_dict(fresh.state_dict())  # in place: same tensors, new values
    model.cfg = fresh.cfg
    return model, compiled


# ---------------------------------------------------------------------------------------
# evaluation records


class Evaluator:
    """Builds the evaluation records of one seed's run: the training error and loss
    averaged since the last evaluation, and the test error and loss of every spec (the
    run's config and its eval-only variants) on `model`."""

    def __init__(
        self,
        cfg: RunConfig,
        seed: int,
        specs: Sequence[RunConfig],
        train: tuple[Tensor, Tensor],
        test: tuple[Tensor, Tensor],
        mean: Tensor,
        std: Tensor,
        fmt: torch.memory_format,
        order_seed: int | None = None,
    ) -> None:
        """order_seed: the seed whose test order eval_shuffle uses (default: seed)."""
        self.cfg, self.seed, self.specs = cfg, seed, list(specs)
        self.order_seed = seed if order_seed is None else order_seed
        self.train, self.test = train, test
        self.mean, self.std, self.fmt = mean, std, fmt

    def precise_batches(self) -> Iterator[Tensor]:
        # Augmented training batches from a stream of their own, so evaluating does not
        # touch the training stream; PRECISE_BN_BATCHES of them, at most one epoch.
        cfg = self.cfg
        seed = _epoch_seed(self.seed, 0, "precise")
        pstream = BatchStream(*self.train, cfg, seed, self.mean, self.std, self.fmt)
        n = min(PRECISE_BN_BATCHES, max(1, pstream.n // cfg.batch_size))
        return (pstream.batch(k)[0] for k in range(n))

    def __call__(self, model: nn.Module, state: dict[str, Any], it: int, lr: float) -> dict:
        """Evaluate at iteration `it`, append the record to state["curves"], reset the
        training averages and return the record."""
        acc = state["acc"]
        rec = {
            "iteration": it,
            "lr": lr,
            "train_error": 100.0 * acc[1] / acc[2] if acc[2] else math.nan,
            "train_loss": acc[0] / acc[2] if acc[2] else math.nan,
        }
        state["acc"] = [0.0, 0.0, 0]
        for spec in self.specs:
            err, loss = self.test_error(model, spec)
            key = "" if spec is self.cfg else f"{spec.config_hash}:"
            rec[f"{key}test_error"], rec[f"{key}test_loss"] = err, loss
        for k, v in rec.items():
            state["curves"].setdefault(k, []).append(v)
        return rec

    def test_error(self, model: nn.Module, spec: RunConfig) -> tuple[float, float]:
        """Test error (%) and loss of `model` under spec's evaluation fields: its BN mode,
        batch size and (eval_shuffle) the test order of this seed's run."""
        test_x, test_y = self.test
        order = None
        if spec.eval_shuffle:
            g = torch.Generator().manual_seed(_epoch_seed(self.order_seed, 0, "eval_order"))
            order = torch.randperm(test_x.shape[0], generator=g)
        return evaluate(
            model,
            test_x,
            test_y,
            mean=self.mean,
            std=self.std,
            bn_eval=spec.bn_eval,
            batch_size=spec.eval_batch_size,
            order=order,
            precise_batches=self.precise_batches,
            cfg=self.cfg,
            memory_format=self.fmt,
        )


def eval_specs(cfg: RunConfig, eval_variants: Sequence[RunConfig]) -> list[RunConfig]:
    """[cfg, *eval_variants] without repeats; refuses variants that change training."""
    for v in eval_variants:
        if v.train_hash != cfg.train_hash:
            raise ValueError(
                f"eval variant {v.config_hash[:10]} differs from the run in training fields"
            )
    return [cfg, *[v for v in eval_variants if v.config_hash != cfg.config_hash]]


# ---------------------------------------------------------------------------------------
# the loop


def train(
    cfg: RunConfig,
    seed: int,
    *,
    data: Dataset | None = None,
    data_dir: str | os.PathLike | None = None,
    exec_options: ExecOptions | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    callbacks: Sequence[Callback] = (),
    eval_variants: Sequence[RunConfig] = (),
) -> TrainResult:
    """Train `cfg` with `seed`; resume from `checkpoint_path` when it exists.

    eval_variants: configs that differ from `cfg` only in EVAL_FIELDS; each is evaluated
    at every evaluation of this run and reported in `result.evals[config_hash]`.
    """
    ex = exec_options or ExecOptions()
    dev, fmt = ex.setup()
    specs = eval_specs(cfg, eval_variants)
    data = data or load_for_config(cfg, data_dir)
    mean, std = normalization_stats(data.train_x, cfg.normalize)
    train_x, train_y = data.train_x.to(dev), data.train_y.to(dev)
    test = (data.test_x.to(dev), data.test_y.to(dev))
    stream = BatchStream(train_x, train_y, cfg, seed, mean, std, fmt)
    evaluator = Evaluator(cfg, seed, specs, (train_x, train_y), test, mean, std, fmt)
    model, step_model = prepare_model(cfg, data.num_classes, seed, dev, fmt, ex.compile)
    opt = make_optimizer(model, cfg)
    state = new_state(cfg)
    if (ck := resume_from(checkpoint_path, cfg, seed, dev)) is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
    resumed_from = state["iteration"]

    for cb in callbacks:
        cb.on_start(cfg, seed, resumed_from)
    t0 = time.perf_counter() - state["wall"]
    it, status, error, lr = state["iteration"], "finished", None, cfg.lr
    # Summed on the device (no sync per step); a checkpoint saves the partial sums, so a
    # resumed run adds in exactly the order of one never interrupted.
    loss_acc = torch.tensor(state.get("pending", [0.0, 0.0])[0], device=dev)
    wrong_acc = torch.tensor(state.get("pending", [0.0, 0.0])[1], device=dev)
    model.train()
    with precision_flags(cfg):
        while it < cfg.iterations:
            lr = learning_rate(cfg, it, state["warming"])
            for group in opt.param_groups:
                group["lr"] = lr
            xb, yb = stream.batch(it)
            with autocast(cfg, dev):
                logits = step_model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            with torch.no_grad():
                wrong = (logits.argmax(1) != yb).sum()
                loss_acc += loss.detach()
                wrong_acc += wrong
            state["acc"][2] += 1
            if state["warming"]:
                warmup_step(state, 100.0 * wrong.item() / cfg.batch_size, it)
            for cb in callbacks:
                cb.on_step(it, lr)
            evaluating = it % cfg.eval_every == 0 or it == cfg.iterations
            if it % DIVERGENCE_CHECK == 0 or evaluating:
                state["acc"][0] += loss_acc.item()
                state["acc"][1] += wrong_acc.item() / cfg.batch_size
                loss_acc.zero_()
                wrong_acc.zero_()
                if not math.isfinite(state["acc"][0]):
                    status, error = "diverged", f"non-finite training loss by iteration {it}"
                    break
            if evaluating:
                rec = evaluator(model, state, it, lr)
                for cb in callbacks:
                    cb.on_eval(it, rec)
            state["iteration"] = it
            if checkpoint_path and (it % checkpoint_every == 0 or it == cfg.iterations):
                state["wall"] = time.perf_counter() - t0
                state["pending"] = [loss_acc.item(), wrong_acc.item()]
                ck = checkpoint_state(cfg, seed, model.state_dict(), opt.state_dict(), state)
                save_checkpoint(checkpoint_path, ck)
    state["iteration"] = it
    result = summarise(
        cfg, seed, state, specs, status, error, time.perf_counter() - t0, resumed_from
    )
    for cb in callbacks:
        cb.on_end(result)
    return result


def warmup_step(state: dict[str, Any], batch_error: float, it: int) -> None:
    """Paper warm-up: leave lr 0.01 once the training error, averaged over the last
    WARMUP_WINDOW iterations, is below WARMUP_ERROR."""
    window = (state["window"] + [batch_error])[-WARMUP_WINDOW:]
    state["window"] = window
    if len(window) == WARMUP_WINDOW and sum(window) / WARMUP_WINDOW < WARMUP_ERROR:
        state["warming"], state["warmup_end"] = False, it


def _empty_curves() -> dict[str, list[float]]:
    return {
        "iteration": [],
        "lr": [],
        "train_error": [],
        "train_loss": [],
        "test_error": [],
        "test_loss": [],
    }


def _finals(curves: dict[str, list[float]], key: str) -> dict[str, Any]:
    errs = curves.get(f"{key}test_error", [])
    if not errs:
        return {"final_test_error": math.nan, "best_test_error": math.nan, "best_iteration": -1}
    best = min(range(len(errs)), key=lambda i: (errs[i], i))
    return {
        "final_test_error": errs[-1],
        "best_test_error": errs[best],
        "best_iteration": int(curves["iteration"][best]),
    }


def summarise(cfg, seed, state, specs, status, error, wall, resumed_from) -> TrainResult:
    curves = state["curves"]
    evals = {}
    for spec in specs[1:]:
        key = f"{spec.config_hash}:"
        evals[spec.config_hash] = {
            "config": spec.to_dict(),
            "test_error": curves.get(f"{key}test_error", []),
            "test_loss": curves.get(f"{key}test_loss", []),
            **_finals(curves, key),
        }
    main_curves = {k: v for k, v in curves.items() if ":" not in k}
    finals = (
        _finals(curves, "")
        if status != "diverged"
        else {"final_test_error": math.nan, "best_test_error": math.nan, "best_iteration": -1}
    )
    train_errs = curves.get("train_error", [])
    return TrainResult(
        run_id=cfg.run_id(seed),
        seed=seed,
        config=cfg.to_dict(),
        status=status,
        curves=main_curves,
        final_train_error=train_errs[-1] if train_errs else math.nan,
        wall_seconds=wall,
        iterations_done=state["iteration"],
        resumed_from=resumed_from,
        warmup_end=state["warmup_end"],
        evals=evals,
        error=error,
        **finals,
    )


def config_of(result: TrainResult | dict[str, Any]) -> RunConfig:
    d = result.config if isinstance(result, TrainResult) else result["config"]
    return from_dict(d)
