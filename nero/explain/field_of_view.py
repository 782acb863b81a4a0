"""The endoscope's field of view, found from the image itself, and how much of a heatmap's
evidence lies on the frame instead of the patient's tissue.

Real frames carry an unlit surround with burnt-in text and marker thumbnails, and models
learn from it: on real polyps the OOD heatmap put more than half its evidence there. Hiding
that would hide what the detector uses, so a heatmap's evidence is *split*: inside the field
of view, and on the frame (outside it, plus a band along its edge, which every filter
responds to). No position or shape of the frame is assumed:

1. brightness = the maximum over RGB (saturated red tissue counts as lit);
2. the surround's level is the median of the four corner patches; lit = brighter than that
   by :data:`LIT_ABOVE_FRAME`. Corners brighter than :data:`NO_FRAME_LEVEL`: no frame;
3. an opening with a disc of :data:`MARGIN` of the side detaches text and thin overlay
   strokes; the largest lit component, holes filled (lumen, glare), is the field of view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

CORNER = 0.06  # side of the corner patches that sample the frame, as a share of the side
LIT_ABOVE_FRAME = 0.08  # JPEG noise on black is 2–4 % of full scale; dark mucosa is far above
NO_FRAME_LEVEL = 0.25  # lit corners: the image has no frame
MARGIN = 0.02  # opening radius (detaches overlays), as a share of the side
EDGE_BAND = 0.05  # the frame's edge, inside the field of view, as a share of the side


def _disc(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


def field_of_view(image: np.ndarray) -> np.ndarray:
    """Boolean H×W mask of the lit field of view (all True when there is no frame)."""
    brightness = np.asarray(image, np.float32).max(axis=2) / 255.0
    h, w = brightness.shape
    k = max(2, int(round(CORNER * min(h, w))))
    corners = np.concatenate(
        [brightness[:k, :k], brightness[:k, -k:], brightness[-k:, :k], brightness[-k:, -k:]]
    )
    level = float(np.median(corners))
    if level > NO_FRAME_LEVEL:
        return np.ones((h, w), bool)
    lit = ndimage.binary_opening(brightness > level + LIT_ABOVE_FRAME, _disc(MARGIN * min(h, w)))
    labels, n = ndimage.label(lit)
    if n == 0:
        return np.ones((h, w), bool)
    sizes = ndimage.sum(lit, labels, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


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


def frame_share(relevance: np.ndarray, image: np.ndarray) -> FrameShare:
    """How much of a heatmap's positive evidence lies on the image's frame (see module)."""
    rel = np.asarray(relevance, np.float64)
    fov = field_of_view(
        np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize(rel.shape[::-1]))
    )
    if fov.all():
        return FrameShare(0.0, 0.0, False)
    tissue = ndimage.binary_erosion(fov, _disc(EDGE_BAND * min(rel.shape)))
    positive = np.clip(rel, 0, None)
    total = positive.sum()
    frame = float(positive[~tissue].sum() / total) if total > 0 else 0.0
    return FrameShare(frame, float((~tissue).mean()), True)
