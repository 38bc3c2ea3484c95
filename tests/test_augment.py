"""Augmentation: exact pixels for forced offsets, uniform offsets, flip rate, devices."""

import numpy as np
import pytest
import torch
from scipy import stats

from resnet_repro.augment import (
    augment,
    crop_at,
    draw_flips,
    draw_offsets,
    draw_resized_boxes,
    flip_where,
    normalize,
    resized_crop,
)

# Normalisation is x * (1 / (255 std)) - mean / std in fp32: within a few ulps of
# (x / 255 - mean) / std; one pixel off would differ by about 1 / 255.
ATOL = 1e-6


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)


def test_crop_at_forced_offset_gives_exact_pixels():
    x = _images()
    pad = 2
    dy, dx = torch.tensor([0, 4]), torch.tensor([1, 2])
    out = crop_at(x, dy, dx, pad)
    padded = torch.zeros(2, 3, 12, 12, dtype=torch.uint8)
    padded[:, :, 2:10, 2:10] = x
    assert torch.equal(out[0], padded[0, :, 0:8, 1:9])
    assert torch.equal(out[1], padded[1, :, 4:12, 2:10])
    # the centre offset is the identity
    assert torch.equal(crop_at(x, torch.tensor([2, 2]), torch.tensor([2, 2]), pad), x)


def test_reflect_padding_mirrors_the_border():
    x = _images(1)
    out = crop_at(x, torch.tensor([0]), torch.tensor([0]), 2, mode="reflect")
    assert out.dtype == torch.uint8
    # top-left corner of a reflect-padded image is pixel (2, 2) of the original
    assert torch.equal(out[0, :, 0, 0], x[0, :, 2, 2])
    assert torch.equal(out[0, :, 2:, 2:], x[0, :, :6, :6])


def _forced(monkeypatch, dy, dx, flips):
    import resnet_repro.augment as aug

    monkeypatch.setattr(aug, "draw_offsets", lambda n, pad, g: (dy, dx))
    monkeypatch.setattr(aug, "draw_flips", lambda n, g: flips)


def test_pad_zero_and_pad_black_differ_exactly_as_designed(monkeypatch):
    x = _images(1)
    mean = torch.rand(3, 8, 8)  # a per-pixel mean image
    std = torch.ones(1, 1, 1)
    dy, dx, flips = torch.tensor([0]), torch.tensor([0]), torch.tensor([False])
    _forced(monkeypatch, dy, dx, flips)
    kw = dict(pad=2, flip=True, mean=mean, std=std, generator=torch.Generator())
    zero = augment(x, crop="pad_zero", **kw)[0]
    black = augment(x, crop="pad_black", **kw)[0]
    xf = x[0].float() / 255
    # pad_zero: normalised at the source pixel, padding is 0 (= the mean)
    assert torch.allclose(zero[:, 2:, 2:], (xf - mean)[:, :6, :6], atol=ATOL)
    assert (zero[:, :2, :] == 0).all() and (zero[:, :, :2] == 0).all()
    # pad_black: black (0) raw padding, normalised with the mean at the output position
    assert torch.allclose(black[:, :2, :], -mean[:, :2, :], atol=ATOL)
    assert torch.allclose(black[:, 2:, 2:], xf[:, :6, :6] - mean[:, 2:, 2:], atol=ATOL)
    # with a forced flip, both modes mirror their unflipped output
    _forced(monkeypatch, dy, dx, torch.tensor([True]))
    zero_f = augment(x, crop="pad_zero", **kw)[0]
    assert torch.allclose(zero_f, zero.flip(2), atol=ATOL)
    black_f = augment(x, crop="pad_black", **kw)[0]
    xb = torch.zeros(3, 12, 12)
    xb[:, 2:10, 2:10] = xf
    assert torch.allclose(black_f, xb[:, :8, :8].flip(2) - mean, atol=ATOL)


def test_none_and_resized_keep_shape_and_normalise():
    x = _images(4)
    mean, std = torch.full((3, 1, 1), 0.5), torch.full((3, 1, 1), 0.25)
    kw = dict(pad=4, flip=False, mean=mean, std=std, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(augment(x, crop="none", **kw), (x.float() / 255 - 0.5) / 0.25, atol=ATOL)
    r = augment(x, crop="resized", **kw)
    assert r.shape == x.shape and r.dtype == torch.float32
    # an identity box reproduces the image
    theta = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).repeat(4, 1, 1)
    assert torch.allclose(resized_crop(x.float(), theta), x.float(), atol=1e-4)
    boxes = draw_resized_boxes(1000, 32, torch.Generator().manual_seed(0))
    area = boxes[:, 0, 0] * boxes[:, 1, 1]
    assert 0.2 < area.min() and area.max() <= 1.0
    assert (boxes[:, 0, 2].abs() <= 1 - boxes[:, 0, 0] + 1e-6).all()


def test_unknown_crop_names_allowed_values():
    with pytest.raises(ValueError, match="crop='shift'.*'pad_zero'"):
        augment(
            _images(),
            crop="shift",
            pad=4,
            flip=True,
            mean=torch.zeros(1, 1, 1),
            std=torch.ones(1, 1, 1),
            generator=torch.Generator(),
        )


