"""Throughput benchmark: the usual PyTorch CIFAR pipeline against ours, in one process.

Rows (images per second of SGD training steps, warm-up excluded, median of repeats):
- "reference": the common PyTorch recipe (torchvision references; most public CIFAR
  ResNet reproductions): `torchvision.datasets.CIFAR10` read from CIFAR-format batch files,
  per-image PIL transforms RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
  Normalize, a `DataLoader` (shuffle, 2 workers, drop_last, persistent workers), every
  batch copied to the device, an eager fp32 network and an SGD step.
- "fp32": ours, `train.train` itself: uint8 data resident on the device, each epoch
  permuted and augmented at once (`train.BatchStream`, as cifar10-airbench by Keller
  Jordan, github.com/KellerJordan/cifar10-airbench), the training step of `train.train`.
- "bf16": the same with RunConfig.precision="bf16" (autocast to bfloat16).
- "packed": `packed.train_packed` with K = --pack seeds (images of all K seeds count).
- "augment" / "augment_pil": the augmentation alone; ours builds successive epochs of
  `train.BatchStream` (permutation, `augment.augment` on the whole uint8 training set on
  the device, normalisation) versus the PIL transforms applied per image in this
  process, as one DataLoader worker would.

The CIFAR-format files hold random images (5,000 by default) in the pickle layout of
`cifar-10-batches-py`; both pipelines read the same images and do the same work per image
(pad 4 black pixels, crop, flip, normalise per channel). Each row's step runs with
`torch.set_num_threads(--threads)` in the main process; the reference's DataLoader workers
run on top of that (one thread each), as they do in practice.

Ours runs in channels_last by default (--channels-last on), on CPU too: oneDNN then
skips the NCHW <-> blocked reorders around every convolution and picks its brgemm
kernels, which matters most for bf16 (autocast bf16 in NCHW spends about a third of its
convolution time in reorders on an AVX512-BF16 CPU without AMX). "auto" keeps
`train.ExecOptions`' default (channels_last on CUDA only).

    python -m studies.bench --device cpu --depth 20 --iters 20 --json bench.json
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from resnet_repro.config import RunConfig
from resnet_repro.data import Dataset, load_dataset, normalization_stats
from resnet_repro.models import build_model
from resnet_repro.packed import train_packed
from resnet_repro.train import (
    COMPILE_MODES,
    BatchStream,
    Callback,
    ExecOptions,
    make_optimizer,
    train,
)

# Shortest timed window of the augmentation row: one pass over a few thousand images takes
# milliseconds on a GPU, too short to time alone.
MIN_WINDOW = 0.5
ROWS = ("reference", "fp32", "bf16", "packed", "augment", "augment_pil")
CLASSES = tuple(f"class{i}" for i in range(10))


# ---------------------------------------------------------------------------------------
# CIFAR-format files and the reference pipeline


def write_cifar_batches(root: str | Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write random images as `cifar-10-batches-py/{data_batch_1, test_batch,
    batches.meta}` under `root`: dicts with "data" (N, 3072) uint8 rows (R, G, B planes of
    32x32) and "labels" (N ints), pickled as the real files are. Returns the folder."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        entry = {
            "batch_label": f"{name} (random images for studies.bench)",
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        meta = {"label_names": list(CLASSES), "num_cases_per_batch": n_train, "num_vis": 3072}
        pickle.dump(meta, f, protocol=2)
    return folder


def _bench_cifar_class() -> type:
    from torchvision.datasets import CIFAR10

    class BenchCIFAR10(CIFAR10):
        """torchvision's CIFAR10 reading the files of `write_cifar_batches` (md5 checks
        off: the files are not the published ones)."""

        train_list = [["data_batch_1", None]]
        test_list = [["test_batch", None]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": None}

    return BenchCIFAR10


def reference_transform(mean: Sequence[float], std: Sequence[float]) -> Callable:
    """The usual torchvision CIFAR training transform."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def _forever(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _rates(times: Sequence[float], images: int) -> list[float]:
    """images/s of each window between consecutive timestamps."""
    return [images / (b - a) for a, b in zip(times, times[1:])]


def measure_reference(
    root: Path,
    cfg: RunConfig,
    dev: torch.device,
    *,
    warmup: int,
    iters: int,
    repeats: int,
    workers: int,
) -> list[float]:
    """images/s per repeat of the reference pipeline (see the module docstring)."""
    ds = _bench_cifar_class()(str(root), train=True)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # (N, 3, 32, 32) uint8
    mean, std = normalization_stats(x, "channel_std")
    ds.transform = reference_transform(mean.flatten().tolist(), std.flatten().tolist())
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
        pin_memory=dev.type == "cuda",
    )
    model = build_model(cfg, seed=0).to(dev)  # eager, fp32, NCHW: the usual setup
    opt = make_optimizer(model, cfg)
    batches = _forever(loader)
    model.train()

    def step() -> None:
        xb, yb = next(batches)
        xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(dev)
    times = [time.perf_counter()]
    for _ in range(repeats):
        for _ in range(iters):
            step()
        _sync(dev)
        times.append(time.perf_counter())
    # Returning drops the last references to the loader: its persistent workers stop.
    return _rates(times, iters * cfg.batch_size)


# ---------------------------------------------------------------------------------------
# ours: train.train and packed.train_packed themselves, timed by a callback


class StepTimer(Callback):
    """Records the time after the steps listed in `marks` (synchronising the device
    there only, so the device may run ahead elsewhere, as in a real run)."""

    def __init__(self, marks: Sequence[int], dev: torch.device) -> None:
        self.marks, self.dev, self.times = set(marks), dev, []

    def on_step(self, iteration: int, lr: float) -> None:
        if iteration in self.marks:
            _sync(self.dev)
            self.times.append(time.perf_counter())


def measure_ours(
    cfg: RunConfig,
    data: Dataset,
    ex: ExecOptions,
    *,
    warmup: int,
    iters: int,
    repeats: int,
    pack: int = 0,
    layout: str | None = None,
) -> list[float]:
    """images/s per repeat of `train.train` (pack=0) or `train_packed` with `pack` seeds
    (in `layout`; None: train_packed's choice)."""
    total = warmup + iters * repeats
    cfg = cfg.replace(iterations=total, milestones=(), eval_every=total)
    timer = StepTimer([warmup + r * iters for r in range(repeats + 1)], torch.device(ex.device))
    if pack:
        train_packed(
            cfg,
            range(pack),
            data=data,
            exec_options=ex,
            callbacks_per_seed=[[timer]] + [[] for _ in range(pack - 1)],
            layout=layout,
        )
    else:
        train(cfg, 0, data=data, exec_options=ex, callbacks=[timer])
    return _rates(timer.times, iters * cfg.batch_size * max(1, pack))


def measure_augment(
    data: Dataset, cfg: RunConfig, dev: torch.device, repeats: int, fmt: torch.memory_format
) -> list[float]:
    """images/s of building successive epochs of `train.BatchStream` from the whole uint8
    training set on the device: what a run does once per epoch (permutation, crop, flip,
    normalisation, the activations' memory format)."""
    x, y = data.train_x.to(dev), data.train_y.to(dev)
    mean, std = normalization_stats(x, cfg.normalize)
    stream = BatchStream(x, y, cfg, 0, mean, std, fmt)
    epoch = 0
    stream.epoch(epoch)  # warm-up
    rates = []
    for _ in range(repeats):  # each repeat: whole epochs for at least MIN_WINDOW seconds
        _sync(dev)
        t, passes = time.perf_counter(), 0
        while passes == 0 or time.perf_counter() - t < MIN_WINDOW:
            epoch += 1
            stream.epoch(epoch)
            _sync(dev)
            passes += 1
        rates.append(passes * x.shape[0] / (time.perf_counter() - t))
    return rates


def measure_augment_pil(root: Path, n: int, repeats: int) -> list[float]:
    """images/s of the reference transforms applied per image (Image.fromarray included,
    as CIFAR10.__getitem__ does), in this process."""
    from PIL import Image

    ds = _bench_cifar_class()(str(root), train=True)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2)
    mean, std = normalization_stats(x, "channel_std")
    tf = reference_transform(mean.flatten().tolist(), std.flatten().tolist())
    images = ds.data[:n]

    def run() -> None:
        for img in images:
            tf(Image.fromarray(img))

    run()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        rates.append(len(images) / (time.perf_counter() - t))
    return rates


def measure_paper_run(args: argparse.Namespace, ex: ExecOptions) -> dict[str, Any]:
    """Wall time of a paper-protocol run (pad_zero, per-pixel mean, an evaluation on the
    whole test set every 391 iterations) of `--paper-run` iterations on CIFAR-shaped
    synthetic data of the full size (50,000 + 10,000 images), alone and packed with
    `--pack` seeds; minutes per run are scaled to the paper's 64,000 iterations."""
    n = args.paper_run
    paper = RunConfig()
    drops = sorted({m * n // paper.iterations for m in paper.milestones} - {0})
    cfg = RunConfig(depth=args.depth, dataset="synthetic", iterations=n, milestones=tuple(drops))
    data = load_dataset("synthetic")
    t = time.perf_counter()
    train(cfg, 0, data=data, exec_options=ex)
    alone = time.perf_counter() - t
    out: dict[str, Any] = {
        "iterations": n,
        "seconds": alone,
        "minutes_per_run": alone * paper.iterations / n / 60,
    }
    if args.pack > 1:
        layout = None if args.pack_layout == "auto" else args.pack_layout
        t = time.perf_counter()
        train_packed(cfg, range(args.pack), data=data, exec_options=ex, layout=layout)
        packed = time.perf_counter() - t
        out.update(
            packed_seeds=args.pack,
            packed_seconds=packed,
            packed_minutes_per_run=packed * paper.iterations / n / 60 / args.pack,
            packing_speedup=alone * args.pack / packed,
        )
    return out


# ---------------------------------------------------------------------------------------
# driver


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every row of the benchmark; returns the JSON-ready result."""
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    # The reference's work per image: pad 4 black pixels, crop, flip, per-channel mean/std.
    cfg = RunConfig(
        depth=args.depth,
        batch_size=args.batch_size,
        crop="pad_black",
        normalize="channel_std",
        dataset="synthetic",  # label only: the data are passed in
    )
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="resnet_repro_bench_") as tmp:
        root = Path(tmp)
        write_cifar_batches(root, args.images, args.test_images)
        cls = _bench_cifar_class()
        tr, te = cls(str(root), train=True), cls(str(root), train=False)
        data = Dataset(
            "bench",
            torch.from_numpy(tr.data).permute(0, 3, 1, 2).contiguous(),
            torch.tensor(tr.targets, dtype=torch.int64),
            torch.from_numpy(te.data).permute(0, 3, 1, 2).contiguous(),
            torch.tensor(te.targets, dtype=torch.int64),
            None,
            None,
            CLASSES,
        )
        timing = {"warmup": args.warmup, "iters": args.iters, "repeats": args.repeats}
        rows = set(args.rows.split(",")) if args.rows else set(ROWS)
        if "reference" in rows:
            rates["reference"] = measure_reference(root, cfg, dev, workers=args.workers, **timing)
            gc.collect()  # stops the DataLoader's workers before the rows below
        ex = ExecOptions(device=args.device, compile=args.compile, channels_last=channels_last)
        if "fp32" in rows:
            rates["fp32"] = measure_ours(cfg, data, ex, **timing)
        if "bf16" in rows:
            rates["bf16"] = measure_ours(cfg.replace(precision="bf16"), data, ex, **timing)
        if "packed" in rows:
            layout = None if args.pack_layout == "auto" else args.pack_layout
            rates["packed"] = measure_ours(cfg, data, ex, pack=args.pack, layout=layout, **timing)
        if "augment" in rows:
            fmt = ex.memory_format(dev)
            rates["augment"] = measure_augment(data, cfg, dev, args.repeats, fmt)
        if "augment_pil" in rows:
            rates["augment_pil"] = measure_augment_pil(root, args.pil_images, args.repeats)
    result: dict[str, Any] = {k: statistics.median(v) for k, v in rates.items()}
    if args.paper_run:
        result["paper_run"] = measure_paper_run(args, ex)
    result.update(
        device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else args.device,
        depth=args.depth,
        torch_version=torch.__version__,
        pack=args.pack,
        iters=args.iters,
        batch_size=args.batch_size,
        threads=torch.get_num_threads(),
        warmup=args.warmup,
        repeats=args.repeats,
        compile=args.compile,
        channels_last=args.channels_last,
        pack_layout=args.pack_layout,
        workers=args.workers,
        images=args.images,
        rates=rates,
    )
    return result


def format_table(result: dict[str, Any]) -> str:
    """Rows of images/s with the ratio to the reference (augmentation: to PIL)."""
    lines = [f"{'row':<12} {'images/s':>10} {'ratio':>8}  vs"]
    for row in ROWS:
        if row not in result:
            continue
        base = "augment_pil" if row.startswith("augment") else "reference"
        ratio = f"{result[row] / result[base]:>7.2f}x" if base in result else f"{'-':>8}"
        lines.append(f"{row:<12} {result[row]:>10.1f} {ratio}  {base}")
    if run := result.get("paper_run"):
        lines.append(
            f"paper-protocol run: {run['iterations']} iterations in {run['seconds']:.1f} s, "
            f"{run['minutes_per_run']:.2f} min per 64k-iteration run"
        )
        if "packed_seeds" in run:
            lines.append(
                f"  packed x{run['packed_seeds']}: {run['packed_minutes_per_run']:.2f} min per "
                f"run, {run['packing_speedup']:.2f}x the throughput of lone runs"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m studies.bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--iters", type=int, default=20, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=3, help="timed windows; the median counts")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--pack", type=int, default=4, help="seeds of the packed row")
    p.add_argument("--compile", default="off", choices=COMPILE_MODES)
    p.add_argument(
        "--channels-last",
        default="on",
        choices=("auto", "on", "off"),
        help="ours (fp32, bf16, packed): channels_last memory format; auto = as train.train "
        "defaults (on for CUDA, off on CPU). Default on: oneDNN on CPU gains as well",
    )
    p.add_argument(
        "--pack-layout",
        default="auto",
        choices=("auto", "grouped", "loop"),
        help="packed row: auto = as train_packed (grouped on CUDA, loop elsewhere)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads of this process")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (reference)")
    p.add_argument("--images", type=int, default=5000, help="training images in the files")
    p.add_argument("--test-images", type=int, default=256)
    p.add_argument("--pil-images", type=int, default=2000, help="images of augment_pil")
    p.add_argument("--rows", default="", help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument(
        "--paper-run",
        type=int,
        default=0,
        metavar="ITERS",
        help="also time ITERS iterations of a paper-protocol run on full-size synthetic "
        "data, alone and packed (--pack), as minutes per 64k-iteration run (0: skip)",
    )
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        p.error(f"--device {args.device!r}: allowed values are cpu, cuda")
    unknown = set(filter(None, args.rows.split(","))) - set(ROWS)
    if unknown:
        p.error(f"--rows {sorted(unknown)}: allowed are {', '.join(ROWS)}")
    if args.images < args.batch_size * 2:
        p.error("--images must hold at least two batches")
    if args.paper_run < 0:
        p.error(f"--paper-run {args.paper_run}: allowed values are integers >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run_bench(args)
    print(
        f"device {result['device']}, ResNet-{args.depth}, batch {args.batch_size}, "
        f"threads {result['threads']}, torch {result['torch_version']}, "
        f"compile {args.compile}, channels_last {args.channels_last}, pack {args.pack} "
        f"({args.pack_layout})"
    )
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
