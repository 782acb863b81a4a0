"""The one input path: how an image file becomes what the model sees.

Every caller that feeds a model goes through :class:`Preprocessing`: training, evaluation,
scoring (images and video frames), the Ray workers, uploads, heatmaps and the corrupted-ID
proxies. It is part of the model's contract: ``nero train`` records it in the checkpoint's
sidecar (:meth:`Preprocessing.record`), ``nero evaluate`` copies it into the run manifest.

``frame="auto"`` (the default for new models) makes the input **frame-invariant**. Real
endoscopy frames carry the camera: a black surround in the scope's own shape, burnt-in text,
marker boxes. A model learns them, and OOD sets recorded on other equipment are then "detected"
by their frame. Here, for an image that has a frame:

1. its lit field of view is found (:mod:`nero.data.field_of_view`, on a small copy);
2. the field of view's bounding box is cropped from the original and resized to the model's
   square input: all of the tissue is kept, whatever the frame's size, shape or position;
3. a fixed disc inscribed in that square is the only place the model gets tissue. Inside it,
   pixels that are not tissue (the frame's corners, a marker box cutting into the view, the
   dim rim, thin white text strokes) are filled from the surrounding tissue; outside it, the
   input is the normalisation's mean, i.e. exactly 0, for every image.

So nothing of the surround, its overlays or its shape reaches the network: two frames of one
scene recorded through an octagon, a circle or an octagon with text and a box give the same
input outside the tissue. An image without a surround passes unchanged (a plain resize); an
image whose field of view cannot be found is treated as all tissue, with a note.
``frame="none"`` is the plain square resize of the paper (and of models trained before this
record existed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from nero.data.field_of_view import (
    DETECT_SIDE,
    FRAMED,
    NO_FRAME,
    NOT_FOUND,
    frame_only,
    locate_on,
)

# ImageNet statistics: the paper's evaluation transform (spec §7).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMG_SIZE = 224
FRAME_MODES = ("auto", "none")
VERSION = 1  # bumped when "auto" changes what the model sees
RIM = 0.01  # the lit rim (vignetting, blooming) left out of the tissue, share of the side
STROKE = 0.012  # overlay strokes thinner than this share of the side are filled in
STROKE_LIGHT = 0.6  # ... when near-white: brightness above this
STROKE_GREY = 0.5  # ... and grey: min/max over RGB above this (tissue is red)
STROKE_CONTRAST = 0.12  # ... and brighter than their surroundings by this


@functools.lru_cache(maxsize=8)
def _disc_mask(side: int) -> np.ndarray:
    """The disc inscribed in an S×S square (shared and read-only)."""
    c = (side - 1) / 2.0
    y, x = np.ogrid[:side, :side]
    mask = (x - c) ** 2 + (y - c) ** 2 <= (side / 2.0) ** 2
    mask.flags.writeable = False
    return mask


ORIGINAL_SIDE = 512  # maps on the original grid: a uniform resize to at most this long side


@dataclass(frozen=True)
class Geometry:
    """Where the model's S×S input came from in the original image."""

    box: tuple[int, int, int, int]  # the crop of the original: top, bottom, left, right
    original_size: tuple[int, int]  # (width, height) of the original
    disc: bool  # the input carries tissue only inside the inscribed disc

    def to_original(self, values: np.ndarray, long_side: int | None = ORIGINAL_SIDE) -> np.ndarray:
        """An S×S map on the original's grid, uniformly resized so its long side is at most
        ``long_side`` (None: the original's own size); 0 where the model saw nothing of it."""
        w, h = self.original_size
        scale = 1.0 if long_side is None else min(1.0, long_side / max(w, h))
        out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
        top, bottom, left, right = (round(v * scale) for v in self.box)
        top, left = min(top, out_h - 1), min(left, out_w - 1)
        bottom, right = max(bottom, top + 1), max(right, left + 1)
        values = np.asarray(values, np.float32)
        if self.disc:
            values = np.where(_disc_mask(values.shape[0]), values, 0.0).astype(np.float32)
        crop = Image.fromarray(values).resize((right - left, bottom - top), Image.BILINEAR)
        out = np.zeros((out_h, out_w), np.float32)
        out[top:bottom, left:right] = np.asarray(crop)
        return out

    def record(self) -> dict[str, Any]:
        return {"box": list(self.box), "original_size": list(self.original_size), "disc": self.disc}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Geometry:
        return cls(tuple(record["box"]), tuple(record["original_size"]), bool(record["disc"]))


