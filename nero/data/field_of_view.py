"""The endoscope's field of view (FOV), found from the image itself.

Real frames carry an unlit surround with burnt-in text and marker boxes, in a shape that
differs between scopes and hospitals. No position or shape of the frame is assumed:

1. brightness = the maximum over RGB (saturated red tissue counts as lit);
2. the surround's level is the median of the four corner patches; lit = brighter than that
   by :data:`LIT_ABOVE_FRAME`. Corners brighter than :data:`NO_FRAME_LEVEL`: no frame;
3. an opening with a disc of :data:`MARGIN` of the side detaches text and thin overlay
   strokes; the largest lit component, holes filled (lumen, glare), is the field of view.

:func:`locate_field_of_view` also says when this fails (nothing lit, or a lit part too small
or too thin to be a field of view), so callers fall back to the whole image with a note.
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
MIN_FOV_AREA = 0.2  # a lit part smaller than this share of the image is not a field of view
MAX_FOV_ASPECT = 2.5  # nor one much longer than wide (a bright bar, a menu strip)

FRAMED, NO_FRAME, NOT_FOUND = "framed", "no frame", "not found"
DETECT_SIDE = 128  # the field of view is found on a copy this size (fast, shape-agnostic)
BLANK_TISSUE = (160, 90, 70)  # the one colour frame-only copies fill the field of view with


def disc(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


@dataclass(frozen=True)
class FieldOfView:
    """Where the lit tissue is: a mask on the image's grid and what kind of frame it has."""

    mask: np.ndarray  # bool H×W; all True when there is no frame or it was not found
    status: str  # FRAMED | NO_FRAME | NOT_FOUND

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The mask's bounding box ``(top, bottom, left, right)``, end-exclusive."""
        rows, cols = np.flatnonzero(self.mask.any(1)), np.flatnonzero(self.mask.any(0))
        return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def brightness(image: np.ndarray) -> np.ndarray:
    """The maximum over RGB in [0, 1] (taken channel by channel: numpy's axis reduce is slow)."""
    image = np.asarray(image)
    top = np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])
    return top.astype(np.float32) / 255.0


def locate_field_of_view(image: np.ndarray) -> FieldOfView:
    """The lit field of view of an RGB uint8 H×W×3 image (see the module for the steps)."""
    light = brightness(image)
    h, w = light.shape
    whole = np.ones((h, w), bool)
    k = max(2, int(round(CORNER * min(h, w))))
    corners = np.concatenate([light[:k, :k], light[:k, -k:], light[-k:, :k], light[-k:, -k:]])
    level = float(np.median(corners))
    if level > NO_FRAME_LEVEL:
        return FieldOfView(whole, NO_FRAME)
    lit = ndimage.binary_opening(light > level + LIT_ABOVE_FRAME, disc(MARGIN * min(h, w)))
    labels, n = ndimage.label(lit)
    if n == 0:
        return FieldOfView(whole, NOT_FOUND)
    sizes = ndimage.sum(lit, labels, index=np.arange(1, n + 1))
    mask = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    found = FieldOfView(mask, FRAMED)
    top, bottom, left, right = found.box
    tall, wide = (bottom - top) / h, (right - left) / w
    if mask.mean() < MIN_FOV_AREA or max(tall, wide) > MAX_FOV_ASPECT * min(tall, wide):
        return FieldOfView(whole, NOT_FOUND)
    return found


def field_of_view(image: np.ndarray) -> np.ndarray:
    """Boolean H×W mask of the lit field of view (all True when there is none to find)."""
    return locate_field_of_view(image).mask


def locate_on(image: Image.Image) -> FieldOfView:
    """The field of view of a PIL image, found on a :data:`DETECT_SIDE` copy."""
    return locate_field_of_view(np.asarray(image.resize((DETECT_SIDE, DETECT_SIDE), 2)))


def frame_only(image: Image.Image) -> Image.Image:
    """The acquisition control's copy: the lit field of view (holes and overlays inside it
    included) filled with :data:`BLANK_TISSUE`, so only the surround, its overlays and the
    frame's shape are left. An image without a frame becomes one flat colour."""
    image = image.convert("RGB")
    fov = locate_on(image)
    mask = Image.fromarray(fov.mask.astype(np.uint8) * 255).resize(image.size, 0)
    out = np.array(image, np.uint8, copy=True)
    out[np.asarray(mask) > 0] = BLANK_TISSUE
    return Image.fromarray(out)
