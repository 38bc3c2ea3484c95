"""Crop, flip and normalisation on whole uint8 batches, on any device.

The paper (He et al. 2015, sec. 4.2, following Deeply-Supervised Nets, Lee et al. 2015)
pads 4 pixels on each side, takes a random 32x32 crop of the padded image or of its
horizontal flip, and subtracts the per-pixel mean. It does not say what the padding holds.
Two readings differ measurably:

- "pad_zero": normalise first, then pad with 0, so padding equals the mean image and the
  mean is subtracted at each pixel's source position (Caffe-style, after mean subtraction);
- "pad_black": pad the raw pixels with 0 (black), crop, then normalise with the mean at
  the output position (torchvision's RandomCrop(32, padding=4) before Normalize).

Also "pad_reflect" (reflection padding of raw pixels), "resized" (random resized crop,
area 25-100%, aspect 3/4-4/3, bilinear) and "none". All randomness is drawn on the CPU
from a `torch.Generator`, so a seed gives the same augmentation on every device, and
applied with a few batched tensor ops (gather, where, grid_sample) on the data's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

RESIZED_SCALE = (0.25, 1.0)  # area fraction of the random resized crop (32x32 images)
RESIZED_RATIO = (3 / 4, 4 / 3)  # aspect ratio range, torchvision's default


def to_unit(x: Tensor) -> Tensor:
    """uint8 (N, C, H, W) in [0, 255] -> float32 in [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(x/255 - mean) / std for uint8 x (N, C, H, W); mean/std broadcast to (C, H, W).
    Computed as x * (1 / (255 std)) - mean / std: two passes, and the same rounding as
    `augment`, so training and test inputs are normalised by identical arithmetic."""
    mean, std = mean.to(x.device), std.to(x.device)
    scale = (1.0 / 255.0) / std if x.dtype == torch.uint8 else 1.0 / std
    return x.float().mul_(scale).sub_(mean / std)


def draw_offsets(n: int, pad: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Per-sample crop offsets (dy, dx), each uniform over 0..2*pad; int64 (n,) on CPU."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    return dy, dx


def draw_flips(n: int, generator: torch.Generator) -> Tensor:
    """Per-sample flip decisions, bool (n,) with probability 0.5, on CPU."""
    return torch.rand(n, generator=generator) < 0.5


def _padded(x: Tensor, pad: int, mode: str) -> Tensor:
    """x (N, C, H, W) padded by `pad` on each side with zeros or by reflection; any dtype."""
    n, c, h, w = x.shape
    if mode == "reflect":  # index the border rows and columns: works on uint8 too

        def mirror(size: int) -> Tensor:
            i = torch.arange(-pad, size + pad, device=x.device).abs()
            return torch.where(i >= size, 2 * (size - 1) - i, i)

        return x.index_select(2, mirror(h)).index_select(3, mirror(w))
    out = x.new_zeros(n, c, h + 2 * pad, w + 2 * pad)
    out[:, :, pad : pad + h, pad : pad + w] = x
    return out


def crop_at(
    x: Tensor,
    dy: Tensor,
    dx: Tensor,
    pad: int,
    mode: str = "constant",
    flips: Tensor | None = None,
) -> Tensor:
    """Pad x (N, C, H, W) by `pad` on each side (zeros or reflection) and cut the
    (H, W) window whose top-left corner is at (dy[i], dx[i]) of the padded image i,
    mirrored horizontally where `flips` (N,) is True. Any dtype; offsets (N,) int64 on
    any device. Two passes over the output: the rows of every window are picked from a
    strided view of all row offsets, then one gather takes the columns (offset and flip
    folded into a single (N, W) index), so no per-pixel index is built."""
    n, c, h, w = x.shape
    if pad == 0 and flips is None:
        return x
    dev = x.device
    padded = _padded(x, pad, mode) if pad else x.contiguous()
    s_n, s_c, s_h, s_w = padded.stride()
    windows = padded.as_strided((n, 2 * pad + 1, c, h, w + 2 * pad), (s_n, s_h, s_c, s_h, s_w))
    rows = windows[torch.arange(n, device=dev), dy.to(dev)]  # (N, C, H, W + 2 pad)
    cols = torch.arange(w, device=dev).expand(n, w)
    if flips is not None:
        cols = torch.where(flips.to(dev)[:, None], w - 1 - cols, cols)
    cols = cols + dx.to(dev)[:, None]
    return rows.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def flip_where(x: Tensor, flips: Tensor) -> Tensor:
    """Horizontally flip the images of x (N, C, H, W) where flips (N,) is True."""
    return torch.where(flips.to(x.device)[:, None, None, None], x.flip(3), x)


def draw_resized_boxes(n: int, size: int, generator: torch.Generator) -> Tensor:
    """Random resized crop boxes as affine thetas (n, 2, 3) float32 on CPU: each box keeps
    RESIZED_SCALE of the area with aspect ratio in RESIZED_RATIO, placed uniformly."""
    area = torch.empty(n).uniform_(*RESIZED_SCALE, generator=generator)
    logr = torch.empty(n).uniform_(*map(math.log, RESIZED_RATIO), generator=generator)
    ratio = logr.exp()
    bw = (area * ratio).sqrt().clamp(max=1.0)  # box width / image width
    bh = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - bw)  # centre in [-1, 1]
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - bh)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = bw, cx
    theta[:, 1, 1], theta[:, 1, 2] = bh, cy
    return theta


def resized_crop(x: Tensor, theta: Tensor) -> Tensor:
    """Bilinear resampling of float x (N, C, H, W) inside the boxes `theta` (N, 2, 3)."""
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(
    x: Tensor,
    *,
    crop: str,
    pad: int,
    flip: bool,
    mean: Tensor,
    std: Tensor,
    generator: torch.Generator,
) -> Tensor:
    """Augment and normalise a whole uint8 batch x (N, 3, H, W) -> float32 (N, 3, H, W).

    Random draws come from `generator` (CPU) in a fixed order: crop parameters, then flips.
    "pad_zero" normalises before padding and flipping; every other mode crops and flips the
    raw pixels and normalises the result, so the mean is taken at the output position.
    """
    n, _, h, _ = x.shape
    if crop not in ("pad_zero", "pad_black", "pad_reflect", "resized", "none"):
        from resnet_repro.config import CROPS

        raise ValueError(f"crop={crop!r}: allowed values are {', '.join(map(repr, CROPS))}")
    if crop == "resized":
        theta = draw_resized_boxes(n, h, generator)
    elif crop != "none":
        dy, dx = draw_offsets(n, pad, generator)
    flips = draw_flips(n, generator) if flip else None
    dev = x.device
    mean, std = mean.to(dev), std.to(dev)
    if crop == "resized":
        out = resized_crop(to_unit(x), theta)
        return normalize(out if flips is None else flip_where(out, flips), mean, std)
    if crop == "none":
        dy = dx = torch.zeros(n, dtype=torch.int64)
        pad = 0
    # Crop and flip the raw uint8 pixels (4x less memory traffic than float), then
    # normalise in two passes: x * (1 / (255 std)) - mean / std.
    raw = crop_at(x, dy, dx, pad, "reflect" if crop == "pad_reflect" else "constant", flips)
    if crop != "pad_zero":  # the mean at the output position
        return normalize(raw, mean, std)
    out = raw.float().mul_((1.0 / 255.0) / std)
    shift = (mean / std).expand(x.shape[1:])
    # "pad_zero": the mean at each pixel's source position and 0 in the padding, i.e. the
    # shift image cropped and flipped like the sample. There are only (2 pad + 1)^2 * 2
    # distinct placements: crop each once, then pick each sample's.
    side = 2 * pad + 1
    k = torch.arange(side * side * 2)
    table = crop_at(
        shift.expand(len(k), *shift.shape), k // 2 // side, k // 2 % side, pad, flips=k % 2 == 1
    )
    which = (dy * side + dx) * 2 + (flips.long() if flips is not None else 0)
    return out.sub_(table.reshape(len(k), -1).index_select(0, which.to(dev)).view_as(out))
