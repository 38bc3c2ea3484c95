"""resnet_repro.data: CIFAR-10 through torchvision (with clear errors), Fashion-MNIST from
IDX files, deterministic synthetic data, splits, and normalisation statistics.

CIFAR-10 tests write small files in the real format (5 training batches + test batch +
batches.meta) and point torchvision's md5 expectations at them, so no test downloads.
The fake has 100 training images; train_size=45000 on a training set smaller than 50,000
holds out its last 10% (10 images), the rule the module documents.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import require_or_skip
from torch import nn
from torchvision.datasets import CIFAR10

from resnet_repro import data
from resnet_repro.config import RunConfig

CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
PER_BATCH = 20  # 5 batches -> 100 training images


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fake_cifar_arrays() -> dict[str, tuple[np.ndarray, list[int]]]:
    """Rows in CIFAR's layout: 3072 bytes = R plane, G plane, B plane, each 32x32
    row-major. Image i of batch b has every byte = (10 * b + i) % 256, except one marker
    pixel per image, so the row -> (c, h, w) mapping can be checked."""
    out = {}
    names = [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        rows = np.zeros((PER_BATCH, 3072), dtype=np.uint8)
        for i in range(PER_BATCH):
            rows[i] = (10 * b + i) % 256
        labels = [(b + i) % 10 for i in range(PER_BATCH)]
        out[name] = (rows, labels)
    return out


def _write_fake_cifar(root: Path) -> Path:
    """Write the fake dataset under root/cifar-10-batches-py; return that directory."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name, (rows, labels) in _fake_cifar_arrays().items():
        rows = rows.copy()
        # Marker: channel 1 (G), row 5, column 7 of the first image of each batch.
        rows[0, 1 * 1024 + 5 * 32 + 7] = 250
        # Keys are str: torchvision unpickles with encoding="latin1", under which the
        # original Python 2 pickles' keys come out as str (Python 3 bytes keys would not).
        with open(base / name, "wb") as f:
            pickle.dump({"data": rows, "labels": labels, "batch_label": name}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": PER_BATCH}, f)
    return base


def _trust_files(monkeypatch: pytest.MonkeyPatch, base: Path) -> None:
    """Point torchvision's md5 expectations at the files now in `base`."""
    monkeypatch.setattr(
        CIFAR10,
        "train_list",
        [[f"data_batch_{b}", _md5(base / f"data_batch_{b}")] for b in range(1, 6)],
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(base / "test_batch")]])
    meta = dict(CIFAR10.meta, md5=_md5(base / "batches.meta"))
    monkeypatch.setattr(CIFAR10, "meta", meta)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every urlopen fails at once, as without network; records the URLs tried."""
    tried: list[str] = []

    def refuse(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return tried


@pytest.fixture
def fake_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    data.clear_cache()
    base = _write_fake_cifar(tmp_path)
    _trust_files(monkeypatch, base)
    yield tmp_path
    data.clear_cache()


# --- CIFAR-10 ------------------------------------------------------------------------------


def test_cifar10_shapes_dtypes_and_pixel_layout(fake_cifar: Path, offline: list[str]) -> None:
    d = data.load_dataset("cifar10", fake_cifar, download=False)
    assert d.train_x.shape == (5 * PER_BATCH, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (PER_BATCH, 3, 32, 32) and d.test_x.dtype == torch.uint8
    assert d.train_y.shape == (5 * PER_BATCH,) and d.train_y.dtype == torch.int64
    assert d.test_y.dtype == torch.int64
    assert d.val_x is None and d.val_y is None
    assert d.classes == tuple(CIFAR_CLASSES) and d.num_classes == 10
    # Batches in order 1..5, images in stored order.
    fill = torch.tensor([(10 * b + i) % 256 for b in range(5) for i in range(PER_BATCH)])
    assert torch.equal(d.train_x[:, 0, 0, 0].long(), fill)
    assert d.train_y.tolist() == [(b + i) % 10 for b in range(5) for i in range(PER_BATCH)]
    assert d.test_y.tolist() == [(5 + i) % 10 for i in range(PER_BATCH)]
    # Marker byte 1*1024 + 5*32 + 7 lands at (c=1, h=5, w=7), nowhere else.
    for x in (d.train_x[0], d.train_x[PER_BATCH], d.test_x[0]):
        assert x[1, 5, 7] == 250
        assert (x == 250).sum() == 1
    assert d.train_x.is_contiguous()
    assert not offline  # files present: no network touched, even with download=True below
    data.clear_cache()
    data.load_dataset("cifar10", fake_cifar, download=True)
    assert not offline


def test_cifar10_train_size_holdout_and_subset(fake_cifar: Path) -> None:
    full = data.load_dataset("cifar10", fake_cifar, train_size=50000)
    held = data.load_dataset("cifar10", fake_cifar, train_size=45000)
    # 100 training images (< 50,000): the last 10% become validation.
    assert data.holdout_size(100) == 10
    assert len(held.train_x) == 90 and len(held.val_x) == 10 and len(held.val_y) == 10
    assert torch.equal(held.train_x, full.train_x[:90])
    assert torch.equal(held.val_x, full.train_x[90:])
    assert torch.equal(held.val_y, full.train_y[90:])
    assert torch.equal(held.test_x, full.test_x)
    sub = data.load_dataset("cifar10", fake_cifar, train_size=45000, subset=30)
    assert torch.equal(sub.train_x, full.train_x[:30])
    # max(30 // 4, 128) = 128 exceeds the fake's splits: all 20 test and 10 val images.
    assert len(sub.test_x) == PER_BATCH and len(sub.val_x) == 10
    # The directory itself is accepted as data_dir too.
    same = data.load_dataset("cifar10", fake_cifar / "cifar-10-batches-py")
    assert torch.equal(same.train_x, full.train_x)


def test_holdout_rule_matches_the_paper_split() -> None:
    assert data.holdout_size(50000) == 5000  # CIFAR-10: 45k/5k
    assert data.holdout_size(60000) == 5000  # Fashion-MNIST: 55k/5k
    assert data.holdout_size(12000) == 1200
    assert data.eval_subset_size(2560) == 640 and data.eval_subset_size(100) == 128


def test_cifar10_truncated_batch_names_file_and_says_redownload(
    fake_cifar: Path, offline: list[str]
) -> None:
    batch = fake_cifar / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        data.load_dataset("cifar10", fake_cifar, download=True)
    msg = str(err.value)
    assert str(batch) in msg and "corrupted" in msg
    assert "Delete" in msg and "re-download" in msg and data.CIFAR10_URL in msg
    # The corrupted file is reported, not silently re-downloaded.
    assert not offline and time.monotonic() - t0 < 5


def test_cifar10_unloadable_file_with_matching_md5_names_file(
    fake_cifar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = fake_cifar / "cifar-10-batches-py"
    (base / "test_batch").write_bytes(b"not a pickle at all")
    _trust_files(monkeypatch, base)  # md5 matches: only unpickling fails
    with pytest.raises(RuntimeError) as err:
        data.load_dataset("cifar10", fake_cifar, download=False)
    msg = str(err.value)
    assert str(base / "test_batch") in msg and "re-download" in msg


def test_cifar10_missing_without_download_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("cifar10", tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert data.CIFAR10_URL in msg


def test_cifar10_missing_with_failed_download_is_clear_and_fast(
    tmp_path: Path, offline: list[str]
) -> None:
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("cifar10", tmp_path, download=True)
    msg = str(err.value)
    assert offline, "torchvision's download path was not exercised"
    assert "download failed" in msg and "URLError" in msg
    assert str(tmp_path / "cifar-10-batches-py") in msg and data.CIFAR10_URL in msg
    assert isinstance(err.value.__cause__, urllib.error.URLError)
    assert time.monotonic() - t0 < 5
    assert socket.getdefaulttimeout() is None  # the download timeout was restored


def test_cifar10_download_path_loads_what_was_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """download=True with files missing goes through torchvision's download, then loads."""
    data.clear_cache()
    staged = _write_fake_cifar(tmp_path / "staging")
    _trust_files(monkeypatch, staged)
    calls = []

    def fake_download(url, download_root, **kwargs):
        calls.append(url)
        assert socket.getdefaulttimeout() == data._DOWNLOAD_TIMEOUT_S
        staged.rename(Path(download_root) / "cifar-10-batches-py")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", fake_download)
    d = data.load_dataset("cifar10", tmp_path / "root", download=True)
    assert calls == [data.CIFAR10_URL] and len(d.train_x) == 100
    data.clear_cache()


