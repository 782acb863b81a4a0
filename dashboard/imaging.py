"""Heatmap overlays and thumbnails as plain RGB arrays (no Streamlit)."""

from __future__ import annotations

import functools

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageFilter

# Diverging map centred on 0: red = evidence for, blue = evidence against.
COLORMAP = "bwr"
# The colour scale ends at this percentile of |relevance|, so a few hot pixels do not wash
# out the rest of the map.
CLIP_PERCENTILE = 99.5
MASK_COLOUR = (255, 215, 0)


def symmetric_scale(relevance: np.ndarray) -> float:
    """The |relevance| mapped to full colour (0 → an all-zero map, drawn neutral)."""
    magnitude = np.abs(np.asarray(relevance, np.float64))
    if magnitude.size == 0 or not np.isfinite(magnitude).any():
        return 0.0
    return float(np.percentile(magnitude[np.isfinite(magnitude)], CLIP_PERCENTILE))


def colorize(relevance: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RGB colours (H×W×3 uint8) and strength in [0, 1] (H×W) of a signed map, centred on 0.

    ``scale``: the |relevance| drawn at full colour (the run's shared scale); default this
    map's own high percentile.
    """
    rel = np.nan_to_num(np.asarray(relevance, np.float64))
    scale = symmetric_scale(rel) if scale is None else scale
    x = np.clip(rel / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(rel)
    rgba = colormaps[COLORMAP]((x + 1.0) / 2.0)
    return (rgba[..., :3] * 255).astype(np.uint8), np.abs(x)


def overlay(
    image: np.ndarray, relevance: np.ndarray, opacity: float = 0.6, scale: float | None = None
) -> np.ndarray:
    """The heatmap blended over a grey copy of the image (resized to the heatmap).

    Grey underneath, so the red and blue of relevance cannot be mistaken for the image's own
    colours (endoscopy images are red). The blend grows with |R| up to ``opacity``: pixels
    without relevance show the image itself.
    """
    rel = np.asarray(relevance)
    if rel.ndim != 2:
        raise ValueError(f"a heatmap must be H×W, got shape {rel.shape}")
    h, w = rel.shape
    grey = Image.fromarray(np.asarray(image, np.uint8)).convert("L").convert("RGB")
    base = np.asarray(grey.resize((w, h)), np.float64)
    colours, strength = colorize(rel, scale)
    alpha = (np.clip(opacity, 0.0, 1.0) * np.sqrt(strength))[..., None]
    return (base * (1 - alpha) + colours * alpha).round().astype(np.uint8)


def shade_unseen(picture: np.ndarray, seen: np.ndarray | None) -> np.ndarray:
    """Darken and hatch the part of an image the model never saw (its frame, an overlay)."""
    if seen is None or np.asarray(seen).all():
        return picture
    h, w = picture.shape[:2]
    mask = np.asarray(Image.fromarray(np.asarray(seen, np.uint8) * 255).resize((w, h), 0)) > 0
    unseen = ~mask
    out = np.array(picture, np.uint8, copy=True)
    out[unseen] = (out[unseen] * 0.35).round().astype(np.uint8)
    out[unseen & _hatch(h, w)] = 150
    return out


@functools.lru_cache(maxsize=8)
def _hatch(h: int, w: int) -> np.ndarray:
    """Diagonal hatching lines over an H×W picture (shared, read-only)."""
    yy, xx = np.mgrid[:h, :w]
    hatch = ((xx + yy) // max(2, w // 80)) % 4 == 0
    hatch.flags.writeable = False
    return hatch


def colour_bar(scale: float, width: int = 320, height: int = 14) -> np.ndarray:
    """The colour scale as an RGB strip, −scale (blue) … 0 … +scale (red), for a caption."""
    x = np.linspace(-1.0, 1.0, width)
    rgba = colormaps[COLORMAP]((x + 1.0) / 2.0)
    return np.repeat((rgba[None, :, :3] * 255).astype(np.uint8), height, axis=0)


def edge(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The outer border of a boolean mask, ``width`` pixels wide (what an outline draws)."""
    m = Image.fromarray((np.asarray(mask, bool) * 255).astype(np.uint8))
    grown = m.filter(ImageFilter.MaxFilter(2 * width + 1))
    return (np.asarray(grown) > 0) & ~(np.asarray(m) > 0)


def paint(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    """A copy of the image with the pixels ``where`` (bool H×W, e.g. an :func:`edge`) in the
    outline colour."""
    out = np.array(image, np.uint8, copy=True)
    out[where] = MASK_COLOUR
    return out


def most_deviating(deviation_row: np.ndarray) -> np.ndarray:
    """Neuron ids, most deviating from the nearest centroid first (|deviation|, ties by id):
    the inspector's bars, and its first neuron map is the first of them."""
    return np.argsort(-np.abs(np.asarray(deviation_row)), kind="stable")


def upscale(image: np.ndarray, min_px: int = 320) -> np.ndarray:
    """Nearest-neighbour enlargement of small images so pixels stay visible, not blurred."""
    h, w = image.shape[:2]
    factor = max(1, int(np.ceil(min_px / max(h, w))))
    if factor == 1:
        return image
    return np.asarray(Image.fromarray(image).resize((w * factor, h * factor), Image.NEAREST))
