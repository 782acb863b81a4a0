"""The field of view found from the image, and the share of a map's evidence on the frame."""

import numpy as np
from PIL import Image, ImageDraw

from nero.data.demo_data import ID_CLASSES, add_overlays, render_scene
from nero.explain.field_of_view import field_of_view, frame_share


def framed(seed: int = 0, size: int = 128) -> np.ndarray:
    """A demo frame with the real nuisances: black surround, burnt-in text, marker."""
    rng = np.random.default_rng(seed)
    image = render_scene(ID_CLASSES[seed % 3], rng, size)
    canvas = Image.fromarray(image)
    ImageDraw.Draw(canvas).text((1, 1), "12/03", fill=(255, 255, 255))
    return add_overlays(np.asarray(canvas), rng)[0]


def test_the_field_of_view_is_the_lit_tissue_not_the_text():
    image = framed()
    fov = field_of_view(image)
    assert fov[64, 64] and not fov[2, 2] and not fov[-2, -2]
    assert not fov[1:12, 1:25].any()  # the burnt-in text lies outside it
    assert 0.5 < fov.mean() < 0.95


def test_an_image_without_frame_is_all_field_of_view():
    image = np.full((64, 64, 3), 150, np.uint8)
    assert field_of_view(image).all()
    share = frame_share(np.ones((64, 64)), image)
    assert not share.has_frame and not share.on_frame


def test_evidence_on_the_frame_is_counted_and_flagged():
    image = framed(1)
    on_text = np.zeros((128, 128))
    on_text[1:12, 1:25] = 1.0
    share = frame_share(on_text, image)
    assert share.has_frame and share.frame == 1.0 and share.on_frame
    on_tissue = np.zeros((128, 128))
    on_tissue[54:74, 54:74] = 1.0
    share = frame_share(on_tissue, image)
    assert share.frame == 0.0 and not share.on_frame
    spread = frame_share(np.ones((128, 128)), image)  # evenly spread: the frame's area
    assert abs(spread.frame - spread.frame_area) < 1e-9 and not spread.on_frame
