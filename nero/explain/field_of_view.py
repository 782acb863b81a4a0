"""How much of a heatmap's evidence lies on the frame instead of the patient's tissue (the
field of view is found by :mod:`nero.data.field_of_view`).

Real frames carry an unlit surround with burnt-in text and marker thumbnails, and models
learn from it: on real polyps the OOD heatmap put more than half its evidence there. Hiding
that would hide what the detector uses, so a heatmap's evidence is *split*: inside the field
of view, and on the frame (outside it, plus a band along its edge, which every filter
responds to). A model fed frame-invariant input (``--frame auto``) gets nothing of the
frame, so its maps put no evidence there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from nero.data.field_of_view import disc, field_of_view

EDGE_BAND = 0.05  # the frame's edge, inside the field of view, as a share of the side


@dataclass(frozen=True)
class FrameShare:
    """Where a map's positive evidence lies: on the tissue or on the frame."""

    frame: float  # share of positive relevance on the frame (outside the FOV or its edge)
    frame_area: float  # share of the image the frame covers (what evenly spread evidence gets)
    has_frame: bool  # False: the image has no unlit surround

    @property
    def on_frame(self) -> bool:
        """More evidence on the frame than its area alone would give it."""
        return self.has_frame and self.frame > self.frame_area

    def sentence(self) -> str:
        """Most evidence on the frame (> 50 %) is said differently from more than its area."""
        where = "the frame (the dark surround, burnt-in text, markers)"
        if self.frame > 0.5:
            return (
                f"Most of this map's evidence ({self.frame:.0%}) lies on {where}, not on the "
                "tissue."
            )
        return (
            f"{self.frame:.0%} of this map's evidence lies on {where}, more than the "
            f"{self.frame_area:.0%} of the image it covers would give it."
        )


def frame_share(relevance: np.ndarray, image: np.ndarray) -> FrameShare:
    """How much of a heatmap's positive evidence lies on the image's frame (see module)."""
    rel = np.asarray(relevance, np.float64)
    fov = field_of_view(
        np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize(rel.shape[::-1]))
    )
    if fov.all():
        return FrameShare(0.0, 0.0, False)
    tissue = ndimage.binary_erosion(fov, disc(EDGE_BAND * min(rel.shape)))
    positive = np.clip(rel, 0, None)
    total = positive.sum()
    frame = float(positive[~tissue].sum() / total) if total > 0 else 0.0
    return FrameShare(frame, float((~tissue).mean()), True)
