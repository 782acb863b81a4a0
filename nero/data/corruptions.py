"""Synthetic stand-ins for OOD data, made from in-distribution images only.

Used to choose detector settings without touching any evaluation OOD set: generic
corruptions (no lesion-, dye- or instrument-like artefacts), batched on tensors in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CORRUPTIONS = ("patch-shuffle", "local-blur", "noise", "pixelate", "mixup")


def _boxes(n: int, size: int, gen: torch.Generator, lo: float = 0.25, hi: float = 0.5):
    """One random square per image: top-left corners and side lengths (pixels)."""
    side = (torch.rand(n, generator=gen) * (hi - lo) + lo) * size
    side = side.long().clamp(min=2)
    y0 = (torch.rand(n, generator=gen) * (size - side)).long()
    x0 = (torch.rand(n, generator=gen) * (size - side)).long()
    return y0, x0, side


def _box_mask(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    y0, x0, side = _boxes(n, size, gen)
    r = torch.arange(size)
    rows = (r[None] >= y0[:, None]) & (r[None] < (y0 + side)[:, None])
    cols = (r[None] >= x0[:, None]) & (r[None] < (x0 + side)[:, None])
    return (rows[:, :, None] & cols[:, None, :])[:, None].float()  # N×1×H×W


def corrupt(images: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """Corrupt a batch N×3×H×W in [0, 1]; every kind keeps the image size and range."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose from {CORRUPTIONS}")
    gen = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape
    if kind == "noise":
        return (images + 0.15 * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    if kind == "pixelate":
        small = F.interpolate(images, size=(max(h // 8, 2), max(w // 8, 2)), mode="area")
        return F.interpolate(small, size=(h, w), mode="nearest")
    if kind == "mixup":  # two scenes overlaid: neither class
        partner = images[torch.randperm(n, generator=gen)]
        return 0.5 * images + 0.5 * partner.flip(-1)
    mask = _box_mask(n, h, gen)
    if kind == "local-blur":
        blurred = F.avg_pool2d(F.pad(images, (4, 4, 4, 4), mode="replicate"), 9, stride=1)
        return images * (1 - mask) + blurred * mask
    # patch-shuffle: a square from another image, placed out of context
    partner = images[torch.randperm(n, generator=gen)].flip(-2)
    return images * (1 - mask) + partner * mask