def test_offsets_uniform_over_all_positions():
    pad, n = 4, 81_000
    dy, dx = draw_offsets(n, pad, torch.Generator().manual_seed(0))
    assert dy.min() == 0 and dy.max() == 2 * pad
    cells = (dy * (2 * pad + 1) + dx).numpy()
    counts = np.bincount(cells, minlength=(2 * pad + 1) ** 2)
    assert len(counts) == 81
    _, p = stats.chisquare(counts)
    assert p > 0.001


def test_flip_rate_is_one_half():
    flips = draw_flips(100_000, torch.Generator().manual_seed(0))
    assert stats.binomtest(int(flips.sum()), 100_000, 0.5).pvalue > 0.001
    x = _images(3)
    out = flip_where(x, torch.tensor([True, False, True]))
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])


def test_reproducible_from_generator_and_different_across_seeds():
    x = _images(16)
    kw = dict(crop="pad_zero", pad=4, flip=True, mean=torch.zeros(3, 8, 8), std=torch.ones(1, 1, 1))
    a = augment(x, generator=torch.Generator().manual_seed(1), **kw)
    b = augment(x, generator=torch.Generator().manual_seed(1), **kw)
    c = augment(x, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_augmentation_on_gpu_as_on_cpu():
    x = _images(64)
    for crop in ("pad_zero", "pad_black", "pad_reflect", "resized", "none"):
        kw = dict(crop=crop, pad=4, flip=True, mean=torch.rand(3, 8, 8), std=torch.ones(1, 1, 1))
        cpu = augment(x, generator=torch.Generator().manual_seed(3), **kw)
        gpu = augment(x.cuda(), generator=torch.Generator().manual_seed(3), **kw)
        assert torch.allclose(cpu, gpu.cpu(), atol=1e-5), crop


def test_normalize_uses_broadcast_statistics():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(x, torch.tensor([0.5, 0.0, 1.0]).view(3, 1, 1), torch.full((3, 1, 1), 0.5))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 2.0, 0.0]))


def _naive(x, dy, dx, flips, crop, pad, mean, std):
    """One image at a time, written from the definitions (DESIGN.md): pad_zero
    normalises, then pads with 0 (the mean); pad_black pads raw pixels with 0, then
    normalises; pad_reflect mirrors the border; then the window at (dy, dx), then the flip."""
    out = []
    for i in range(x.shape[0]):
        img = x[i].double() / 255
        if crop == "pad_zero":
            img = torch.nn.functional.pad((img - mean) / std, (pad,) * 4)
        elif crop == "pad_black":
            img = torch.nn.functional.pad(img, (pad,) * 4)
        else:
            img = torch.nn.functional.pad(img[None], (pad,) * 4, mode="reflect")[0]
        h, w = x.shape[2:]
        img = img[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        if flips[i]:
            img = img.flip(2)
        if crop != "pad_zero":  # the mean at the output position
            img = (img - mean) / std
        out.append(img)
    return torch.stack(out).float()


@pytest.mark.parametrize("crop", ["pad_zero", "pad_black", "pad_reflect"])
def test_every_pad_mode_equals_the_naive_definition_at_random_offsets_and_flips(crop, monkeypatch):
    x = _images(32, seed=5)
    pad = 3
    g = torch.Generator().manual_seed(crop.__len__())
    dy, dx = draw_offsets(32, pad, g)
    flips = draw_flips(32, g)
    _forced(monkeypatch, dy, dx, flips)
    mean = torch.rand(3, 8, 8, generator=g, dtype=torch.float64)  # per-pixel mean image
    std = torch.rand(3, 1, 1, generator=g, dtype=torch.float64) + 0.5  # per-channel std
    got = augment(x, crop=crop, pad=pad, flip=True, mean=mean.float(), std=std.float(), generator=g)
    want = _naive(x, dy, dx, flips, crop, pad, mean, std)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    assert not torch.equal(dy, torch.full_like(dy, pad)) and flips.any() and not flips.all()


def test_resized_crop_cuts_the_box_it_draws():
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)  # value = 8 row + column
    # The left half of the image stretched over the whole output. Output column j sits at
    # u = (2j + 1) / 8 - 1 (align_corners=False); the box maps it to 0.5 u - 0.5, i.e.
    # input column ((0.5 u - 0.5 + 1) * 8 - 1) / 2, clamped to the border, read bilinearly.
    theta = torch.tensor([[[0.5, 0.0, -0.5], [0.0, 1.0, 0.0]]])
    out = resized_crop(x, theta)
    u = (2 * torch.arange(8.0) + 1) / 8 - 1
    col = (((0.5 * u - 0.5 + 1) * 8 - 1) / 2).clamp(0, 7)
    want = 8 * torch.arange(8.0)[:, None] + col[None, :]
    torch.testing.assert_close(out[0, 0], want, rtol=0, atol=1e-5)


def test_augment_writes_into_a_given_buffer_of_any_layout_and_refuses_a_wrong_one():
    x = _images(8)
    kw = dict(crop="pad_zero", pad=2, flip=True, mean=torch.rand(3, 8, 8), std=torch.ones(1, 1, 1))
    want = augment(x, generator=torch.Generator().manual_seed(4), **kw)
    buf = torch.empty(8, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    got = augment(x, generator=torch.Generator().manual_seed(4), out=buf, **kw)
    assert got is buf and torch.equal(got, want)
    with pytest.raises(ValueError, match="allowed is float32"):
        augment(x, generator=torch.Generator(), out=torch.empty(8, 3, 8, 8).double(), **kw)
