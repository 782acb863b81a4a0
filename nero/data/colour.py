"""Is this an endoscopy-like frame at all? Colour statistics against the training images.

A detector scores what the model's features make of an image; a rendering, a screenshot or a
photograph of something else can still land anywhere on that scale. Its colours give it away
before any model does: each image is summarised by the mean and spread of its channels in
RGB and in the opponent axes (red–green, yellow–blue) that separate mucosa from everything
else, and compared with the training images' summaries. "Far" is measured like the nearest
training images (:class:`nero.run.scoring.NeighbourScale`): against how far normal test
images' nearest training image is, never against a fixed number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nero.data.images import ImageReadError, to_rgb

SUMMARY_PX = 64  # colours are read from a copy this small (JPEGs decode at reduced size)
FAR_PERCENTILE = 99.0  # beyond the nearest distance of 99 % of normal test images: "far"


def colour_summary(image: Image.Image | np.ndarray) -> np.ndarray:
    """Eight numbers: mean and spread of R, G, B and of the two opponent axes, in [0, 1]."""
    rgb = np.asarray(image, np.float32)[..., :3].reshape(-1, 3) / 255.0
    red_green = rgb[:, 0] - rgb[:, 1]
    yellow_blue = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    channels = np.column_stack([rgb, red_green, yellow_blue])
    return np.concatenate([channels.mean(0), channels.std(0)[[0, 1, 2]]]).astype(np.float64)


def read_summary(path: str | Path) -> np.ndarray | None:
    """The colour summary of an image file (None: unreadable)."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (SUMMARY_PX, SUMMARY_PX))  # JPEG: decode at 1/2–1/8 size
            rgb, _ = to_rgb(img)
            rgb.thumbnail((SUMMARY_PX, SUMMARY_PX))
            return colour_summary(rgb)
    except (OSError, ValueError, ImageReadError, Image.DecompressionBombError):
        return None


def read_summaries(paths: Sequence[str | Path]) -> np.ndarray:
    """Colour summaries of many files, one row each (NaN rows for unreadable files)."""
    rows = [read_summary(p) for p in paths]
    return np.array([r if r is not None else np.full(8, np.nan) for r in rows], np.float64)


@dataclass(frozen=True)
class ColourReference:
    """The training images' colour summaries (standardised) and how far is far."""

    train: np.ndarray  # N×8, standardised by ``centre``/``spread``
    centre: np.ndarray
    spread: np.ndarray
    far: float  # nearest-training distance beyond which an image is "not endoscopy-like"

    @classmethod
    def fit(cls, train: np.ndarray, test: np.ndarray) -> ColourReference:
        """From training and normal test images' summaries (rows with NaN are dropped)."""
        train = train[np.isfinite(train).all(1)]
        test = test[np.isfinite(test).all(1)]
        if len(train) < 2 or len(test) < 1:
            raise ValueError(
                "the colour check needs at least 2 readable training and 1 normal test image"
            )
        centre, spread = train.mean(0), np.maximum(train.std(0), 1e-6)
        scaled = (train - centre) / spread
        reference = cls(scaled, centre, spread, float("inf"))
        far = float(np.percentile(reference.nearest(test), FAR_PERCENTILE))
        return cls(scaled, centre, spread, far)

    def nearest(self, summaries: np.ndarray) -> np.ndarray:
        """Distance of each summary to its nearest training image's, in training spreads."""
        query = (np.atleast_2d(summaries) - self.centre) / self.spread
        return np.sqrt(((query[:, None, :] - self.train[None, :, :]) ** 2).sum(-1)).min(1)

    def is_far(self, summaries: np.ndarray) -> np.ndarray:
        return self.nearest(summaries) > self.far

    def save(self, path: Path) -> None:
        from nero.files import save_npz

        save_npz(path, train=self.train, centre=self.centre, spread=self.spread, far=self.far)

    @classmethod
    def load(cls, path: Path) -> ColourReference:
        with np.load(path) as z:
            return cls(z["train"], z["centre"], z["spread"], float(z["far"]))
