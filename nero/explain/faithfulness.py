"""Is a heatmap faithful to the score? The deletion test (region perturbation).

The pixels a map ranks highest are replaced by a blurred copy of the image, a growing share
at a time, and the image is scored again. A map that finds what makes the image unusual
lowers the OOD score faster than random pixels do; the area under the score-vs-share curve
(normalised by the clean score) is the summary, lower = more faithful. (Quantus's
region-perturbation metrics score a class output; here the score is NERO's.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

DELETION_STEPS = (0.05, 0.10, 0.20, 0.40)  # shares of the pixels removed
BLUR_SIDE = 16  # the blurred copy: Gaussian σ = side / BLUR_SIDE


def deleted(image: Image.Image, relevance: np.ndarray, steps: Sequence[float]) -> list[Image.Image]:
    """The image with its top ``step`` share of pixels (by ``relevance``) blurred away."""
    size = relevance.shape
    image = image.convert("RGB").resize(size[::-1])
    pixels = np.asarray(image)
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(max(size) / BLUR_SIDE)))
    order = np.argsort(-np.asarray(relevance, np.float64).ravel(), kind="stable")
    out = []
    for step in steps:
        keep = np.ones(order.size, bool)
        keep[order[: int(round(step * order.size))]] = False
        mask = keep.reshape(size)[..., None]
        out.append(Image.fromarray(np.where(mask, pixels, blurred).astype(np.uint8)))
    return out


def deletion_area(
    score: Callable[[Sequence[Image.Image]], np.ndarray],
    image: Image.Image,
    relevance: np.ndarray,
    steps: Sequence[float] = DELETION_STEPS,
) -> float:
    """Area under score(k)/score(0) for k in 0..max(steps), divided by max(steps)."""
    images = [image.convert("RGB").resize(np.asarray(relevance).shape[::-1])]
    images += deleted(image, relevance, steps)
    values = np.asarray(score(images), np.float64)
    curve = values / max(float(values[0]), 1e-12)
    grid = np.r_[0.0, steps]
    return float(np.trapezoid(curve, grid) / grid[-1])
