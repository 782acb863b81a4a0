"""The one image reader: every path that decodes an image (evaluate, train, envelope, heatmaps,
dashboard uploads and thumbnails) goes through :func:`decode_image`.

It refuses what it cannot read faithfully (decompression bombs, truncated or non-image files)
with an :class:`ImageReadError` naming the file, and says what it changed on the way to the
RGB image a model sees (EXIF rotation, first frame of an animation, transparency flattened,
grey or 16-bit converted) in :attr:`DecodedImage.notes`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# File suffixes read as images when a folder is listed (GIF: its first frame, with a note).
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".gif",
)
# Larger images are refused as possible decompression bombs: PIL's own error level
# (2 × Image.MAX_IMAGE_PIXELS, about 13 000 × 13 000 pixels); PIL checks it when opening.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
EXIF_ORIENTATION = 0x0112
_HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_GREY = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageReadError(ValueError):
    """An image file cannot be decoded faithfully; the message names the file and the reason."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image and what was changed to get it (empty when nothing was)."""

    image: Image.Image
    notes: tuple[str, ...] = ()
    original_size: tuple[int, int] = (0, 0)  # (width, height) as stored in the file

    @property
    def note(self) -> str:
        return "; ".join(self.notes)


def to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """RGB from any mode, and a note for every conversion that changes what the model sees."""
    notes: list[str] = []
    mode = image.mode
    if mode in _GREY:
        notes.append(f"greyscale image ({mode}): the model sees grey RGB, without colour")
    if mode in _HIGH_BIT_DEPTH:
        arr = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        image = Image.fromarray(arr, mode="L")
        notes.append(f"{mode} pixel values rescaled to 8 bits")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        if (alpha < 255).any():
            notes.append(
                f"transparency flattened onto black ({100 * float((alpha < 255).mean()):.0f} % "
                "of pixels were see-through)"
            )
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    elif mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return image.convert("RGB"), notes


def decode_image(source: str | Path | bytes, name: str | None = None) -> DecodedImage:
    """Decode a file (or its bytes) fully into RGB, or raise :class:`ImageReadError`."""
    label = name or (str(source) if not isinstance(source, bytes) else "the image")
    opened = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            # Between PIL's warning and error levels an image is large but legitimate.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(opened) as img:
                width, height = img.size
                notes: list[str] = []
                frames = int(getattr(img, "n_frames", 1) or 1)
                if frames > 1:
                    img.seek(0)
                    notes.append(f"animated image with {frames} frames: the first frame is used")
                img.load()  # decode fully, so truncation is caught here
                orientation = img.getexif().get(EXIF_ORIENTATION, 1)
                if orientation not in (None, 1):
                    img = ImageOps.exif_transpose(img)
                    notes.append(f"rotated upright by its EXIF orientation ({orientation})")
                rgb, converted = to_rgb(img)
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(f"{label}: the file does not exist") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(f"{label}: is a folder, not an image") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{label}: not an image file this tool can read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{label}: more than {MAX_PIXELS:,} pixels, a possible decompression bomb; not "
            f"decoded ({exc})"
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageReadError(
            f"{label}: damaged or truncated ({type(exc).__name__}: {exc})"
        ) from exc
    return DecodedImage(rgb, tuple(notes + converted), (width, height))


def read_image(path: str | Path) -> Image.Image:
    """The RGB image of a file (notes dropped): for callers that only draw it."""
    return decode_image(path).image


def is_image(path: Path) -> bool:
    """A file with an image suffix that is not hidden (folder listings use this)."""
    return (
        path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )
