"""The one image reader: what it refuses, and what it says it changed."""

import io

import numpy as np
import pytest
from PIL import Image

from dashboard import uploads
from nero.data.images import ImageReadError, decode_image
from tests.test_faults import bomb_png


def png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_plain_rgb_is_read_unchanged(tmp_path):
    Image.new("RGB", (20, 10), (1, 2, 3)).save(tmp_path / "a.png")
    decoded = decode_image(tmp_path / "a.png")
    assert decoded.notes == () and decoded.image.size == (20, 10)
    assert decoded.original_size == (20, 10)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageReadError, match=r"bomb.png: more than .* possible decompression bomb"):
        decode_image(tmp_path / "bomb.png")


def test_animation_uses_its_first_frame_and_says_so():
    frames = [Image.new("RGB", (8, 8), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    data = png_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(data, name="clip.gif")
    assert decoded.image.getpixel((0, 0))[0] > 200  # red: the first frame
    assert any("3 frames: the first frame is used" in n for n in decoded.notes)


def test_exif_orientation_is_applied_and_noted():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = png_bytes(Image.new("RGB", (40, 24)), "JPEG", exif=exif)
    decoded = decode_image(data, name="portrait.jpg")
    assert decoded.image.size == (24, 40)
    assert any("EXIF orientation (6)" in n for n in decoded.notes)


def test_transparency_and_grey_are_noted():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    decoded = decode_image(png_bytes(rgba))
    assert decoded.image.getpixel((0, 0)) == (0, 0, 0)
    assert any("transparency flattened onto black (100 %" in n for n in decoded.notes)
    opaque = decode_image(png_bytes(Image.new("RGBA", (8, 8), (255, 0, 0, 255))))
    assert opaque.notes == ()  # an alpha channel that hides nothing changes nothing
    grey = decode_image(png_bytes(Image.new("L", (8, 8), 80)))
    assert any("without colour" in n for n in grey.notes)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"hello", "not an image"), (png_bytes(Image.new("RGB", (64, 64)))[:60], "damaged")],
)
def test_unreadable_bytes_name_the_file(data, message):
    with pytest.raises(ImageReadError, match=f"scan.png: {message}"):
        decode_image(data, name="scan.png")


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        decode_image(tmp_path / "gone.png")
    with pytest.raises(ImageReadError, match="is a folder"):
        decode_image(tmp_path)


def test_upload_notices_cover_every_change():
    big = png_bytes(Image.fromarray(np.zeros((900, 700, 4), np.uint8), "RGBA"))
    decoded, error = uploads.decode("big.png", big)
    assert error is None
    notes = [*decoded.notes, uploads.resize_note(decoded, 224)]
    assert any("transparency" in n for n in notes)
    assert "resized from 700×900 to the model's 224×224 input" in notes[-1]
    small, _ = uploads.decode("small.png", png_bytes(Image.new("RGB", (224, 224))))
    assert uploads.resize_note(small, 224) is None
