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


def _padded(x: Tensor, pad: int, mode: str, out: Tensor | None = None) -> Tensor:
    """x (N, C, H, W) padded by `pad` on each side with zeros or by reflection; any dtype.
    Written into `out` (N, C, H + 2 pad, W + 2 pad) when given."""
    n, c, h, w = x.shape
    if out is None:
        out = x.new_empty(n, c, h + 2 * pad, w + 2 * pad)
    if mode == "reflect":  # index the border rows and columns: works on uint8 too

        def mirror(size: int) -> Tensor:
            i = torch.arange(-pad, size + pad, device=x.device).abs()
            return torch.where(i >= size, 2 * (size - 1) - i, i)

        return torch.index_select(x.index_select(2, mirror(h)), 3, mirror(w), out=out)
    out.zero_()
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
    any device. One gather over a strided view of every window: with flips, the padded
    images are stacked with their mirror images, and a flipped sample takes the window
    at (dy, 2 pad - dx) of its mirror image, which is the mirror of its window."""
    n, c, h, w = x.shape
    if pad == 0 and flips is None:
        return x
    dev = x.device
    side = 2 * pad + 1
    sides = x.new_empty(1 if flips is None else 2, n, c, h + 2 * pad, w + 2 * pad)
    _padded(x, pad, mode, out=sides[0])
    if flips is not None:
        sides[1] = sides[0].flip(-1)
    s_f, s_n, s_c, s_h, s_w = sides.stride()
    windows = sides.as_strided(
        (sides.shape[0], n, side, side, c, h, w), (s_f, s_n, s_h, s_w, s_c, s_h, s_w)
    )
    rows, dy, dx = torch.arange(n, device=dev), dy.to(dev), dx.to(dev)
    if flips is None:
        return windows[0, rows, dy, dx]
    f = flips.to(dev)
    return windows[f.long(), rows, dy, torch.where(f, 2 * pad - dx, dx)]


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


# Images per chunk of `augment`: the temporaries of a chunk stay a few MB (on a CPU, blocks
# that small are reused by the allocator instead of being faulted in afresh each time).
CHUNK = {"cpu": 512, "cuda": 16384}


def augment(
    x: Tensor,
    *,
    crop: str,
    pad: int,
    flip: bool,
    mean: Tensor,
    std: Tensor,
    generator: torch.Generator,
    out: Tensor | None = None,
) -> Tensor:
    """Augment and normalise a whole uint8 batch x (N, 3, H, W) -> float32 (N, 3, H, W),
    written into `out` when given (float32, x's shape and device, any memory format).

    Random draws come from `generator` (CPU) in a fixed order: crop parameters, then flips.
    "pad_zero" normalises before padding and flipping; every other mode crops and flips the
    raw pixels and normalises the result, so the mean is taken at the output position.
    The work goes in chunks of CHUNK images (same numbers as one pass: every pixel is
    computed alone), so temporaries stay small whatever N is.
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
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32, device=dev)
    elif out.shape != x.shape or out.dtype != torch.float32 or out.device != dev:
        raise ValueError(
            f"out: {tuple(out.shape)} {out.dtype} on {out.device}; allowed is float32 of "
            f"the images' shape {tuple(x.shape)} on {dev}"
        )
    if crop == "none":
        dy = dx = torch.zeros(n, dtype=torch.int64)
        pad = 0
    scale, shift = (1.0 / 255.0) / std, mean / std
    table = _shift_table(shift.expand(x.shape[1:]), pad) if crop == "pad_zero" else None
    step = CHUNK.get(dev.type, CHUNK["cuda"])
    # Into a channels_last `out`: compute each chunk in NCHW and transpose it once (on a
    # CPU, broadcasting the per-channel statistics over NHWC is an order of magnitude
    # slower than over NCHW).
    transpose = _channels_last(out)
    for i in range(0, n, step):
        sl = slice(i, min(n, i + step))
        fl = flips[sl] if flips is not None else None
        if crop == "resized":
            res = resized_crop(to_unit(x[sl]), theta[sl])
            out[sl] = normalize(res if fl is None else flip_where(res, fl), mean, std)
            continue  # (normalize broadcasts over NCHW; the assignment transposes)
        # Crop and flip the raw uint8 pixels (4x less memory traffic than float), then
        # normalise in two passes: x * (1 / (255 std)) - mean / std.
        mode = "reflect" if crop == "pad_reflect" else "constant"
        raw = crop_at(x[sl], dy[sl], dx[sl], pad, mode, fl)
        chunk = torch.empty(raw.shape, device=dev) if transpose else out[sl]
        chunk.copy_(raw).mul_(scale)
        if table is None:  # the mean at the output position
            chunk.sub_(shift)
        else:  # pad_zero: each sample's placement of the shift image (_shift_table)
            which = (dy[sl] * (2 * pad + 1) + dx[sl]) * 2
            if fl is not None:
                which = which + fl.long()
            chunk.sub_(table.index_select(0, which.to(dev)).view_as(chunk))
        if transpose:
            out[sl] = chunk
    return out


def _channels_last(t: Tensor) -> bool:
    return (
        t.dim() == 4
        and t.is_contiguous(memory_format=torch.channels_last)
        and not t.is_contiguous()
    )


def _shift_table(shift: Tensor, pad: int) -> Tensor:
    """ "pad_zero"'s shift image (mean / std, (C, H, W)) at every placement a sample can
    have: cropped at each of the (2 pad + 1)^2 offsets, unflipped and flipped, 0 in the
    padding (the mean's own normalised value). Row (offset * 2 + flip) of the result,
    (placements, C * H * W)."""
    side = 2 * pad + 1
    k = torch.arange(side * side * 2)
    placed = crop_at(
        shift.expand(len(k), *shift.shape), k // 2 // side, k // 2 % side, pad, flips=k % 2 == 1
    )
    return placed.reshape(len(k), -1)