@dataclass(frozen=True)
class Prepared:
    """One image as the model sees it, and where that came from in the original."""

    image: Image.Image  # S×S RGB
    tissue: np.ndarray  # bool S×S: pixels carrying the original's tissue (not filled in)
    geometry: Geometry
    status: str  # "framed", "no frame", "not found" or "raw" (frame="none")
    note: str = ""

    @property
    def inside(self) -> np.ndarray | None:
        """Bool S×S: the disc the model gets tissue in (None: all of the input)."""
        return _disc_mask(self.tissue.shape[0]) if self.geometry.disc else None

    def seen_in_original(self, long_side: int | None = ORIGINAL_SIDE) -> np.ndarray:
        """Bool mask on the original's grid of the tissue the model saw."""
        return self.geometry.to_original(self.tissue.astype(np.float32), long_side) > 0.5


@dataclass(frozen=True)
class Preprocessing:
    """What the model sees of an image: callable on a PIL image → normalised C×S×S tensor."""

    img_size: int = DEFAULT_IMG_SIZE
    frame: str = "auto"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    version: int = VERSION
    frame_only: bool = False  # the acquisition control: the tissue blanked first
    _disc: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.frame not in FRAME_MODES:
            raise ValueError(f"frame must be one of {FRAME_MODES}, got {self.frame!r}")
        if int(self.img_size) < 8:
            raise ValueError(f"img_size must be at least 8 pixels, got {self.img_size}")
        object.__setattr__(self, "_disc", _disc_mask(int(self.img_size)))

    # ------------------------------------------------------------------ the record
    def record(self) -> dict[str, Any]:
        """What the sidecar and the manifest store (read back by :meth:`from_record`)."""
        return {
            "img_size": int(self.img_size),
            "frame": self.frame,
            "mean": list(self.mean),
            "std": list(self.std),
            "version": self.version if self.frame == "auto" else None,
            **({"frame_only": True} if self.frame_only else {}),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Preprocessing:
        try:
            frame = record.get("frame", "none")
            version = record.get("version") or VERSION
            if frame == "auto" and version != VERSION:
                raise ValueError(
                    f"frame-invariant preprocessing version {version}; this nero has {VERSION}"
                )
            return cls(
                int(record["img_size"]),
                frame,
                tuple(float(v) for v in record.get("mean", IMAGENET_MEAN)),
                tuple(float(v) for v in record.get("std", IMAGENET_STD)),
                frame_only=bool(record.get("frame_only", False)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"unreadable preprocessing record {record!r}: {exc}") from exc

    # ------------------------------------------------------------------ images
    def prepare(self, image: Image.Image) -> Prepared:
        """The S×S image the model sees, with the map back to the original."""
        image = image.convert("RGB") if image.mode != "RGB" else image
        if self.frame_only:
            image = frame_only(image)
        side = int(self.img_size)
        w, h = image.size
        whole = (0, h, 0, w)
        if self.frame == "none":
            return self._plain(image, whole, "raw")
        fov = locate_on(image)
        if fov.status == NO_FRAME:
            return self._plain(image, whole, NO_FRAME)
        note = ""
        if fov.status == NOT_FOUND:
            note = "field of view not found: the whole image is treated as tissue"
            box = whole
            tissue = np.ones((side, side), bool)
        else:
            t, b, left, r = fov.box
            box = (
                int(np.floor(t * h / DETECT_SIDE)),
                int(np.ceil(b * h / DETECT_SIDE)),
                int(np.floor(left * w / DETECT_SIDE)),
                int(np.ceil(r * w / DETECT_SIDE)),
            )
            # A detection pixel on the edge may be part black, and a resized pixel blends its
            # neighbours: only pixels whose every source is surely lit count as tissue, so no
            # trace of the surround's shape reaches the input.
            sure = ndimage.binary_erosion(fov.mask, iterations=1)[t:b, left:r]
            crop = Image.fromarray(sure.astype(np.uint8) * 255)
            tissue = np.asarray(crop.resize((side, side), Image.BILINEAR)) == 255
            rim = 2 * max(1, round(RIM * side)) + 1
            tissue = ndimage.minimum_filter(tissue, size=rim, mode="constant", cval=0)
        top, bottom, left, right = box
        pixels = np.asarray(
            image.resize((side, side), Image.BILINEAR, box=(left, top, right, bottom)), np.float32
        )
        tissue = tissue & ~_overlay_strokes(pixels, side)
        filled = _fill_in(pixels, tissue, self._disc)
        filled[~self._disc] = np.asarray(self.mean, np.float32) * 255.0
        out = Image.fromarray(np.clip(np.rint(filled), 0, 255).astype(np.uint8))
        status = FRAMED if fov.status == FRAMED else NOT_FOUND
        return Prepared(out, tissue & self._disc, Geometry(box, (w, h), True), status, note)

    def _plain(self, image: Image.Image, box: tuple[int, int, int, int], status: str) -> Prepared:
        side = int(self.img_size)
        resized = image.resize((side, side), Image.BILINEAR)
        geometry = Geometry(box, image.size, False)
        return Prepared(resized, np.ones((side, side), bool), geometry, status)

    def normalise(self, prepared: Prepared) -> torch.Tensor:
        """The prepared image as the normalised tensor; exactly 0 outside the disc."""
        pixels = torch.from_numpy(np.asarray(prepared.image, np.float32).copy()) / 255.0
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)
        tensor = ((pixels - mean) / std).permute(2, 0, 1).contiguous()
        return self.blank_outside(tensor, prepared.inside)

    @staticmethod
    def blank_outside(
        tensor: torch.Tensor, inside: np.ndarray | torch.Tensor | None
    ) -> torch.Tensor:
        """0 (the mean) outside the disc, for C×H×W or N×C×H×W tensors with an H×W or N×H×W
        mask: after augmentation and corruptions too, so the model never sees anything else."""
        if inside is None:
            return tensor
        if isinstance(inside, np.ndarray):  # the shared disc is read-only: copy it
            inside = torch.tensor(inside)
        mask = inside.to(device=tensor.device, dtype=tensor.dtype)
        if tensor.dim() == 4 and mask.dim() == 3:
            mask = mask[:, None]
        return tensor * mask

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalise(self.prepare(image))

    def tensor_and_note(self, image: Image.Image) -> tuple[torch.Tensor, str]:
        prepared = self.prepare(image)
        return self.normalise(prepared), prepared.note

    def denormalise(self, tensor: torch.Tensor) -> torch.Tensor:
        """Normalised N×C×H×W back to [0, 1] pixels (for corruptions made on pixels)."""
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(1, 3, 1, 1)
        return tensor * std + mean

    def renormalise(
        self, pixels: torch.Tensor, inside: np.ndarray | torch.Tensor | None = None
    ) -> torch.Tensor:
        """[0, 1] pixels N×C×H×W back to the model's input (0 outside the disc)."""
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return self.blank_outside((pixels - mean) / std, inside)

    @property
    def disc(self) -> np.ndarray:
        """The fixed S×S disc where the frame-invariant input carries tissue."""
        return self._disc


def _overlay_strokes(pixels: np.ndarray, side: int) -> np.ndarray:
    """Thin near-white grey strokes (burnt-in text, cursor marks) on S×S float RGB pixels."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    top = np.maximum(np.maximum(r, g), b)  # channel-wise: numpy's axis=2 reduce is slow
    light = top / 255.0
    grey = np.minimum(np.minimum(r, g), b) / np.maximum(top, 1.0)
    size = 2 * max(1, round(STROKE * side)) + 1  # square: separable, fast
    contrast = light - ndimage.grey_opening(light, size=(size, size))
    strokes = (light > STROKE_LIGHT) & (grey > STROKE_GREY) & (contrast > STROKE_CONTRAST)
    return ndimage.binary_dilation(strokes, iterations=1) if strokes.any() else strokes


def _fill_in(pixels: np.ndarray, tissue: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` that are not tissue, filled from the surrounding tissue.

    Push-pull: tissue colour averaged down a pyramid of 2×2 means, then pulled back up with
    bilinear upsampling into every pixel without tissue at that level; smooth, O(pixels),
    and a constant image stays exactly constant. Colour and weight are pooled alike, so the
    ratio is the weighted mean whatever the pooling's divisor at odd edges.
    """
    out = pixels.copy()
    todo = region & ~tissue
    if not todo.any():
        return out
    if not tissue.any():
        out[todo] = pixels[region].mean(axis=0) if region.any() else 0.0
        return out
    weight = torch.from_numpy(tissue.astype(np.float32))[None, None]
    colour = torch.from_numpy(pixels).permute(2, 0, 1)[None] * weight
    levels = [torch.cat([colour, weight], dim=1)]
    while min(levels[-1].shape[-2:]) > 1:
        levels.append(F.avg_pool2d(levels[-1], 2, ceil_mode=True))
    def mean_colour(level: torch.Tensor) -> torch.Tensor:
        return level[:, :3] / level[:, 3:].clamp_min(1e-12)
    filled = mean_colour(levels[-1])
    for level in reversed(levels[:-1]):
        up = F.interpolate(filled, size=level.shape[-2:], mode="bilinear", align_corners=False)
        filled = torch.where(level[:, 3:] > 0, mean_colour(level), up)
    out[todo] = filled[0].permute(1, 2, 0).numpy()[todo]
    return out