# --- Fashion-MNIST -------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(directory: Path, n_train: int, n_test: int, gz: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(1, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(1, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        raw = _idx_bytes(array)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz, sub", [(True, ""), (False, ""), (True, "fashion-mnist")])
def test_fashion_mnist_from_idx_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool, sub: str
) -> None:
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")
    arrays = _write_fashion(tmp_path / sub if sub else tmp_path, 30, 12, gz)
    d = data.load_dataset("fashion_mnist", tmp_path)
    assert d.train_x.shape == (30, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (12, 3, 32, 32) and d.test_y.dtype == torch.int64
    assert d.classes == data.FASHION_MNIST_CLASSES and d.num_classes == 10
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    # 28x28 sits in the centre (2 zero pixels on each side), identical in all 3 channels.
    src = torch.from_numpy(arrays["train-images-idx3-ubyte"])
    for c in range(3):
        assert torch.equal(d.train_x[:, c, 2:30, 2:30], src)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (d.train_x[:, :, border] == 0).all()
    assert torch.equal(
        d.test_x[:, 0, 2:30, 2:30], torch.from_numpy(arrays["t10k-images-idx3-ubyte"])
    )
    assert d.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert d.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    held = data.load_dataset("fashion_mnist", tmp_path, train_size=45000)
    assert len(held.train_x) == 27 and torch.equal(held.val_x, d.train_x[27:])


def test_fashion_mnist_missing_names_both_locations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", system)
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("fashion_mnist", tmp_path / "mine")
    msg = str(err.value)
    assert str(tmp_path / "mine") in msg and str(system) in msg
    assert "train-images-idx3-ubyte" in msg and "dataset-fashion-mnist" in msg


def test_fashion_mnist_truncated_idx_names_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")
    _write_fashion(tmp_path, 30, 12, gz=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(RuntimeError) as err:
        data.load_dataset("fashion_mnist", tmp_path)
    assert str(images) in str(err.value) and "re-download" in str(err.value)


def test_fashion_mnist_real_system_files(tmp_path: Path) -> None:
    system = data.FASHION_MNIST_SYSTEM_DIR
    require_or_skip(
        all((system / f"{f}.gz").is_file() for f in data.FASHION_MNIST_FILES.values()),
        f"Fashion-MNIST IDX files not in {system} (apt-get install dataset-fashion-mnist)",
    )
    d = data.load_dataset("fashion_mnist", tmp_path)  # empty dir: falls back to the system
    assert d.train_x.shape == (60000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(d.train_y).tolist() == [6000] * 10
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    assert (d.train_x[:, :, :2] == 0).all() and (d.train_x[:, :, :, 30:] == 0).all()
    assert torch.equal(d.train_x[:, 0], d.train_x[:, 2])
    assert 0.25 < d.train_x[:, :, 2:30, 2:30].float().mean().item() / 255 < 0.35


# --- synthetic -----------------------------------------------------------------------------


def test_synthetic_is_deterministic_balanced_and_cifar_shaped() -> None:
    rng_state = torch.random.get_rng_state()
    a = data.make_synthetic(200, 100)
    torch.manual_seed(12345)  # the global RNG must not matter
    b = data.make_synthetic(200, 100)
    assert all(torch.equal(u, v) for u, v in zip(a[:4], b[:4]))
    torch.random.set_rng_state(rng_state)
    c = data.make_synthetic(200, 100)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # and is left untouched
    assert torch.equal(a[0], c[0])
    d = data.load_dataset("synthetic")
    assert d.train_x.shape == (data.SYNTHETIC_TRAIN, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (data.SYNTHETIC_TEST, 3, 32, 32) and d.test_y.dtype == torch.int64
    assert d.num_classes == 10 and len(set(d.classes)) == 10
    assert torch.bincount(d.train_y).tolist() == [data.SYNTHETIC_TRAIN // 10] * 10
    assert torch.bincount(d.test_y).tolist() == [data.SYNTHETIC_TEST // 10] * 10
    assert not torch.equal(d.train_x[:100], d.test_x[:100])
    # Cached: a second load shares the tensors instead of regenerating them.
    assert data.load_dataset("synthetic").train_x.data_ptr() == d.train_x.data_ptr()


def test_synthetic_classes_differ_and_are_learnable() -> None:
    d = data.load_dataset("synthetic")
    # The class patterns differ from each other everywhere: RMS distance > 40 grey levels.
    templates, mask = data._synthetic_templates(torch.Generator().manual_seed(data.SYNTHETIC_SEED))
    flat = (templates * mask[None, :, :, None]).flatten(1)
    rms = torch.cdist(flat, flat) / flat.shape[1] ** 0.5 + 1e9 * torch.eye(10)
    assert rms.min() > 40
    # A translation-invariant net (conv + global max-pool) learns it in 150 SGD steps.
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 16, 5, padding=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10),
        )
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(150):
        idx = torch.randint(0, 2560, (32,), generator=gen)
        loss = F.cross_entropy(net(d.train_x[idx].float() / 255 - 0.5), d.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(d.test_x[:1000].float() / 255 - 0.5).argmax(1)
    # Chance is 90% error; the brief's bar for "learnable" is < 60%. Train and test share
    # the class patterns, so what is learnt transfers.
    assert (pred != d.test_y[:1000]).float().mean().item() < 0.6


def test_load_for_config_uses_dataset_train_size_and_subset() -> None:
    cfg = RunConfig(dataset="synthetic", train_size=45000, subset=1000)
    d = data.load_for_config(cfg)
    full = data.load_dataset("synthetic")
    assert d.name == "synthetic"
    assert torch.equal(d.train_x, full.train_x[:1000])
    # 50,000 synthetic training images: the paper's split holds out the last 5,000.
    assert torch.equal(d.val_x, full.train_x[45000:45250])
    assert torch.equal(d.test_x, full.test_x[:250]) and len(d.test_y) == 250
    d2 = data.load_for_config(cfg.replace(subset=2560, train_size=50000))
    assert len(d2.train_x) == 2560 and len(d2.test_x) == 640 and d2.val_x is None


def test_unknown_names_raise_with_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dataset='cifar100'.*'cifar10'.*'synthetic'"):
        data.load_dataset("cifar100", tmp_path)
    with pytest.raises(ValueError, match=r"train_size=40000.*50000.*45000"):
        data.load_dataset("synthetic", train_size=40000)
    with pytest.raises(ValueError, match=r"subset=-1"):
        data.load_dataset("synthetic", subset=-1)
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"normalize='zca'.*'pixel_mean'.*'none'"):
        data.normalization_stats(x, "zca")


def test_dataset_validates_and_repr_is_short() -> None:
    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.int64)
    d = data.Dataset("t", x, y, x, y, None, None, ("a", "b"))
    assert d.num_classes == 2 and repr(d) == (
        "Dataset(name='t', train=4, val=0, test=4, classes=2)"
    )
    with pytest.raises(ValueError, match="train_x"):
        data.Dataset("t", x.float(), y, x, y, None, None, ("a",))
    with pytest.raises(ValueError, match="test_y"):
        data.Dataset("t", x, y, x, y[:3], None, None, ("a",))
    with pytest.raises(ValueError, match="both"):
        data.Dataset("t", x, y, x, y, x, None, ("a",))


# --- normalisation statistics --------------------------------------------------------------


def test_normalization_stats_known_answers() -> None:
    # Two 3x1x2 images. Channel 0: 0, 255 | 255, 255; channel 1: all 51; channel 2: 0, 0 | 0, 255.
    x = torch.tensor(
        [
            [[[0, 255]], [[51, 51]], [[0, 0]]],
            [[[255, 255]], [[51, 51]], [[0, 255]]],
        ],
        dtype=torch.uint8,
    )
    mean, std = data.normalization_stats(x, "pixel_mean")
    assert mean.dtype == torch.float32 and mean.shape == (3, 1, 2) and std.shape == (1, 1, 1)
    expected = torch.tensor([[[0.5, 1.0]], [[0.2, 0.2]], [[0.0, 0.5]]])
    torch.testing.assert_close(mean, expected)
    assert torch.equal(std, torch.ones(1, 1, 1))

    mean, std = data.normalization_stats(x, "channel_std")
    assert mean.shape == (3, 1, 1) and std.shape == (3, 1, 1) and std.dtype == torch.float32
    torch.testing.assert_close(mean.flatten(), torch.tensor([0.75, 0.2, 0.25]))
    # Population std over all 4 pixels: sqrt(3)/4 for three 1s and one 0; 0 for constants.
    torch.testing.assert_close(std.flatten(), torch.tensor([3**0.5 / 4, 0.0, 3**0.5 / 4]))

    mean, std = data.normalization_stats(x, "imagenet")
    torch.testing.assert_close(mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert mean.shape == (3, 1, 1)

    mean, std = data.normalization_stats(x, "none")
    assert torch.equal(mean, torch.zeros(1, 1, 1)) and torch.equal(std, torch.ones(1, 1, 1))


def test_normalization_stats_match_float64_on_many_images() -> None:
    # More than one chunk (8192 images) so the chunked sums are exercised.
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (9000, 3, 8, 8), dtype=torch.uint8, generator=g)
    x[:, 1] //= 2
    ref = x.double() / 255
    mean, _ = data.normalization_stats(x, "pixel_mean")
    torch.testing.assert_close(mean.double(), ref.mean(0), rtol=0, atol=1e-7)
    mean, std = data.normalization_stats(x, "channel_std")
    per_channel = ref.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(mean.flatten().double(), per_channel.mean(1), rtol=0, atol=1e-7)
    torch.testing.assert_close(
        std.flatten().double(), per_channel.std(1, unbiased=False), rtol=0, atol=1e-7
    )


def test_normalization_stats_use_only_the_training_split(fake_cifar: Path) -> None:
    held = data.load_dataset("cifar10", fake_cifar, train_size=45000)
    mean, _ = data.normalization_stats(held.train_x, "pixel_mean")
    # Fake pixel values are (10 * batch + image) % 256 plus the marker pixels: the mean of
    # the 90 training images only, not of the held-out 10 or the test batch.
    torch.testing.assert_close(mean.double(), held.train_x.double().mean(0) / 255)
    values = [(10 * b + i) % 256 for b in range(5) for i in range(PER_BATCH)][:90]
    assert mean[0, 0, 0].item() == pytest.approx(sum(values) / 90 / 255)
    everything = torch.cat([held.train_x, held.val_x, held.test_x])
    assert mean[0, 0, 0].item() != pytest.approx(everything[:, 0, 0, 0].double().mean() / 255)
