"""Turning uploaded bytes into images, with a message a person can act on for every failure."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from nero.data import to_rgb

MAX_UPLOAD_MB = 20  # per file: a large clinical photo fits, a video or archive does not
MAX_FILES = 12  # scored together; more belongs in a new run
# Decompression bombs: refuse images with more pixels than this (about 16k × 16k).
MAX_PIXELS = 256_000_000
IMAGE_TYPES = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp")
WHAT_WORKS = "Upload a PNG, JPEG, BMP, TIFF or WebP image."


def decode(name: str, data: bytes) -> tuple[Image.Image | None, str | None]:
    """(RGB image, None) or (None, a message saying what is wrong and what to do)."""
    size_mb = len(data) / 2**20
    if size_mb > MAX_UPLOAD_MB:
        return None, (
            f"**{name}** is {size_mb:.1f} MB; the limit is {MAX_UPLOAD_MB} MB per image. "
            "Save it at a smaller size or as JPEG and upload it again."
        )
    if not data:
        return None, f"**{name}** is empty (0 bytes). {WHAT_WORKS}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    return None, (
                        f"**{name}** is {img.width}×{img.height} pixels, too large to score. "
                        "Resize it below 16 000 × 16 000."
                    )
                img.load()
                return to_rgb(img), None
    except UnidentifiedImageError:
        return None, f"**{name}** is not an image this tool can read. {WHAT_WORKS}"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, f"**{name}** has too many pixels to score safely. Resize it and try again."
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        return None, (
            f"**{name}** looks damaged or truncated ({exc}). Export it again from the source "
            "and upload the new file."
        )
