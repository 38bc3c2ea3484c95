"""Datasets as whole uint8 tensors, and the input normalisation statistics.

Every dataset is returned as a `Dataset`: (N, 3, 32, 32) uint8 images and (N,) int64 labels
for the training, test and (optional) validation splits. Augmentation and normalisation
happen later on whole batches (`resnet_repro.augment`), so no per-image transform pipeline
exists here.

Datasets (RunConfig.dataset):
- "cifar10": CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny
  Images"; https://www.cs.toronto.edu/~kriz/cifar.html), the data of He et al. 2015,
  "Deep Residual Learning for Image Recognition" (arXiv:1512.03385), section 4.2. Read
  through `torchvision.datasets.CIFAR10`, whose md5 checks guard against truncated files.
- "fashion_mnist": Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, arXiv:1708.07747;
  https://github.com/zalandoresearch/fashion-mnist) from its IDX files; 28x28 greyscale
  zero-padded to 32x32 and replicated to 3 channels. Real data for CPU-sized runs.
- "synthetic": deterministic CIFAR-shaped data made here (see `make_synthetic`).

Splits (RunConfig.train_size, section 4.2 of the paper): 50000 uses every training image;
45000 holds out the LAST 5,000 of CIFAR's 50,000 training images as validation, which is
the paper's 45k/5k split. For a training set of another size the two values keep their
meaning: 50000 = "all training images" and 45000 = "hold out the last 5,000, or the last
10% when the training set has fewer than 50,000 images" (Fashion-MNIST: 55,000 + 5,000).
RunConfig.subset > 0 keeps the first `subset` training images and the first
max(subset // 4, 128) test (and validation) images; only the smoke budget uses it.

`normalization_stats` computes the mean/std of the normalisation modes of
RunConfig.normalize from the training split only.

Loaded images are cached in-process (studies load the same dataset many times); the
returned tensors share that memory and must be treated as read-only.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import pickle
import socket
import tarfile
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resnet_repro.config import DATASETS, NORMALIZES, TRAIN_SIZES, RunConfig

DEFAULT_DATA_DIR = Path(
    os.environ.get("RESNET_REPRO_DATA", "~/.cache/resnet_repro/data")
).expanduser()
# Debian package `dataset-fashion-mnist` installs the four gzipped IDX files here.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_DIRNAME = "cifar-10-batches-py"
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"
FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Synthetic data: sizes and seed are fixed so that every process sees the same images.
SYNTHETIC_TRAIN = 50000
SYNTHETIC_TEST = 10000
SYNTHETIC_CLASSES = tuple(f"pattern{i}" for i in range(10))
SYNTHETIC_SEED = 1512_03385  # the paper's arXiv number
_SYNTH_OBJECT = 12  # side of the class pattern pasted into each image (pixels)
_SYNTH_BACKGROUNDS = 4096  # distinct backgrounds, shared by all classes

# Paper's 45k/5k split; datasets with fewer than 50k training images hold out 10%.
_CIFAR_TRAIN = 50000
_HOLDOUT = 5000
# Seconds without network progress before a download is abandoned (see `_socket_timeout`).
_DOWNLOAD_TIMEOUT_S = 30.0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """One dataset's splits as whole tensors (read-only: they may be shared with a cache).

    train_x: (N, 3, H, W) uint8, train_y: (N,) int64; test_x: (M, 3, H, W) uint8,
    test_y: (M,) int64; val_x: (V, 3, H, W) uint8 and val_y: (V,) int64, or both None
    when no validation split is held out. H = W = 32 for every dataset loaded here.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if (self.val_x is None) != (self.val_y is None):
            raise ValueError("val_x and val_y must both be tensors or both be None")
        splits = [("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)]
        if self.val_x is not None and self.val_y is not None:
            splits.append(("val", self.val_x, self.val_y))
        for split, x, y in splits:
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(
                    f"{split}_x: expected (N, 3, H, W) uint8, got {tuple(x.shape)} {x.dtype}"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{split}_y: expected ({x.shape[0]},) int64, got {tuple(y.shape)} {y.dtype}"
                )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        # The dataclass default would print every tensor.
        n_val = 0 if self.val_x is None else len(self.val_x)
        return (
            f"Dataset(name={self.name!r}, train={len(self.train_x)}, val={n_val}, "
            f"test={len(self.test_x)}, classes={self.num_classes})"
        )


# --- public entry points -------------------------------------------------------------------


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    train_size: int = 50000,
    subset: int = 0,
    download: bool = True,
) -> Dataset:
    """Load dataset `name` ("cifar10", "fashion_mnist", "synthetic") split as configured.

    data_dir: the root holding `cifar-10-batches-py/` (CIFAR-10) or the Fashion-MNIST IDX
    files (directly or in a `fashion-mnist/` subfolder); default DEFAULT_DATA_DIR
    ($RESNET_REPRO_DATA or ~/.cache/resnet_repro/data). Fashion-MNIST falls back to
    FASHION_MNIST_SYSTEM_DIR. Synthetic data ignores it.
    train_size: 50000 (all training images) or 45000 (hold out the last 5,000, or the last
    10% of a training set smaller than 50,000, as val_x/val_y).
    subset: 0, or keep the first `subset` training images and the first
    max(subset // 4, 128) test and validation images.
    download: CIFAR-10 only; fetch the archive when the files are missing.
    """
    if name not in DATASETS:
        raise ValueError(
            f"dataset={name!r}: allowed values are {', '.join(repr(d) for d in DATASETS)}"
        )
    if train_size not in TRAIN_SIZES or isinstance(train_size, bool):
        raise ValueError(
            f"train_size={train_size!r}: allowed values are "
            f"{', '.join(repr(t) for t in TRAIN_SIZES)}"
        )
    if not isinstance(subset, int) or isinstance(subset, bool) or subset < 0:
        raise ValueError(f"subset={subset!r}: allowed values are integers >= 0")
    root = Path(data_dir).expanduser() if data_dir is not None else DEFAULT_DATA_DIR
    train_x, train_y, test_x, test_y, classes = _load_raw(name, root, download)
    return _split(name, train_x, train_y, test_x, test_y, classes, train_size, subset)


def load_for_config(
    cfg: RunConfig, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> Dataset:
    """`load_dataset` with cfg.dataset, cfg.train_size and cfg.subset."""
    return load_dataset(
        cfg.dataset, data_dir, train_size=cfg.train_size, subset=cfg.subset, download=download
    )


def normalization_stats(train_x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of normalisation `mode`, in [0, 1] pixel scale (pixels / 255).

    train_x: (N, C, H, W) uint8, the TRAINING split only (test statistics must not leak
    into the input). Returns float32 (mean, std) on train_x's device, broadcastable to
    (C, H, W); the input is then (x / 255 - mean) / std.
    - "pixel_mean" (the paper, sec. 4.2: "per-pixel mean subtracted"): mean image
      (C, H, W), std ones (1, 1, 1).
    - "channel_std": per-channel mean and std over every pixel of every image, (C, 1, 1)
      each (population std; NOT the mean of per-image stds, a common slip that gives
      CIFAR-10 stds of ~0.20 instead of ~0.25).
    - "imagenet": ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), (3, 1, 1).
    - "none": zeros / ones (1, 1, 1): pixels scaled to [0, 1] only.
    """
    if mode not in NORMALIZES:
        raise ValueError(
            f"normalize={mode!r}: allowed values are {', '.join(repr(m) for m in NORMALIZES)}"
        )
    dev = train_x.device
    if mode == "none":
        return torch.zeros(1, 1, 1, device=dev), torch.ones(1, 1, 1, device=dev)
    if mode == "imagenet":
        return (
            torch.tensor(IMAGENET_MEAN, device=dev).view(3, 1, 1),
            torch.tensor(IMAGENET_STD, device=dev).view(3, 1, 1),
        )
    if train_x.dtype != torch.uint8 or train_x.ndim != 4 or len(train_x) == 0:
        raise ValueError(
            f"train_x: expected a non-empty (N, C, H, W) uint8 tensor, got "
            f"{tuple(train_x.shape)} {train_x.dtype}"
        )
    # Exact sums, on the CPU: float64 reductions over 50k images take ~2 s on 2 cores,
    # these ~0.3-0.8 s; CUDA bincount is refused under deterministic algorithms.
    x = train_x.detach().cpu()
    n, c = x.shape[:2]
    if mode == "pixel_mean":
        flat = x.reshape(n, -1)
        pixel_sum = torch.zeros(flat.shape[1], dtype=torch.float64)
        for start in range(0, n, 8192):
            # float32 sums of <= 8192 values <= 255 are integers < 2**24, hence exact.
            pixel_sum += flat[start : start + 8192].float().sum(0).double()
        pixel_mean = (pixel_sum / (255.0 * n)).view(x.shape[1:])
        return pixel_mean.float().to(dev), torch.ones(1, 1, 1, device=dev)
    # "channel_std": per-channel histograms give exact sums of x and x**2.
    values = torch.arange(256, dtype=torch.float64) / 255.0
    hist = torch.stack(
        [torch.bincount(x[:, ch].reshape(-1), minlength=256) for ch in range(c)]
    ).double()
    count = hist.sum(1)
    mean = (hist @ values) / count
    var = ((hist @ values.square()) / count - mean.square()).clamp_min(0.0)
    return mean.float().view(-1, 1, 1).to(dev), var.sqrt().float().view(-1, 1, 1).to(dev)


def clear_cache() -> None:
    """Forget the in-process cache of loaded images (e.g. after replacing files)."""
    with _CACHE_LOCK:
        _CACHE.clear()


# --- splitting -----------------------------------------------------------------------------


def holdout_size(n_train: int) -> int:
    """Validation images held out by train_size=45000 from a training set of n_train:
    the paper's 5,000 for CIFAR-10's 50,000 (or more), otherwise 10%."""
    return _HOLDOUT if n_train >= _CIFAR_TRAIN else n_train // 10


def eval_subset_size(subset: int) -> int:
    """Test (and validation) images kept by RunConfig.subset = `subset` > 0."""
    return max(subset // 4, 128)


def _split(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    classes: tuple[str, ...],
    train_size: int,
    subset: int,
) -> Dataset:
    val_x = val_y = None
    if train_size < _CIFAR_TRAIN:
        # The LAST images are held out, so the training split is a prefix of the full one.
        n_fit = len(train_x) - holdout_size(len(train_x))
        val_x, val_y = train_x[n_fit:], train_y[n_fit:]
        train_x, train_y = train_x[:n_fit], train_y[:n_fit]
    if subset:
        k = eval_subset_size(subset)
        train_x, train_y = train_x[:subset], train_y[:subset]
        test_x, test_y = test_x[:k], test_y[:k]
        if val_x is not None and val_y is not None:
            val_x, val_y = val_x[:k], val_y[:k]
    return Dataset(name, train_x, train_y, test_x, test_y, val_x, val_y, classes)


# --- cache -----------------------------------------------------------------------------------

_Raw = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]
_CACHE: dict[tuple[str, str], _Raw] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 4  # full CIFAR-10 is 184 MB; a few entries cover a study's needs


def _load_raw(name: str, root: Path, download: bool) -> _Raw:
    """Full train and test splits of `name`, cached per (name, directory)."""
    key = (name, "" if name == "synthetic" else str(root.resolve()))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    if name == "cifar10":
        raw = _load_cifar10(root, download)
    elif name == "fashion_mnist":
        raw = _load_fashion_mnist(root)
    else:
        raw = make_synthetic()
    with _CACHE_LOCK:
        while len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = raw
    return raw


# --- CIFAR-10 --------------------------------------------------------------------------------


def _load_cifar10(root: Path, download: bool) -> _Raw:
    """CIFAR-10 through torchvision, with errors that say which file and what to do.

    torchvision 0.29's CIFAR10(download=True) re-downloads whenever any file fails its md5
    check, with no network timeout; its own error ("Dataset not found or corrupted") names
    no file. So the files are checked here first: corrupted files end in an error naming
    them, and torchvision downloads only when files are missing.
    """
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    if root.name == CIFAR10_DIRNAME:  # accept the batches directory itself
        root = root.parent
    base = root / CIFAR10_DIRNAME
    missing, corrupt = _cifar_file_status(CIFAR10, base, check_integrity)
    if corrupt:
        raise RuntimeError(_cifar_corrupt_message(base, corrupt, "failed the md5 check"))
    if missing:
        if not download:
            raise FileNotFoundError(_cifar_missing_message(base, missing, "download=False"))
        try:
            root.mkdir(parents=True, exist_ok=True)
            with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
                CIFAR10(root=str(root), train=True, download=True)
        except (urllib.error.URLError, OSError, RuntimeError, EOFError, tarfile.TarError) as e:
            reason = f"the download failed ({type(e).__name__}: {e})"
            raise FileNotFoundError(_cifar_missing_message(base, missing, reason)) from e
        missing, corrupt = _cifar_file_status(CIFAR10, base, check_integrity)
        if missing or corrupt:
            raise RuntimeError(
                _cifar_corrupt_message(base, missing + corrupt, "are wrong after download")
            )
    try:
        train = CIFAR10(root=str(root), train=True, download=False)
        test = CIFAR10(root=str(root), train=False, download=False)
    except Exception as e:
        # md5 passed (e.g. patched expectations) but the contents do not load.
        bad = _first_unloadable(base, [f for f, _ in _cifar_files(CIFAR10)]) or base
        raise RuntimeError(
            _cifar_corrupt_message(base, [str(bad)], f"could not be read ({e!r})")
        ) from e
    train_x, train_y = _cifar_tensors(train.data, train.targets)
    test_x, test_y = _cifar_tensors(test.data, test.targets)
    return train_x, train_y, test_x, test_y, tuple(train.classes)


def _cifar_files(cls: type) -> list[tuple[str, str | None]]:
    """(filename, md5) of every file torchvision's class reads, read at call time so that
    patched expectations (tests) are honoured."""
    files = [(f, m) for f, m in [*cls.train_list, *cls.test_list]]
    return [*files, (cls.meta["filename"], cls.meta["md5"])]


def _cifar_file_status(cls: type, base: Path, check_integrity) -> tuple[list[str], list[str]]:
    missing, corrupt = [], []
    for filename, md5 in _cifar_files(cls):
        path = base / filename
        if not path.is_file():
            missing.append(str(path))
        elif not check_integrity(str(path), md5):
            corrupt.append(str(path))
    return missing, corrupt


def _cifar_missing_message(base: Path, missing: list[str], reason: str) -> str:
    return (
        f"CIFAR-10 not found: {len(missing)} file(s) missing under {base} (first: "
        f"{missing[0]}) and {reason}. Put the directory `{CIFAR10_DIRNAME}` at {base}: "
        f"download {CIFAR10_URL} and run `tar -xzf cifar-10-python.tar.gz -C {base.parent}`, "
        f"or pass another data_dir / set RESNET_REPRO_DATA to the directory that holds "
        f"`{CIFAR10_DIRNAME}`."
    )


def _cifar_corrupt_message(base: Path, files: list[str], what: str) -> str:
    return (
        f"CIFAR-10 file(s) {', '.join(files)} {what}: the data is corrupted or truncated. "
        f"Delete {base} (and {base.parent / 'cifar-10-python.tar.gz'} if present) and "
        f"re-download: load with download=True, or fetch {CIFAR10_URL} and extract it "
        f"into {base.parent}."
    )


def _first_unloadable(base: Path, filenames: list[str]) -> Path | None:
    """The first file that does not unpickle (as torchvision does) to a dict."""
    for filename in filenames:
        path = base / filename
        try:
            with open(path, "rb") as f:
                if not isinstance(pickle.load(f, encoding="latin1"), dict):
                    return path
        except Exception:
            return path
    return None


def _cifar_tensors(data: np.ndarray, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's (N, 32, 32, 3) HWC uint8 array -> (N, 3, 32, 32) contiguous tensor."""
    x = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))
    return x, torch.as_tensor(targets, dtype=torch.int64)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision's urlopen calls have no timeout: a silently dropped connection would hang
    for minutes. Set a default socket timeout (per blocking operation, so a slow but
    progressing download still completes) for the duration of the download only."""
    old = socket.getdefaulttimeout()
    if old is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


# --- Fashion-MNIST ---------------------------------------------------------------------------


def _load_fashion_mnist(root: Path) -> _Raw:
    """Fashion-MNIST from IDX files in root, root/fashion-mnist, root/FashionMNIST/raw
    (torchvision's layout) or FASHION_MNIST_SYSTEM_DIR, plain or gzipped."""
    candidates = [
        root,
        root / "fashion-mnist",
        root / "FashionMNIST" / "raw",
        FASHION_MNIST_SYSTEM_DIR,
    ]
    for directory in candidates:
        paths = {k: _idx_path(directory, f) for k, f in FASHION_MNIST_FILES.items()}
        if all(p is not None for p in paths.values()):
            break
    else:
        names = ", ".join(f"{f}[.gz]" for f in FASHION_MNIST_FILES.values())
        raise FileNotFoundError(
            f"Fashion-MNIST not found: looked for {names} in {', '.join(map(str, candidates))}. "
            f"Install the Debian package `dataset-fashion-mnist` (files in "
            f"{FASHION_MNIST_SYSTEM_DIR}) or put the IDX files from {FASHION_MNIST_URL} "
            f"into {root}."
        )
    arrays = {k: _read_idx(p) for k, p in paths.items() if p is not None}
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        xpath, ypath = paths[f"{split}_x"], paths[f"{split}_y"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise RuntimeError(
                f"Fashion-MNIST {xpath} {images.shape} and {ypath} {labels.shape} do not "
                f"form (N, H, W) images with N labels; delete and re-download them."
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise RuntimeError(f"Fashion-MNIST labels in {ypath} exceed 9; re-download it.")
        out += [_to_cifar_shape(images), torch.from_numpy(labels.astype(np.int64))]
    return out[0], out[1], out[2], out[3], FASHION_MNIST_CLASSES


def _idx_path(directory: Path, name: str) -> Path | None:
    for path in (directory / name, directory / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format: 0, 0, dtype code, ndim, big-endian uint32 dims,
    data) of unsigned bytes as a numpy array; gzip is detected by its magic bytes."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise RuntimeError(f"cannot read {path} ({e}); delete it and re-download it.") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RuntimeError(
            f"{path} is not an unsigned-byte IDX file (header {raw[:4].hex()}); "
            f"delete it and re-download it."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(dims) != ndim or len(raw) != header + math.prod(dims):
        raise RuntimeError(
            f"{path}: IDX header says {dims} but holds {len(raw) - header} bytes "
            f"(truncated?); delete it and re-download it."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _to_cifar_shape(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) greyscale, H, W <= 32 -> (N, 3, 32, 32): zero-padded evenly (28 -> 2
    pixels each side) and replicated to 3 channels, so CIFAR networks run unchanged."""
    n, h, w = images.shape
    out = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    top, left = (32 - h) // 2, (32 - w) // 2
    out[:, :, top : top + h, left : left + w] = torch.from_numpy(images.copy())[:, None]
    return out


# --- synthetic -------------------------------------------------------------------------------


def make_synthetic(
    n_train: int = SYNTHETIC_TRAIN, n_test: int = SYNTHETIC_TEST, seed: int = SYNTHETIC_SEED
) -> _Raw:
    """Deterministic CIFAR-shaped data: (n, 3, 32, 32) uint8, 10 balanced classes.

    Each class is a fixed pattern: a 3x3 grid of saturated colours (each channel 30 or
    225) bilinearly upsampled to 12x12 and cut to a disc. Every image pastes its class's
    pattern with random opacity (0.7-1.0) at a uniformly random position on a greyish
    background (grey level 60-200, a smooth +-40 colour field from a 4x4 grid, Gaussian
    pixel noise of std 15) drawn from a bank of 4,096 shared by all classes. Position and
    background carry no label information: the network must recognise the pattern wherever
    it lies, which is what translation (crop) augmentation teaches. A ResNet-8 trained 150
    SGD steps of batch 32 (lr 0.1) reaches ~8-15% test error (chance: 90%).

    Returns (train_x, train_y, test_x, test_y, classes); x: (n, 3, 32, 32) uint8,
    y: (n,) int64. Made with private torch.Generators (the global RNG is neither used nor
    changed), so every call returns the same images; ~0.8 s for the default 50k + 10k on
    2 CPU cores. Train and test come from different streams; labels cycle 0..9 in shuffled
    order, so each class has n // 10 images when n is a multiple of 10.
    """
    templates, masks = _synthetic_templates(torch.Generator().manual_seed(seed))
    bank = _synthetic_backgrounds(torch.Generator().manual_seed(seed + 1))
    train = _synthetic_split(n_train, templates, masks, bank, seed + 2)
    test = _synthetic_split(n_test, templates, masks, bank, seed + 3)
    return train[0], train[1], test[0], test[1], SYNTHETIC_CLASSES


def _upsample_matrix(out: int, inp: int) -> torch.Tensor:
    """(out, inp) bilinear interpolation weights (align_corners=True): upsampling a grid
    G is U @ G @ U.T, much faster on CPU than F.interpolate for many small images."""
    pos = torch.linspace(0, inp - 1, out, dtype=torch.float64)
    lo = pos.floor().clamp(max=inp - 2).long()
    w = pos - lo
    u = torch.zeros(out, inp, dtype=torch.float64)
    u[torch.arange(out), lo] = 1 - w
    u[torch.arange(out), lo + 1] = w
    return u.float()


def _synthetic_templates(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(10, S, S, 3) float class patterns in [0, 255] and the (S, S) disc mask."""
    s = _SYNTH_OBJECT
    u = _upsample_matrix(s, 3)
    # Saturated colours (each channel 30 or 225) stand out from the greyish backgrounds.
    grid = 30.0 + 195.0 * (torch.rand(len(SYNTHETIC_CLASSES), 3, 3, 3, generator=g) < 0.5)
    templates = (u @ grid @ u.T).permute(0, 2, 3, 1).contiguous()
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    radius = ((yy - (s - 1) / 2) ** 2 + (xx - (s - 1) / 2) ** 2).sqrt()
    return templates, (radius <= s / 2).float()


def _synthetic_backgrounds(g: torch.Generator) -> torch.Tensor:
    """(B, 3, 32, 32) uint8 backgrounds: a smooth colour field plus pixel noise."""
    u = _upsample_matrix(32, 4)
    b = _SYNTH_BACKGROUNDS
    # A grey level per image (60..200) with mild colour and brightness variation (+-40).
    grey = 60 + 140 * torch.rand(b, 1, 1, 1, generator=g)
    field = grey + u @ ((torch.rand(b, 3, 4, 4, generator=g) - 0.5) * 80) @ u.T
    noise = torch.randn(b, 3, 32, 32, generator=g) * 15
    return (field + noise).round_().clamp_(0, 255).to(torch.uint8)


def _synthetic_split(
    n: int, templates: torch.Tensor, masks: torch.Tensor, bank: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    num_classes, s = templates.shape[0], templates.shape[1]
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    # Gathering uint8 backgrounds from a bank is ~5x cheaper than fresh noise per image.
    x = bank[torch.randint(0, len(bank), (n,), generator=g)]
    pos = torch.randint(0, 32 - s + 1, (n, 2), generator=g)
    alpha = 0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    ar = torch.arange(s)
    for start in range(0, n, 8192):  # bounded float memory
        sl = slice(start, min(n, start + 8192))
        rows = (pos[sl, 0, None] + ar)[:, :, None]  # (m, S, 1)
        cols = (pos[sl, 1, None] + ar)[:, None, :]  # (m, 1, S)
        idx = torch.arange(sl.stop - sl.start)[:, None, None] + start
        patch = x[idx, :, rows, cols].float()  # (m, S, S, 3)
        a = alpha[sl] * masks[None, :, :, None]
        mixed = patch + (templates[y[sl]] - patch) * a
        x[idx, :, rows, cols] = mixed.round_().clamp_(0, 255).to(torch.uint8)
    return x, y.to(torch.int64)
