"""Turning uploaded bytes into images, with a message a person can act on for every failure."""

from __future__ import annotations

from nero.data.images import DecodedImage, ImageReadError, decode_image

MAX_UPLOAD_MB = 20  # per file: a large clinical photo fits, a video or archive does not
MAX_FILES = 12  # scored together; more belongs in a new run
IMAGE_TYPES = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif")
WHAT_WORKS = "Upload a PNG, JPEG, BMP, TIFF, WebP or GIF image."


def decode(name: str, data: bytes) -> tuple[DecodedImage | None, str | None]:
    """(the decoded image with its notes, None) or (None, what is wrong and what to do)."""
    size_mb = len(data) / 2**20
    if size_mb > MAX_UPLOAD_MB:
        return None, (
            f"**{name}** is {size_mb:.1f} MB; the limit is {MAX_UPLOAD_MB} MB per image. "
            "Save it at a smaller size or as JPEG and upload it again."
        )
    if not data:
        return None, f"**{name}** is empty (0 bytes). {WHAT_WORKS}"
    try:
        return decode_image(data, name=f"**{name}**"), None
    except ImageReadError as exc:
        return None, f"{exc}. {WHAT_WORKS} If the file is damaged, export it again."


def resize_note(decoded: DecodedImage, img_size: int) -> str | None:
    """A notice when the model sees the image much smaller than it is (detail is lost)."""
    width, height = decoded.original_size
    if max(width, height) < 2 * img_size:
        return None
    return (
        f"resized from {width}×{height} to the model's {img_size}×{img_size} input: "
        "fine detail is not seen"
    )
